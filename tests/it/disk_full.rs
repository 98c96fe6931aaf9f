//! A full disk, by fault injection (`AGT_FAULT_DISK_FULL`: while its file exists every
//! store's write fails with SQLITE_FULL and every journal's append is cut short half-way,
//! ENOSPC), so no root and no small filesystem is needed. `scripts/disk-full.py` does
//! the same on a real full tmpfs, under load.

use crate::util::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A daemon whose disk is full while `home/disk-full` exists; the supervisor's backoff is
/// short, so that the old five-failures-in-a-minute limit is reached within the test.
fn daemon() -> (Daemon, std::path::PathBuf) {
    let mut dm = Daemon::unstarted("[supervisor]\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n", &[]);
    let flag = dm.path().join("disk-full");
    dm.env.push(("AGT_FAULT_DISK_FULL".into(), flag.display().to_string()));
    dm.spawn();
    (dm, flag)
}

fn says_disk_full(v: &serde_json::Value) -> bool {
    v["error"]["message"].as_str().is_some_and(|m| m.contains("disk") && m.contains("full"))
}

/// Writes on a full disk are refused with 503 `service_unavailable` saying the disk is
/// full, for as long as it lasts, without any service being marked `failed` (every
/// store's service was failed for good within a second of the disk filling, and nothing
/// resumed once there was room); once there is room, writes go through again with no
/// restart. The journals' appends cut short meanwhile are cut back: a placement
/// acknowledged after them survives a SIGKILL (a torn frame left in the journal cut off
/// every record after it at the next start).
#[test]
fn a_full_disk_refuses_writes_with_503_and_agt_resumes_by_itself_once_there_is_room() {
    let (mut dm, flag) = daemon();
    let sym = dm.symbol("0.01", "1");
    let u = dm.user("full");
    dm.deposit(&u, "USD", "10000");
    let (s, before) = dm.place(&u, &sym, "buy", "1", Some("90.00"));
    assert_eq!(s, 201, "{before}");

    std::fs::write(&flag, b"").unwrap();
    // Writes keep coming for two and a half seconds: more failures than the
    // supervisor's limit, and more than one retry of the full disk's. And for more than
    // ten of them, however long a loaded machine takes to send them (it once counted how
    // many fitted in the time, which a slow machine could fall short of).
    let until = Instant::now() + Duration::from_millis(2500);
    let mut refused = 0;
    while Instant::now() < until || refused <= 10 {
        let (s, v) = dm.place(&u, &sym, "buy", "1", Some("91.00"));
        assert_eq!(s, 503, "a placement on a full disk: {v}");
        assert_eq!(code(&v), "service_unavailable");
        assert!(says_disk_full(&v), "the 503 says the disk is full: {v}");
        let (s, v) = dm.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": "USD", "amount": "1"})));
        assert_eq!(s, 503, "a deposit on a full disk: {v}");
        assert!(says_disk_full(&v), "the 503 says the disk is full: {v}");
        refused += 2;
    }
    let services = dm.ok("GET", "/api/services", None);
    let failed: Vec<_> = services.as_array().unwrap().iter().filter(|s| s["state"] == "failed").map(|s| s["name"].clone()).collect();
    assert!(failed.is_empty(), "no service is marked failed on a full disk: {services}");
    let out = dm.cli().args(["user", "deposit", &u, "USD", "5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("disk") && stderr.contains("full"), "the CLI says the disk is full: {stderr}");

    std::fs::remove_file(&flag).unwrap();
    let after = wait_until("a placement once there is room", Duration::from_secs(10), || {
        let (s, v) = dm.place(&u, &sym, "buy", "2", Some("92.00"));
        (s == 201).then_some(v)
    });
    // SIGKILL at once: the stores may not all hold it yet; the journal's redo must.
    dm.kill9();
    dm.spawn();
    for o in [&before, &after] {
        let id = o["order_id"].as_str().unwrap();
        let (s, now) = dm.req("GET", &format!("/api/orders/{id}"), None);
        assert_eq!(s, 200, "acknowledged order {id} after the restart: {now}");
        assert_eq!(now["status"], "new");
        assert_eq!(now["quantity"], o["quantity"]);
    }
    let open = dm.ok("GET", &format!("/api/orders?user_id={u}&status=all"), None);
    assert_eq!(open.as_array().unwrap().len(), 2, "nothing refused was stored: {open}");
    let acct = dm.ok("GET", &format!("/api/users/{u}/account"), None);
    let usd = acct["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone();
    assert_eq!(dec(&usd["total"]), dec(&json!("10000")), "no refused deposit counted: {usd}");
    assert_eq!(dec(&usd["held"]), dec(&json!("274")), "holds are the two open orders: {usd}");
    assert_eq!(dm.ok("GET", "/api/audit/verify", None)["ok"], true);
}

/// `agt config set` on a full disk: 503 saying the disk is full (it said "restarting or
/// down; retry shortly"). Where agt.toml itself cannot be written for want of space the
/// answer is a 503 too, not the 500 of another I/O failure (`config::service::not_saved`).
#[test]
fn config_set_on_a_full_disk_is_a_503_saying_so() {
    let (dm, flag) = daemon();
    std::fs::write(&flag, b"").unwrap();
    let (s, v) = dm.req("PUT", "/api/config", Some(json!({"risk.max_order_notional": "123456"})));
    std::fs::remove_file(&flag).unwrap();
    assert_eq!(s, 503, "{v}");
    assert!(says_disk_full(&v), "{v}");
}

/// Audit's store alone full (the bus stores the events, audit cannot record them): once
/// it can write again, audit records every event of the stretch and the ones after. Its
/// retries on the full disk left the restart count still, so its feed went on past the
/// events the failed batches and the refusals lost, and audit skipped every later event
/// until the daemon restarted.
#[test]
fn audit_records_every_event_of_a_stretch_its_store_was_full() {
    let (dm, flag) = daemon();
    let before = dm.user("before");
    let recorded = |user: &str| {
        let records = dm.ok("GET", "/api/audit?limit=1000", None);
        records.as_array().unwrap().iter().any(|r| r["action"] == "USER_CREATED" && r.to_string().contains(user))
    };
    // Audit idle when its store fills: the first command after it is journalled and
    // answered before audit's first write fails.
    wait_until("audit to record the user made before the stretch", Duration::from_secs(15), || recorded(&before).then_some(()));
    std::fs::write(&flag, "audit").unwrap();
    // Once audit has failed on its full store, each of its starts fails on chaining the
    // journal, and commands are refused unrun (503) until there is room: the first
    // is made, the others only while audit has not yet tried to write. (All four were
    // expected to be made: under load, audit failed between two of them.)
    let mut during = Vec::new();
    for i in 0..4 {
        let name = format!("during{i}{}", unique());
        let (s, v) = dm.req("POST", "/api/users", Some(json!({"username": name, "email": format!("{name}@example.com")})));
        match s {
            201 => during.push(v["user_id"].as_str().unwrap().to_string()),
            503 => assert!(i > 0 && code(&v) == "service_unavailable", "only a command after the first is refused: {v}"),
            _ => panic!("a user made while audit's store is full: {s} {v}"),
        }
    }
    wait_until("audit to find its store full", Duration::from_secs(10), || {
        let services = dm.ok("GET", "/api/services", None);
        let audit = services.as_array().unwrap().iter().find(|s| s["name"] == "audit").unwrap().clone();
        audit["last_error"].as_str().is_some_and(|e| e.contains("full")).then_some(())
    });
    std::fs::remove_file(&flag).unwrap();
    // Refused (503) until audit has written again.
    let after = wait_until("a user made once audit can write", Duration::from_secs(15), || {
        let name = format!("after{}", unique());
        let (s, u) = dm.req("POST", "/api/users", Some(json!({"username": name, "email": format!("{name}@example.com")})));
        (s == 201).then(|| u["user_id"].as_str().unwrap().to_string())
    });
    wait_until("audit to record the user made after the stretch", Duration::from_secs(15), || recorded(&after).then_some(()));
    for u in during.iter().chain([&before]) {
        assert!(recorded(u), "USER_CREATED of {u} is in the audit log");
    }
    assert_eq!(dm.ok("GET", "/api/audit/verify", None)["ok"], true);
}

/// `agt daemon run` and `agt daemon start` on a full disk say which disk is full and to
/// free space there (they said SQLite's bare "database or disk is full", or "disk I/O
/// error", naming neither), with exit code 1; once there is room, the daemon starts.
#[test]
fn a_start_on_a_full_disk_names_the_disk_and_says_to_free_space() {
    let mut dm = Daemon::unstarted("", &[]);
    let flag = dm.path().join("disk-full");
    std::fs::write(&flag, b"").unwrap();
    let data = dm.path().join("data");
    for args in [&["daemon", "run"][..], &["daemon", "start", "--timeout", "20"]] {
        let out = dm.cli().args(args).env("AGT_FAULT_DISK_FULL", &flag).timeout(Duration::from_secs(60)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "agt {args:?}: {stderr}");
        assert!(stderr.contains(&format!("the disk holding {} is full", data.display())), "agt {args:?} names the disk: {stderr}");
        assert!(stderr.contains("Free space there"), "agt {args:?} says what to do: {stderr}");
    }
    std::fs::remove_file(&flag).unwrap();
    dm.env.push(("AGT_FAULT_DISK_FULL".into(), flag.display().to_string()));
    dm.spawn();
    assert_eq!(dm.ok("GET", "/health", None)["status"], "healthy");
}

/// `/ready` stays 503 (and `/health` degraded) for as long as the disk is full, on a
/// daemon that writes nothing meanwhile: it answered 200 two seconds after the last
/// failed write, though the next write would fail as well. Only the users' store is
/// full, so nothing but the one refused request fails: the daemon is idle after it.
#[test]
fn ready_stays_503_while_the_disk_is_full_and_is_200_once_there_is_room() {
    let (dm, flag) = daemon();
    std::fs::write(&flag, "users").unwrap();
    let (s, v) = dm.req("POST", "/api/users", Some(json!({"username": "refused", "email": "refused@example.com"})));
    assert_eq!(s, 503, "{v}");
    assert!(says_disk_full(&v), "{v}");
    let full_since = Instant::now();
    let mut looks = 0;
    // Past the two seconds after which it used to answer 200, and more than ten looks
    // however long a loaded machine takes for each (it once counted how many fitted in
    // the time).
    while full_since.elapsed() < Duration::from_millis(3500) || looks <= 10 {
        let (s, v) = dm.req("GET", "/ready", None);
        assert_eq!(s, 503, "/ready {:?} after the failed write, the disk still full: {v}", full_since.elapsed());
        assert!(says_disk_full(&v), "{v}");
        assert_eq!(dm.ok("GET", "/health", None)["status"], "degraded");
        looks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_file(&flag).unwrap();
    wait_until("/ready once there is room", Duration::from_secs(10), || (dm.req("GET", "/ready", None).0 == 200).then_some(()));
    assert_eq!(dm.ok("GET", "/health", None)["status"], "healthy");
    dm.user("after");
}

/// A `config set` whose record cannot be committed (config's store full, `agt.toml`
/// writable) answers 503, and nothing changed: the file is as it was, byte for byte, and
/// the setting keeps its value, now and once the config service runs again. The set
/// wrote the file and made the change live before the failed commit; the caller was told
/// "nothing was stored", and the restarted service then recorded and applied it.
#[test]
fn a_config_set_that_cannot_be_recorded_leaves_the_file_and_the_setting_as_they_were() {
    let (dm, flag) = daemon();
    let file = dm.path().join("agt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let was = dm.ok("GET", "/api/config", None)["risk"]["max_open_orders"].clone();
    assert!(was.is_number(), "{was}");
    std::fs::write(&flag, "config").unwrap();
    let (s, v) = dm.req("PUT", "/api/config", Some(json!({"risk.max_open_orders": 7})));
    assert_eq!(s, 503, "{v}");
    assert!(says_disk_full(&v), "{v}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "agt.toml is as it was");
    wait_until("config to fail on its full store", Duration::from_secs(10), || {
        let services = dm.ok("GET", "/api/services", None);
        let config = services.as_array().unwrap().iter().find(|s| s["name"] == "config").unwrap().clone();
        config["last_error"].as_str().is_some_and(|e| e.contains("full")).then_some(())
    });
    std::fs::remove_file(&flag).unwrap();
    let now = wait_until("the config service once there is room", Duration::from_secs(10), || {
        let (s, v) = dm.req("GET", "/api/config", None);
        (s == 200).then_some(v)
    });
    assert_eq!(now["risk"]["max_open_orders"], was, "the refused set is not in force: {now}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "agt.toml is as it was");
    let changed = dm.events("CONFIG_CHANGED");
    assert!(changed.is_empty(), "the refused set is not announced: {changed:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dm.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!leftovers.iter().any(|n| n.to_string_lossy().contains("before-set")), "{leftovers:?}");
    // Once there is room the same set goes through, and is in the file.
    let set = dm.ok("PUT", "/api/config", Some(json!({"risk.max_open_orders": 7})));
    assert_eq!(set["risk"]["max_open_orders"], 7);
    assert!(std::fs::read_to_string(&file).unwrap().contains("max_open_orders = 7"));
    let leftovers: Vec<_> = std::fs::read_dir(dm.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!leftovers.iter().any(|n| n.to_string_lossy().contains("before-set")), "the kept file is gone once recorded: {leftovers:?}");
}

/// A start that must put `agt.toml` back after a `config set` a SIGKILL cut off, on a
/// full disk (only the put-back's writes fail: the fault point's flag names `agt.toml`),
/// says so as any start on a full disk does, naming the disk of `agt.toml`'s folder, with
/// exit code 1, and changes nothing; once there is room, the next start puts it back.
#[test]
fn a_start_that_cannot_put_back_a_cut_off_config_set_names_the_full_disk() {
    let mut dm = Daemon::with_config_env("", &[("AGT_FAULT_CONFIG_SET", "kill:written")]);
    let file = dm.path().join("agt.toml");
    let before = std::fs::read_to_string(&file).unwrap();
    let out = dm.cli().args(["config", "set", "risk.max_open_orders", "77"]).timeout(Duration::from_secs(30)).output().unwrap();
    assert!(!out.status.success(), "the daemon was killed before the set's record: {out:?}");
    dm.kill9();
    let cut_off = std::fs::read_to_string(&file).unwrap();
    assert!(cut_off.contains("max_open_orders = 77"), "{cut_off}");
    let flag = dm.path().join("disk-full");
    std::fs::write(&flag, "agt.toml").unwrap();
    for args in [&["daemon", "run"][..], &["daemon", "start", "--timeout", "20"]] {
        let out = dm.cli().args(args).env("AGT_FAULT_DISK_FULL", &flag).timeout(Duration::from_secs(60)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "agt {args:?}: {stderr}");
        assert!(stderr.contains(&format!("the disk holding {} is full", dm.path().display())), "agt {args:?} names the disk: {stderr}");
        assert!(stderr.contains("Free space there") && stderr.contains("agt.toml"), "agt {args:?}: {stderr}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), cut_off, "agt {args:?}: nothing was put back yet");
        assert!(dm.path().join(".agt.toml.before-set").exists(), "agt {args:?}: the file to put back is kept");
    }
    std::fs::remove_file(&flag).unwrap();
    dm.env = vec![("AGT_FAULT_DISK_FULL".into(), flag.display().to_string())];
    dm.spawn();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "put back once there is room");
    assert_ne!(dm.ok("GET", "/api/config", None)["risk"]["max_open_orders"], 77);
}
