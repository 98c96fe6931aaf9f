//! The audit chain's anchor (`data/audit.head`): a tail cut from `audit.db` while the
//! daemon is stopped is reported by `verify`, and an anchor that only lags is not; an
//! anchor a start could not read is reported until the operator accepts it. And the
//! bounds on what a refusal that costs its caller nothing adds to the log.

use crate::util::Daemon;
use predicates::str::contains;
use serde_json::Value;

/// What an anchor file under `data/` holds.
fn anchor(d: &Daemon, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(d.path().join("data").join(name)).unwrap()).unwrap()
}

#[test]
fn audit_verify_names_the_records_cut_from_the_chains_end() {
    let mut d = Daemon::start();
    for i in 0..3 {
        d.user(&format!("cut{i}"));
        // A verify waits for audit's commit: each user's records end a block of their own
        // (audit runs at a low priority, and on a busy machine it would gather them all
        // into one commit).
        assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);
    }
    d.stop();

    // The newest two blocks go, as a tool or a careless hand would delete them.
    let store = rusqlite::Connection::open(d.path().join("data/audit.db")).unwrap();
    let last: u64 = store.query_row("SELECT max(last_seq) FROM record_blocks", [], |r| r.get(0)).unwrap();
    assert_eq!(anchor(&d, "audit.head")["seq"], last, "a stop leaves the chain's end anchored");
    let from: u64 = store
        .query_row("SELECT first_seq FROM record_blocks ORDER BY last_seq DESC LIMIT 1 OFFSET 1", [], |r| r.get(0))
        .expect("more than one block");
    assert_eq!(store.execute("DELETE FROM record_blocks WHERE first_seq >= ?1", [from]).unwrap(), 2);
    drop(store);
    let (end, missing) = (from - 1, format!("records {from}..{last} are missing"));

    d.spawn();
    let v = d.ok("GET", "/api/audit/verify", None);
    assert_eq!((v["ok"].clone(), v["first_bad"].clone()), (Value::Bool(false), Value::from(from)), "{v}");
    let unmet = &v["unmet_anchor"];
    assert_eq!((unmet["seq"].as_u64(), unmet["chain_end"].as_u64()), (Some(last), Some(end)), "{v}");
    assert_eq!(unmet["file"], "data/audit.head.lost");
    d.cli().args(["audit", "verify"]).assert().code(1).stderr(contains("audit_chain_broken")).stderr(contains(missing.as_str()));

    // Kept across starts, however far the chain has grown since; deleting the kept
    // anchor accepts the chain as it is.
    d.restart();
    d.user("after");
    d.cli().args(["audit", "verify"]).assert().code(1).stderr(contains(missing.as_str()));
    std::fs::remove_file(d.path().join("data/audit.head.lost")).unwrap();
    d.cli().args(["audit", "verify"]).assert().success().stdout(contains("audit chain ok"));
}

#[test]
fn audit_verify_accepts_an_anchor_behind_the_chain() {
    let mut d = Daemon::start();
    d.user("early");
    // Read once the daemon has stopped: the anchor follows each commit, after its
    // replies, so a running daemon's may lag what it just answered.
    d.stop();
    let head = d.path().join("data/audit.head");
    let older = std::fs::read_to_string(&head).unwrap();
    d.spawn();
    for i in 0..3 {
        d.user(&format!("later{i}"));
    }
    assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);
    d.stop();

    // An older copy of the anchor put back: what a crash between a commit and the
    // anchor's write leaves, or a restore of an older anchor beside a newer audit.db.
    let older_seq = serde_json::from_str::<Value>(&older).unwrap()["seq"].as_u64().unwrap();
    assert!(anchor(&d, "audit.head")["seq"].as_u64().unwrap() > older_seq, "the anchor moved on");
    std::fs::write(&head, &older).unwrap();
    d.spawn();
    let v = d.ok("GET", "/api/audit/verify", None);
    assert_eq!((v["ok"].clone(), v["first_bad"].clone()), (Value::Bool(true), Value::Null), "{v}");
    assert!(v.get("unmet_anchor").is_none(), "{v}");
    d.cli().args(["audit", "verify"]).assert().success().stdout(contains("audit chain ok"));
    assert!(!d.path().join("data/audit.head.lost").exists(), "nothing was kept as lost");
}

