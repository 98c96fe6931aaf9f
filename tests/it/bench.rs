//! `agt bench` against a real daemon: small runs whose report and verification are checked.

use crate::util::Daemon;
use serde_json::Value;

fn bench(d: &Daemon, args: &[&str]) -> Value {
    let out = d.cli().args(["-o", "json", "bench"]).args(args).output().expect("run agt bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agt bench {args:?} exited {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status.code());
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("agt bench -o json printed no JSON document ({e}): {stdout}"))
}

fn num(r: &Value, path: &[&str]) -> f64 {
    let mut v = r;
    for k in path {
        v = &v[*k];
    }
    v.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {r}"))
}

/// What every successful run reports.
fn sane(d: &Daemon, r: &Value, orders: u64, verified: u64, concurrency: u64, symbols: usize) {
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["orders"], orders, "{r}");
    assert_eq!(r["acknowledged"], orders, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(r["concurrency"], concurrency, "{r}");
    assert_eq!(r["users"], 2 * concurrency, "{r}");
    assert_eq!(r["symbols"].as_array().unwrap().len(), symbols, "{r}");
    assert!(num(r, &["duration_s"]) > 0.0, "{r}");
    assert!(num(r, &["orders_per_s"]) > 0.0, "{r}");
    assert!(num(r, &["trades"]) > 0.0, "orders around one mid price must trade: {r}");
    assert!(num(r, &["trades_per_s"]) > 0.0, "{r}");
    let statuses: f64 = r["statuses"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert_eq!(statuses as u64, orders, "{r}");
    let l = |k: &str| num(r, &["latency_us", k]);
    assert_eq!(l("count") as u64, orders, "{r}");
    assert!(l("min") >= 1.0, "{r}");
    assert!(l("min") <= l("p50") && l("p50") <= l("p90") && l("p90") <= l("p99"), "{r}");
    assert!(l("p99") <= l("p99.9") && l("p99.9") <= l("max"), "{r}");
    assert!(l("mean") >= l("min") && l("mean") <= l("max"), "{r}");
    // Verification: every acknowledged order is in the daemon as acknowledged.
    assert_eq!(r["verified"], verified, "{r}");
    let v = &r["verification"];
    assert_eq!(v["checked"], verified, "{r}");
    assert_eq!(v["missing"], 0, "{r}");
    assert_eq!(v["inconsistent"], 0, "{r}");
    assert_eq!(v["fills_match_trades"], true, "{r}");
    assert_eq!(v["balances_conserved"], true, "{r}");
    assert_eq!(v["accounts_match_fills"], true, "{r}");
    assert_eq!(v["holds_released"], true, "{r}");
    assert_eq!((&r["warmup_errors"], &r["cancel_errors"]), (&serde_json::json!({}), &serde_json::json!({})), "{r}");
    assert_eq!(r["interrupted"], false, "{r}");
    assert!(r["seed"].is_u64(), "{r}");
    assert_eq!(v["problems"], serde_json::json!([]), "{r}");
    // The daemon's background work for the phase (events stored, audit, market, notify
    // and health fed) was done, and the bench says when.
    let caught_up = num(r, &["catch_up_ms"]);
    assert!((0.0..60_000.0).contains(&caught_up), "{r}");
    // Clean-up: no bench order is left open.
    let prefix = r["prefix"].as_str().unwrap();
    for i in 0..concurrency {
        for side in ["b", "s"] {
            let open = d.ok("GET", &format!("/api/orders?user_id={prefix}-{side}{i}&status=open"), None);
            assert_eq!(open, serde_json::json!([]), "{prefix}-{side}{i} still has open orders");
        }
    }
}

/// The daemon's own placement times in the measured phase: at least the bench's orders
/// (only the bench places here), and shares over the bounds that fall as the bounds grow.
fn daemon_time_is_sane(r: &Value, orders: u64) {
    let t = &r["daemon_time"];
    assert_eq!(t["placements"], orders, "the daemon timed every measured placement, warm-up apart: {r}");
    let mut over: Vec<(u64, f64)> =
        t["over_us"].as_object().unwrap().iter().map(|(k, v)| (k.parse().unwrap(), v.as_f64().unwrap())).collect();
    over.sort_by_key(|(us, _)| *us);
    assert_eq!(over.iter().map(|(us, _)| *us).collect::<Vec<_>>(), [160, 320, 640, 1280, 2560, 5120], "{r}");
    assert!(over.iter().all(|(_, share)| (0.0..=1.0).contains(share)), "{r}");
    assert!(over.windows(2).all(|w| w[0].1 >= w[1].1), "a longer bound has no more placements over it: {r}");
}

#[test]
fn closed_loop_over_the_socket_and_over_http() {
    let d = Daemon::start();
    let r = bench(&d, &["--orders", "300", "--concurrency", "4", "--symbols", "2"]);
    sane(&d, &r, 300, 300, 4, 2);
    assert_eq!(r["via"], "socket");
    assert_eq!(r["mode"], "closed");
    assert_eq!(r["route"], "/api/orders");
    assert_eq!(r["cleanup"]["token_revoked"], Value::Null, "no token is made for the socket");
    let batch = if cfg!(target_os = "linux") { "batch" } else { "normal" };
    assert_eq!(r["sched"], batch, "the generator runs in the batch class by default: {r}");
    // CPU per order: the generator's own, and the daemon's, whose process the socket names.
    let cpu = &r["cpu_us_per_order"];
    assert!(cpu["bench"].as_f64().is_some_and(|us| us > 0.0), "{r}");
    if cfg!(target_os = "linux") {
        let daemon = cpu["daemon"].as_f64().filter(|us| *us >= 0.0);
        assert!(daemon.is_some(), "{r}");
        let with_catch_up = cpu["daemon_with_catch_up"].as_f64();
        assert!(with_catch_up.is_some_and(|us| us >= daemon.unwrap()), "the catch-up adds to the phase's CPU: {r}");
    }
    daemon_time_is_sane(&r, 300);

    // Over TCP: the bench makes an admin token over the socket and revokes it after.
    let r2 = bench(&d, &["--orders", "300", "--concurrency", "4", "--symbols", "2", "--via", "http"]);
    sane(&d, &r2, 300, 300, 4, 2);
    assert_eq!(r2["via"], "http");
    assert_eq!(r2["sched"], batch);
    assert!(r2["target"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{r2}");
    assert_eq!(r2["cleanup"]["token_revoked"], true, "{r2}");
    assert!(r2["cpu_us_per_order"]["bench"].as_f64().is_some(), "{r2}");
    assert_eq!(r2["cpu_us_per_order"]["daemon"], Value::Null, "a TCP peer's process is not known: {r2}");
    daemon_time_is_sane(&r2, 300);
    assert_ne!(r["prefix"], r2["prefix"], "runs name their users and symbols apart");
    assert_ne!(r["symbols"], r2["symbols"]);
    assert_eq!(d.ok("GET", "/api/tokens", None), serde_json::json!([]), "no token of the bench's is left live");
    let tokens = d.ok("GET", "/api/tokens?status=all", None);
    assert!(!tokens.as_array().unwrap().is_empty() && tokens.as_array().unwrap().iter().all(|t| t["revoked"] == true), "{tokens}");
}

#[test]
fn open_loop_at_a_fixed_rate() {
    let d = Daemon::start();
    let r = bench(
        &d,
        &[
            "--orders",
            "100",
            "--rate",
            "200",
            "--concurrency",
            "4",
            "--symbols",
            "2",
            "--route",
            "/api/trading/orders",
            "--warmup",
            "20",
            "--sched",
            "normal",
        ],
    );
    // The 20 warm-up orders are verified too.
    sane(&d, &r, 100, 120, 4, 2);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["sched"], "normal", "--sched normal: {r}");
    assert_eq!(r["rate"], 200.0);
    assert_eq!(r["route"], "/api/trading/orders");
    assert_eq!(r["warmup"], 20);
    // 100 orders at 200/s: the last is due 0.495 s after the first, so the run cannot be
    // faster, and it should not take much longer on an idle daemon.
    let secs = num(&r, &["duration_s"]);
    assert!(secs >= 0.49, "an open-loop run keeps its schedule: {r}");
    assert!(num(&r, &["orders_per_s"]) <= 210.0, "{r}");
    assert!(r["kept_up"].is_boolean(), "an open loop says whether it kept up: {r}");
}

/// The same seed places the same orders: on one connection, the same statuses and trades.
#[test]
fn a_seed_repeats_the_order_mix() {
    let d = Daemon::start();
    let run = || bench(&d, &["--orders", "60", "--concurrency", "1", "--symbols", "1", "--seed", "42"]);
    let (a, b) = (run(), run());
    assert_eq!(a["seed"], 42);
    assert_eq!((&a["statuses"], &a["trades"]), (&b["statuses"], &b["trades"]), "{a}\n{b}");
    assert_eq!(a["kept_up"], Value::Null, "a closed loop has no rate to keep up with");
}

/// Refused warm-up orders fail the run like refused measured ones.
#[test]
fn a_refused_warm_up_order_fails_the_run() {
    let d = Daemon::start();
    // Quantities are 1 to 10: about half of 40 warm-up orders are over this limit.
    d.ok("PUT", "/api/risk/limits", Some(serde_json::json!({"max_order_quantity": "5"})));
    let out = d.cli().args(["-o", "json", "bench", "--orders", "1", "--warmup", "40", "--concurrency", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["warmup_errors"].as_object().is_some_and(|e| !e.is_empty()), "{r}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warm-up"), "the message names the warm-up");
}

/// Cash moved between two bench users behind the run's back keeps the totals right, but
/// not the accounts: the bench checks each against its orders' fills.
///
/// The run is one no machine finishes (100,000 orders at 100/s), ended by Ctrl-C once the
/// cash has moved and orders are placed, so the move always comes before the
/// verification; the failure says the account does not match, beside the interruption.
/// (That a mismatch alone fails a run is `Verification::passed`'s unit test.)
#[test]
fn an_account_that_does_not_match_its_fills_fails_the_run() {
    let d = Daemon::start();
    let child = d.cli_spawn(&["-o", "json", "bench", "--orders", "100000", "--rate", "100", "--concurrency", "2"]);
    let (b0, b1) = crate::util::wait_until("the bench's users", std::time::Duration::from_secs(30), || {
        let users = d.ok("GET", "/api/users", None);
        let named = |suffix: &str| {
            users.as_array().unwrap().iter().find(|u| u["username"].as_str().unwrap().ends_with(suffix)).map(|u| u["user_id"].clone())
        };
        // The limits are set last: once b1's are, both are funded.
        let b1 = named("-b1")?;
        let limits = d.ok("GET", &format!("/api/risk/limits?user_id={}", b1.as_str().unwrap()), None);
        (limits["max_open_orders"] == 100_000_000).then_some((named("-b0")?, b1))
    });
    d.ok("POST", &format!("/api/users/{}/withdrawals", b0.as_str().unwrap()), Some(serde_json::json!({"asset": "USD", "amount": "7"})));
    d.ok("POST", &format!("/api/users/{}/deposits", b1.as_str().unwrap()), Some(serde_json::json!({"asset": "USD", "amount": "7"})));
    // Placing: its set-up is over (a Ctrl-C during the set-up ends the run without a report).
    crate::util::wait_until("bench orders", std::time::Duration::from_secs(30), || {
        let orders = d.ok("GET", "/api/orders?status=all&limit=1", None);
        (!orders.as_array().unwrap().is_empty()).then_some(())
    });
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&r["interrupted"], &r["ok"]), (&Value::Bool(true), &Value::Bool(false)), "{r}");
    let v = &r["verification"];
    assert_eq!((&v["balances_conserved"], &v["accounts_match_fills"]), (&Value::Bool(true), &Value::Bool(false)), "{r}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match its fills"));
}

