//! The audit chain's anchor (`data/audit.head`): a tail cut from `audit.db` while the
//! daemon is stopped is reported by `verify`, and an anchor that only lags is not.

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
