//! Reads of what the daemon builds from its event bus (the audit log, market data, the
//! event list, the delivery log) answered before the bus and the service's feed caught
//! up (`X-Agt-Behind`): the CLI says so after its output, keeps stdout the data and exits
//! 0; `GET /api/notifications` waits for notify's feed and marks what is still behind.
//! `AGT_SYNC_WAIT_MS=0` makes the daemon wait for nothing, so every such read is behind.

use crate::util::{exchange_marked, Daemon, BEHIND_WARNING};
use serde_json::{json, Value};

/// A symbol with one trade on its tape: the daemon, the symbol.
fn traded(env: &[(&str, &str)]) -> (Daemon, String) {
    let d = Daemon::with_config_env("", env);
    let (sym, buyer, seller) = d.market_pair("1000", "5");
    assert_eq!(d.place(&seller, &sym, "sell", "1", Some("10")).0, 201);
    assert_eq!(d.place(&buyer, &sym, "buy", "1", Some("10")).0, 201);
    (d, sym)
}

/// Every command that reads what the bus builds, with the request its warning names.
fn bus_reads(sym: &str) -> Vec<(Vec<String>, String)> {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (args(&["audit", "tail"]), "GET /api/audit may lack".into()),
        (args(&["audit", "verify"]), "GET /api/audit/verify may lack".into()),
        (args(&["events", "tail"]), "GET /api/events may lack".into()),
        (args(&["trades", sym]), format!("GET /api/trades/{sym} may lack")),
        (args(&["market", "quote", sym]), format!("GET /api/market/{sym} may lack")),
        (args(&["market", "candles", sym]), format!("GET /api/market/{sym}/candles may lack")),
        (args(&["notify", "list"]), "GET /api/notifications may lack".into()),
    ]
}

fn run(d: &Daemon, args: &[String]) -> (i32, String, String) {
    let out = d.cli().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// With every read behind, each command still shows its data and exits 0, then says in
/// one last line on stderr which request was behind, by how many events at least, why,
/// and to run it again; `-o json` keeps stdout pure JSON (NDJSON for events), and `-q`
/// prints neither data nor warning. The book is read from the trading lane, never behind.
#[test]
fn the_cli_warns_after_its_output_when_a_read_was_answered_behind_the_bus() {
    let (d, sym) = traded(&[("AGT_SYNC_WAIT_MS", "0")]);
    for (args, request) in bus_reads(&sym) {
        let (code, stdout, stderr) = run(&d, &args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stdout.trim().is_empty(), "{args:?} shows its data: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with(BEHIND_WARNING) && last.contains(&request), "{args:?}: the last line of stderr warns: {stderr}");
        assert!(last.contains("at least") && last.contains("run the command again"), "{args:?}: {last}");
        assert_eq!(stderr.matches(BEHIND_WARNING).count(), 1, "{args:?}: one warning: {stderr}");
        assert!(!stdout.contains(BEHIND_WARNING), "{args:?}: not on stdout: {stdout}");

        let json_args: Vec<String> = ["-o".to_string(), "json".to_string()].into_iter().chain(args.iter().cloned()).collect();
        let (code, stdout, stderr) = run(&d, &json_args);
        assert_eq!(code, 0, "{json_args:?}: {stderr}");
        if args[0] == "events" {
            for line in stdout.lines() {
                serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{json_args:?}: an NDJSON line: {e}: {line:?}"));
            }
            assert!(stdout.lines().count() > 0, "{json_args:?}");
        } else {
            serde_json::from_str::<Value>(&stdout).unwrap_or_else(|e| panic!("{json_args:?}: stdout is one JSON document: {e}: {stdout}"));
        }
        assert!(stderr.contains(BEHIND_WARNING) && stderr.contains(&request), "{json_args:?}: {stderr}");

        let quiet: Vec<String> = ["-q".to_string()].into_iter().chain(args.iter().cloned()).collect();
        assert_eq!(run(&d, &quiet), (0, String::new(), String::new()), "{quiet:?}");
    }
    let (code, stdout, stderr) = run(&d, &["book".to_string(), sym.clone()]);
    assert_eq!((code, stderr.as_str()), (0, ""), "the book is not built from the bus: {stdout}");
}

/// Caught up, the same commands say nothing on stderr: the warning is for reads that
/// were behind, not for every read of the bus.
#[test]
fn the_cli_says_nothing_when_its_reads_are_current() {
    let (d, sym) = traded(&[]);
    for (args, _) in bus_reads(&sym) {
        for json in [false, true] {
            let args: Vec<String> =
                if json { ["-o", "json"].iter().map(|s| s.to_string()).chain(args.clone()).collect() } else { args.clone() };
            let (code, stdout, stderr) = run(&d, &args);
            assert_eq!(code, 0, "{args:?}: {stderr}");
            assert!(!stdout.trim().is_empty(), "{args:?}");
            assert!(!stderr.contains(BEHIND_WARNING), "{args:?} was current: {stderr}");
        }
    }
}

/// The delivery log is built by notify from the bus: a list waits for notify's feed, so
/// the delivery a trade caused is in the next list (asked once, not polled), and a list
/// still behind after the wait is marked.
#[test]
fn the_delivery_log_waits_for_notify_and_says_when_it_is_behind() {
    let hook = "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"TRADE_EXECUTED\"]\n";
    let d = Daemon::with_config(hook);
    let (sym, buyer, seller) = d.market_pair("1000", "5");
    assert_eq!(d.place(&seller, &sym, "sell", "1", Some("10")).0, 201);
    let (status, bought) = d.place(&buyer, &sym, "buy", "1", Some("10"));
    assert_eq!((status, bought["status"].as_str()), (201, Some("filled")), "{bought}");
    let ask =
        || exchange_marked(std::os::unix::net::UnixStream::connect(d.sock()).unwrap(), "GET", "/api/notifications", None, &[]).unwrap();
    let (status, behind, list) = ask();
    assert_eq!((status, behind), (200, None), "{list}");
    let kinds: Vec<&str> = list.as_array().unwrap().iter().filter_map(|x| x["event_type"].as_str()).collect();
    assert_eq!(kinds, ["TRADE_EXECUTED"], "the trade's delivery is listed at once: {list}");

    let d = Daemon::with_config_env(hook, &[("AGT_SYNC_WAIT_MS", "0")]);
    let (status, behind, list) =
        exchange_marked(std::os::unix::net::UnixStream::connect(d.sock()).unwrap(), "GET", "/api/notifications", None, &[]).unwrap();
    assert_eq!(status, 200, "{list}");
    assert!(behind.is_some_and(|n| n >= 1), "marked behind: {behind:?}");
    assert_eq!(list, json!([]), "answered all the same");
}
