//! The CLI against a daemon, as a script would use it: lists that say when they were cut,
//! one JSON document per finite list, closed pipes, and arguments refused before asking.

use crate::util::{cli_at, code, Daemon, BIN};
use serde_json::{json, Value};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

/// `agt ARGS` with its stdout a pipe whose reader has already gone, as in `agt … | head -1`
/// once `head` has what it wants: its exit status and its stderr.
fn into_a_closed_pipe(home: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("AGT_URL")
        .env_remove("AGT_TOKEN")
        .env_remove("AGT_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).to_string())
}

/// `agt daemon status | head -1` and `agt daemon stop` into a closed pipe end quietly, like
/// every other command (SIGPIPE), instead of panicking with exit 101; only `daemon run`,
/// the daemon itself, ignores SIGPIPE.
#[test]
fn cli_daemon_commands_into_a_closed_pipe_end_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = Daemon::start();
    for args in [&["daemon", "status"][..], &["health"], &["-o", "json", "daemon", "status"]] {
        let (status, stderr) = into_a_closed_pipe(d.path(), args);
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{args:?}: {status:?} {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let idle = tempfile::tempdir().unwrap();
    let (status, stderr) = into_a_closed_pipe(idle.path(), &["daemon", "stop"]);
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "daemon stop with nothing to stop: {status:?} {stderr}");
}

fn json_out(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("one JSON document: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A list the daemon cuts at its limit (100 by default) says so on stderr, stdout keeping
/// only the data, and a list that fits says nothing.
#[test]
fn cli_lists_cut_at_their_limit_say_so_on_stderr() {
    let d = Daemon::start();
    let sym = d.symbol("0.01", "1");
    let users = [d.user("many"), d.user("more")];
    for u in &users {
        d.deposit(u, "USD", "100000");
        for i in 0..51 {
            let (s, v) = d.place(u, &sym, "buy", "1", Some(&format!("{}.00", 10 + i)));
            assert_eq!(s, 201, "{v}");
        }
    }
    let out = d.cli().args(["-o", "json", "order", "list", "--symbol", &sym]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = json_out(&out);
    assert_eq!(listed.as_array().unwrap().len(), 100, "the default 100");
    assert!(stderr(&out).contains("showing the newest 100 open orders; pass --limit N for more"), "{}", stderr(&out));
    let out = d.cli().args(["-o", "json", "order", "list", "--symbol", &sym, "--limit", "102"]).output().unwrap();
    assert_eq!((json_out(&out).as_array().unwrap().len(), stderr(&out)), (102, String::new()), "all of them, and no note");
    let out = d.cli().args(["order", "list", "--user", &users[0], "--all", "--limit", "3"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4, "a header and 3 rows");
    assert!(stderr(&out).contains("showing the newest 3 orders"), "{}", stderr(&out));
    let newest: Vec<Value> = d.ok("GET", &format!("/api/orders?user_id={}&status=all&limit=3", users[0]), None).as_array().unwrap().clone();
    let out = d.cli().args(["-o", "json", "order", "list", "--user", &users[0], "--all", "--limit", "3"]).output().unwrap();
    assert_eq!(json_out(&out).as_array().unwrap(), &newest, "the newest 3, without the extra one asked for");

    // The tape, newest first: three sells cross the resting buys.
    let seller = d.user("tape-s");
    d.deposit(&seller, &sym, "10");
    for _ in 0..3 {
        assert_eq!(d.place(&seller, &sym, "sell", "1", Some("59.00")).0, 201);
    }
    let out = d.cli_current(&["-o", "json", "trades", &sym, "--limit", "2"]);
    assert_eq!(json_out(&out).as_array().unwrap().len(), 2);
    assert!(stderr(&out).contains("showing the newest 2 trades"), "{}", stderr(&out));
    let out = d.cli_current(&["-o", "json", "trades", &sym, "--limit", "3"]);
    assert_eq!((json_out(&out).as_array().unwrap().len(), stderr(&out)), (3, String::new()));

    // Candles are the newest N, oldest first: the extra one asked for is the oldest.
    let sym = d.symbol("0.01", "1");
    let csv = format!(
        "symbol,interval,open_time,open,high,low,close,volume\n\
         {sym},1d,2024-05-01,10,11,9,10,1\n{sym},1d,2024-05-02,10,11,9,10.5,1\n{sym},1d,2024-05-03,10,11,9,10.25,1\n"
    );
    d.ok("POST", "/api/market/import", Some(json!({ "csv": csv })));
    let out = d.cli_current(&["-o", "json", "market", "candles", &sym, "--interval", "1d", "--limit", "2"]);
    let closes: Vec<String> = json_out(&out).as_array().unwrap().iter().map(|c| c["close"].as_str().unwrap().to_string()).collect();
    assert_eq!(closes, ["10.5", "10.25"], "the newest two, oldest first");
    assert!(stderr(&out).contains("showing the newest 2 candles"), "{}", stderr(&out));

    // Deliveries: none here, and nothing to say.
    let out = d.cli_current(&["-o", "json", "notify", "list", "--limit", "5"]);
    assert_eq!((json_out(&out), stderr(&out)), (json!([]), String::new()));
    // 0 is the CLI's to refuse (a usage error, exit 2), as -1 is; over HTTP the daemon
    // still answers 400 invalid_limit.
    d.cli()
        .args(["notify", "list", "--limit", "0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("1 is the fewest it gives, 10000 the most"));
    let (s, e) = d.req("GET", "/api/notifications?limit=0", None);
    assert_eq!((s, code(&e)), (400, "invalid_limit"), "{e}");
    d.cli().args(["order", "list", "--help"]).assert().success().stdout(predicates::str::contains("default: 100, at most 10000"));
}

/// `GET /api/users` honours `limit` as every list does: 1 to 10000, else 400.
#[test]
fn cli_user_list_limit_is_checked_like_every_list() {
    let d = Daemon::start();
    let ids: Vec<String> = (0..3).map(|i| d.user(&format!("ul{i}"))).collect();
    let all = d.ok("GET", "/api/users", None);
    assert_eq!(all.as_array().unwrap().len(), 3, "no limit: every user");
    let two = d.ok("GET", "/api/users?limit=2", None);
    let got: Vec<&str> = two.as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    assert_eq!(got, ids[..2], "the first two, oldest first");
    for bad in ["abc", "0", "-1", "10001"] {
        let (status, body) = d.req("GET", &format!("/api/users?limit={bad}"), None);
        assert_eq!((status, code(&body)), (400, "invalid_limit"), "limit={bad}: {body}");
    }
}

/// `agt -o json audit tail` is one JSON array, like any finite list (DESIGN.md §5), not
/// NDJSON; paging with --since says when there are more.
#[test]
fn cli_audit_tail_prints_one_json_document() {
    let d = Daemon::start();
    for i in 0..3 {
        d.user(&format!("au{i}"));
    }
    let out = d.cli_current(&["-o", "json", "audit", "tail", "--limit", "4"]);
    assert!(out.status.success());
    assert_eq!(json_out(&out).as_array().unwrap().len(), 4);
    let out = d.cli_current(&["-o", "json", "audit", "tail", "--since", "0", "--limit", "2"]);
    let seqs: Vec<u64> = json_out(&out).as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
    assert!(stderr(&out).contains("showing the first 2 records after 0"), "{}", stderr(&out));
}

/// `agt risk resume` lifts the halt of all trading; a symbol halted on its own stays
/// halted, and the answer says so rather than "all trading resumed".
#[test]
fn cli_risk_resume_names_what_stays_halted() {
    let d = Daemon::start();
    let sym = d.symbol("0.01", "1");
    d.cli().args(["risk", "halt", &sym]).assert().success();
    d.cli().args(["risk", "halt"]).assert().success();
    d.cli().args(["risk", "resume"]).assert().success().stdout(predicates::str::contains(format!("except in {sym}")));
    d.cli().args(["risk", "resume", &sym]).assert().success().stdout("trading in ".to_string() + &sym + " resumed\n");
}

/// Arguments no daemon could answer are usage errors (exit 2), found before asking one:
/// an empty order id, a URL that names no host.
#[test]
fn cli_refuses_empty_ids_and_malformed_urls_as_usage() {
    let idle = tempfile::tempdir().unwrap();
    let agt = || cli_at(idle.path());
    for args in [&["order", "get", ""][..], &["order", "cancel", " "], &["order", "amend", "", "--qty", "1"]] {
        agt().args(args).assert().code(2).stderr(predicates::str::contains("ID cannot be empty: give an order id"));
    }
    // Any other name a command acts on: a user, a token, a symbol, a service.
    for (args, arg) in [
        (&["user", "get", ""][..], "USER"),
        (&["user", "account", ""], "USER"),
        (&["user", "disable", " "], "USER"),
        (&["user", "update", "", "--email", "a@b.c"], "USER"),
        (&["user", "deposit", "", "USD", "5"], "USER"),
        (&["user", "withdraw", "bob", "", "5"], "ASSET"),
        (&["token", "revoke", ""], "ID"),
        (&["book", ""], "SYMBOL"),
        (&["trades", " "], "SYMBOL"),
        (&["market", "quote", ""], "SYMBOL"),
        (&["market", "candles", ""], "SYMBOL"),
        (&["service", "restart", ""], "NAME"),
        (&["order", "place", "", "AAPL", "buy", "1"], "USER"),
        (&["order", "place", "bob", "", "buy", "1", "5"], "SYMBOL"),
        (&["order", "place", "bob", " ", "sell", "1", "--type", "market"], "SYMBOL"),
        // A quantity, price or amount nothing could mean: not sent for the daemon's own
        // words, and an empty PRICE is no price, not a market order.
        (&["order", "place", "bob", "AAPL", "buy", "", "100"], "QTY"),
        (&["order", "place", "bob", "AAPL", "sell", " "], "QTY"),
        (&["order", "place", "bob", "AAPL", "buy", "1", ""], "PRICE"),
        (&["order", "place", "bob", "AAPL", "buy", "1", " ", "--type", "limit"], "PRICE"),
        (&["user", "deposit", "alice", "USD", ""], "AMOUNT"),
        (&["user", "withdraw", "alice", "USD", " "], "AMOUNT"),
        (&["user", "create", "", "--email", "a@b.c"], "NAME"),
        (&["risk", "set", "", "5"], "KEY"),
        (&["risk", "set", "max_open_orders", ""], "VALUE"),
        (&["risk", "set", "max_open_orders", " ", "--user", "bob"], "VALUE"),
        (&["config", "get", ""], "KEY"),
        (&["config", "set", " ", "5"], "KEY"),
        (&["risk", "halt", ""], "SYMBOL"),
        (&["risk", "resume", " "], "SYMBOL"),
        // An empty filter or target flag: "no user" is not "every user".
        (&["order", "list", "--user", ""], "--user"),
        (&["order", "list", "--symbol", " "], "--symbol"),
        (&["order", "cancel-all", "--user", ""], "--user"),
        (&["order", "cancel-all", "--symbol", ""], "--symbol"),
        (&["risk", "limits", "--user", ""], "--user"),
        (&["risk", "set", "max_open_orders", "5", "--user", " "], "--user"),
        (&["token", "create", "--role", "trader", "--user", ""], "--user"),
        // Any other flag whose empty value nothing could mean: not sent, not dropped as
        // if absent (an empty --client-id placed an order a retry would place again).
        (&["order", "place", "bob", "AAPL", "buy", "1", "5", "--client-id", ""], "--client-id"),
        (&["order", "amend", "ord_1", "--price", ""], "--price"),
        (&["order", "amend", "ord_1", "--price", "5", "--qty", " "], "--qty"),
        (&["token", "create", "--role", "admin", "--name", ""], "--name"),
        (&["events", "tail", "--type", ""], "--type"),
        (&["events", "tail", "--type", "ORDER_CREATED,,TRADE_EXECUTED"], "--type"),
        (&["user", "create", "bob", "--email", ""], "--email"),
        (&["user", "update", "bob", "--email", " "], "--email"),
        (&["symbol", "add", "", "--tick", "0.01", "--lot", "1"], "SYMBOL"),
        (&["symbol", "add", "AAPL", "--tick", "", "--lot", "1"], "--tick"),
        (&["symbol", "add", "AAPL", "--tick", "0.01", "--lot", " "], "--lot"),
        (&["symbol", "add", "AAPL", "--tick", "0.01", "--lot", "1", "--min-qty", ""], "--min-qty"),
        (&["symbol", "add", "AAPL", "--tick", "0.01", "--lot", "1", "--max-qty", ""], "--max-qty"),
        (&["market", "candles", "AAPL", "--interval", ""], "--interval"),
        (&["market", "candles", "AAPL", "--from", ""], "--from"),
        (&["market", "candles", "AAPL", "--to", " "], "--to"),
        // `-o json` changes what a success prints, not how a usage error is told.
        (&["-o", "json", "order", "place", "bob", "AAPL", "buy", "1", "--client-id", " "], "--client-id"),
    ] {
        let out = agt().args(args).assert().code(2).get_output().stderr.clone();
        let err = String::from_utf8_lossy(&out);
        assert!(err.contains(&format!("{arg} cannot be empty: give ")), "{args:?}: {err}");
        assert!(!err.contains("no route") && !err.contains("not_found"), "{args:?}: {err}");
    }
    // An empty VALUE is one: `http.listen ""` turns TCP off. It goes to the daemon (none here).
    agt().args(["config", "set", "http.listen", ""]).assert().code(3);
    for url in ["not a url", "http://host:port", "http://h:99999"] {
        agt().args(["--url", url, "--token", "t", "health"]).assert().code(2).stderr(predicates::str::contains("invalid daemon URL"));
    }
}

/// A 5,000-digit value is quoted by its ends and its length, in the CLI's stderr (exit 1,
/// the daemon's code kept) and in the daemon's 400 and 404 bodies alike: quoted whole it
/// buried the message that says what to fix.
#[test]
fn a_huge_value_is_quoted_short_in_errors() {
    let d = Daemon::start();
    let (sym, buyer, _) = d.market_pair("1000", "10");
    let digits = "1".repeat(5000);
    let short = "\"1111111111111111…11111111\" (5000 characters)";
    for args in [
        vec!["order", "place", buyer.as_str(), sym.as_str(), "buy", "1", digits.as_str()],
        vec!["order", "place", buyer.as_str(), sym.as_str(), "buy", digits.as_str(), "10"],
        vec!["user", "deposit", buyer.as_str(), "USD", digits.as_str()],
    ] {
        let out = d.cli().args(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", args[1]);
        assert!(err.len() < 400, "{} bytes of stderr: {err}", err.len());
        assert!(err.contains(short) && err.contains("invalid_request") && err.contains("agt keeps exactly"), "{err}");
    }
    let out = d.cli().args(["order", "place", &buyer, &sym, "buy", "1", &format!("x{digits}")]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\"x111111111111111…11111111\" (5001 characters)") && err.contains("such as \"10.5\""), "{err}");

    // Over HTTP: the same status and code, a short message.
    let (status, body) = d.place(&buyer, &sym, "buy", "1", Some(&digits));
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.len() < 200 && message.contains(short), "{message}");
    let (status, body) = d.req("GET", &format!("/api/users/{digits}"), None);
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.len() < 100 && message.contains(short), "{message}");
}

/// A 5,000-character value in every other place a refusal names what the client sent:
/// a field's value, a JSON key, an enum value, a query parameter and its key, a path, a
/// header, a config key and value, a webhook URL, and the CLI's own and clap's checks.
/// Each keeps its status (exit code) and error code, names what it refused, and quotes
/// the value by its ends and length: whole, they were 5 to 15 KB of message.
#[test]
fn every_refusal_quotes_a_huge_value_short() {
    let d = Daemon::start();
    let (sym, buyer, _) = d.market_pair("1000", "10");
    let huge = "Z".repeat(5000);
    let h = huge.as_str();
    let short = "\"ZZZZZZZZZZZZZZZZ…ZZZZZZZZ\" (5000 characters)";
    // The message: the value quoted short, never 41 of its characters in a row, and the
    // words that say what was refused.
    let check = |what: &str, message: &str, names: &str| {
        assert!(message.contains(short) && message.contains(names), "{what}: {message}");
        assert!(!message.contains(&"Z".repeat(41)) && message.len() < 700, "{what}: {} bytes: {message}", message.len());
    };
    let order = |k: &str, v: &str| {
        let mut b = json!({"user_id": buyer, "symbol": sym, "side": "buy", "quantity": "1", "price": "10"});
        b[k] = v.into();
        b
    };
    let mut unknown_key = order("side", "buy");
    unknown_key[huge.as_str()] = 1.into();
    let mut config_key = json!({});
    config_key[huge.as_str()] = 1.into();
    let mut limit_key = json!({});
    limit_key[huge.as_str()] = 1.into();
    let user_path = format!("/api/users/{buyer}");
    let bodies: Vec<(&str, String, Value, u16, &str, &str)> = vec![
        ("POST", "/api/orders".into(), order("side", &huge), 400, "invalid_request", "side: unknown variant"),
        ("POST", "/api/orders".into(), order("type", &huge), 400, "invalid_request", "type: unknown variant"),
        ("POST", "/api/orders".into(), order("time_in_force", &huge), 400, "invalid_request", "time_in_force: unknown variant"),
        ("POST", "/api/orders".into(), unknown_key, 400, "invalid_request", "unknown field"),
        ("PUT", user_path.clone(), json!({"status": huge}), 400, "invalid_status", "status must be"),
        ("POST", format!("{user_path}/deposits"), json!({"asset": huge, "amount": "1"}), 400, "invalid_asset", "asset must be"),
        ("PUT", "/api/risk/limits".into(), limit_key, 400, "invalid_limit", "unknown limit"),
        ("PUT", "/api/risk/limits".into(), json!({"max_open_orders": huge}), 400, "invalid_limit", "max_open_orders: expected"),
        ("POST", "/api/risk/halt".into(), json!({"symbol": huge}), 400, "invalid_symbol", "symbol must be"),
        ("PUT", "/api/config".into(), config_key, 400, "invalid_config", "unknown key"),
        ("PUT", "/api/config".into(), json!({"log.level": huge}), 400, "invalid_config", "log.level: expected"),
        ("PUT", "/api/config".into(), json!({"http.listen": huge}), 400, "invalid_config", "http.listen: expected"),
        ("POST", "/api/tokens".into(), json!({"name": "t", "role": huge}), 400, "invalid_role", "role must be"),
        (
            "POST",
            "/api/notifications/rules".into(),
            json!({"url": "http://h/x", "events": [huge]}),
            400,
            "invalid_events",
            "unknown event type",
        ),
        ("POST", "/api/services/x/restart".replace('x', &huge), Value::Null, 404, "unknown_service", "no service"),
        ("GET", format!("/api/orders?status={huge}"), Value::Null, 400, "invalid_status", "status must be"),
        ("GET", format!("/api/orders?{huge}=1"), Value::Null, 400, "invalid_query", "unknown field"),
        ("GET", format!("/api/orders?limit={huge}"), Value::Null, 400, "invalid_limit", "limit must be"),
        ("GET", format!("/api/events?type={huge}"), Value::Null, 400, "unknown_event_type", "unknown event type"),
        ("GET", format!("/api/events?follow={huge}"), Value::Null, 400, "invalid_query", "follow must be"),
        ("GET", format!("/api/book/{sym}?depth={huge}"), Value::Null, 400, "invalid_query", "depth must be"),
        ("GET", format!("/api/market/{sym}/candles?interval={huge}"), Value::Null, 400, "invalid_interval", "interval must be"),
        ("GET", format!("/api/tokens?status={huge}"), Value::Null, 400, "invalid_status", "status must be"),
        ("GET", format!("/api/notifications?status={huge}"), Value::Null, 400, "invalid_status", "status must be"),
        ("GET", format!("/api/book/{huge}"), Value::Null, 404, "unknown_symbol", "no symbol"),
    ];
    for (method, path, body, status, want, names) in bodies {
        let what = format!("{method} {}", path.replace(&huge, "<huge>"));
        let (got, answer) = d.req(method, &path, (!body.is_null()).then_some(body));
        assert_eq!((got, code(&answer)), (status, want), "{what}: {}", answer.to_string().len());
        check(&what, answer["error"]["message"].as_str().unwrap(), names);
    }
    // A webhook URL (within its 2,048 bytes, so refused for its scheme) and a header.
    let url = format!("ftp://{huge}")[..2000].to_string();
    let (got, answer) = d.req("POST", "/api/notifications/rules", Some(json!({"url": url, "events": ["*"]})));
    assert_eq!((got, code(&answer)), (400, "invalid_url"), "{}", answer.to_string().len());
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"ftp://ZZZZZZZZZZ…ZZZZZZZZ\" (2000 characters) is not an http:// URL") && message.len() < 200, "{message}");
    let (got, answer) = d.raw("POST", "/api/users", "{}", &[("Content-Type", h)]);
    assert_eq!((got, code(&answer)), (415, "unsupported_media_type"));
    check("Content-Type", answer["error"]["message"].as_str().unwrap(), "got Content-Type");

    // A path no route has: named as it was sent, a number of characters past 40.
    let (got, answer) = d.req("GET", &format!("/api/{huge}"), None);
    assert_eq!((got, code(&answer)), (404, "not_found"));
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("no route GET /api/ZZZZZZZZZZZ…ZZZZZZZZ (5005 characters);") && message.len() < 200, "{message}");

    // The CLI: the daemon's refusals (exit 1), its own checks and clap's (exit 2).
    let cli: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["config", "get", h], 1, "no config key"),
        (vec!["config", "set", h, "1"], 1, "unknown key"),
        (vec!["config", "set", "log.level", h], 1, "log.level: expected"),
        (vec!["risk", "set", h, "1"], 1, "unknown limit"),
        (vec!["risk", "halt", h], 1, "invalid_symbol"),
        (vec!["service", "restart", h], 1, "unknown_service"),
        (vec!["user", "deposit", &buyer, h, "1"], 1, "invalid_asset"),
        (vec!["events", "tail", "--type", h], 1, "unknown_event_type"),
        (vec!["market", "candles", &sym, "--interval", h], 1, "invalid_interval"),
        (vec!["order", "place", &buyer, &sym, h, "1", "10"], 2, "for '<SIDE>'"),
        (vec!["order", "place", &buyer, &sym, "buy", "1", "10", "--tif", h], 2, "for '--tif <TIF>'"),
        (vec!["user", "update", &buyer, "--status", h], 2, "for '--status <STATUS>'"),
        (vec!["order", "list", "--limit", h], 2, "is not a whole number"),
        (vec!["daemon", "stop", "--timeout", h], 2, "is not a whole number of seconds"),
        (vec!["order", h], 2, "unrecognized subcommand"),
    ];
    for (args, exit, names) in cli {
        let out = d.cli().args(&args).output().unwrap();
        let err = stderr(&out);
        let what = format!("agt {}", args.join(" ").replace(&huge, "<huge>"));
        assert_eq!(out.status.code(), Some(exit), "{what}: {}", err.len());
        check(&what, &err, names);
    }
    // `--limit 999…9` is digits, only too many: shown as a number, unquoted.
    let out = d.cli().args(["order", "list", "--limit", &"9".repeat(5000)]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}", err.len());
    assert!(err.contains("9999999999999999…99999999 (5000 characters) is too large") && err.len() < 300, "{err}");
}
