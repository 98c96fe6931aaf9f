//! Lifecycle: start, one daemon per home, stale files after SIGKILL, graceful stop.

use crate::util::*;
use predicates::prelude::PredicateBooleanExt;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn socket_is_private_and_agtd_json_describes_the_daemon() {
    let d = Daemon::start();
    let mode = std::fs::metadata(d.sock()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let data = std::fs::metadata(d.path().join("data")).unwrap().permissions().mode() & 0o777;
    assert_eq!(data, 0o700, "the stores (webhook keys, e-mails, balances) are the owner's alone");
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("agtd.json")).unwrap()).unwrap();
    assert_eq!(info["pid"].as_u64().unwrap(), d.pid() as u64);
    assert!(info["http"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!info["http"].as_str().unwrap().ends_with(":0"), "port 0 must be reported as the bound port");
    assert_eq!(std::fs::read_to_string(d.path().join("agtd.pid")).unwrap().trim(), d.pid().to_string());
    for db in ["users", "auth", "audit", "config", "health", "events", "orders", "trading", "risk", "market", "notify"] {
        assert!(d.path().join(format!("data/{db}.db")).exists(), "data/{db}.db missing");
    }
    // Every file the daemon made is its owner's alone, whichever service made it when.
    for dir in ["data", "data/trading-journal", "data/audit-journal", "logs"] {
        for f in std::fs::read_dir(d.path().join(dir)).unwrap().flatten() {
            // A file listed may be gone by its `stat` (a temporary file renamed into
            // place, a segment pruned): what is checked is what stays.
            let Ok(meta) = f.metadata() else { continue };
            let mode = meta.permissions().mode() & 0o777;
            let want = if f.file_type().unwrap().is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{dir}/{:?} is {mode:o}", f.file_name());
        }
    }
    let logs: Vec<_> = std::fs::read_dir(d.path().join("logs")).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert!(logs.iter().any(|f| f.starts_with("agtd.log.")), "no daily log file in {logs:?}");
}

