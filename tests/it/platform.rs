//! Users, tokens and the auth matrix, events, audit, config, supervisor, bad input.

use crate::util::*;
use predicates::prelude::PredicateBooleanExt;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// Sends a request for a stream and reads its status line, which must be a 200; the
/// reader is left at the start of the headers.
fn stream_opened<S: std::io::Read + Write>(mut s: S, request: &str) -> BufReader<S> {
    s.write_all(request.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    r
}

#[test]
fn users_round_trip_and_conflicts() {
    let d = Daemon::start();
    let name = format!("alice{}", unique());
    let (s, u) = d.req("POST", "/api/users", Some(json!({"username": name, "email": format!("{name}@x.io")})));
    assert_eq!(s, 201, "{u}");
    for k in ["user_id", "username", "email", "status", "created_at"] {
        assert!(u.get(k).is_some(), "missing {k}");
    }
    let id = u["user_id"].as_str().unwrap();
    assert_eq!(d.ok("GET", &format!("/api/users/{name}"), None)["user_id"], id, "lookup by username");
    let (s, e) = d.req("POST", "/api/users", Some(json!({"username": name, "email": "other@x.io"})));
    assert_eq!((s, code(&e)), (409, "username_taken"));
    // An email is the same address in any case, at create and at update.
    let shouted = format!("{}@X.IO", name.to_uppercase());
    let (s, e) = d.req("POST", "/api/users", Some(json!({"username": format!("{name}2"), "email": shouted})));
    assert_eq!((s, code(&e)), (409, "email_taken"), "{e}");
    let other = d.user("other");
    let (s, e) = d.req("PUT", &format!("/api/users/{other}"), Some(json!({"email": shouted})));
    assert_eq!((s, code(&e)), (409, "email_taken"), "{e}");
    assert_eq!(d.ok("PUT", &format!("/api/users/{id}"), Some(json!({"email": shouted})))["email"], shouted.as_str(), "its own, recased");
    let (s, e) = d.req("PUT", &format!("/api/users/{id}"), Some(json!({"status": "sleeping"})));
    assert_eq!((s, code(&e)), (400, "invalid_status"));
    let disabled = d.ok("PUT", &format!("/api/users/{id}"), Some(json!({"status": "disabled"})));
    assert_eq!(disabled["status"], "disabled");
    // What cannot or need not change is said, not answered 200 having done nothing.
    for (body, want) in [
        (json!({"username": "renamed"}), "a username cannot be changed"),
        (json!({}), "nothing to change"),
        (json!({"nickname": "al"}), "unknown field `nickname`"),
    ] {
        let (s, e) = d.req("PUT", &format!("/api/users/{id}"), Some(body.clone()));
        assert_eq!(s, 400, "{body}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(want), "{body}: {e}");
    }
    let updates = || d.events("USER_UPDATED").into_iter().filter(|e| e["data"]["user_id"] == id).count();
    let seen = updates();
    let same = d.ok("PUT", &format!("/api/users/{id}"), Some(json!({"status": "disabled", "username": name})));
    assert_eq!((&same["updated_at"], updates()), (&disabled["updated_at"], seen), "a change to the same values is no change");
    // A username with the shape of an id could never be named by it.
    let (s, e) = d.req("POST", "/api/users", Some(json!({"username": "usr_0123456789abcdef", "email": "id@x.io"})));
    assert_eq!((s, code(&e)), (400, "invalid_username"), "{e}");
    let (s, e) = d.req("POST", "/api/users", Some(json!({"username": "USR_0123456789ABCDEF", "email": "id2@x.io"})));
    assert_eq!((s, code(&e)), (400, "invalid_username"), "an id in another case too: {e}");
    let (s, e) = d.req("POST", "/api/tokens", Some(json!({"role": "viewer", "expires": "1h"})));
    assert_eq!((s, code(&e)), (400, "invalid_request"), "a mistyped token field is refused: {e}");
    assert_eq!(d.req("GET", "/api/users/nobody-here", None).0, 404);
    d.cli().args(["-o", "json", "user", "get", &name]).assert().success();
    d.cli().args(["user", "get", "nobody-here"]).assert().code(1).stderr(predicates::str::contains("not_found"));
}

/// A username is one name in any case, like an email: `Carol` cannot join `carol`, and
/// either spelling finds her everywhere a user is named (the API, the CLI, an order, a
/// filter), her own spelling kept.
#[test]
fn usernames_are_told_apart_without_case() {
    let d = Daemon::start();
    let name = format!("Carol{}", unique());
    let id = d.ok("POST", "/api/users", Some(json!({"username": name, "email": format!("{name}@x.io")})))["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (lower, upper) = (name.to_lowercase(), name.to_uppercase());
    let (s, e) = d.req("POST", "/api/users", Some(json!({"username": lower, "email": "another@x.io"})));
    assert_eq!((s, code(&e)), (409, "username_taken"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("without case"), "{e}");
    for key in [&lower, &upper, &name] {
        let u = d.ok("GET", &format!("/api/users/{key}"), None);
        assert_eq!((u["user_id"].as_str(), u["username"].as_str()), (Some(id.as_str()), Some(name.as_str())), "{key}");
    }
    d.cli().args(["user", "deposit", &upper, "USD", "100"]).assert().success();
    let sym = d.symbol("0.01", "1");
    let (s, o) = d.place(&lower, &sym, "buy", "1", Some("5"));
    assert_eq!((s, o["user_id"].as_str()), (201, Some(id.as_str())), "{o}");
    let listed = d.ok("GET", &format!("/api/orders?user_id={upper}"), None);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let account = d.ok("GET", &format!("/api/users/{upper}/account"), None);
    assert_eq!(account["user_id"], id.as_str());
}

/// A store an older agt filled (usernames then were case-sensitive) may hold `dave` and
/// `Dave`: the migration keeps both, each is found by its exact spelling or id, another
/// spelling is a 409 `ambiguous_user` naming both, and no third can join them.
#[test]
fn two_users_an_older_agt_let_differ_only_in_case_both_keep_working() {
    let mut d = Daemon::start();
    let name = format!("dave{}", unique());
    let first = d.ok("POST", "/api/users", Some(json!({"username": name, "email": format!("{name}@x.io")})))["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    d.stop();
    // What an older agt left: a second user whose name differs only in case, and the
    // store before the case-insensitive index (the migrations from it run at start: that
    // one, then the list's index).
    let shouted = name.to_uppercase();
    let second = "usr_00000000000000d2";
    let db = rusqlite::Connection::open(d.path().join("data/users.db")).unwrap();
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    db.execute_batch(&format!(
        "DROP INDEX users_username_nocase; DROP INDEX users_created; PRAGMA user_version = {};
         INSERT INTO users VALUES ('{second}', '{shouted}', 'second@x.io', 'active', '2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z');",
        version - 2
    ))
    .unwrap();
    drop(db);
    d.spawn();
    assert_eq!(d.ok("GET", &format!("/api/users/{name}"), None)["user_id"], first.as_str());
    assert_eq!(d.ok("GET", &format!("/api/users/{shouted}"), None)["user_id"], second);
    assert_eq!(d.ok("GET", &format!("/api/users/{second}"), None)["username"], shouted.as_str());
    let mixed = format!("D{}", &name[1..]);
    let (s, e) = d.req("GET", &format!("/api/users/{mixed}"), None);
    assert_eq!((s, code(&e)), (409, "ambiguous_user"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains(&first) && message.contains(second), "{message}");
    let sym = d.symbol("0.01", "1");
    let (s, e) = d.place(&mixed, &sym, "buy", "1", Some("1"));
    assert_eq!((s, code(&e)), (409, "ambiguous_user"), "an order names no one by guess: {e}");
    d.cli().args(["user", "get", &mixed]).assert().code(1).stderr(predicates::str::contains("ambiguous_user"));
    d.deposit(&shouted, "USD", "5");
    let (s, e) = d.req("POST", "/api/users", Some(json!({"username": mixed, "email": "third@x.io"})));
    assert_eq!((s, code(&e)), (409, "username_taken"), "{e}");
    let users = d.ok("GET", "/api/users", None);
    assert_eq!(users.as_array().unwrap().iter().filter(|u| u["username"].as_str().unwrap().eq_ignore_ascii_case(&name)).count(), 2);
}

/// Disabling a user stops its new orders, not the ones resting: they can still fill, and
/// the user's own token can no longer cancel them. `agt user disable` says so, with the
/// command that cancels them; JSON on stdout stays the user alone.
#[test]
fn disabling_a_user_with_resting_orders_says_they_stay() {
    let d = Daemon::start();
    let (sym, buyer, seller) = d.market_pair("1000", "5");
    let (s, o) = d.place(&buyer, &sym, "buy", "2", Some("10"));
    assert_eq!(s, 201, "{o}");
    let name = d.ok("GET", &format!("/api/users/{buyer}"), None)["username"].as_str().unwrap().to_string();
    let out = d.cli().args(["user", "disable", &name]).assert().success().get_output().clone();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{name} is disabled"));
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("has 1 open order") && note.contains(&format!("agt order cancel-all --user {name}")), "{note}");
    // What the note says: the resting order still trades.
    let (s, sold) = d.place(&seller, &sym, "sell", "2", Some("10"));
    assert_eq!((s, sold["status"].as_str()), (201, Some("filled")), "{sold}");
    assert_eq!(d.ok("GET", &format!("/api/orders/{}", o["order_id"].as_str().unwrap()), None)["status"], "filled");
    // With nothing open, no note; with -o json, stdout is the user as JSON.
    d.cli().args(["user", "enable", &name]).assert().success();
    let out = d.cli().args(["-o", "json", "user", "disable", &name]).assert().success().get_output().clone();
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "disabled");
}

#[test]
fn hostile_strings_are_refused_or_kept_byte_for_byte() {
    let d = Daemon::start();
    for bad in ["robert'); drop table users;--", "a\u{0}b", "\u{1b}[31m", "🚀", &"x".repeat(65), ".", ".."] {
        let (s, e) = d.req("POST", "/api/users", Some(json!({"username": bad, "email": "h@x.io"})));
        assert_eq!((s, code(&e)), (400, "invalid_username"), "{bad:?}");
    }
    let u = d.user("victim");
    let name = "tok'); drop table tokens;-- 🚀\u{7}";
    let (s, t) = d.req("POST", "/api/tokens", Some(json!({"role": "viewer", "name": name})));
    assert_eq!(s, 201, "{t}");
    let list = d.ok("GET", "/api/tokens", None);
    assert!(list.as_array().unwrap().iter().any(|x| x["name"] == name), "token name not kept byte for byte");
    assert_eq!(d.req("GET", &format!("/api/users/{u}"), None).0, 200);
}

/// A number where text belongs is refused whatever its digits: `1.5`, `1e5` and 19-digit
/// integers were quoted for the decimal reader before serde saw them, so a text field took
/// them as their text (`{"username": 1.5}` made a user named "1.5", a symbol "1.5" was
/// listed), where `{"username": 15}` was refused.
#[test]
fn a_number_sent_for_a_text_field_is_refused_like_any_number() {
    let d = Daemon::start();
    let u = d.user("numbers");
    let cases = [
        ("POST", "/api/users".to_string(), r#"{"username": 1.5, "email": "n@x.io"}"#),
        ("POST", "/api/users".to_string(), r#"{"username": 12345678901234567890123, "email": "n@x.io"}"#),
        ("POST", "/api/symbols".to_string(), r#"{"symbol": 1.5, "tick": "0.01", "lot": "1"}"#),
        ("POST", format!("/api/users/{u}/deposits"), r#"{"asset": 1e2, "amount": 1.5}"#),
        (
            "POST",
            "/api/orders".to_string(),
            &format!(
                r#"{{"user_id": "{u}", "symbol": "AAPL", "side": "buy", "quantity": 1, "price": 1.5, "time_in_force": "ioc", "client_order_id": 2.5}}"#
            ),
        ),
        ("POST", "/api/tokens".to_string(), r#"{"role": "viewer", "name": 0.5}"#),
    ];
    for (m, p, b) in &cases {
        let (s, v) = d.raw(m, p, b, &[]);
        assert_eq!((s, code(&v)), (400, "invalid_request"), "{m} {p} {b} -> {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("invalid type: a number, expected a string"), "{message}");
    }
    assert_eq!(d.req("GET", "/api/users/1.5", None).0, 404);
    assert_eq!(d.req("GET", "/api/symbols/1.5", None).0, 404);
    // Decimals still take numbers exactly, beside text fields that are text.
    d.deposit(&u, "USD", "10");
    let (s, o) = d.raw(
        "POST",
        "/api/orders",
        &format!(r#"{{"user_id": "{u}", "symbol": "AAPL", "side": "buy", "quantity": 1, "price": 1.50, "time_in_force": "ioc", "client_order_id": "2.5"}}"#),
        &[],
    );
    assert_eq!((s, o["price"].as_str(), o["client_order_id"].as_str()), (201, Some("1.5"), Some("2.5")), "{o}");
}

/// Every body that takes a number reads it the same way, over the socket, over TCP and
/// from the CLI: a whole-number setting takes any exact whole number (`100`, `100.0`,
/// `"100"`, `1e2`) and refuses a fraction naming the field, the value as it was sent (a
/// number unquoted) and the range; a decimal one takes any exact decimal; a switch takes
/// `1.0` as `1`. The settings bodies were read with `100.0` turned into the text
/// `"100.0"`, so a whole-number setting refused it where `100` passed, and every refusal
/// quoted a number (`got "1e2"`).
#[test]
fn numbers_in_bodies_are_read_alike_on_every_route_and_transport() {
    let d = Daemon::start();
    let u = d.user("numbers");
    let admin = d.ok("POST", "/api/tokens", Some(json!({"role": "admin"})))["token"].as_str().unwrap().to_string();
    let put = |tcp: bool, path: &str, body: &str| if tcp { d.tcp_raw("PUT", path, body, &admin) } else { d.raw("PUT", path, body, &[]) };

    // (PUT route, the GET that shows it, how the body names a key, how the answer does, the refusal's code)
    let user_limits = format!("/api/risk/limits?user_id={u}");
    let routes: [(&str, &str, &str, &str, &str); 3] = [
        ("/api/config", "/api/config", "risk.", "risk/", "invalid_config"),
        ("/api/risk/limits", "/api/risk/limits", "", "", "invalid_limit"),
        (&user_limits, &user_limits, "", "", "invalid_limit"),
    ];
    // (key, a value to start from, the value as sent, what it reads as or the refusal's message after "KEY: ")
    let whole = "expected a whole number >= 1";
    let cases: &[(&str, &str, &str, Result<serde_json::Value, String>)] = &[
        ("max_open_orders", "3", "100", Ok(json!(100))),
        ("max_open_orders", "3", "100.0", Ok(json!(100))),
        ("max_open_orders", "3", r#""100""#, Ok(json!(100))),
        ("max_open_orders", "3", "1e2", Ok(json!(100))),
        ("max_open_orders", "3", r#""1e2""#, Ok(json!(100))),
        ("max_open_orders", "3", "100.5", Err(format!("{whole} (not a fraction), got 100.5"))),
        ("max_open_orders", "3", r#""100.5""#, Err(format!(r#"{whole} (not a fraction), got "100.5""#))),
        ("max_open_orders", "3", "-1.0", Err(format!("{whole}, got -1.0"))),
        ("max_open_orders", "3", "5e9", Err("expected a whole number from 1 to 4294967295, got 5e9".into())),
        ("max_orders_per_second", "3", "2.0E1", Ok(json!(20))),
        ("max_orders_per_second", "3", "0.5", Err(format!("{whole} (not a fraction), got 0.5"))),
        ("max_order_notional", "3", "0.30000000000000001", Ok(json!("0.30000000000000001"))),
        ("max_order_notional", "3", "2.5e3", Ok(json!("2500"))),
        ("max_order_notional", "3", r#""12.50""#, Ok(json!("12.5"))),
        ("max_order_notional", "3", "-1.5", Err(r#"expected a decimal number > 0 such as "10.5", got -1.5"#.into())),
        ("price_band_pct", "3", "1.5e3", Err(r#"expected a decimal number > 0 and <= 1000 such as "10", got 1.5e3"#.into())),
        ("allow_short", "false", "1.0", Ok(json!(true))),
        ("allow_short", "true", "0e0", Ok(json!(false))),
        ("allow_short", "false", "0.5", Err("expected true or false (yes/no, on/off and 1/0 are read as those), got 0.5".into())),
    ];
    for tcp in [false, true] {
        for (put_path, get_path, prefix, shown_under, code_) in &routes {
            for (key, start, sent, want) in cases {
                let name = format!("{prefix}{key}");
                let (s, e) = put(tcp, put_path, &format!(r#"{{"{name}": {start}}}"#));
                assert_eq!(s, 200, "{put_path} {name} = {start}: {e}");
                let (s, answer) = put(tcp, put_path, &format!(r#"{{"{name}": {sent}}}"#));
                let at = format!("tcp {tcp}: PUT {put_path} {name} = {sent}");
                match want {
                    Ok(v) => {
                        assert_eq!(s, 200, "{at}: {answer}");
                        let shown = d.ok("GET", get_path, None);
                        let shown = if shown_under.is_empty() { &shown[*key] } else { &shown["risk"][*key] };
                        assert_eq!(shown, v, "{at}");
                    }
                    Err(message) => {
                        assert_eq!((s, code(&answer)), (400, *code_), "{at}: {answer}");
                        assert_eq!(answer["error"]["message"], format!("{name}: {message}"), "{at}");
                    }
                }
            }
        }
    }
    // The CLI sends a value as typed, and gets the same answer.
    for (args, want) in [
        (vec!["config", "set", "risk.max_open_orders", "1e2"], Ok("100")),
        (
            vec!["config", "set", "risk.max_open_orders", "100.5"],
            Err("risk.max_open_orders: expected a whole number >= 1 (not a fraction), got 100.5"),
        ),
        (
            vec!["config", "set", "trading.order_timeout_s", "2.5e4"],
            Err("trading.order_timeout_s: expected a whole number from 1 to 3600, got 2.5e4"),
        ),
        (vec!["risk", "set", "max_open_orders", "100.0"], Ok("100")),
        (vec!["risk", "set", "max_open_orders", "100.5"], Err("max_open_orders: expected a whole number >= 1 (not a fraction), got 100.5")),
        (vec!["risk", "set", "max_open_orders", "7.0", "--user", &u], Ok("7")),
        (
            vec!["risk", "set", "max_open_orders", "7.5", "--user", &u],
            Err("max_open_orders: expected a whole number >= 1 (not a fraction), got 7.5"),
        ),
        (vec!["risk", "set", "max_order_notional", "0.30000000000000001", "--user", &u], Ok("0.30000000000000001")),
    ] {
        match want {
            Ok(shown) => {
                d.cli().args(&args).assert().success().stdout(predicates::str::contains(shown));
            }
            Err(message) => {
                d.cli().args(&args).assert().code(1).stderr(predicates::str::contains(message));
            }
        }
    }
    // A list's entries: a number is no symbol name, and a tick keeps its digits.
    let (s, e) = put(true, "/api/config", r#"{"symbols": {"symbol": 1.5, "tick": 0.01, "lot": 1}}"#);
    assert_eq!(
        (s, e["error"]["message"].as_str().unwrap_or("")),
        (
            400,
            r#"symbols[0].symbol: expected 1-32 characters of A-Z, 0-9, '.' and '-', beginning and ending with a letter or digit such as "BTC-USD", got 1.5"#
        ),
        "{e}"
    );
    let (s, e) = put(false, "/api/config", r#"{"symbols": {"symbol": "NUM-USD", "tick": 0.010, "lot": 1e0}}"#);
    assert_eq!(s, 200, "{e}");
    assert_eq!(
        d.ok("GET", "/api/config", None)["symbols"].as_array().unwrap().iter().find(|s| s["symbol"] == "NUM-USD").unwrap()["tick"],
        "0.01"
    );
    // Only a number arrives as one: an object of the body's own like the daemon's
    // inner form of a number is refused.
    let (s, e) = put(false, "/api/risk/limits", r#"{"max_open_orders": {"$number": "5"}}"#);
    assert_eq!((s, code(&e)), (400, "invalid_request"), "{e}");
    // The routes whose bodies take decimals show a refused number as sent too.
    for tcp in [false, true] {
        let post = |body: &str| {
            let path = format!("/api/users/{u}/deposits");
            if tcp {
                d.tcp_raw("POST", &path, body, &admin)
            } else {
                d.raw("POST", &path, body, &[])
            }
        };
        assert_eq!(post(r#"{"asset": "USD", "amount": 1e2}"#).0, 200);
        let (s, e) = post(r#"{"asset": "USD", "amount": 1e400}"#);
        assert_eq!((s, code(&e)), (400, "invalid_request"), "{e}");
        assert!(e["error"]["message"].as_str().unwrap().starts_with("invalid request body: amount: 1e400 is beyond"), "{e}");
        let (s, e) = post(r#"{"asset": "USD", "amount": "1e400"}"#);
        assert!(s == 400 && e["error"]["message"].as_str().unwrap().contains(r#"amount: "1e400" is beyond"#), "a string stays quoted: {e}");
    }
}

#[test]
fn malformed_requests_get_json_errors_and_the_daemon_stays_healthy() {
    let d = Daemon::start();
    let cases: &[(&str, &str, &str)] = &[
        ("POST", "/api/users", "{not json"),
        ("POST", "/api/users", ""),
        ("POST", "/api/users", "[]"),
        ("POST", "/api/users", "{\"username\": 5, \"email\": []}"),
        ("POST", "/api/users", "{\"email\": \"a@b.c\"}"),
        ("PUT", "/api/config", "{{"),
        ("POST", "/api/tokens", "{\"role\": \"root\"}"),
        ("POST", "/api/tokens", "{\"role\": \"trader\"}"),
        ("GET", "/api/no/such/route", ""),
        ("DELETE", "/api/users", ""),
        ("GET", "/api/events?since=abc", ""),
        ("GET", "/api/events?type=NOPE", ""),
        // Path parameters that are not UTF-8 once decoded: axum's own answer was text.
        ("GET", "/api/users/%FF", ""),
        ("GET", "/api/users/%FF/account", ""),
        ("DELETE", "/api/orders/%C3", ""),
        ("GET", "/api/book/%FE", ""),
    ];
    for (m, p, b) in cases {
        let (s, v) = d.raw(m, p, b, &[]);
        assert!((400..500).contains(&s), "{m} {p} {b:?} -> {s} {v}");
        assert!(!code(&v).is_empty() && v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{m} {p}: {v}");
    }
    let (s, v) = d.raw("PUT", "/api/config", "{}", &[]);
    assert!(s == 400 && v["error"]["message"].as_str().unwrap().contains("nothing to set"), "{v}");
    // A key the body does not have is refused, not ignored: nothing is made or moved.
    let (s, v) = d.req("POST", "/api/users", Some(json!({"username": "extra", "email": "e@x.io", "role": "admin"})));
    assert!(s == 400 && v["error"]["message"].as_str().unwrap().contains("unknown field `role`"), "{v}");
    let u = d.user("payee");
    let (s, v) = d.req("POST", &format!("/api/users/{u}/deposits"), Some(json!({"asset": "USD", "amount": "5", "ammount": "500"})));
    assert_eq!(s, 400, "{v}");
    assert!(d.ok("GET", &format!("/api/users/{u}/account"), None)["balances"].as_array().unwrap().is_empty());
    let (s, v) = d.raw("GET", "/api/events?since=1&tail=2", "", &[]);
    assert_eq!((s, code(&v)), (400, "invalid_query"), "{v}");
    // Over the 1 MiB a request may carry: answered 413 before the rest is read, so the
    // client's write of the rest may fail (the daemon is gone from it); the answer is there.
    let big = format!("{{\"username\": \"{}\", \"email\": \"a@b.c\"}}", "x".repeat(2 << 20));
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let head = format!("POST /api/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", big.len());
    let _ = s.write_all(format!("{head}{big}").as_bytes());
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("\"payload_too_large\""), "{answer}");
    assert_eq!(d.req("GET", "/health", None).1["status"], "healthy");
}

/// What the daemon answers to `request` sent whole over `s`, read to its close.
fn answer_to<S: std::io::Read + Write>(mut s: S, request: &[u8]) -> String {
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The JSON error of a whole answer: its status and its code.
fn json_error(answer: &str) -> (u16, String) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {answer:?}"));
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), code(&v).to_string())
}

/// A body labelled as something other than JSON is refused (415) and not read, on the
/// socket and on TCP, after the caller's token and role are checked; no label at all is
/// read as JSON.
#[test]
fn a_body_that_is_not_labelled_json_is_refused_415() {
    let d = Daemon::start();
    let body = r#"{"username": "formed", "email": "f@x.io"}"#;
    for ctype in ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", "application/xml"] {
        let (s, v) = d.raw("POST", "/api/users", body, &[("Content-Type", ctype)]);
        assert_eq!((s, code(&v)), (415, "unsupported_media_type"), "{ctype}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("Content-Type: application/json") && message.contains(ctype), "{message}");
    }
    assert!(!d.ok("GET", "/api/users", None).to_string().contains("formed"), "a refused body made a user");
    // Refused unread: the audit record keeps its size and the refusal, not its bytes.
    let records = d.ok("GET", "/api/audit?limit=1000", None);
    let tried: Vec<_> = records.as_array().unwrap().iter().filter(|r| r["action"] == "POST /api/users").map(|r| &r["detail"]).collect();
    assert!(tried.iter().any(|r| r["body_bytes"] == body.len()), "{tried:?}");
    assert!(tried.iter().any(|r| r["status"] == 415 && r["error"] == "unsupported_media_type"), "{tried:?}");
    assert!(!records.to_string().contains("formed"), "a refused body reached the audit log");
    // JSON with parameters, a +json type, or no Content-Type at all: read as JSON.
    let (s, v) = d.raw("POST", "/api/users", body, &[("Content-Type", "application/json; charset=utf-8")]);
    assert_eq!(s, 201, "{v}");
    let other = r#"{"username": "patched", "email": "p@x.io"}"#;
    assert_eq!(d.raw("POST", "/api/users", other, &[("Content-Type", "application/merge-patch+json")]).0, 201);
    let (s, v) = d.raw("POST", "/api/users", r#"{"username": "bare", "email": "b@x.io"}"#, &[("Content-Type", "")]);
    assert_eq!(s, 201, "no Content-Type: {v}");
    // A command without a body is not held to its label (an empty halt is "everywhere").
    assert_eq!(d.raw("POST", "/api/risk/halt", "", &[("Content-Type", "text/plain")]).0, 200);
    assert_eq!(d.raw("POST", "/api/risk/resume", "", &[("Content-Type", "text/plain")]).0, 200);
    // An import takes the CSV itself too, and says so when refused.
    let (s, v) = d.raw("POST", "/api/market/import", "symbol,interval", &[("Content-Type", "application/x-www-form-urlencoded")]);
    assert_eq!((s, code(&v)), (415, "unsupported_media_type"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("text/csv"), "{v}");
    // A path no route has stays a 404.
    assert_eq!(d.raw("POST", "/api/nope", body, &[("Content-Type", "text/plain")]).0, 404);
    // On TCP: no token is 401 and a viewer's write 403, whatever the body's label.
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    let admin = d.ok("POST", "/api/tokens", Some(json!({"role": "admin"})))["token"].as_str().unwrap().to_string();
    let over_tcp = |token: &str| {
        let auth = format!("Bearer {token}");
        let stream = std::net::TcpStream::connect(d.tcp_addr()).unwrap();
        exchange(stream, "POST", "/api/users", Some(body), &[("Content-Type", "text/plain"), ("Authorization", auth.as_str())]).unwrap()
    };
    assert_eq!(over_tcp("nope").0, 401);
    assert_eq!(over_tcp(&viewer).0, 403);
    assert_eq!(code(&over_tcp(&admin).1), "unsupported_media_type");
}

/// A client announcing a body over the limit with `Expect: 100-continue` gets its 413
/// at once, and is never told to send the body.
#[test]
fn an_oversized_body_announced_with_expect_is_refused_before_100_continue() {
    let d = Daemon::start();
    for (path, length) in [("/api/users", 2usize << 20), ("/api/market/import", 100 << 20)] {
        let s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        );
        let answer = answer_to(s, head.as_bytes());
        assert!(!answer.contains("100 Continue"), "{path}: {answer}");
        assert_eq!(json_error(&answer), (413, "payload_too_large".to_string()), "{path}: {answer}");
    }
    // A body within the limit is still asked for and read.
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let body = r#"{"username": "expected", "email": "e@x.io"}"#;
    let head = format!(
        "POST /api/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    r.get_mut().write_all(body.as_bytes()).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
    assert!(rest.contains("HTTP/1.1 201"), "{rest}");
}

/// What hyper answers itself, before any route sees the request, is JSON like every
/// other error: a garbage request line, a URI over 64 KiB, too many headers.
#[test]
fn requests_hyper_cannot_parse_get_json_errors() {
    let d = Daemon::start();
    let long_uri = format!("GET /api/users?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let many_headers = format!("GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..150).map(|i| format!("X-N{i}: v\r\n")).collect::<String>());
    let cases = [
        ("GARBAGE\r\n\r\n".to_string(), 400, "malformed_request"),
        ("GET /health HTTP/1.1\r\nBad Header\r\n\r\n".to_string(), 400, "malformed_request"),
        (long_uri, 414, "uri_too_long"),
        (many_headers, 431, "headers_too_large"),
    ];
    for (request, status, want) in &cases {
        let s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let answer = answer_to(s, request.as_bytes());
        assert_eq!(json_error(&answer), (*status, want.to_string()), "{answer}");
    }
    let s = std::net::TcpStream::connect(d.tcp_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(json_error(&answer_to(s, b"\x01\x02 nonsense\r\n\r\n")), (400, "malformed_request".to_string()));
    assert_eq!(d.req("GET", "/health", None).1["status"], "healthy");
}

#[test]
fn socket_refuses_browser_requests() {
    let d = Daemon::start();
    let (s, v) = d.raw("GET", "/api/users", "", &[("Origin", "http://evil.example")]);
    assert_eq!((s, code(&v)), (403, "forbidden"));
    let (s, _) = d.raw("GET", "/api/users", "", &[("Referer", "http://evil.example/x")]);
    assert_eq!(s, 403);
}

#[test]
fn tcp_auth_matrix() {
    let d = Daemon::start();
    let alice = d.user("alice");
    let bob = d.user("bob");
    let tok = |role: &str, user: Option<&str>| {
        let mut b = json!({"role": role});
        if let Some(u) = user {
            b["user_id"] = u.into();
        }
        let t = d.ok("POST", "/api/tokens", Some(b));
        assert!(t["token"].as_str().unwrap().len() >= 32);
        t["token"].as_str().unwrap().to_string()
    };
    let (admin, viewer, trader) = (tok("admin", None), tok("viewer", None), tok("trader", Some(&alice)));
    for p in ["/health", "/ready", "/metrics"] {
        assert_eq!(d.tcp("GET", p, None, None).0, 200, "{p} is open");
    }
    assert_eq!(d.tcp("GET", "/api/users", None, None).0, 401);
    assert_eq!(d.tcp("GET", "/api/users", None, Some("agt_wrong")).0, 401);
    // Only `/api` needs a token: elsewhere a path no route has is 404, with or without one.
    for p in ["/nope", "/health/", "/metrics/x", "/apis", "/"] {
        let (s, e) = d.tcp("GET", p, None, None);
        assert_eq!((s, code(&e)), (404, "not_found"), "{p}: {e}");
    }
    for p in ["/api", "/api/", "/api/nope"] {
        assert_eq!(d.tcp("GET", p, None, None).0, 401, "{p}: under /api a token comes first");
    }
    assert_eq!(d.tcp("GET", "/api/users", None, Some(&admin)).0, 200);
    assert_eq!(d.tcp("GET", "/api/users", None, Some(&viewer)).0, 200);
    assert_eq!(d.tcp("GET", "/api/tokens", None, Some(&viewer)).0, 403, "viewers do not see tokens");
    assert_eq!(d.tcp("POST", "/api/users", Some(json!({"username": "v1", "email": "v1@x.io"})), Some(&viewer)).0, 403);
    let (s, own) = d.tcp("GET", "/api/users", None, Some(&trader));
    assert_eq!((s, own.as_array().map(Vec::len)), (200, Some(1)), "a trader lists its own user alone: {own}");
    assert_eq!(own[0]["user_id"], alice.as_str());
    assert_eq!(d.tcp("GET", &format!("/api/users/{alice}"), None, Some(&trader)).0, 200);
    assert_eq!(d.tcp("GET", &format!("/api/users/{bob}"), None, Some(&trader)).0, 404, "a trader cannot see other users");
    // The secret is never stored nor listed.
    let listed = d.ok("GET", "/api/tokens", None).to_string();
    assert!(!listed.contains(&admin) && !listed.contains(&trader));
    let raw = std::fs::read(d.path().join("data/auth.db")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(&admin), "token secret stored in clear");
    // Revoked tokens stop working.
    let id = d.ok("GET", "/api/tokens", None).as_array().unwrap().iter().find(|t| t["role"] == "viewer").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok("DELETE", &format!("/api/tokens/{id}"), None);
    assert_eq!(d.tcp("GET", "/api/users", None, Some(&viewer)).0, 401);
    let (s, e) = d.req("DELETE", &format!("/api/tokens/{id}"), None);
    assert_eq!((s, code(&e)), (409, "token_revoked"), "revoked twice: {e}");
    assert_eq!(d.req("DELETE", "/api/tokens/tok_nosuchtoken", None).0, 404);
    let logs = std::fs::read_dir(d.path().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(!logs.contains(&admin), "a secret reached the logs");
}

/// `GET /api/tokens` lists the live tokens: a revoked one stays on the record, so a
/// daemon that makes a token per job answered with every token it ever made (211 KB after
/// 1.4 k in a soak). `status=all` and `status=revoked` still show them; the live list
/// keeps the order of creation, and survives a restart (auth reloads it from its store).
#[test]
fn the_token_list_shows_live_tokens_unless_asked_for_revoked_ones() {
    let mut d = Daemon::start();
    let made: Vec<String> = (0..5)
        .map(|i| {
            d.ok("POST", "/api/tokens", Some(json!({"role": "viewer", "name": format!("job-{i}")})))["id"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &made[..3] {
        d.ok("DELETE", &format!("/api/tokens/{id}"), None);
    }
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let live = d.ok("GET", "/api/tokens", None);
    assert_eq!(ids(&live), made[3..], "the live ones, oldest first: {live}");
    assert!(live.as_array().unwrap().iter().all(|t| t["revoked"] == false && t["name"].as_str().unwrap().starts_with("job-")));
    assert_eq!(d.ok("GET", "/api/tokens?status=live", None), live);
    assert_eq!(ids(&d.ok("GET", "/api/tokens?status=revoked", None)), made[..3]);
    let all = d.ok("GET", "/api/tokens?status=all", None);
    assert_eq!(ids(&all), made, "{all}");
    assert_eq!(all.as_array().unwrap().iter().filter(|t| t["revoked"] == true).count(), 3);
    let (s, e) = d.req("GET", "/api/tokens?status=dead", None);
    assert_eq!((s, code(&e)), (400, "invalid_status"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("live (the default), revoked or all"), "{e}");
    assert_eq!(d.req("GET", "/api/tokens?revoked=1", None).0, 400, "an unknown parameter is refused, not ignored");
    // The CLI: live by default, `--all` for the record.
    let listed = |args: &[&str]| -> serde_json::Value {
        let out = d.cli().args(["-o", "json", "token", "list"]).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(ids(&listed(&[])), made[3..]);
    assert_eq!(ids(&listed(&["--all"])), made);
    d.restart();
    assert_eq!(ids(&d.ok("GET", "/api/tokens", None)), made[3..], "after a restart too");
}

/// What a token may do follows its role and its user to the end: a disabled user's
/// trader token is refused, a viewer's write is 403 whatever its body, a viewer does not
/// read tokens through events or audit, a trader's tape hides whose orders traded and its
/// list of users holds only its own, and a revoke ends a stream already open.
#[test]
fn roles_hold_beyond_the_routes_own_checks() {
    let d = Daemon::start();
    let (sym, alice, bob) = d.market_pair("1000000", "1000");
    let tok = |role: &str, user: Option<&str>| {
        let mut b = json!({"role": role});
        if let Some(u) = user {
            b["user_id"] = u.into();
        }
        d.ok("POST", "/api/tokens", Some(b))["token"].as_str().unwrap().to_string()
    };
    let (viewer, trader) = (tok("viewer", None), tok("trader", Some(&alice)));
    // A viewer's write is refused for its role, not for its body.
    for (method, path, body) in
        [("POST", "/api/users", "{bad"), ("PUT", "/api/orders/ord_x/status", r#"{"status":"filled"}"#), ("POST", "/api/symbols", "{}")]
    {
        let (s, e) = d.tcp_raw(method, path, body, &viewer);
        assert_eq!((s, code(&e)), (403, "forbidden"), "viewer {method} {path}: {e}");
    }
    let (s, e) = d.tcp_raw("POST", "/api/symbols", "{}", &trader);
    assert_eq!((s, code(&e)), (403, "forbidden"), "a trader adding a symbol: {e}");
    // The tape shows a trader every trade, but not whose orders made it.
    d.place(&bob, &sym, "sell", "1", Some("10"));
    d.place(&alice, &sym, "buy", "1", Some("10"));
    let (s, tape) = d.tcp("GET", &format!("/api/trades/{sym}"), None, Some(&trader));
    assert_eq!(s, 200, "{tape}");
    assert_eq!(tape.as_array().unwrap().len(), 1, "{tape}");
    assert!(tape[0].get("buy_order_id").is_none() && tape[0].get("sell_order_id").is_none(), "{tape}");
    assert!(d.ok("GET", &format!("/api/trades/{sym}"), None)[0]["buy_order_id"].as_str().unwrap().starts_with("ord_"));
    // A trader lists its own user alone: whose account it holds, not who else trades.
    let (s, users) = d.tcp("GET", "/api/users", None, Some(&trader));
    assert_eq!(s, 200, "{users}");
    let ids: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [alice.as_str()], "{users}");
    assert!(!users.to_string().contains(&bob), "{users}");
    let (s, e) = d.tcp("GET", "/api/users?limit=0", None, Some(&trader));
    assert_eq!((s, code(&e)), (400, "invalid_limit"), "{e}");
    // A viewer reads no token's records: not its events, not its commands in the audit log.
    let (s, events) = d.tcp("GET", "/api/events?limit=1000", None, Some(&viewer));
    assert_eq!(s, 200);
    let text = events.as_str().unwrap();
    assert!(text.contains("USER_CREATED") && !text.contains("TOKEN_CREATED"), "{text}");
    let (s, e) = d.tcp("GET", "/api/events?type=TOKEN_CREATED", None, Some(&viewer));
    assert_eq!((s, code(&e)), (403, "forbidden"), "{e}");
    let (s, audit) = d.tcp("GET", "/api/audit?limit=1000", None, Some(&viewer));
    assert_eq!(s, 200);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert!(
        actions.contains(&"POST /api/users") && !actions.iter().any(|a| a.contains("/api/tokens") || a.starts_with("TOKEN_")),
        "{actions:?}"
    );
    assert!(d.ok("GET", "/api/audit?limit=1000", None).to_string().contains("POST /api/tokens"), "an admin reads them");
    // A disabled user's trader token is refused, and works again once the user is enabled.
    d.cli().args(["user", "disable", &alice]).assert().success();
    let (s, e) = d.tcp("GET", &format!("/api/users/{alice}"), None, Some(&trader));
    assert_eq!((s, code(&e)), (403, "user_disabled"), "{e}");
    // Nor is a new token for it made, while it could not act.
    let (s, e) = d.req("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})));
    assert_eq!((s, code(&e)), (409, "user_disabled"), "{e}");
    d.cli()
        .args(["token", "create", "--role", "trader", "--user", &alice])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("enable it first"));
    d.cli().args(["user", "enable", &alice]).assert().success();
    // A binding that an admin or viewer token would ignore is refused, not kept.
    let (s, e) = d.req("POST", "/api/tokens", Some(json!({"role": "viewer", "user_id": alice})));
    assert_eq!((s, code(&e)), (400, "user_not_allowed"), "{e}");
    let (s, e) = d.req("POST", "/api/tokens", Some(json!({"role": "admin", "user_id": alice})));
    assert_eq!((s, code(&e)), (400, "user_not_allowed"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("; an admin token acts for every user"), "{e}");
    assert_eq!(d.tcp("GET", &format!("/api/users/{alice}"), None, Some(&trader)).0, 200);
    // A revoke ends a followed stream that was opened with the token.
    let addr = d.tcp_addr();
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!("GET /api/events?follow=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {viewer}\r\n\r\n");
    let mut r = stream_opened(s, &request);
    let id = d.ok("GET", "/api/tokens", None).as_array().unwrap().iter().find(|t| t["role"] == "viewer").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok("DELETE", &format!("/api/tokens/{id}"), None);
    d.user("after_the_revoke");
    let mut rest = String::new();
    let ended = std::io::Read::read_to_string(&mut r, &mut rest);
    assert!(ended.is_ok(), "the stream ends: {ended:?}");
    assert!(!rest.contains("after_the_revoke"), "a revoked token kept reading: {rest}");
    // Cut, not ended: a read that was not followed must not pass for the whole log.
    assert!(rest.contains("\r\n\r\n") && !rest.ends_with("0\r\n\r\n"), "the stream was cut: {rest:?}");
}

/// Disabling a user ends the event streams its trader tokens opened before, as a revoke
/// does: every request with such a token is refused from then on (403 `user_disabled`),
/// and a stream opened earlier went on carrying the user's orders and deposits until the
/// daemon stopped. The SSE stream says why in its `cut` event.
#[test]
fn disabling_a_user_cuts_the_streams_of_its_trader_tokens() {
    let d = Daemon::start();
    let alice = d.user("alice");
    let token = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})))["token"].as_str().unwrap().to_string();
    let open = |accept: &str| {
        let s = std::net::TcpStream::connect(d.tcp_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let request = format!(
            "GET /api/events?follow=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{accept}Authorization: Bearer {token}\r\n\r\n"
        );
        stream_opened(s, &request)
    };
    let (ndjson, sse) = (open(""), open("Accept: text/event-stream\r\n"));
    d.cli().args(["user", "disable", &alice]).assert().success();
    d.deposit(&alice, "USD", "4242.42");
    for (mut r, sse) in [(ndjson, false), (sse, true)] {
        let mut rest = String::new();
        let ended = std::io::Read::read_to_string(&mut r, &mut rest);
        assert!(ended.is_ok(), "the stream of a disabled user's token ends (sse {sse}): {ended:?} {rest}");
        assert!(!rest.contains("4242.42"), "it carried a deposit made after the disable (sse {sse}): {rest}");
        if sse {
            let data = rest.split("event: cut\ndata: ").nth(1).unwrap_or_else(|| panic!("no cut event: {rest:?}"));
            let error: serde_json::Value = serde_json::from_str(data.lines().next().unwrap()).unwrap();
            assert_eq!(code(&error), "user_disabled", "{error}");
        } else {
            assert!(rest.contains("\r\n\r\n") && !rest.ends_with("0\r\n\r\n"), "cut, not ended: {rest:?}");
        }
    }
    let (s, e) = d.tcp("GET", "/api/events?follow=true", None, Some(&token));
    assert_eq!((s, code(&e)), (403, "user_disabled"), "{e}");
}

/// The journal of commands is pruned whole once every command in it is stored; the
/// commands answered after the next start must still get their records.
#[test]
fn commands_keep_their_audit_records_across_restarts_after_a_prune() {
    let mut d = Daemon::start();
    let user = d.user("many");
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let body = r#"{"asset":"USD","amount":"1"}"#;
    // Over one keep-alive connection: more than a prune's worth of commands, quickly.
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for _ in 0..1100 {
        write!(
            s,
            "POST /api/users/{user}/deposits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 201") || head.starts_with("HTTP/1.1 200"), "{head}");
        let mut answer = vec![0; length];
        std::io::Read::read_exact(&mut reader, &mut answer).unwrap();
    }
    d.restart(); // stores them all and prunes the journal
    d.restart(); // opens an empty journal
    for amount in ["0.01", "0.02", "0.03"] {
        d.ok("POST", &format!("/api/users/{user}/deposits"), Some(json!({"asset": "USD", "amount": amount})));
    }
    d.restart();
    let records = d.ok("GET", "/api/audit?limit=100", None);
    let amounts: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().unwrap().ends_with("/deposits"))
        .filter_map(|r| r["detail"]["body"]["amount"].as_str())
        .collect();
    assert_eq!(amounts[amounts.len().saturating_sub(3)..], ["0.01", "0.02", "0.03"], "{records}");
    assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);
}

/// A change to `agt.toml` made while the daemon was stopped is recorded and announced at
/// the next start (a `config set` a crash cut off is not: `config.rs`).
#[test]
fn a_config_change_made_while_stopped_is_announced_at_start() {
    let mut d = Daemon::start();
    d.ok("PUT", "/api/config", Some(json!({"risk.max_open_orders": 50})));
    d.stop();
    let file = d.path().join("agt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("max_open_orders = 50"), "{text}");
    std::fs::write(&file, text.replace("max_open_orders = 50", "max_open_orders = 60")).unwrap();
    d.spawn();
    let changed = d.events("CONFIG_CHANGED");
    let last = changed.last().expect("a CONFIG_CHANGED event");
    assert_eq!(
        (&last["data"]["key"], &last["data"]["old"], &last["data"]["value"]),
        (&json!("risk.max_open_orders"), &json!(50), &json!(60)),
        "{changed:?}"
    );
    assert_eq!(last["data"]["applied"], "at start");
    // A start with nothing changed announces nothing, nor does a set to the same value.
    d.restart();
    assert_eq!(d.events("CONFIG_CHANGED").len(), changed.len(), "nothing new to announce");
    d.ok("PUT", "/api/config", Some(json!({"risk.max_open_orders": 60})));
    d.cli().args(["config", "set", "risk.max_open_orders", "60"]).assert().success();
    assert_eq!(d.events("CONFIG_CHANGED").len(), changed.len(), "a set to the value it has is no change");
    d.ok("PUT", "/api/config", Some(json!({"risk.max_open_orders": 61})));
    assert_eq!(d.events("CONFIG_CHANGED").len(), changed.len() + 1);
}

/// A token is refused (401) only once the daemon knows it is not valid. While the auth
/// service has not loaded its store (a start, or a store it cannot open), a request
/// with a valid token gets 503, and so does a trader token while the users service has
/// not loaded its user: a client that gives up on a 401, as `agt tui` does, retries a
/// 503. Here a store is unreadable, so the window stays open.
#[test]
fn a_token_is_not_refused_before_its_stores_are_loaded() {
    let mut d = Daemon::start();
    let alice = d.user("alice");
    let trader = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})))["token"].as_str().unwrap().to_string();
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    let unreadable = |d: &mut Daemon, store: &str| {
        d.stop();
        let data = d.path().join("data");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(data.join(format!("{store}{suffix}")));
        }
        std::fs::write(data.join(store), vec![0x5a; 8192]).unwrap();
        d.spawn_listening();
    };

    unreadable(&mut d, "users.db");
    // Auth loads its tokens a moment after the listeners are up; from then on the
    // trader's token waits for its user, which never loads.
    let (s, e) = wait_until("auth's tokens", Duration::from_secs(10), || {
        let (s, e) = d.tcp("GET", "/api/symbols", None, Some(&trader));
        (!e.to_string().contains("tokens are not loaded")).then_some((s, e))
    });
    assert_eq!((s, code(&e)), (503, "service_unavailable"), "{e}");
    assert!(e.to_string().contains("users are not loaded"), "{e}");
    // The supervisor's view needs no service that may still be starting.
    let (s, v) = d.tcp("GET", "/api/services", None, Some(&viewer));
    assert_eq!(s, 200, "a token bound to no user is let in: {v}");

    unreadable(&mut d, "auth.db");
    let (s, e) = d.tcp("GET", "/api/symbols", None, Some(&viewer));
    assert_eq!((s, code(&e)), (503, "service_unavailable"), "{e}");
    assert!(e.to_string().contains("tokens are not loaded"), "{e}");
    // An open route still answers; and a request without a token is still a 401.
    assert_eq!(d.tcp("GET", "/health", None, None).0, 200);
    assert_eq!(d.tcp("GET", "/api/symbols", None, None).0, 401);
}

#[test]
fn tokens_users_and_audit_survive_sigkill() {
    let mut d = Daemon::start();
    let u = d.user("durable");
    let t = d.ok("POST", "/api/tokens", Some(json!({"role": "admin"})))["token"].as_str().unwrap().to_string();
    let audit_before = d.ok("GET", "/api/audit?limit=100000", None).as_array().unwrap().len();
    d.kill9();
    d.spawn();
    assert_eq!(d.req("GET", &format!("/api/users/{u}"), None).0, 200);
    assert_eq!(d.tcp("GET", "/api/users", None, Some(&t)).0, 200);
    let after = d.ok("GET", "/api/audit?limit=100000", None).as_array().unwrap().len();
    assert!(after >= audit_before, "audit records lost: {audit_before} -> {after}");
    assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);
}

#[test]
fn events_resume_from_since_and_follow_live() {
    let d = Daemon::start();
    d.user("e1");
    let (_, all) = d.raw("GET", "/api/events?since=0", "", &[]);
    let lines: Vec<serde_json::Value> = all.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let last = *seqs.last().unwrap();
    let mid = seqs[seqs.len() / 2];
    let (_, later) = d.raw("GET", &format!("/api/events?since={mid}"), "", &[]);
    assert!(later.as_str().unwrap().lines().all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap() > mid));
    // follow: a new event arrives on the open stream
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    write!(s, "GET /api/events?since={last}&follow=true&type=USER_CREATED HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let id = d.user("e2");
    let mut found = false;
    for _ in 0..20 {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains(&id) {
            assert!(line.contains("USER_CREATED"));
            found = true;
            break;
        }
    }
    assert!(found, "USER_CREATED did not arrive on the follow stream");
    let out = d.cli_current(&["-o", "json", "events", "tail", "--since", "0", "--type", "USER_CREATED"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&id), "{out:?}");
}

/// `agt events tail` without `--since` shows the newest 20 events (of the asked types),
/// oldest first, which the daemon finds itself (`tail=N`): a long log is not streamed to
/// the client only for its end.
#[test]
fn events_tail_shows_the_newest_events() {
    let d = Daemon::start();
    let ids: Vec<String> = (0..25).map(|i| d.user(&format!("t{i}"))).collect();
    let out = d.cli_current(&["-o", "json", "events", "tail", "--type", "USER_CREATED"]);
    assert!(out.status.success(), "{out:?}");
    let out = out.stdout;
    let shown: Vec<serde_json::Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let users: Vec<&str> = shown.iter().map(|e| e["data"]["user_id"].as_str().unwrap()).collect();
    assert_eq!(users, ids[5..].iter().map(String::as_str).collect::<Vec<_>>(), "the newest 20, oldest first");
    let all = d.cli_current(&["-o", "json", "events", "tail"]);
    assert!(all.status.success(), "{all:?}");
    let all = all.stdout;
    let all: Vec<serde_json::Value> = String::from_utf8(all).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let newest = d.events("").iter().map(|e| e["seq"].as_u64().unwrap()).max().unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(all.last().unwrap()["seq"].as_u64(), Some(newest), "ends at the newest event");

    let (_, three) = d.raw("GET", "/api/events?tail=3&type=USER_CREATED", "", &[]);
    let three: Vec<serde_json::Value> = three.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(three.iter().map(|e| e["data"]["user_id"].as_str().unwrap()).collect::<Vec<_>>(), ids[22..].to_vec());
    let (status, body) = d.req("GET", "/api/events?tail=3&since=1", None);
    assert_eq!((status, code(&body)), (400, "invalid_query"), "{body}");
    let (status, body) = d.req("GET", "/api/events?tail=many", None);
    assert_eq!(status, 400, "{body}");
}

/// Server-sent events carry the seq as their `id`, and a browser's EventSource resumes
/// with `Last-Event-ID`: the stream goes on after it, whatever `since` its URL says.
#[test]
fn sse_resumes_after_the_last_event_id() {
    let d = Daemon::start();
    for i in 0..3 {
        d.user(&format!("s{i}"));
    }
    let sse = [("Accept", "text/event-stream")];
    let (_, body) = d.raw("GET", "/api/events?since=0", "", &sse);
    let ids = |body: &serde_json::Value| -> Vec<u64> {
        body.as_str().unwrap().lines().filter_map(|l| l.strip_prefix("id: ")).map(|i| i.parse().unwrap()).collect()
    };
    let all = ids(&body);
    assert!(all.len() > 5 && all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    let mid = all[all.len() / 2].to_string();
    let (_, resumed) = d.raw("GET", "/api/events?since=0", "", &[sse[0], ("Last-Event-ID", mid.as_str())]);
    assert_eq!(ids(&resumed), all[all.len() / 2 + 1..], "after the last id, not from since=0");
    let (status, body) = d.raw("GET", "/api/events", "", &[sse[0], ("Last-Event-ID", "yesterday")]);
    assert_eq!((status, code(&body)), (400, "invalid_query"), "{body}");
}

/// With a short retention, set on a running daemon, old events leave `events.db` once every service following the
/// bus has passed them: resuming from a pruned seq says so (410) instead of skipping,
/// reading from the start gives what is kept, the audit log still holds every event, and
/// numbering goes on after a SIGKILL.
#[test]
fn events_older_than_the_retention_are_pruned_and_a_stale_since_says_so() {
    let mut d = Daemon::start();
    let first = d.user("kept-in-audit");
    d.user("later");
    // Its seq is read before the retention is shortened: a second after the set the
    // event may be gone already (a loaded machine took that long to read it after).
    let created = d.events("USER_CREATED");
    let seq = created.iter().find(|e| e["data"]["user_id"] == first.as_str()).unwrap()["seq"].as_u64().unwrap();
    // A hot key: the running daemon starts pruning without a restart.
    d.cli().args(["config", "set", "events.retain_s", "1"]).assert().success();
    let stale = format!("/api/events?since={}", seq - 1);
    // Pruning is checked every second, for events older than a second.
    let start = std::time::Instant::now();
    let (status, body) = loop {
        let (status, body) = d.req("GET", &stale, None);
        if status != 200 || start.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((status, code(&body)), (410, "events_pruned"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("since="), "says how to resume: {body}");
    d.cli()
        .args(["events", "tail", "--since", &(seq - 1).to_string()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("no longer kept"));
    assert!(d.events("USER_CREATED").iter().all(|e| e["data"]["user_id"] != first.as_str()), "read from the start, only what is kept");
    let (_, metrics) = d.req("GET", "/metrics", None);
    let kept = metrics.as_str().unwrap().lines().find_map(|l| l.strip_prefix("agt_bus_events_kept ")).map(|v| v.parse::<u64>().unwrap());
    assert!(kept.is_some_and(|k| k < seq), "/metrics says how many events are kept: {kept:?} (the pruned one was {seq})");
    let audit = d.ok("GET", "/api/audit?limit=100000", None);
    let audited = audit.as_array().unwrap().iter().any(|r| r["action"] == "USER_CREATED" && r["detail"].to_string().contains(&first));
    assert!(audited, "the audit log keeps every event");
    assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);

    let last = d.events("").iter().map(|e| e["seq"].as_u64().unwrap()).max().unwrap();
    d.kill9();
    d.spawn();
    let again = d.user("after-restart");
    let after = d.events("USER_CREATED");
    let seq_again = after.iter().find(|e| e["data"]["user_id"] == again.as_str()).unwrap()["seq"].as_u64().unwrap();
    assert!(seq_again > last, "numbering goes on after pruning and a SIGKILL: {seq_again} after {last}");
}

/// Commands sent at once from many connections each get one audit record: the HTTP
/// workers write the commands they have ready to audit's journal together
/// (`CommandLog::stage`), and none is lost or doubled on the way, nor the chain broken.
#[test]
fn concurrent_commands_each_get_one_audit_record() {
    let d = Daemon::start();
    let user = d.user("many");
    let (threads, each) = (8, 25);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..each {
                    d.deposit(&user, "USD", "1");
                }
            });
        }
    });
    let action = format!("POST /api/users/{user}/deposits");
    // A generous bound: a loaded machine's audit may be seconds behind.
    wait_until("every deposit to be audited", Duration::from_secs(60), || {
        let log = d.ok("GET", "/api/audit?limit=100000", None);
        let n = log.as_array().unwrap().iter().filter(|r| r["action"] == action.as_str()).count();
        assert!(n <= threads * each, "{n} records for {} deposits", threads * each);
        (n == threads * each).then_some(())
    });
    assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);
    let account = d.ok("GET", &format!("/api/users/{user}/account"), None);
    assert_eq!(account["balances"][0]["total"], "200", "every deposit ran once: {account}");
}

/// A command's record keeps what was asked (query and body, secrets masked), and a
/// refused one gets a second record with the status and error code.
#[test]
fn audit_records_say_what_each_command_asked_and_which_were_refused() {
    let d = Daemon::start();
    let user = d.user("audited");
    d.deposit(&user, "USD", "12.34");
    let trader = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": user})))["token"].as_str().unwrap().to_string();
    let (s, _) = d.tcp("POST", "/api/users", Some(json!({"username": "sneaky", "email": "s@x.io"})), Some(&trader));
    assert_eq!(s, 403);
    d.ok("PUT", "/api/config", Some(json!({"notify.webhooks": [{"url": "http://127.0.0.1:9/a", "secret": "hush"}]})));
    let records = d.ok("GET", "/api/audit?limit=1000", None);
    let records = records.as_array().unwrap();
    let of = |action: &str| records.iter().filter(|r| r["action"] == action).map(|r| r["detail"].clone()).collect::<Vec<_>>();
    let deposit = of(&format!("POST /api/users/{user}/deposits"));
    assert_eq!(deposit.len(), 1, "{deposit:?}");
    assert_eq!((deposit[0]["body"]["asset"].as_str(), deposit[0]["body"]["amount"].as_str()), (Some("USD"), Some("12.34")), "{deposit:?}");
    let tried = of("POST /api/users");
    let refused: Vec<_> = tried.iter().filter(|d| d["status"] == 403).collect();
    assert_eq!(refused.len(), 1, "{tried:?}");
    assert_eq!(refused[0]["error"], "forbidden");
    assert!(tried.iter().any(|d| d["body"]["username"] == "sneaky"), "{tried:?}");
    // A body that is not JSON is kept as text: it cannot add fields to the detail.
    let forged = r#"{"asset": "USD", "amount": "1"}, "status": 201"#;
    let (s, _) = d.raw("POST", &format!("/api/users/{user}/withdrawals"), forged, &[]);
    assert_eq!(s, 400);
    let after = d.ok("GET", "/api/audit?limit=1000", None);
    let tried: Vec<_> = after.as_array().unwrap().iter().filter(|r| r["action"] == format!("POST /api/users/{user}/withdrawals")).collect();
    assert!(tried.iter().any(|r| r["detail"]["body"] == forged && r["detail"].get("status").is_none()), "{tried:?}");
    // A secret's key spelled with an escape is masked too.
    let escaped = r#"{"notify.webhooks": [{"url": "http://127.0.0.1:9/b", "secr\u0065t": "quiet"}]}"#;
    assert_eq!(d.raw("PUT", "/api/config", escaped, &[]).0, 200);
    // So is one under a key that names it (refused, but recorded), or inside a string.
    let dotted = json!({"notify.webhooks.0.secret": "dotted"});
    assert_eq!(d.req("PUT", "/api/config", Some(dotted)).0, 400);
    let as_text = json!({"notify.webhooks": r#"[{"url": "http://127.0.0.1:9/c", "secret": "texted"}]"#});
    d.req("PUT", "/api/config", Some(as_text));
    let after = d.ok("GET", "/api/audit?limit=1000", None);
    assert!(!after.to_string().contains("quiet"), "an escaped secret reached the audit log");
    for secret in ["dotted", "texted"] {
        assert!(!after.to_string().contains(secret), "{secret} reached the audit log");
    }
    let config = of("PUT /api/config");
    assert_eq!(config[0]["body"]["notify.webhooks"][0]["secret"], "***", "{config:?}");
    assert!(!records.iter().any(|r| r.to_string().contains("hush")), "a secret never reaches the audit log");
    assert_eq!(d.ok("GET", "/api/audit/verify", None)["ok"], true);
}

/// `since=N` on the audit log pages forward: the first records after `N`, so a reader
/// passing the last seq it saw goes through every record once. Without `since`, the
/// newest ones.
#[test]
fn audit_pages_forward_from_since_and_tails_without_it() {
    let d = Daemon::start();
    for i in 0..8 {
        d.user(&format!("p{i}"));
    }
    let seqs = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>();
    // Events reach the audit log a moment after their commands: wait for the last one.
    let all = wait_until("the users' events to be audited", Duration::from_secs(60), || {
        let log = d.ok("GET", "/api/audit?limit=100000", None);
        (log.as_array().unwrap().iter().filter(|r| r["action"] == "USER_CREATED").count() == 8).then(|| seqs(&log))
    });
    assert!(all.len() > 12, "{all:?}");
    assert_eq!(seqs(&d.ok("GET", "/api/audit?since=0&limit=3", None)), all[..3], "the first records after since");
    assert_eq!(seqs(&d.ok("GET", "/api/audit?limit=3", None)), all[all.len() - 3..], "the newest without since");
    let (mut paged, mut last) = (Vec::new(), 0);
    loop {
        let page = seqs(&d.ok("GET", &format!("/api/audit?since={last}&limit=5"), None));
        let Some(&end) = page.last() else { break };
        paged.extend(page);
        last = end;
    }
    assert_eq!(paged[..all.len()], all[..], "paging with since visits every record once, in order");
    let out = d.cli_current(&["-o", "json", "audit", "tail", "--since", "0", "--limit", "2"]);
    assert!(out.status.success(), "{out:?}");
    let out = out.stdout;
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(records.iter().map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>(), all[..2]);
}

#[test]
fn audit_chain_detects_tampering_and_names_the_record() {
    let mut d = Daemon::start();
    for i in 0..3 {
        d.user(&format!("a{i}"));
    }
    let v = d.ok("GET", "/api/audit/verify", None);
    assert_eq!(v["ok"], true);
    let n = v["records"].as_u64().unwrap();
    assert!(n >= 6, "commands and events are both audited ({n})");
    d.cli().args(["audit", "verify"]).assert().success();
    d.stop();
    // Record 3's actor changed in place: records are kept a line each in blocks.
    let conn = rusqlite::Connection::open(d.path().join("data/audit.db")).unwrap();
    let (last, body): (i64, String) = conn
        .query_row("SELECT last_seq, body FROM record_blocks WHERE first_seq <= 3 AND last_seq >= 3", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let lines: Vec<String> = body
        .split('\n')
        .map(|l| match l.starts_with("[3,") {
            true => {
                let mut record: serde_json::Value = serde_json::from_str(l).unwrap();
                record[2] = json!("mallory");
                record.to_string()
            }
            false => l.to_string(),
        })
        .collect();
    assert_ne!(lines.join("\n"), body);
    conn.execute("UPDATE record_blocks SET body = ?1 WHERE last_seq = ?2", rusqlite::params![lines.join("\n"), last]).unwrap();
    drop(conn);
    d.spawn();
    let v = d.ok("GET", "/api/audit/verify", None);
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad"], 3);
    d.cli().args(["audit", "verify"]).assert().code(1);
}

#[test]
fn config_set_validates_persists_and_applies_hot_keys() {
    let mut d = Daemon::start();
    d.cli().args(["config", "set", "risk.max_open_orders", "7"]).assert().success();
    d.cli().args(["config", "get", "risk.max_open_orders"]).assert().success().stdout(predicates::str::contains("7"));
    let (s, e) = d.req("PUT", "/api/config", Some(json!({"risk.max_open_orders": "many"})));
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("risk.max_open_orders"));
    let (s, _) = d.req("PUT", "/api/config", Some(json!({"no.such.key": 1})));
    assert_eq!(s, 400);
    d.cli().args(["config", "set", "log.level", "loud"]).assert().code(1);
    assert!(std::fs::read_to_string(d.path().join("agt.toml")).unwrap().contains("max_open_orders = 7"));
    // A key the daemon cannot apply live says so (below); set to what the daemon runs with,
    // nothing waits for a start, and a hot one never does.
    d.cli().args(["config", "set", "durability", "normal"]).assert().success().stdout(predicates::str::contains("next starts").not());
    d.cli().args(["config", "set", "log.level", "info"]).assert().success().stdout(predicates::str::contains("next starts").not());
    // The webhooks set are the whole list, live: [] removes them.
    let hook = json!([{"url": "http://127.0.0.1:9/hook", "events": ["USER_CREATED"]}]);
    d.ok("PUT", "/api/config", Some(json!({"notify.webhooks": hook})));
    let config_rules =
        || d.ok("GET", "/api/notifications/rules", None).as_array().unwrap().iter().filter(|r| r["source"] == "config").count();
    assert_eq!(config_rules(), 1);
    d.cli().args(["config", "set", "notify.webhooks", "[]"]).assert().success().stdout(predicates::str::contains("next starts").not());
    assert_eq!(config_rules(), 0);
    assert!(!std::fs::read_to_string(d.path().join("agt.toml")).unwrap().contains("127.0.0.1:9/hook"));
    // Until that start, `get` and `show` say what the daemon runs with.
    d.cli()
        .args(["config", "set", "durability", "full"])
        .assert()
        .success()
        .stdout(predicates::str::contains("when the daemon next starts"));
    assert_eq!(d.ok("GET", "/api/config/pending", None), json!({"durability": {"saved": "full", "running": "normal"}}));
    d.cli()
        .args(["config", "get", "durability"])
        .assert()
        .success()
        .stdout("full  (saved; the daemon runs with normal until it restarts)\n");
    d.cli().args(["config", "get", "durability", "-o", "json"]).assert().success().stdout("\"full\"\n");
    d.cli()
        .args(["config", "show"])
        .assert()
        .success()
        .stdout(predicates::str::contains("durability = full  (saved; the daemon runs with normal"));
    d.restart();
    assert_eq!(d.ok("GET", "/api/config", None)["risk"]["max_open_orders"], 7);
    assert_eq!(d.ok("GET", "/api/config/pending", None), json!({}), "applied at the start");
    d.cli().args(["config", "get", "durability"]).assert().success().stdout("full\n");
}

/// An edit of `agt.toml` that asks an existing instrument for other terms is not taken
/// for a change that applies: the edit's log line says it is not applied and why, and
/// the next start announces only the entries the market then trades as written (a new
/// symbol), not the refused one, which stays pending.
#[test]
fn an_edited_instrument_in_agt_toml_is_not_announced_as_applied() {
    let mut d = Daemon::start();
    let file = d.path().join("agt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let msft = |tick: &str| {
        format!("\n[[symbols]]\nsymbol = \"MSFT\"\ntick = \"{tick}\"\nlot = \"1\"\nmin_quantity = \"1\"\nmax_quantity = \"100000\"\n")
    };
    let newco = "\n[[symbols]]\nsymbol = \"EDITCO\"\ntick = \"0.01\"\nlot = \"1\"\n";
    // One added through the API while the daemon runs is known as existing too.
    d.ok("POST", "/api/symbols", Some(json!({"symbol": "APICO", "tick": "0.01", "lot": "1"})));
    let apico = "\n[[symbols]]\nsymbol = \"APICO\"\ntick = \"0.1\"\nlot = \"1\"\n";
    std::fs::write(&file, format!("{text}{}{newco}{apico}", msft("0.05"))).unwrap();
    wait_until("the edit's symbols to be said", Duration::from_secs(10), || {
        d.log().contains("not applied, now or at a start").then_some(())
    });
    let log = d.log();
    assert!(log.contains("MSFT already trades on other terms (tick: trades with 0.01, requested 0.05)"), "{log}");
    assert!(log.contains("the market lists it at the next start") && log.contains("EDITCO"), "{log}");
    assert!(log.contains("APICO already trades on other terms (tick: trades with 0.01, requested 0.1)"), "{log}");
    assert!(!log.contains("it applies at the next start"), "no claim for the whole list: {log}");
    let symbols_changed = |d: &Daemon| d.events("CONFIG_CHANGED").into_iter().filter(|e| e["data"]["key"] == "symbols").collect::<Vec<_>>();
    assert!(symbols_changed(&d).is_empty(), "nothing applied yet");

    d.restart();
    let changed = wait_until("the start's symbols change", Duration::from_secs(10), || symbols_changed(&d).pop());
    assert_eq!(changed["data"]["applied"], "at start", "{changed}");
    let entry = |list: &serde_json::Value, symbol: &str| list.as_array().unwrap().iter().find(|e| e["symbol"] == symbol).cloned();
    assert_eq!(entry(&changed["data"]["value"], "EDITCO").expect("the new symbol was applied")["tick"], "0.01", "{changed}");
    assert_eq!(entry(&changed["data"]["value"], "MSFT").expect("as it was")["tick"], "0.01", "not the refused terms: {changed}");
    assert!(d.log().contains("is not applied: MSFT already trades on other terms"), "{}", d.log());
    let pending = d.ok("GET", "/api/config/pending", None);
    assert_eq!(pending["symbols"]["saved"].as_array().unwrap().len(), 2, "only MSFT and APICO wait: {pending}");
    assert_eq!(pending["symbols"]["saved"][0]["tick"], "0.05", "{pending}");

    // Only the refused entry changed while stopped: nothing is announced.
    d.stop();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("tick = \"0.05\"", "tick = \"0.02\"")).unwrap();
    d.spawn();
    wait_until("the start to say the entry is not applied", Duration::from_secs(10), || {
        d.log().contains("is not applied: MSFT already trades on other terms (tick: trades with 0.01, requested 0.02)").then_some(())
    });
    // A set answered after that tick's commit: an event of it would be out by now.
    d.ok("PUT", "/api/config", Some(json!({"log.level": "info"})));
    assert_eq!(symbols_changed(&d).len(), 1, "no new announcement");
}

/// An edit of `agt.toml` that adds a `[[symbols]]` entry is said in the log once: the
/// live settings take the file's symbols (so the entry shows as pending), and a later
/// edit of another key does not say it again. The start after still announces it.
#[test]
fn an_edited_symbol_is_said_once_and_announced_at_the_next_start() {
    let mut d = Daemon::start();
    let file = d.path().join("agt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n[[symbols]]\nsymbol = \"ONCECO\"\ntick = \"0.01\"\nlot = \"1\"\n")).unwrap();
    let said = |d: &Daemon| d.log().matches("lists a new symbol").count();
    wait_until("the edit's symbol to be said", Duration::from_secs(10), || (said(&d) == 1).then_some(()));
    let pending = d.ok("GET", "/api/config/pending", None);
    assert_eq!(pending["symbols"]["saved"][0]["symbol"], "ONCECO", "the saved entry waits for a start: {pending}");
    let limit = |d: &Daemon| d.ok("GET", "/api/risk/limits", None)["max_open_orders"].as_u64();
    // Two edits of another key, each seen before the next.
    let text = std::fs::read_to_string(&file).unwrap();
    for (n, text) in [(41, format!("[risk]\nmax_open_orders = 41\n\n{text}")), (42, format!("[risk]\nmax_open_orders = 42\n\n{text}"))] {
        std::fs::write(&file, text).unwrap();
        wait_until("the edit to apply", Duration::from_secs(10), || (limit(&d) == Some(n)).then_some(()));
    }
    assert_eq!(said(&d), 1, "said once, not at every edit after: {}", d.log());
    let symbols_changed = |d: &Daemon| d.events("CONFIG_CHANGED").into_iter().filter(|e| e["data"]["key"] == "symbols").collect::<Vec<_>>();
    assert!(symbols_changed(&d).is_empty(), "not announced before a start lists it");

    d.restart();
    let changed = wait_until("the start's symbols change", Duration::from_secs(10), || symbols_changed(&d).pop());
    let value = changed["data"]["value"].as_array().unwrap();
    assert!(value.iter().any(|e| e["symbol"] == "ONCECO"), "{changed}");
    assert!(d.ok("GET", "/api/symbols", None).as_array().unwrap().iter().any(|i| i["symbol"] == "ONCECO"));
}

/// An empty `http.listen` (TCP off) reads as that in `config get` and `config show`, not
/// as a blank; scripts still get the value itself.
#[test]
fn an_empty_http_listen_reads_as_tcp_off() {
    let d = Daemon::with_config_env("", &[("AGT_HTTP_ADDR", "")]);
    assert_eq!(d.http, None, "TCP is off");
    d.cli()
        .args(["config", "get", "http.listen"])
        .assert()
        .success()
        .stdout("\"\"  (TCP off: the API is served on the Unix socket only)\n");
    d.cli().args(["config", "get", "http.listen", "-o", "json"]).assert().success().stdout("\"\"\n");
    d.cli().args(["config", "get", "http"]).assert().success().stdout(predicates::str::contains("listen = \"\"  (TCP off"));
    d.cli().args(["config", "show"]).assert().success().stdout(predicates::str::contains("http.listen = \"\"  (TCP off"));
    assert_eq!(d.ok("GET", "/api/config", None)["http"]["listen"], "", "the API's value is as it was");
}

#[test]
fn an_edit_of_agt_toml_is_applied_within_a_second_and_a_broken_one_changes_nothing() {
    let d = Daemon::with_config_env("[risk]\nmax_open_orders = 40\n", &[("AGT_RISK_PRICE_BAND_PCT", "15")]);
    let file = d.path().join("agt.toml");
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&file, text.replace(from, to)).unwrap();
    };
    let limit = || d.ok("GET", "/api/risk/limits", None)["max_open_orders"].as_u64();
    edit("max_open_orders = 40", "max_open_orders = 9");
    wait_until("the edit to apply", Duration::from_secs(10), || (limit() == Some(9)).then_some(()));
    // The setting is live within the config service's batch; its event is stored by the
    // bus after that batch commits, a moment later.
    wait_until("the edit's CONFIG_CHANGED", Duration::from_secs(10), || {
        let changes = d.events("CONFIG_CHANGED");
        changes.iter().any(|e| e["data"]["key"] == "risk.max_open_orders" && e["data"]["value"] == 9).then_some(())
    });
    // A file that does not load is reported and leaves everything as it was.
    edit("max_open_orders = 9", "max_open_orders = \"many\"");
    wait_until("the bad edit to be reported", Duration::from_secs(10), || d.log().contains("does not load").then_some(()));
    assert_eq!(limit(), Some(9));
    // A `config set` meanwhile would write a file that does not load: refused as the
    // operator's to fix (409, naming the key), not as the daemon's failure (500).
    let (s, e) = d.req("PUT", "/api/config", Some(json!({"log.level": "debug"})));
    assert_eq!((s, code(&e)), (409, "config_not_saved"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("risk.max_open_orders") && message.contains("fix the file"), "{message}");
    // `config set` writes the file itself: that write is not taken for an edit, and the
    // environment still wins over the file, as at start.
    edit("max_open_orders = \"many\"", "max_open_orders = 9");
    d.cli().args(["config", "set", "risk.max_open_orders", "12"]).assert().success();
    assert_eq!(limit(), Some(12));
    assert_eq!(d.ok("GET", "/api/config", None)["risk"]["price_band_pct"], "15");
    // An edit followed at once by `config set` of another key: both are live when it answers.
    edit("max_open_orders = 12", "max_open_orders = 13");
    d.cli().args(["config", "set", "log.level", "debug"]).assert().success();
    assert_eq!(limit(), Some(13));
    // Webhooks written into the file, then taken out again, are live too.
    let hooks = || d.ok("GET", "/api/notifications/rules", None).as_array().unwrap().iter().filter(|r| r["source"] == "config").count();
    edit("max_open_orders = 13", "max_open_orders = 13\n\n[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/edit\"\n");
    wait_until("the added webhook", Duration::from_secs(10), || (hooks() == 1).then_some(()));
    edit("[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/edit\"\n", "");
    wait_until("the removed webhook", Duration::from_secs(10), || (hooks() == 0).then_some(()));
}

/// `agt daemon start --http ADDR` sets the listener for that run over agt.toml, as
/// `AGT_HTTP_ADDR` does. An edit of another key in agt.toml is no change of
/// `http.listen`: the watcher used to read the file again without the flag, announce
/// `http.listen` changed to the file's value "at restart" and list it as pending, and the
/// next start with the same flag then announced it changed back.
#[test]
fn an_edit_of_agt_toml_keeps_the_http_flag_of_the_run() {
    let d = Daemon::unstarted("", &[]);
    let file = d.path().join("agt.toml");
    let config = |open: u32| format!("[http]\nlisten = \"\"\n\n[risk]\nmax_open_orders = {open}\n");
    std::fs::write(&file, config(40)).unwrap();
    /// Stops the daemon `agt daemon start` left running, however the test ends.
    struct Stop<'a>(&'a Daemon);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.cli().args(["daemon", "stop"]).ok();
        }
    }
    let _stop = Stop(&d);
    let start = || d.cli().args(["daemon", "start", "--http", "127.0.0.1:0"]).assert().success();
    start();
    let keys = || d.events("CONFIG_CHANGED").iter().map(|e| e["data"]["key"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    std::fs::write(&file, config(41)).unwrap();
    wait_until("the edit to apply", Duration::from_secs(10), || {
        d.events("CONFIG_CHANGED").iter().any(|e| e["data"]["value"] == 41).then_some(())
    });
    assert_eq!(keys(), ["risk.max_open_orders"], "the edit changed one key");
    assert_eq!(d.ok("GET", "/api/config/pending", None), json!({}), "the daemon runs with the listener it was started with");
    d.cli().args(["config", "get", "http.listen"]).assert().success().stdout(predicates::str::contains("saved").not());
    // The same flag at the next start: nothing changed while stopped.
    d.cli().args(["daemon", "stop"]).assert().success();
    start();
    d.cli().args(["config", "set", "risk.max_open_orders", "42"]).assert().success();
    wait_until("the set's announcement", Duration::from_secs(10), || {
        d.events("CONFIG_CHANGED").iter().any(|e| e["data"]["value"] == 42).then_some(())
    });
    assert_eq!(keys(), ["risk.max_open_orders", "risk.max_open_orders"], "no start announced http.listen");
    // A set of http.listen saves it for the next start; an edit after it does not take
    // the flag's value back for a change.
    d.cli().args(["config", "set", "http.listen", "127.0.0.1:1"]).assert().success();
    let pending = json!({"http.listen": {"saved": "127.0.0.1:1", "running": "127.0.0.1:0"}});
    assert_eq!(d.ok("GET", "/api/config/pending", None), pending);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("max_open_orders = 42", "max_open_orders = 43")).unwrap();
    wait_until("the second edit to apply", Duration::from_secs(10), || {
        d.events("CONFIG_CHANGED").iter().any(|e| e["data"]["value"] == 43).then_some(())
    });
    let last: Vec<String> = keys().into_iter().skip(2).collect();
    assert_eq!(last, ["http.listen", "risk.max_open_orders"], "the set, then the edit");
    assert_eq!(d.ok("GET", "/api/config/pending", None), pending);
}

/// `printf … > agt.toml` truncates the file, then writes it. The empty file between is
/// not an edit: applied, it took every key back to its default, announced, for a tick.
/// The watcher holds it (and says so) and applies the written file once.
#[test]
fn a_truncated_then_written_agt_toml_is_applied_once_as_written() {
    let d = Daemon::with_config("[risk]\nmax_open_orders = 40\nallow_short = true\n");
    let file = d.path().join("agt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let before = d.events("CONFIG_CHANGED").len();
    std::fs::OpenOptions::new().write(true).truncate(true).open(&file).unwrap();
    // The watcher has looked at the empty file (past its tick) and waits for the write.
    wait_until("the empty file to be held", Duration::from_secs(10), || d.log().contains("is empty or missing: waiting").then_some(()));
    std::fs::write(&file, text.replace("max_open_orders = 40", "max_open_orders = 41")).unwrap();
    // Its announcement follows every one before it: a revert to the defaults would be there.
    let changes: Vec<serde_json::Value> = wait_until("the written edit's announcement", Duration::from_secs(10), || {
        let changes: Vec<serde_json::Value> = d.events("CONFIG_CHANGED").into_iter().skip(before).collect();
        changes.iter().any(|e| e["data"]["value"] == 41).then_some(changes)
    });
    assert_eq!(d.ok("GET", "/api/risk/limits", None)["max_open_orders"], 41);
    assert_eq!(changes.len(), 1, "only the written change, never the empty file's defaults: {changes:?}");
    assert_eq!(
        (&changes[0]["data"]["key"], &changes[0]["data"]["old"], &changes[0]["data"]["value"]),
        (&json!("risk.max_open_orders"), &json!(40), &json!(41))
    );
    assert_eq!(d.ok("GET", "/api/config", None)["risk"]["allow_short"], true);
}

/// An edit of `agt.toml` made while the config service is down (the supervisor restarting
/// it after a crash) is applied when it is back, and announced once. The restarted watch
/// took the file as it found it for the one applied, so the edit waited for the next one.
#[test]
fn an_edit_of_agt_toml_made_while_config_restarts_is_applied_once() {
    // A second's backoff: the edit lands while config is down.
    let d = Daemon::with_config("[supervisor]\nbackoff_initial_ms = 1000\n\n[risk]\nmax_open_orders = 40\n");
    let file = d.path().join("agt.toml");
    let limit = || d.ok("GET", "/api/risk/limits", None)["max_open_orders"].as_u64();
    let announced = || d.events("CONFIG_CHANGED").into_iter().filter(|e| e["data"]["key"] == "risk.max_open_orders").count();
    assert_eq!(announced(), 0);
    d.ok("POST", "/api/services/config/crash", None);
    wait_until("config to be down", Duration::from_secs(10), || (service(&d, "config")["state"] != "running").then_some(()));
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("max_open_orders = 40", "max_open_orders = 9")).unwrap();
    wait_until("the edit to apply", Duration::from_secs(10), || (limit() == Some(9)).then_some(()));
    assert_eq!(service(&d, "config")["restarts"], 1, "applied by the restarted service");
    // A set makes the service look at the file first: nothing more to apply.
    d.ok("PUT", "/api/config", Some(json!({"log.level": "debug"})));
    assert_eq!(announced(), 1, "{:?}", d.events("CONFIG_CHANGED"));
    assert_eq!(d.ok("GET", "/api/config", None)["risk"]["max_open_orders"], 9);
}

/// A `log.level` acknowledged by `PUT /api/config` is in force when the answer leaves:
/// it was applied by a poll of the live settings every 500 ms, so a warning logged just
/// after a set to `error` still went to the log. Here the warning is the one a set of a
/// webhook secret into a readable `agt.toml` logs.
#[test]
fn a_log_level_set_is_in_force_when_the_set_answers() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    let file = d.path().join("agt.toml");
    let warning = "the config file now holds a webhook secret";
    let readable = || std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hook = |secret: &str| json!({"notify.webhooks": [{"url": "http://127.0.0.1:9/hook", "secret": secret}]});
    d.ok("PUT", "/api/config", Some(json!({"log.level": "error"})));
    readable();
    d.ok("PUT", "/api/config", Some(hook("first"))); // its warning is below the level
    d.ok("PUT", "/api/config", Some(json!({"log.level": "warn"})));
    readable();
    d.ok("PUT", "/api/config", Some(hook("second")));
    wait_until("the second set's warning", Duration::from_secs(10), || d.log().contains(warning).then_some(()));
    assert_eq!(d.log().matches(warning).count(), 1, "{}", d.log());
}

/// A webhook secret of the wrong type is refused without being shown, by the API, the
/// CLI and an edit of `agt.toml` alike: errors are answered, logged and audited.
#[test]
fn a_numeric_webhook_secret_is_never_shown() {
    let d = Daemon::start();
    const SECRET: &str = "987654321";
    for body in [
        format!(r#"{{"notify.webhooks": [{{"url": "http://127.0.0.1:9/hook", "secret": {SECRET}}}]}}"#),
        format!(r#"{{"notify": {{"webhooks": [{{"url": "http://127.0.0.1:9/hook", "secret": {SECRET}.5e3}}]}}}}"#),
    ] {
        let (s, e) = d.raw("PUT", "/api/config", &body, &[("Content-Type", "application/json")]);
        assert_eq!((s, code(&e)), (400, "invalid_config"), "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains("secret: expected a string, got a number") && !message.contains(SECRET), "{message}");
    }
    let out = d
        .cli()
        .args(["config", "set", "notify.webhooks", &format!(r#"[{{"url": "http://127.0.0.1:9/hook", "secret": {SECRET}}}]"#)])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("expected a string") && !stderr.contains(SECRET), "{stderr}");
    let file = d.path().join("agt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = {SECRET}\n")).unwrap();
    wait_until("the edit to be refused", Duration::from_secs(10), || d.log().contains("does not load").then_some(()));
    assert!(!d.log().contains(SECRET), "{}", d.log());
    assert!(!d.ok("GET", "/api/audit?limit=1000", None).to_string().contains(SECRET));
}

fn service(d: &Daemon, name: &str) -> serde_json::Value {
    d.ok("GET", "/api/services", None).as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone()
}

#[test]
fn supervisor_restarts_crashed_services_and_gives_up_after_too_many() {
    let d = Daemon::with_config("[supervisor]\nmax_restarts = 2\nwindow_s = 60\nbackoff_initial_ms = 10\nbackoff_max_ms = 50\n");
    let names: Vec<String> =
        d.ok("GET", "/api/services", None).as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    for s in ["users", "auth", "risk", "orders", "trading", "market", "notify", "audit", "config", "health"] {
        assert!(names.iter().any(|n| n == s), "service {s} not registered");
    }
    d.ok("POST", "/api/services/users/restart", None);
    assert_eq!(service(&d, "users")["restarts"], 1);
    assert_eq!(service(&d, "users")["state"], "running");
    // Crash it until the supervisor gives up.
    for _ in 0..3 {
        let before = service(&d, "users")["restarts"].as_u64().unwrap();
        d.ok("POST", "/api/services/users/crash", None);
        // The supervisor's backoff grows with each crash; a loaded machine adds to it.
        wait_until("a restart after a crash", Duration::from_secs(30), || {
            let s = service(&d, "users");
            (s["state"] == "failed" || (s["restarts"].as_u64().unwrap() > before && s["state"] == "running")).then_some(())
        });
    }
    assert_eq!(service(&d, "users")["state"], "failed");
    let (s, e) = d.req("GET", "/api/users", None);
    assert_eq!((s, code(&e)), (503, "service_unavailable"));
    assert!(e["error"]["message"].as_str().unwrap().contains("`agt service restart users` starts it again"), "{e}");
    let (s, e) = d.req("POST", "/api/services/users/crash", None);
    assert_eq!((s, code(&e)), (409, "service_not_running"), "a failed service has nothing to crash: {e}");
    assert_eq!(d.ok("GET", "/health", None)["status"], "degraded");
    assert_eq!(d.req("GET", "/ready", None).0, 503);
    // A probe's 503 is its answer, counted as a request, not as an error; the refused
    // call to the failed service is an error.
    let metrics = d.ok("GET", "/metrics", None).as_str().unwrap().to_string();
    let errors: Vec<&str> = metrics.lines().filter(|l| l.starts_with("http_errors_total{")).collect();
    assert!(errors.iter().all(|l| !l.contains("endpoint=\"/ready\"") && !l.contains("endpoint=\"/health\"")), "{errors:?}");
    assert!(errors.iter().any(|l| l.contains("error_type=\"service_unavailable\"")), "{errors:?}");
    assert!(metrics.lines().any(|l| l.starts_with("http_requests_total{") && l.contains("endpoint=\"/ready\"")), "{metrics}");
    assert!(service(&d, "users")["last_error"].as_str().is_some_and(|e| !e.is_empty()), "why it failed is shown");
    // An operator brings it back, and it no longer shows the error it failed with.
    d.ok("POST", "/api/services/users/restart", None);
    assert_eq!(service(&d, "users")["state"], "running");
    assert_eq!(service(&d, "users")["last_error"], serde_json::Value::Null, "{}", service(&d, "users"));
    assert_eq!(d.req("GET", "/api/users", None).0, 200);
    let metrics = d.ok("GET", "/metrics", None);
    assert!(metrics.as_str().unwrap().contains("agt_service_restarts_total{service=\"users\"}"));
}

#[test]
fn crash_injection_obeys_the_live_config() {
    let d = Daemon::start();
    d.ok("PUT", "/api/config", Some(json!({"debug.fault_injection": false})));
    assert_eq!(d.req("POST", "/api/services/users/crash", None).0, 403);
}

/// Connections allow half-closes, so hyper no longer reads a busy connection to notice
/// its client has gone: a followed stream whose events never come looks for its client
/// itself, and ends (with its connection) once the client has closed.
#[test]
fn a_quiet_followed_stream_ends_when_its_client_goes() {
    let d = Daemon::start();
    let open = || -> f64 {
        let (_, text) = d.raw("GET", "/metrics", "", &[]);
        let text = text.as_str().unwrap().to_string();
        let line = text.lines().find(|l| l.starts_with("active_connections") && l.contains("\"socket\"")).expect("a socket gauge");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // The asking connection alone: a connection the start's readiness checks made is
    // counted until its task has ended, which a loaded machine may not have run yet.
    let before = wait_until("no connection but the asking one", Duration::from_secs(10), || (open() == 1.0).then_some(1.0));
    let s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = stream_opened(s, "GET /api/events?follow=true&type=TOKEN_REVOKED HTTP/1.1\r\nHost: x\r\n\r\n");
    // (Waited for: the connection of the `open` before it may be counted a moment more.)
    wait_until("the stream's connection to be counted", Duration::from_secs(10), || (open() == before + 1.0).then_some(()));
    drop(r);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open() > before {
        assert!(std::time::Instant::now() < deadline, "the stream outlived its client");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client may send its request, shut its writing side, and still read the answer.
#[test]
fn a_half_closed_connection_still_gets_its_answer() {
    use std::io::Read;
    let d = Daemon::start();
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let body = r#"{"username":"halfway","email":"halfway@example.com"}"#;
    write!(s, "POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("halfway"), "{answer}");
    assert_eq!(d.ok("GET", "/api/users", None).as_array().unwrap().iter().filter(|u| u["username"] == "halfway").count(), 1);
}

#[test]
fn metrics_expose_the_contract_families() {
    let d = Daemon::start();
    d.user("m");
    let text = d.ok("GET", "/metrics", None);
    let text = text.as_str().unwrap();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "agt_service_up",
        "agt_bus_events_total",
        "agt_store_commit_duration_seconds",
        "active_connections",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(text.contains("http_requests_total{service=\"users\",endpoint=\"/api/users\",method=\"POST\"}"));
    // Counters a dashboard takes rate() of are there at 0 before anything happened.
    assert!(text.contains("agt_orders_total{status=\"filled\"} 0"), "{text}");
    assert!(text.contains("agt_service_restarts_total{service=\"market\"} 0"), "{text}");
    d.cli().arg("metrics").assert().success();
}

/// `config set symbols` takes what `agt symbol add` takes, and refuses to give an existing
/// instrument other terms (they would be saved, announced and never applied).
#[test]
fn config_symbols_are_checked_as_symbol_add_checks_them() {
    let mut d = Daemon::start();
    let set = |v: &str| d.cli().args(["config", "set", "symbols", v]).assert();
    let out = set(r#"[{"symbol":"MSFT","tick":"0.05","lot":"1","min_quantity":"1","max_quantity":"100000"}]"#).code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    // It names each field that differs, with the value the instrument has and the one asked.
    assert!(err.contains("instrument_exists") && err.contains("tick: trades with 0.01, requested 0.05"), "{err}");
    assert!(!err.contains("lot:") && !err.contains("min_quantity:"), "only what differs: {err}");
    let out = set(r#"[{"symbol":"MSFT","tick":"0.01","lot":"2","min_quantity":"2","max_quantity":"100000"}]"#).code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("lot: trades with 1, requested 2; min_quantity: trades with 1, requested 2"), "{err}");
    set(r#"[{"symbol":"ZZ","tick":"0.01","lot":"1","min_quantity":"0.5"}]"#)
        .code(1)
        .stderr(predicates::str::contains("multiple of the lot"));
    set(r#"[{"symbol":"USD","tick":"0.01","lot":"1"}]"#).code(1).stderr(predicates::str::contains("against itself"));
    set(r#"[{"symbol":"..","tick":"0.01","lot":"1"}]"#).code(1);
    let toml = std::fs::read_to_string(d.path().join("agt.toml")).unwrap();
    assert!(!toml.contains("ZZ") && !toml.contains("0.05"), "nothing refused was saved: {toml}");
    // An entry as the market has it, and a new symbol, are taken.
    set(r#"[{"symbol":"MSFT","tick":"0.01","lot":"1","min_quantity":"1","max_quantity":"100000"}]"#).success();
    set(r#"[{"symbol":"NEWCO","tick":"0.01","lot":"1"}]"#).success();
    // One entry on its own is a list of one, as `agt symbol add` adds one, over HTTP too.
    set(r#"{"symbol":"ONECO","tick":"0.01","lot":"1"}"#).success().stdout(predicates::str::contains("ONECO"));
    let (status, e) = d.req("PUT", "/api/config", Some(json!({"symbols": {"symbol": "TWOCO", "tick": "0.01", "lot": "1"}})));
    assert_eq!(status, 200, "{e}");
    let listed = d.ok("GET", "/api/config", None)["symbols"].as_array().unwrap().iter().map(|s| s["symbol"].clone()).collect::<Vec<_>>();
    assert!(listed.contains(&json!("ONECO")) && listed.contains(&json!("TWOCO")), "{listed:?}");
    assert_eq!(d.ok("GET", "/api/config", None)["symbols"].as_array().unwrap().last().unwrap()["max_quantity"], "1000000000");
    // Until a start lists it, the new symbol is pending.
    let pending = d.ok("GET", "/api/config/pending", None);
    assert_eq!(pending["symbols"]["saved"][0]["symbol"], "NEWCO", "{pending}");
    assert_eq!(pending["symbols"]["running"][0], serde_json::Value::Null, "{pending}");
    d.cli().args(["config", "show"]).assert().success().stdout(predicates::str::contains("not traded as written"));
    for name in [".", "..", "-A-", "USD-"] {
        let (s, e) = d.req("POST", "/api/symbols", Some(json!({"symbol": name, "tick": "0.01", "lot": "1"})));
        assert_eq!((s, code(&e)), (400, "invalid_symbol"), "{name}: {e}");
    }
    // An edit while stopped that asks an existing instrument for other terms is listed as
    // not in effect, and the instrument keeps its own.
    d.stop();
    let file = d.path().join("agt.toml");
    let toml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, toml.replace(r#"tick = "0.01""#, r#"tick = "0.05""#)).unwrap();
    d.restart();
    assert_eq!(d.ok("GET", "/api/config/pending", None)["symbols"]["running"][0]["tick"], "0.01");
    let msft = d.ok("GET", "/api/symbols", None).as_array().unwrap().iter().find(|i| i["symbol"] == "MSFT").unwrap().clone();
    assert_eq!(msft["tick"], "0.01", "{msft}");
}

/// Sends a request's head and `sent` of its body on `s`, then `trickle` one byte at a
/// time every 100 ms from another thread; answers the status, the body and how long the
/// answer took, reading until the daemon closes the connection.
fn stalled<S: std::io::Read + std::io::Write + Send + 'static>(
    mut s: S,
    mut writer: S,
    head: &str,
    sent: &str,
    trickle: usize,
) -> (u16, serde_json::Value, Duration) {
    let started = std::time::Instant::now();
    s.write_all(format!("{head}\r\n{sent}").as_bytes()).unwrap();
    let feeder = std::thread::spawn(move || {
        for _ in 0..trickle {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let took = started.elapsed();
    let _ = feeder.join();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::String(text.clone())), took)
}

/// A request whose body stalls, or trickles in a byte at a time, is answered 408
/// `request_timeout` and its connection closed once its body is overdue (here after
/// 500 ms, `AGT_HTTP_BODY_TIMEOUT_MS`): it held the connection for ever. A command whose
/// body never came whole is not run (a halt's stalled body is not `{}`, "everywhere"). A
/// followed event stream, which has no body to wait for, outlives the deadline.
#[test]
fn a_stalled_or_trickling_body_is_timed_out() {
    let d = Daemon::with_config_env("", &[("AGT_HTTP_BODY_TIMEOUT_MS", "500")]);
    let admin = d.ok("POST", "/api/tokens", Some(json!({"role": "admin"})))["token"].as_str().unwrap().to_string();
    let tcp = || {
        let s = std::net::TcpStream::connect(d.tcp_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let w = s.try_clone().unwrap();
        (s, w)
    };
    let head = |path: &str, length: usize| {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n")
    };
    let (s, w) = tcp();
    let (status, e, took) = stalled(s, w, &head("/api/orders", 1000), "{", 0);
    assert_eq!((status, code(&e)), (408, "request_timeout"), "stalled: {e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("within 500 ms"), "{e}");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    let (s, w) = tcp();
    let (status, e, took) = stalled(s, w, &head("/api/orders", 1000), "{", 100);
    assert_eq!((status, code(&e)), (408, "request_timeout"), "a byte every 100 ms: {e}");
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    // Bodies past audit's reading (a CSV import) and on the socket alike.
    let (s, w) = tcp();
    let (status, e, _) = stalled(s, w, &head("/api/market/import", 10_000_000), "symbol,interval", 0);
    assert_eq!((status, code(&e)), (408, "request_timeout"), "import: {e}");
    let s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let w = s.try_clone().unwrap();
    let socket_head = "POST /api/risk/halt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n";
    let (status, e, _) = stalled(s, w, socket_head, "{\"symbol\"", 0);
    assert_eq!((status, code(&e)), (408, "request_timeout"), "socket: {e}");
    assert_eq!(d.ok("GET", "/api/risk/state", None)["halted"], false, "a halt whose body never came halted nothing");

    // A followed stream has no body: it outlives the deadline and still delivers.
    // Its answer has begun (so it follows from before the user below) before it is left
    // past the deadline; a follow the daemon took only after the user was made would
    // never show it.
    let (s, _) = tcp();
    let mut s = stream_opened(s, &format!("GET /api/events?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(1500));
    let name = d.ok("POST", "/api/users", Some(json!({"username": format!("late{}", unique()), "email": "late@x.io"})))["username"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(&name) {
        let n = std::io::Read::read(&mut s, &mut buf).expect("the stream is still open");
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // And a body that comes whole is read as ever.
    assert_eq!(d.tcp("POST", "/api/users", Some(json!({"username": format!("ok{}", unique()), "email": "ok@x.io"})), Some(&admin)).0, 201);
}

/// A read of what the event bus builds (audit, the market, the event log) waits for it to
/// catch up with what was acknowledged before (`AGT_SYNC_WAIT_MS`, 10 s by default); when
/// the wait runs out it answers what it has, marked `x-agt-behind` (events it may not
/// show), never passing for current; a change that needs notify caught up (a rule) is
/// refused, 503, and not made. With no wait at all (`0`) the daemon checks nothing, so
/// every such answer is marked behind.
#[test]
fn a_read_the_bus_has_not_caught_up_with_says_so_and_a_rule_change_waits_for_notify() {
    let d = Daemon::with_config_env("", &[("AGT_SYNC_WAIT_MS", "0")]);
    let user = d.user("behind");
    let ask = |method: &str, path: &str, body: Option<&str>| {
        exchange_marked(std::os::unix::net::UnixStream::connect(d.sock()).unwrap(), method, path, body, &[]).unwrap()
    };
    for path in ["/api/audit?limit=5", "/api/events?tail=1", &format!("/api/trades/{}", d.symbol("0.01", "1"))] {
        let marked = (0..20).find_map(|_| match ask("GET", path, None) {
            (200, Some(behind), _) => Some(behind),
            (200, None, _) => None,
            (status, _, v) => panic!("GET {path}: {status} {v}"),
        });
        assert!(marked.is_some_and(|n| n >= 1), "GET {path} answered behind the bus is marked so");
    }
    let refused = (0..20).find_map(|i| {
        let url = format!("http://127.0.0.1:9/refused{i}");
        let (status, _, v) = ask("POST", "/api/notifications/rules", Some(&json!({"url": url, "events": ["USER_CREATED"]}).to_string()));
        (status == 503).then_some((url, v))
    });
    let (url, v) = refused.expect("a rule change while notify is behind is refused");
    assert_eq!(code(&v), "service_unavailable", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("nothing was changed"), "{v}");
    assert!(!d.ok("GET", "/api/notifications/rules", None).to_string().contains(&url), "the refused rule was not added");

    // With the default wait the same reads are current: the user just made is there.
    let d = Daemon::start();
    let user2 = d.user("current");
    let (status, behind, records) =
        exchange_marked(std::os::unix::net::UnixStream::connect(d.sock()).unwrap(), "GET", "/api/audit?limit=1000", None, &[]).unwrap();
    assert_eq!((status, behind), (200, None), "{records}");
    assert!(records.to_string().contains(&user2) && !records.to_string().contains(&user));
}