/// A write a token's role forbids costs its caller nothing, so each window audits only
/// the first 20 (each a command and its refusal) and then one record of how many more
/// there were; requests without a valid token are logged the same way, never audited.
///
/// The window is an hour, so every refusal sent here falls in the one window however
/// slow the machine; the stop ends it (the daemon records what a window still open has
/// counted as it stops), and the records are read after a restart.
#[test]
fn refusals_that_cost_nothing_are_recorded_within_bounds() {
    use crate::util::code;
    let mut d = Daemon::with_config_env("", &[("AGT_REFUSAL_WINDOW_MS", "3600000")]);
    let made = d.ok("POST", "/api/tokens", Some(serde_json::json!({"role": "viewer"})));
    let (viewer, actor) = (made["token"].as_str().unwrap().to_string(), format!("token:{}", made["id"].as_str().unwrap()));
    for _ in 0..50 {
        let (s, e) = d.tcp_raw("POST", "/api/users", "{}", &viewer);
        assert_eq!((s, code(&e)), (403, "forbidden"), "every attempt is refused as before: {e}");
    }
    for _ in 0..30 {
        let (s, e) = d.tcp_raw("POST", "/api/users", "{}", "not-a-token");
        assert_eq!((s, code(&e)), (401, "unauthorized"), "{e}");
    }
    d.restart();
    let all = d.ok("GET", &format!("/api/audit?actor={actor}&limit=1000"), None);
    let records: Vec<Value> = all.as_array().unwrap().iter().filter(|r| r["actor"] == actor.as_str()).cloned().collect();
    let summaries: Vec<&Value> = records.iter().filter(|r| r["detail"].get("unrecorded").is_some()).collect();
    assert_eq!(summaries.len(), 1, "one count for the window: {records:?}");
    assert_eq!(summaries[0]["action"], "POST /api/users", "{}", summaries[0]);
    assert_eq!(summaries[0]["detail"], serde_json::json!({"status": 403, "error": "forbidden", "unrecorded": 30, "window_ms": 3_600_000}));
    let one_by_one = records.len() - summaries.len();
    assert_eq!(one_by_one, 2 * 20, "the first 20 refusals, each a command and its refusal");
    assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);

    let log = d.log();
    assert!(log.contains("refused 10 more requests without a valid bearer token"), "{log}");
    assert_eq!(log.matches("refused a request without a valid bearer token").count(), 20, "{log}");
    assert!(log.contains(r#"client="127.0.0.1""#), "the log names the client: {log}");
    assert!(!log.contains("not-a-token"), "a presented secret is never logged");
    let all = d.ok("GET", "/api/audit?limit=1000", None).to_string();
    assert!(!all.contains("anonymous"), "requests without a token are not audited");
}

/// An anchor the daemon cannot read when it starts (garbage in place of its record) is
/// not silently replaced: the start keeps it in `data/audit.head.unreadable`, and verify
/// fails, saying what to do, until that file is deleted.
#[test]
fn audit_verify_fails_while_an_anchor_a_start_could_not_read_is_kept() {
    let mut d = Daemon::start();
    d.user("before");
    d.stop();
    std::fs::write(d.path().join("data/audit.head"), b"\x00garbage, not an anchor\n").unwrap();
    d.spawn();
    assert!(d.log().contains("the chain's end was not checked at this start"), "{}", d.log());
    let v = d.ok("GET", "/api/audit/verify", None);
    assert_eq!((v["ok"].clone(), v["first_bad"].clone()), (Value::Bool(false), Value::Null), "{v}");
    assert!(v.get("unmet_anchor").is_none(), "{v}");
    assert_eq!(v["anchor_unreadable"]["file"], "data/audit.head.unreadable", "{v}");
    assert!(v["anchor_unreadable"]["error"].as_str().unwrap().starts_with("does not parse"), "{v}");
    d.cli()
        .args(["audit", "verify"])
        .assert()
        .code(1)
        .stderr(contains("audit_chain_broken"))
        .stderr(contains("could not be read when the daemon started"))
        .stderr(contains("delete data/audit.head.unreadable to accept the chain as it is"));
    // The anchor itself was laid down anew and follows the chain again.
    assert!(anchor(&d, "audit.head")["seq"].as_u64().unwrap() > 0);
    d.restart();
    d.cli().args(["audit", "verify"]).assert().code(1).stderr(contains("audit.head.unreadable"));
    std::fs::remove_file(d.path().join("data/audit.head.unreadable")).unwrap();
    d.cli().args(["audit", "verify"]).assert().success().stdout(contains("audit chain ok"));
}

/// `agt audit tail --actor` asks `GET /api/audit?actor=` for one actor's records, in a
/// tail and in pages after `--since` alike; an empty one is a usage error, not "nobody".
#[test]
fn cli_audit_tail_filters_by_actor() {
    let d = Daemon::start();
    let made = crate::util::unique();
    d.user(&format!("audited{made}"));
    let records = |args: &[&str]| -> Vec<Value> {
        let out = d.cli_current(&[&["-o", "json", "audit", "tail"][..], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    };
    let everyone = records(&["--limit", "1000"]);
    assert!(everyone.iter().any(|r| r["actor"] == "socket") && everyone.iter().any(|r| r["actor"] == "event:users"));
    for args in [&["--actor", "event:users"][..], &["--actor", "event:users", "--since", "0"]] {
        let theirs = records(args);
        assert!(!theirs.is_empty() && theirs.iter().all(|r| r["actor"] == "event:users"), "{args:?}: {theirs:?}");
        assert!(theirs.iter().any(|r| r["detail"].to_string().contains(&made)), "{args:?}: {theirs:?}");
    }
    assert!(records(&["--actor", "token:tok_nobody"]).is_empty());
    d.cli().args(["audit", "tail", "--actor", "nobody"]).assert().success().stdout("no audit records\n");
    d.cli().args(["audit", "tail", "--actor", " "]).assert().code(2).stderr(contains("--actor cannot be empty"));
}

/// Under durability "full" a command runs while its audit record is being committed. When
/// audit restarted in between (here crashed on purpose), the command had run but was
/// answered 503 "not acknowledged" and its record was lost: a client that retried such a
/// deposit deposited twice. Now the record is sent again and the command answered as
/// it ran, so the balance is exactly the deposits acknowledged, each with its record.
#[test]
fn a_command_that_ran_while_audit_restarted_keeps_its_record_and_its_answer() {
    let d = Daemon::with_config_env(
        "[supervisor]\nmax_restarts = 100\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n",
        &[("AGT_DURABILITY", "full")],
    );
    let user = d.user("audited");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let depositors: Vec<_> = (0..3)
        .map(|_| {
            let (sock, stop, path) = (d.sock(), stop.clone(), format!("/api/users/{user}/deposits"));
            std::thread::spawn(move || {
                let mut acknowledged = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
                    let (status, body) = crate::util::exchange(s, "POST", &path, Some(r#"{"asset": "USD", "amount": "1"}"#), &[]).unwrap();
                    match status {
                        201 | 200 => acknowledged += 1,
                        503 => assert!(body["error"]["message"].as_str().unwrap().contains("not run"), "{body}"),
                        _ => panic!("{status} {body}"),
                    }
                }
                acknowledged
            })
        })
        .collect();
    for _ in 0..6 {
        // Crash audit once deposits are flowing and it runs again.
        let before = d.ok("GET", &format!("/api/users/{user}/account"), None);
        crate::util::wait_until("a deposit after audit's restart", std::time::Duration::from_secs(10), || {
            let (s, now) = d.req("GET", &format!("/api/users/{user}/account"), None);
            (s == 200 && now != before).then_some(())
        });
        let (s, _) = d.req("POST", "/api/services/audit/crash", None);
        assert!(s == 202 || s == 503, "{s}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged: u64 = depositors.into_iter().map(|t| t.join().unwrap()).sum();
    let account = d.ok("GET", &format!("/api/users/{user}/account"), None);
    let total = crate::util::dec(&account["balances"][0]["total"]);
    assert_eq!(total, rust_decimal::Decimal::from(acknowledged), "deposits made: {account}; acknowledged: {acknowledged}");
    // The last crash may still wait in audit's mailbox (a 202 queues it): a read answered
    // after it was taken, not one refused while audit restarts, is what counts.
    let records = crate::util::wait_until("audit to answer after its last crash", std::time::Duration::from_secs(10), || {
        let (s, records) = d.req("GET", "/api/audit?actor=socket&limit=100000", None);
        (s == 200).then_some(records)
    });
    let path = format!("POST /api/users/{user}/deposits");
    let recorded =
        records.as_array().unwrap().iter().filter(|r| r["action"] == path.as_str() && r["detail"].get("status").is_none()).count();
    assert!(recorded as u64 >= acknowledged, "{recorded} audit records for {acknowledged} deposits acknowledged");
}

/// Once audit had failed (more restarts than `supervisor.max_restarts`), every command
/// was refused unrun for want of its audit record, `agt service restart audit` included,
/// though each refusal says to run just that: only a restart of the daemon brought audit
/// back (chaos.py --kinds crash, seed 4620). That restart now runs while audit does not,
/// and is audited all the same, under either durability.
#[test]
fn a_failed_audit_service_comes_back_with_the_command_its_refusals_name() {
    for durability in ["normal", "full"] {
        let d = Daemon::with_config_env("[supervisor]\nmax_restarts = 0\n", &[("AGT_DURABILITY", durability)]);
        // Under durability "full" the crash's own record goes down with audit: it ran, but
        // is not acknowledged (503).
        let (s, e) = d.req("POST", "/api/services/audit/crash", None);
        assert!(s == 202 || (durability == "full" && s == 503), "{durability}: {s} {e}");
        let state =
            || d.ok("GET", "/api/services", None).as_array().unwrap().iter().find(|s| s["name"] == "audit").unwrap()["state"].clone();
        crate::util::wait_until("audit to fail", std::time::Duration::from_secs(10), || (state() == "failed").then_some(()));
        let (s, e) = d.req("POST", "/api/users", Some(serde_json::json!({"username": "late", "email": "late@example.com"})));
        assert_eq!((s, crate::util::code(&e)), (503, "service_unavailable"), "{durability}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("`agt service restart audit` starts it again"), "{e}");

        d.cli().args(["service", "restart", "audit"]).assert().success().stdout(contains("restarting audit"));
        assert_eq!(state(), "running", "{durability}");
        d.user("late");
        let records = d.ok("GET", "/api/audit?limit=1000", None);
        let restarts = records.as_array().unwrap().iter().filter(|r| r["action"] == "POST /api/services/audit/restart").count();
        assert_eq!(restarts, 1, "{durability}: the restart is audited once: {records}");
        assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true, "{durability}");
    }
}