/// A home whose `data/` an older agt or a loose umask left readable by others is made
/// private again when the daemon starts.
#[test]
fn a_readable_data_folder_is_made_private_at_start() {
    let mut d = Daemon::start();
    d.kill9();
    let data = d.path().join("data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.spawn();
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
}

/// A config file with a webhook secret that others can read is named in the log; one
/// that only its owner reads, or that holds no secret, is not.
#[test]
fn a_readable_config_with_webhook_secrets_is_warned_about() {
    const WARNING: &str = "holds webhook secrets and others can read it";
    let hook = "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"TRADE_EXECUTED\"]\n";
    // The test harness writes agt.toml 0644, as an editor under the usual umask would.
    let mut d = Daemon::with_config(&format!("{hook}secret = \"s3cret\"\n"));
    let config = d.path().join("agt.toml");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(d.log().matches(WARNING).count(), 1, "{}", d.log());
    assert!(!d.log().contains("s3cret"), "the secret itself is never logged");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.kill9();
    d.spawn();
    assert_eq!(d.log().matches(WARNING).count(), 1, "no second warning once the file is private");

    let plain = Daemon::with_config(hook);
    assert!(!plain.log().contains(WARNING), "no secret, no warning");
    // A `config set` that writes a secret into the readable file makes it private, and
    // says so.
    let webhooks = serde_json::json!([{"url": "http://127.0.0.1:9/hook", "events": ["TRADE_EXECUTED"], "secret": "n3w"}]);
    plain.ok("PUT", "/api/config", Some(serde_json::json!({ "notify.webhooks": webhooks })));
    let file = plain.path().join("agt.toml");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(plain.log().contains("now holds a webhook secret and others could read it: its mode is now 600 (was 644)"), "{}", plain.log());
    assert!(!plain.log().contains("n3w"), "the secret itself is never logged");
}

#[test]
fn a_second_daemon_on_the_same_home_refuses_and_leaves_the_first_alone() {
    let d = Daemon::start();
    let out = std::process::Command::new(BIN).args(["--home", d.path().to_str().unwrap(), "daemon", "run"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.req("GET", "/ready", None).0, 200);
}

#[test]
fn sigkill_leaves_stale_files_that_the_next_start_cleans_up() {
    let mut d = Daemon::start();
    let user = d.user("keep");
    d.kill9();
    assert!(d.sock().exists(), "the killed daemon's socket should still be there");
    d.spawn();
    assert_eq!(d.ok("GET", &format!("/api/users/{user}"), None)["user_id"], user.as_str());
}

#[test]
fn sigterm_stops_gracefully_and_removes_the_socket_and_pid_files() {
    let mut d = Daemon::start();
    assert!(d.stop().success());
    assert!(!d.sock().exists());
    assert!(!d.path().join("agtd.pid").exists());
    assert!(!d.path().join("agtd.json").exists());
}

/// A service that fails while it stops is not restarted: its stop was a message the
/// failed incarnation had taken, so a new one waited for a stop that never came and SIGTERM
/// (or `agt daemon stop`) never ended. Here the trading lane's journal segment is deleted
/// under it, so the prune of its last flush fails.
#[test]
fn a_service_that_fails_while_stopping_does_not_hang_the_stop() {
    let mut d = Daemon::start();
    let u = d.user("stopper");
    d.deposit(&u, "USD", "100");
    let (s, o) = d.place(&u, "AAPL", "buy", "1", Some("10.00"));
    assert_eq!(s, 201, "{o}");
    for segment in std::fs::read_dir(d.path().join("data/trading-journal")).unwrap() {
        std::fs::remove_file(segment.unwrap().path()).unwrap();
    }
    assert!(d.stop_within(Duration::from_secs(20)).is_some(), "the daemon did not stop within 20 s of SIGTERM");
    let log = d.log();
    assert!(log.contains("the daemon is stopping: not restarted"), "{log}");
}

/// `kill -9` and `agt daemon start` at once, again and again: while the killed daemon's
/// threads exit, the kernel's list of locks may no longer name it and its main thread
/// may already be a zombie; the start waits for it rather than call the home taken (on
/// two busy cores that happened in 7 of 40 tries).
#[test]
fn a_start_right_after_a_kill_waits_for_the_killed_daemon() {
    // A home with the tests' config, its daemons started by `agt daemon start`.
    let d = Daemon::unstarted("", &[]);
    d.cli().args(["daemon", "start"]).assert().success();
    for _ in 0..8 {
        let pid: i32 = std::fs::read_to_string(d.path().join("agtd.pid")).unwrap().trim().parse().unwrap();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        d.cli().args(["daemon", "start"]).assert().success();
    }
    d.cli().args(["daemon", "stop"]).assert().success();
}

#[test]
fn cli_daemon_start_status_stop() {
    let home = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
    std::fs::write(home.path().join("agt.toml"), BASE_CONFIG).unwrap();
    let agt = |args: &[&str]| {
        let mut c = cli_at(home.path());
        c.args(args);
        c
    };
    agt(&["daemon", "status"]).assert().code(3);
    agt(&["daemon", "start"]).assert().success();
    let mode = |p: &str| std::fs::metadata(home.path().join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("logs"), mode("logs/daemon.out")), (0o700, 0o600), "what the daemon prints is private too");
    agt(&["daemon", "status"]).assert().success();
    agt(&["health"]).assert().success();
    // `kill -9` and a start straight after: the killed daemon may still be tearing down,
    // which is not a daemon that runs.
    let pid: i32 = std::fs::read_to_string(home.path().join("agtd.pid")).unwrap().trim().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    agt(&["daemon", "start"]).assert().success();
    agt(&["health"]).assert().success();
    agt(&["daemon", "stop"]).assert().success();
    agt(&["daemon", "status"]).assert().code(3);
    agt(&["health"]).assert().code(3).stderr(predicates::str::contains("daemon"));
    // Two starts at once: one daemon, and the other start says so as `already_running`.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let h = home.path().to_path_buf();
            std::thread::spawn(move || {
                std::process::Command::new(BIN).arg("--home").arg(h).args(["daemon", "start"]).env_remove("AGT_URL").output().unwrap()
            })
        })
        .collect();
    let outs: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(outs.iter().filter(|o| o.status.success()).count(), 1, "{outs:?}");
    let loser = outs.iter().find(|o| !o.status.success()).unwrap();
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("already_running") && !err.contains("(pid )"), "{err}");
    let out = agt(&["-o", "json", "daemon", "stop"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!((v["stopped"].as_bool(), v["pid"].is_u64()), (Some(true), true), "{v}");
}

#[test]
fn a_bad_config_stops_start_up_with_a_message_naming_file_and_key() {
    let home = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
    std::fs::write(home.path().join("agt.toml"), "[risk]\nmax_open_orders = \"lots\"\n").unwrap();
    let out = std::process::Command::new(BIN).args(["--home", home.path().to_str().unwrap(), "daemon", "run"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agt.toml") && err.contains("risk.max_open_orders"), "{err}");
    std::fs::write(home.path().join("agt.toml"), "[risk]\nmax_open_order = 3\n").unwrap();
    let out = std::process::Command::new(BIN).args(["--home", home.path().to_str().unwrap(), "daemon", "run"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_open_order"));
    // A mistyped variable would leave the default in force unnoticed: refused the same way.
    std::fs::write(home.path().join("agt.toml"), "").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--home", home.path().to_str().unwrap(), "daemon", "run"])
        .env("AGT_RISK_MAX_OPEN_ORDRS", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AGT_RISK_MAX_OPEN_ORDRS") && err.contains("did you mean AGT_RISK_MAX_OPEN_ORDERS?"), "{err}");
}

/// A bus that cannot commit (here another process holds `events.db`'s write lock past
/// the busy timeout, as a backup tool might) keeps its events and tries again: once it
/// can, every event is there, in order, each once.
#[test]
fn events_the_bus_could_not_commit_at_first_are_stored_once_it_can() {
    let dm = Daemon::start();
    let u = dm.user("bus");
    dm.deposit(&u, "USD", "1");
    let lock = rusqlite::Connection::open(dm.path().join("data/events.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for amount in ["2", "3", "4"] {
        dm.deposit(&u, "USD", amount);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dm.log().contains("the event bus could not commit") {
        assert!(std::time::Instant::now() < deadline, "the bus never failed on the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    dm.deposit(&u, "USD", "5"); // queued behind the failed batch
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let deposits = loop {
        let mine: Vec<serde_json::Value> =
            dm.events("ACCOUNT_DEPOSITED").into_iter().filter(|e| e["data"]["user_id"].as_str() == Some(u.as_str())).collect();
        if mine.len() >= 5 || std::time::Instant::now() > deadline {
            break mine;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let amounts: Vec<&str> = deposits.iter().map(|e| e["data"]["amount"].as_str().unwrap_or("?")).collect();
    assert_eq!(amounts, ["1", "2", "3", "4", "5"], "{deposits:?}");
    assert!(deposits.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()), "in order: {deposits:?}");
}

/// A store's write lock held a moment by someone else (`sqlite3` opened by an operator,
/// a backup tool) makes its service wait, not fail: creating a user reads before it
/// writes, and a transaction begun as a read gave up at once, restarting the service.
#[test]
fn a_command_waits_for_a_store_locked_a_moment_by_another_process() {
    let dm = Daemon::start();
    let lock = rusqlite::Connection::open(dm.path().join("data/users.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        lock.execute_batch("ROLLBACK").unwrap();
    });
    let name = format!("locked{}", unique());
    let (status, body) = dm.req("POST", "/api/users", Some(serde_json::json!({"username": name, "email": format!("{name}@example.com")})));
    release.join().unwrap();
    assert_eq!(status, 201, "{body}");
    let services = dm.ok("GET", "/api/services", None);
    let users = services.as_array().unwrap().iter().find(|s| s["name"] == "users").unwrap();
    assert_eq!(users["restarts"], 0, "{users}");
}

/// Field `field` (numbered as in proc(5), from 3 on) of `/proc/PID/task/*/stat` for each
/// of the daemon's threads, by name.
fn stat_by_thread<T: std::str::FromStr>(pid: u32, field: usize) -> std::collections::BTreeMap<String, T>
where
    T::Err: std::fmt::Debug,
{
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (std::fs::read_to_string(task.join("comm")), std::fs::read_to_string(task.join("stat"))) else {
            continue;
        };
        // The name (field 2) is in parentheses and may hold spaces: count after it.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        out.insert(name.trim().to_string(), after_name.split(' ').nth(field - 3).unwrap().parse().unwrap());
    }
    out
}

/// `by_thread` of the daemon's threads once every store's checkpointer runs under its
/// own name (a new thread names itself once it runs: until then it has its creator's).
fn once_every_checkpointer_runs<T>(
    dm: &Daemon,
    by_thread: fn(u32) -> std::collections::BTreeMap<String, T>,
) -> std::collections::BTreeMap<String, T> {
    let stores = std::fs::read_dir(dm.path().join("data"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "db"))
        .count();
    wait_until("a checkpointer per store", Duration::from_secs(10), || {
        let threads = by_thread(dm.pid());
        (threads.keys().filter(|t| t.starts_with("ckpt-")).count() == stores).then_some(threads)
    })
}

/// The nice value of each of the daemon's threads, by name.
fn nice_by_thread(pid: u32) -> std::collections::BTreeMap<String, i32> {
    stat_by_thread(pid, 19)
}

/// Threads nobody's answer waits for run lower than the order path
/// (`trading.background_nice`): every store's checkpointer among them, the trading
/// lane's too, and audit, except under "full" durability, where each command waits for
/// its commit. 0 runs every thread alike.
#[test]
#[cfg(target_os = "linux")]
fn background_threads_run_at_a_lower_priority_than_the_order_path() {
    let dm = Daemon::with_config("[trading]\nbackground_nice = 7\n");
    let nice = once_every_checkpointer_runs(&dm, nice_by_thread);
    // The main thread runs as the test that started the daemon.
    let base = nice["agt"];
    for (thread, n) in &nice {
        if thread.starts_with("ckpt-") {
            assert_eq!(*n, (base + 7).min(19), "{thread}, lowered once: {nice:?}");
        }
    }
    for lowered in ["bus", "followers", "svc-market", "svc-notify", "svc-health", "svc-audit"] {
        assert_eq!(nice[lowered], (base + 7).min(19), "{lowered}: {nice:?}");
    }
    for kept in ["svc-lane", "agtd", "svc-users", "svc-auth", "svc-config"] {
        assert_eq!(nice[kept], base, "{kept}: {nice:?}");
    }
    let full = Daemon::with_config_env("[trading]\nbackground_nice = 7\n", &[("AGT_DURABILITY", "full")]);
    let nice = nice_by_thread(full.pid());
    assert_eq!(nice["svc-audit"], nice["agt"], "commands wait for audit's commit: {nice:?}");
    assert_eq!(nice["ckpt-audit"], (nice["agt"] + 7).min(19), "{nice:?}");

    let alike = Daemon::with_config("[trading]\nbackground_nice = 0\n");
    let nice = nice_by_thread(alike.pid());
    assert!(nice.values().all(|n| *n == nice["agt"]), "{nice:?}");
    alike.cli().args(["config", "set", "trading.background_nice", "20"]).assert().code(1).stderr(predicates::str::contains("from 0 to 19"));
}

/// The cores a thread may run on, from a `Cpus_allowed_list` line's value ("0-1,4").
fn cores_in(list: &str) -> Vec<usize> {
    let mut cores = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        cores.extend(from.parse::<usize>().unwrap()..=to.parse::<usize>().unwrap());
    }
    cores
}

/// The cores each of the daemon's threads may run on, by name.
fn cores_by_thread(pid: u32) -> std::collections::BTreeMap<String, Vec<usize>> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(status)) = (std::fs::read_to_string(task.join("comm")), std::fs::read_to_string(task.join("status"))) else {
            continue;
        };
        let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap();
        out.insert(name.trim().to_string(), cores_in(list));
    }
    out
}

/// The threads nobody's answer waits for run on the last quarter of the daemon's cores
/// (at least one, when it has two or more: `trading.confine_background`), every store's
/// checkpointer among them; the order path keeps every core. `false` leaves every thread
/// on every core.
#[test]
#[cfg(target_os = "linux")]
fn background_threads_run_on_fewer_cores_than_the_order_path() {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let all = cores_in(status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap());
    let background = if all.len() >= 2 { all[all.len() - (all.len() / 4).max(1)..].to_vec() } else { all.clone() };
    let dm = Daemon::start();
    let cores = once_every_checkpointer_runs(&dm, cores_by_thread);
    for (thread, c) in cores.iter().filter(|(t, _)| t.starts_with("ckpt-")) {
        assert_eq!(*c, background, "{thread}: {cores:?}");
    }
    for confined in ["bus", "followers", "svc-market", "svc-notify", "svc-health", "svc-audit"] {
        assert_eq!(cores[confined], background, "{confined}: {cores:?}");
    }
    for kept in ["svc-lane", "agtd", "svc-users", "svc-auth", "svc-config", "agt"] {
        assert_eq!(cores[kept], all, "{kept}: {cores:?}");
    }
    let free = Daemon::with_config("[trading]\nconfine_background = false\n");
    let cores = cores_by_thread(free.pid());
    assert!(cores.values().all(|c| *c == all), "{cores:?}");
}

/// The scheduling class of each of the daemon's threads, by name (`chrt`'s numbers:
/// 0 normal, 3 batch).
fn class_by_thread(pid: u32) -> std::collections::BTreeMap<String, u32> {
    stat_by_thread(pid, 41)
}

/// Every thread of the daemon runs in the batch class (`trading.sched_batch`, on by
/// default), so that a thread woken by a hand-off does not preempt the one handing over;
/// `false` leaves them all in the class they started in (the test's).
#[test]
#[cfg(target_os = "linux")]
fn the_daemons_threads_run_in_the_batch_class_unless_told_not_to() {
    const BATCH: u32 = 3;
    // SAFETY: pid 0 asks about the calling thread.
    let inherited = unsafe { libc::sched_getscheduler(0) } as u32;
    let dm = Daemon::start();
    let class = class_by_thread(dm.pid());
    for name in ["agt", "agtd", "svc-lane", "bus", "svc-audit", "ckpt-orders", "svc-market"] {
        assert_eq!(class.get(name), Some(&BATCH), "{name}: {class:?}");
    }
    assert!(class.values().all(|c| *c == BATCH), "{class:?}");
    let normal = Daemon::with_config("[trading]\nsched_batch = false\n");
    let class = class_by_thread(normal.pid());
    assert!(class.values().all(|c| *c == inherited), "{class:?}");
}

/// A key the daemon's environment sets (`AGT_<KEY>`) wins over agt.toml at every start, so
/// a `config set` of it is refused rather than answered ok and undone at the next start.
#[test]
fn a_config_set_of_a_key_the_environment_sets_is_refused() {
    let d = Daemon::with_config_env("", &[("AGT_RISK_PRICE_BAND_PCT", "15")]);
    let (s, e) = d.req("PUT", "/api/config", Some(json!({"risk.price_band_pct": "20", "risk.max_open_orders": 5})));
    assert_eq!((s, code(&e)), (409, "set_by_environment"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("AGT_RISK_PRICE_BAND_PCT"), "{e}");
    d.cli().args(["risk", "set", "price_band_pct", "20"]).assert().code(1).stderr(predicates::str::contains("AGT_RISK_PRICE_BAND_PCT"));
    let limits = d.ok("GET", "/api/risk/limits", None);
    assert_eq!(
        (limits["price_band_pct"].as_str(), limits["max_open_orders"].as_u64()),
        (Some("15"), Some(100)),
        "nothing changed: {limits}"
    );
    d.ok("PUT", "/api/config", Some(json!({"risk.max_open_orders": 5})));
}

/// The daemon's pid as its home's `agtd.pid` records it.
fn recorded_pid(home: &std::path::Path) -> u32 {
    std::fs::read_to_string(home.join("agtd.pid")).unwrap().trim().parse().unwrap()
}

/// A process named `daemon` (argv[0]), as the old pid check took for an agt daemon.
fn decoy() -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sleep").arg0("daemon").arg("100").spawn().unwrap()
}

/// A daemon killed with SIGKILL leaves its pid files; a live process given that pid (here
/// written into them) is not this home's daemon: no daemon holds the home's lock, so
/// `stop` signals nobody, `status` says not running and `start` starts one.
#[test]
fn stop_and_status_trust_the_homes_lock_not_a_stale_pid() {
    let mut d = Daemon::start();
    d.kill9();
    let mut other = decoy();
    let pid = other.id();
    std::fs::write(d.path().join("agtd.pid"), format!("{pid}\n")).unwrap();
    let mut info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("agtd.json")).unwrap()).unwrap();
    info["pid"] = json!(pid);
    std::fs::write(d.path().join("agtd.json"), info.to_string()).unwrap();

    d.cli().args(["daemon", "stop"]).assert().success().stdout(predicates::str::contains("not running"));
    assert!(other.try_wait().unwrap().is_none(), "daemon stop signalled a process that is not the home's daemon");
    d.cli().args(["daemon", "status"]).assert().code(3).stderr(predicates::str::contains("not running"));
    d.cli().args(["daemon", "start"]).assert().success();
    let started = recorded_pid(d.path());
    assert_ne!(started, pid);
    d.cli().args(["daemon", "stop"]).assert().success().stdout(predicates::str::contains(format!("stopped (pid {started})")));
    assert!(other.try_wait().unwrap().is_none(), "only the home's own daemon was stopped");
    other.kill().unwrap();
    other.wait().unwrap();
}

/// A home copied while its daemon runs (`cp -a`) carries that daemon's pid, socket path
/// and socket file; nothing runs for the copy, and its commands never reach the original.
#[test]
fn a_copy_of_a_running_home_is_not_running_and_reaches_nothing() {
    let d = Daemon::start();
    let parent = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
    let copy = parent.path().join("copy");
    assert!(std::process::Command::new("cp").arg("-a").arg(d.path()).arg(&copy).status().unwrap().success());
    let agt = |args: &[&str]| {
        let mut c = cli_at(&copy);
        c.args(args);
        c
    };
    agt(&["daemon", "status"]).assert().code(3).stderr(predicates::str::contains("not running"));
    agt(&["-o", "json", "daemon", "status"]).assert().code(3).stdout(predicates::str::contains("\"running\":false"));
    agt(&["user", "list"]).assert().code(3);
    agt(&["health"]).assert().code(3);
    agt(&["daemon", "stop"]).assert().success().stdout(predicates::str::contains("not running"));
    assert_eq!(d.req("GET", "/ready", None).0, 200, "the original daemon still runs");
    d.cli().args(["daemon", "status"]).assert().success().stdout(predicates::str::contains(format!("pid:     {}", d.pid())));
}

/// A daemon whose socket was deleted runs but cannot be reached: `status` says so, with
/// its pid and how to restart it (exit 3, as for any daemon that cannot be reached), in
/// line with `start`, which says it already runs.
#[test]
fn a_daemon_without_its_socket_is_reported_running_and_unreachable() {
    let d = Daemon::start();
    std::fs::remove_file(d.sock()).unwrap();
    let pid = d.pid();
    let out = d.cli().args(["daemon", "status"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("runs (pid {pid})")) && err.contains("socket") && err.contains("missing"), "{err}");
    assert!(err.contains("agt daemon stop") && err.contains("agt daemon start"), "says how to restart it: {err}");
    let out = d.cli().args(["-o", "json", "daemon", "status"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!((v["running"].as_bool(), v["reachable"].as_bool(), v["pid"].as_u64()), (Some(true), Some(false), Some(pid as u64)), "{v}");
    d.cli().args(["daemon", "start"]).assert().code(1).stderr(predicates::str::contains("already_running"));
    d.cli().args(["health"]).assert().code(3).stderr(predicates::str::contains(format!("the daemon runs (pid {pid})")));
}

/// `agtd.lock` held by a process that is not an agt daemon: status names it (exit 3),
/// `stop` refuses to signal it, `start` says why it cannot start.
#[test]
fn a_lock_held_by_another_process_is_named_and_left_alone() {
    let home = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
    let lock = home.path().join("agtd.lock");
    std::fs::write(&lock, "").unwrap();
    // `--no-fork`: flock becomes the `sleep` that holds the lock, so killing it ends both.
    let mut holder = std::process::Command::new("flock").arg("--no-fork").arg(&lock).args(["sleep", "100"]).spawn().unwrap();
    let agt = |args: &[&str]| {
        let mut c = cli_at(home.path());
        c.args(args);
        c
    };
    // flock takes the lock once it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/locks").unwrap().contains(&format!(" {} ", holder.id())) {
        assert!(std::time::Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = format!("held by pid {}", holder.id());
    agt(&["daemon", "status"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains(&held).and(predicates::str::contains("not an agt daemon")));
    agt(&["daemon", "stop"]).assert().code(1).stderr(predicates::str::contains("lock_held").and(predicates::str::contains(&held)));
    agt(&["daemon", "start", "--timeout", "5"]).assert().code(1).stderr(predicates::str::contains(&held));
    assert!(holder.try_wait().unwrap().is_none(), "the holder was left alone");
    holder.kill().unwrap();
    holder.wait().unwrap();
}

/// A stopped (SIGSTOP) daemon: `status` and `health` say it does not answer, with its
/// pid, within seconds (exit 3), not after the minute of a request's timeout.
#[test]
fn a_stopped_daemon_is_named_within_seconds() {
    let d = Daemon::start();
    let pid = d.pid();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    for args in [&["daemon", "status"][..], &["health"]] {
        let t0 = std::time::Instant::now();
        let out = d.cli().args(args).timeout(Duration::from_secs(40)).output().unwrap();
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if args[0] == "health" {
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(&format!("(pid {pid}) does not answer")) && err.contains(&format!("kill -CONT {pid}")), "{args:?}: {err}");
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    }
    assert_eq!(d.req("GET", "/ready", None).0, 200, "resumed");
}

/// `agt daemon stop` of a stopped (SIGSTOP) daemon sends SIGCONT after SIGTERM, as
/// systemd does: the daemon wakes and shuts down cleanly at once, instead of holding the
/// SIGTERM until `stop` gives up after its timeout.
#[test]
fn stop_wakes_a_stopped_daemon_to_shut_it_down() {
    let mut d = Daemon::start();
    let pid = d.pid();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let state = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next()?.split_whitespace().next().map(String::from))
    };
    wait_until("the daemon to stop", Duration::from_secs(10), || (state().as_deref() == Some("T")).then_some(()));
    let t0 = std::time::Instant::now();
    let out = d.cli().args(["daemon", "stop", "--timeout", "20"]).timeout(Duration::from_secs(40)).output().unwrap();
    let took = t0.elapsed();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("stopped (pid {pid})")) && stderr.contains("SIGSTOP"), "{stdout}{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}: stop waited for its timeout");
    assert!(d.stop().success(), "a clean shutdown: {}", d.log());
}

/// What is in the way of a start is named with its path and the fix: a directory where
/// the socket goes, a home too long for a Unix socket path.
#[test]
fn start_errors_name_the_path_and_the_fix() {
    let d = Daemon::unstarted("", &[]);
    std::fs::create_dir(d.sock()).unwrap();
    let out = d.cli().args(["daemon", "run"]).timeout(Duration::from_secs(60)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{} is a directory, not a socket", d.sock().display())) && err.contains("move it away"), "{err}");
    d.cli().args(["daemon", "start"]).assert().code(1).stderr(predicates::str::contains("is a directory, not a socket"));

    let long = d.path().join("h".repeat(120));
    for args in [&["daemon", "run"][..], &["daemon", "start"]] {
        let out = assert_cmd::Command::new(BIN).arg("--home").arg(&long).args(args).timeout(Duration::from_secs(60)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(&long.join("agt.sock").display().to_string()) && err.contains("shorter --home"), "{args:?}: {err}");
        assert!(!err.contains("SUN_LEN"), "{err}");
    }
    assert!(!long.exists(), "a home whose socket cannot be made is not created");
}

/// What one request on a connection got: an answer (its status, body and whether the
/// connection closes after it), or nothing whole.
enum Got {
    Answer { status: u16, body: serde_json::Value, close: bool },
    Dropped(String),
}

/// One POST on a connection that may be kept open; the answer read by its length.
fn post_on<S: std::io::Read + std::io::Write>(s: &mut S, path: &str, body: &str, headers: &str) -> Got {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Got::Dropped(format!("sending: {e}"));
    }
    let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
            let Some(len) = field("content-length:").and_then(|v| v.parse::<usize>().ok()) else {
                return Got::Dropped(format!("an answer without a length: {head}"));
            };
            if raw.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let body = serde_json::from_slice(&raw[end + 4..end + 4 + len]).unwrap_or(serde_json::Value::Null);
                let close = field("connection:").is_some_and(|v| v.contains("close"));
                return Got::Answer { status, body, close };
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return Got::Dropped(format!("closed after {} bytes of the answer", raw.len())),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Got::Dropped(format!("reading after {} bytes: {e}", raw.len())),
        }
    }
}

/// What one client of the stop test saw.
#[derive(Default, Debug)]
struct Tally {
    deposited: u64,
    refused: u64,
    wrong: Vec<String>,
}

/// Deposits 1 USD again and again, over connections `connect` opens (a new one per
/// request unless `keep_alive`), until the daemon refuses: a connection refused, or a
/// 503 saying it stops. Anything else (a dropped connection, another answer) is wrong.
fn deposit_until_refused<S: std::io::Read + std::io::Write>(
    connect: impl Fn() -> std::io::Result<S>,
    keep_alive: bool,
    path: &str,
    auth: &str,
    count: &std::sync::atomic::AtomicU64,
) -> Tally {
    let mut tally = Tally::default();
    let headers = if keep_alive { auth.to_string() } else { format!("{auth}Connection: close\r\n") };
    loop {
        let mut s = match connect() {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound) => return tally,
            Err(e) => {
                tally.wrong.push(format!("connecting: {e}"));
                return tally;
            }
        };
        loop {
            match post_on(&mut s, path, r#"{"asset": "USD", "amount": "1"}"#, &headers) {
                Got::Answer { status: 200 | 201, close, .. } => {
                    tally.deposited += 1;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if close || !keep_alive {
                        break;
                    }
                }
                Got::Answer { status: 503, body, close } => {
                    let says = body["error"]["message"].as_str().unwrap_or("");
                    if code(&body) != "service_unavailable" || !says.contains("the daemon is stopping") || !close {
                        tally.wrong.push(format!("503 (close: {close}) {body}"));
                    }
                    tally.refused += 1;
                    return tally;
                }
                Got::Answer { status, body, .. } => {
                    tally.wrong.push(format!("{status} {body}"));
                    return tally;
                }
                Got::Dropped(why) => {
                    tally.wrong.push(why);
                    return tally;
                }
            }
        }
    }
}

/// `agt daemon stop` while deposits keep coming on several connections, over the socket
/// (a connection per request) and TCP (kept open): every request is answered, 201 and
/// its deposit kept, or 503 "the daemon is stopping" and nothing done; a client that
/// connects once the daemon has stopped listening is refused. Before, a request that
/// arrived on an idle kept-open connection, or on a connection not yet accepted, had its
/// connection closed under it unanswered, and its client could not tell whether it had
/// run. The clients go on until refused, so the stop lands among their requests.
#[test]
fn a_stop_answers_every_request_it_takes() {
    let d = Daemon::unstarted("", &[]);
    d.cli().args(["daemon", "start"]).assert().success();
    /// Stops the daemon `agt daemon start` left running if the test fails half-way.
    struct StopAtEnd<'a>(&'a Daemon);
    impl Drop for StopAtEnd<'_> {
        fn drop(&mut self) {
            let _ = self.0.cli().args(["daemon", "stop"]).output();
        }
    }
    let _stop = StopAtEnd(&d);
    let user = d.user("busy");
    let token = d.ok("POST", "/api/tokens", Some(json!({"role": "admin"})))["token"].as_str().unwrap().to_string();
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("agtd.json")).unwrap()).unwrap();
    let http = info["http"].as_str().unwrap().to_string();
    let path = format!("/api/users/{user}/deposits");
    let counts: Vec<_> = (0..6).map(|_| std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0))).collect();
    let clients: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let (count, path, sock, http) = (count.clone(), path.clone(), d.sock(), http.clone());
            let auth = format!("Authorization: Bearer {token}\r\n");
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    deposit_until_refused(|| std::os::unix::net::UnixStream::connect(&sock), false, &path, "", &count)
                } else {
                    deposit_until_refused(|| std::net::TcpStream::connect(&http), true, &path, &auth, &count)
                }
            })
        })
        .collect();
    wait_until("deposits on every connection", Duration::from_secs(30), || {
        // A client that ended already says why below.
        (clients.iter().any(|c| c.is_finished()) || counts.iter().all(|c| c.load(std::sync::atomic::Ordering::Relaxed) >= 5)).then_some(())
    });
    d.cli().args(["daemon", "stop"]).assert().success();
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(tallies.iter().all(|t| t.wrong.is_empty()), "{tallies:#?}");
    let deposited: u64 = tallies.iter().map(|t| t.deposited).sum();

    d.cli().args(["daemon", "start"]).assert().success();
    let account = d.ok("GET", &format!("/api/users/{user}/account"), None);
    assert_eq!(dec(&account["balances"][0]["total"]), rust_decimal::Decimal::from(deposited), "{account} {tallies:?}");
    d.cli().args(["audit", "verify"]).assert().success();
}