/// Ctrl-C stops the placements; what was placed is verified and cleaned up, and the
/// run's admin token revoked.
#[test]
fn an_interrupted_run_still_cleans_up() {
    let d = Daemon::start();
    let child = d.cli_spawn(&["-o", "json", "bench", "--orders", "100000", "--rate", "100", "--concurrency", "2", "--via", "http"]);
    crate::util::wait_until("bench orders", std::time::Duration::from_secs(30), || {
        let m = d.ok("GET", "/metrics", None);
        let placed = m.as_str().unwrap().lines().filter(|l| l.starts_with("agt_orders_total")).count();
        (placed > 0 && d.ok("GET", "/api/orders?status=all&limit=20", None).as_array().unwrap().len() >= 20).then_some(())
    });
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&r["interrupted"], &r["ok"]), (&Value::Bool(true), &Value::Bool(false)), "{r}");
    assert_eq!(r["cleanup"]["token_revoked"], true, "{r}");
    assert_eq!(r["verification"]["missing"], 0, "{r}");
    assert!(r["acknowledged"].as_u64().unwrap() < 100_000, "{r}");
    assert_eq!(d.ok("GET", "/api/orders?status=open", None), serde_json::json!([]), "nothing left resting");
    assert_eq!(d.ok("GET", "/api/tokens", None), serde_json::json!([]), "no token of the bench's is left live");
    let tokens = d.ok("GET", "/api/tokens?status=all", None);
    assert!(!tokens.as_array().unwrap().is_empty() && tokens.as_array().unwrap().iter().all(|t| t["revoked"] == true), "{tokens}");
}

