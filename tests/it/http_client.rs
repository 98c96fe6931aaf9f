//! What a careful HTTP client sends beyond the happy path: methods that change nothing,
//! encodings, repeated credentials, ids it leaves blank. Each over TCP with bearer
//! tokens, as an integration (a trading bot, a back-office script) talks to agt.

use crate::util::*;
use serde_json::{json, Value};
use std::io::{Read, Write};

/// A token of `role` (bound to `user` for a trader).
fn token(d: &Daemon, role: &str, user: Option<&str>) -> String {
    let mut b = json!({"role": role});
    if let Some(u) = user {
        b["user_id"] = u.into();
    }
    d.ok("POST", "/api/tokens", Some(b))["token"].as_str().unwrap().to_string()
}

/// `request` sent whole over a new TCP connection: the answer's status, head (lower-cased)
/// and body as JSON.
fn send(d: &Daemon, request: &str) -> (u16, String, Value) {
    let mut s = std::net::TcpStream::connect(d.tcp_addr()).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {text:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or(Value::String(body.into())))
}

/// The actions of the audit log's newest records.
fn audited_actions(d: &Daemon) -> Vec<String> {
    let records = d.ok("GET", "/api/audit?limit=1000", None);
    records.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).collect()
}

/// OPTIONS (and a method no route has) changes nothing, so it is no command: every role
/// gets the router's 405 with `Allow`, a viewer and a trader included (they were told 403
/// "cannot change anything" for asking what a route they may read allows), and the
/// append-only audit log does not grow by two records for each such probe.
#[test]
fn options_and_unknown_methods_are_not_commands() {
    let d = Daemon::start();
    let alice = d.user("alice");
    let tokens = [token(&d, "admin", None), token(&d, "viewer", None), token(&d, "trader", Some(&alice))];
    for t in &tokens {
        for (method, path, allow) in [
            ("OPTIONS", "/api/book/AAPL", "get,head"),
            ("OPTIONS", "/api/orders", "get,head,post"),
            ("PROPFIND", "/api/orders", "get,head,post"),
        ] {
            let (s, head, v) =
                send(&d, &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"));
            assert_eq!((s, code(&v)), (405, "method_not_allowed"), "{method} {path}: {v}");
            assert!(head.contains(&format!("allow: {allow}")), "{method} {path}: {head}");
        }
    }
    let actions = audited_actions(&d);
    assert!(!actions.iter().any(|a| a.starts_with("OPTIONS ") || a.starts_with("PROPFIND ")), "{actions:?}");
    // Without a token it is still a 401 under /api, as a GET is.
    let (s, _, v) = send(&d, "OPTIONS /api/orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
}

/// The daemon reads bodies as sent: one with a `Content-Encoding` other than `identity`
/// is refused 415 naming it, not read as plain JSON (a gzipped body was a 400 "expected
/// value at line 1 column 1", which says nothing of what to fix, and a plain body labelled
/// `br` was run as if unlabelled).
#[test]
fn a_body_with_a_content_encoding_is_refused_415() {
    let d = Daemon::start();
    let admin = token(&d, "admin", None);
    let body = r#"{"username": "zipped", "email": "z@x.io"}"#;
    for encoding in ["gzip", "br", "deflate, gzip"] {
        let (s, _, v) = send(
            &d,
            &format!(
                "POST /api/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!((s, code(&v)), (415, "unsupported_media_type"), "{encoding}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("Content-Encoding") && message.contains(encoding), "{message}");
    }
    assert!(!d.ok("GET", "/api/users", None).to_string().contains("zipped"), "a refused body made a user");
    // `identity` is no encoding at all.
    let (s, _, v) = send(
        &d,
        &format!(
            "POST /api/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Encoding: identity\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(s, 201, "{v}");
    // A command without a body is not held to its label.
    let (s, _, v) = send(
        &d,
        &format!("POST /api/risk/halt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(s, 200, "{v}");
}

/// An empty `client_order_id` is refused (400 `invalid_client_order_id`), not read as
/// none: a bot that sends `""` where its id generator failed, and retries after a lost
/// answer, had two orders placed, each stored without an id, where an id means "place
/// this once". A blank one (" ") is an id like any other, stored byte for byte.
#[test]
fn an_empty_client_order_id_is_refused_not_dropped() {
    let d = Daemon::start();
    let (sym, buyer, _) = d.market_pair("1000", "10");
    let trader = token(&d, "trader", Some(&buyer));
    for path in ["/api/orders", "/api/trading/orders"] {
        let body = json!({"symbol": sym, "side": "buy", "quantity": "1", "price": "10", "client_order_id": ""});
        for _ in 0..2 {
            let (s, v) = d.tcp("POST", path, Some(body.clone()), Some(&trader));
            assert_eq!((s, code(&v)), (400, "invalid_client_order_id"), "{path}: {v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("leave it out"), "{v}");
        }
    }
    let listed = d.ok("GET", &format!("/api/orders?user_id={buyer}&status=all"), None);
    assert_eq!(listed.as_array().unwrap().len(), 0, "a refused placement was stored: {listed}");
    let blank = json!({"symbol": sym, "side": "buy", "quantity": "1", "price": "10", "client_order_id": " "});
    let (first, v1) = d.tcp("POST", "/api/orders", Some(blank.clone()), Some(&trader));
    let (again, v2) = d.tcp("POST", "/api/orders", Some(blank), Some(&trader));
    assert_eq!((first, again), (201, 200), "{v1} {v2}");
    assert_eq!((&v1["order_id"], &v1["client_order_id"]), (&v2["order_id"], &json!(" ")));
}

/// Two `Authorization` headers are refused (401), not decided by which came first: a
/// proxy that adds its own token to a client's request must not have the request run as
/// whichever of the two the daemon happened to read.
#[test]
fn two_authorization_headers_are_refused() {
    let d = Daemon::start();
    let (alice, bob) = (d.user("alice"), d.user("bob"));
    let (a, b) = (token(&d, "trader", Some(&alice)), token(&d, "trader", Some(&bob)));
    for (first, second) in [(&a, &b), (&b, &a), (&a, &a)] {
        let (s, _, v) = send(
            &d,
            &format!("GET /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("one Authorization header"), "{v}");
    }
    let (s, _, _) = send(&d, &format!("GET /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nConnection: close\r\n\r\n"));
    assert_eq!(s, 200);
}