/// While a daemon stops (it took SIGTERM, answers the requests it has, then exits), a
/// command that finds its socket refusing or gone is told it is stopping: it was told the
/// daemon "runs but nothing answers; restart it", wrong advice for a daemon on its way
/// out. A request whose body is still coming holds the stop open for the test.
#[test]
fn a_stopping_daemon_is_said_to_be_stopping_not_broken() {
    use std::io::{Read, Write};
    let mut d = Daemon::start();
    let pid = d.pid();
    let user = d.user("slow");
    let mut held = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let body = r#"{"asset":"USD","amount":"5"}"#;
    write!(
        held,
        "POST /api/users/{user}/deposits HTTP/1.1\r\nHost: agt\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..3]
    )
    .unwrap();
    held.flush().unwrap();
    // The held connection is served (accepted, its head read at once) before the stop:
    // open beside the one asking.
    wait_until("the held connection to be served", Duration::from_secs(10), || {
        let mut ask = std::os::unix::net::UnixStream::connect(d.sock()).ok()?;
        ask.write_all(b"GET /metrics HTTP/1.0\r\nHost: agt\r\n\r\n").ok()?;
        let mut text = String::new();
        ask.read_to_string(&mut text).ok()?;
        text.lines().any(|l| l.starts_with("active_connections{service=\"socket\"} ") && !l.ends_with(" 1")).then_some(())
    });
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let info = d.path().join("agtd.json");
    let since = wait_until("agtd.json to say the daemon is stopping", Duration::from_secs(10), || {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&info).ok()?).ok()?;
        v["stopping_since"].as_str().map(String::from)
    });
    wait_until("the listener to close", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(d.sock()).is_err().then_some(())
    });
    let out = d.cli().args(["daemon", "status"]).timeout(Duration::from_secs(30)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("(pid {pid}) is stopping (since {since})")) && !err.contains("restart it"), "{err}");
    let out = d.cli().args(["daemon", "status", "-o", "json"]).timeout(Duration::from_secs(30)).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((doc["running"].as_bool(), doc["problem"].as_str()), (Some(true), Some("stopping")), "{doc}");
    let out = d.cli().args(["health"]).timeout(Duration::from_secs(30)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("is stopping") && !err.contains("restart it"), "{err}");
    // The held request, taken before the stop, is done and answered; then the daemon ends.
    held.write_all(&body.as_bytes()[3..]).unwrap();
    let mut answer = String::new();
    held.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains(r#""total":"5""#), "{answer}");
    assert!(d.stop_within(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", d.log());
}

/// Every place that names the daemon's build names the commit this agt was built from, as
/// `agt --version` does: `/health`, `agtd.json`, `agt health` and `agt daemon status`, which
/// adds no note while the daemon runs this very build (the note is for a daemon left
/// running an agt that was since replaced: `cli::daemon`'s unit tests).
#[test]
fn the_daemon_names_its_build_as_agt_version_does() {
    let d = Daemon::start();
    let out = d.cli().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let build = version
        .strip_prefix("agt ")
        .and_then(|v| v.split_once(" ("))
        .and_then(|(_, b)| b.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`agt VERSION (BUILD)`: {version:?}"))
        .to_string();
    assert!(!build.is_empty(), "{version}");
    let (status, health) = d.req("GET", "/health", None);
    assert_eq!((status, health["build"].as_str()), (200, Some(build.as_str())), "{health}");
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path().join("agtd.json")).unwrap()).unwrap();
    assert_eq!(info["build"].as_str(), Some(build.as_str()), "{info}");
    let out = d.cli().args(["-o", "json", "daemon", "status"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!((v["build"].as_str(), v["cli_build"].as_str()), (Some(build.as_str()), Some(build.as_str())), "{v}");
    let shown = version.trim_start_matches("agt ");
    let out = d.cli().args(["daemon", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("version: {shown}\n")) && !text.contains("note:"), "{text}");
    let out = d.cli().arg("health").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("version:  {shown}\n")), "{:?}", out);
}
