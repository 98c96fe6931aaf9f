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
    let out = d.cli().args(["-o", "json", "trades", &sym, "--limit", "2"]).output().unwrap();
    assert_eq!(json_out(&out).as_array().unwrap().len(), 2);
    assert!(stderr(&out).contains("showing the newest 2 trades"), "{}", stderr(&out));
    let out = d.cli().args(["-o", "json", "trades", &sym, "--limit", "3"]).output().unwrap();
    assert_eq!((json_out(&out).as_array().unwrap().len(), stderr(&out)), (3, String::new()));

    // Candles are the newest N, oldest first: the extra one asked for is the oldest.
    let sym = d.symbol("0.01", "1");
    let csv = format!(
        "symbol,interval,open_time,open,high,low,close,volume\n\
         {sym},1d,2024-05-01,10,11,9,10,1\n{sym},1d,2024-05-02,10,11,9,10.5,1\n{sym},1d,2024-05-03,10,11,9,10.25,1\n"
    );
    d.ok("POST", "/api/market/import", Some(json!({ "csv": csv })));
    let out = d.cli().args(["-o", "json", "market", "candles", &sym, "--interval", "1d", "--limit", "2"]).output().unwrap();
    let closes: Vec<String> = json_out(&out).as_array().unwrap().iter().map(|c| c["close"].as_str().unwrap().to_string()).collect();
    assert_eq!(closes, ["10.5", "10.25"], "the newest two, oldest first");
    assert!(stderr(&out).contains("showing the newest 2 candles"), "{}", stderr(&out));

    // Deliveries: none here, and nothing to say.
    let out = d.cli().args(["-o", "json", "notify", "list", "--limit", "5"]).output().unwrap();
    assert_eq!((json_out(&out), stderr(&out)), (json!([]), String::new()));
    d.cli().args(["notify", "list", "--limit", "0"]).assert().code(1).stderr(predicates::str::contains("invalid_limit"));
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
    let out = d.cli().args(["-o", "json", "audit", "tail", "--limit", "4"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_out(&out).as_array().unwrap().len(), 4);
    let out = d.cli().args(["-o", "json", "audit", "tail", "--since", "0", "--limit", "2"]).output().unwrap();
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