/// `--cancels 100`: every order that rests is cancelled right after its answer; the
/// report counts the cancels apart, and the verification finds each one cancelled.
#[test]
fn a_market_makers_flow_with_cancels() {
    let d = Daemon::start();
    let r = bench(&d, &["--orders", "300", "--concurrency", "4", "--symbols", "2", "--cancels", "100"]);
    sane(&d, &r, 300, 300, 4, 2);
    let resting = num(&r, &["statuses", "new"]) + r["statuses"]["partially_filled"].as_f64().unwrap_or(0.0);
    let (cancels, too_late) = (num(&r, &["cancels"]), num(&r, &["cancels_too_late"]));
    assert!(cancels > 0.0, "{r}");
    assert_eq!(cancels + too_late, resting, "every order that rested was cancelled, or had filled first: {r}");
    assert!(num(&r, &["cancels_per_s"]) > 0.0, "{r}");
    assert_eq!(num(&r, &["cancel_latency_us", "count"]), cancels, "{r}");
    // The daemon agrees: the bench users' cancelled orders are at least the cancels.
    let prefix = r["prefix"].as_str().unwrap();
    let mut cancelled = 0;
    for i in 0..4 {
        for side in ["b", "s"] {
            let list = d.ok("GET", &format!("/api/orders?user_id={prefix}-{side}{i}&status=cancelled&limit=1000"), None);
            cancelled += list.as_array().unwrap().len();
        }
    }
    assert!(cancelled as f64 >= cancels, "{cancelled} cancelled in the daemon, {cancels} reported: {r}");
    // Without the flag, nothing is cancelled during the run.
    let r = bench(&d, &["--orders", "100", "--concurrency", "2"]);
    assert_eq!((num(&r, &["cancels"]), num(&r, &["cancels_too_late"])), (0.0, 0.0), "{r}");
}

#[test]
fn bad_invocations() {
    let d = Daemon::start();
    // --url needs an admin token: setup creates users and symbols.
    d.cli().args(["bench", "--url", "http://127.0.0.1:9"]).assert().code(2);
    d.cli().args(["bench", "--via", "socket", "--url", "http://127.0.0.1:9", "--token", "x"]).assert().code(2);
    d.cli().args(["bench", "--orders", "0"]).assert().code(2);
    d.cli().args(["bench", "--rate", "-5"]).assert().code(2);
    d.cli().args(["bench", "--route", "/api/users"]).assert().code(2);
    d.cli().args(["bench", "--cancels", "101"]).assert().code(2);
    // No daemon there: exit 3, like every command.
    let empty = tempfile::Builder::new().prefix("agt-it-").tempdir_in("/tmp").unwrap();
    assert_cmd::Command::new(crate::util::BIN)
        .args(["--home", empty.path().to_str().unwrap(), "bench", "--orders", "10"])
        .env_remove("AGT_URL")
        .env_remove("AGT_TOKEN")
        .env_remove("AGT_SOCKET")
        .assert()
        .code(3);
    d.cli().args(["bench", "--rate", "0.5"]).assert().code(2);
    // A wrong token over --url is the daemon's 401: exit 1.
    let url = format!("http://{}", d.http.as_ref().unwrap());
    d.cli().args(["bench", "--orders", "10", "--url", &url, "--token", "nope"]).assert().code(1);
    // So is a token that cannot load (a trader's), found before anything is set up.
    let alice = d.user("alice");
    let trader =
        d.ok("POST", "/api/tokens", Some(serde_json::json!({"role": "trader", "user_id": alice})))["token"].as_str().unwrap().to_string();
    let symbols = d.ok("GET", "/api/symbols", None);
    d.cli()
        .args(["bench", "--orders", "10", "--via", "http"])
        .env("AGT_TOKEN", &trader)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("admin token"));
    assert_eq!(d.ok("GET", "/api/symbols", None), symbols, "nothing was set up");
}

/// A daemon that dies mid-run: the bench says so once and exits 3 (the daemon cannot be
/// reached), not 1 with a failed order or lookup for every order after it.
#[test]
fn a_daemon_that_dies_mid_run_exits_3_with_one_message() {
    let mut d = Daemon::start();
    let mut bench = d.cli_spawn(&["-o", "json", "bench", "--orders", "5000000", "--concurrency", "4", "--symbols", "1"]);
    // Once orders are placed, the daemon dies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while d.ok("GET", "/api/orders?limit=1", None).as_array().is_none_or(|a| a.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "the bench never placed an order");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.kill9();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while bench.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = bench.kill();
            panic!("agt bench went on for a minute after the daemon died");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}\nstdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("the daemon went away during the bench's"), "{stderr}");
    assert!(!stderr.contains("lookup failed") && stderr.lines().count() <= 4, "one message: {stderr}");
}
