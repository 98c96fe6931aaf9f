//! `GET /api/events` and `agt events tail`: limits, tails, the ends of the numbering,
//! and what a viewer sees.

use crate::util::{code, Daemon};
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

/// The body of a `GET` on the socket if the answer ends within 5 s (a followed stream
/// that should have ended does not), its status and its events' seqs.
fn ended(d: &Daemon, path: &str) -> Option<(u16, Vec<u64>)> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let seqs = text.lines().filter_map(|l| l.find("{\"seq\":").map(|at| &l[at..])).map(seq_of).collect();
    Some((status, seqs))
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap()
}

fn lines(body: &Value) -> Vec<Value> {
    body.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A `limit` ends the stream after that many events, followed or not: the stored events
/// after them are neither skipped for live ones (a gap) nor streamed past the limit, and
/// `limit=0` streams nothing.
#[test]
fn events_with_a_limit_end_after_it_and_never_skip() {
    let d = Daemon::start();
    for i in 0..8 {
        d.user(&format!("lim{i}"));
    }
    let all: Vec<u64> = d.events("USER_CREATED").iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let since = all[1];
    let path = format!("/api/events?since={since}&limit=2&follow=true&type=USER_CREATED");
    let (status, got) = ended(&d, &path).expect("a limited stream ends after its limit");
    assert_eq!((status, got), (200, all[2..4].to_vec()), "the next two after since, no gap");
    let (_, got) = ended(&d, &format!("/api/events?since={since}&limit=2")).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(ended(&d, "/api/events?limit=0&follow=true"), Some((200, vec![])), "limit=0 streams nothing, and ends");

    // Fewer stored than the limit: the rest come live, then the stream ends.
    let last = *all.last().unwrap();
    let sock = d.sock();
    let reader = std::thread::spawn(move || {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
        write!(s, "GET /api/events?since={last}&limit=2&follow=true&type=USER_CREATED HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map(|_| String::from_utf8_lossy(&raw).to_string())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (a, b, c) = (d.user("live-a"), d.user("live-b"), d.user("live-c"));
    let text = reader.join().unwrap().expect("the followed stream ends after its 2 events");
    assert!(text.contains(&a) && text.contains(&b), "{text}");
    assert!(!text.contains(&c), "not past the limit: {text}");
}

/// `tail=N` gives a viewer its newest N events: the `TOKEN_*` events it may not see are
/// not counted (they used to leave it fewer, or none).
#[test]
fn events_tail_for_a_viewer_counts_only_what_it_may_see() {
    let d = Daemon::start();
    for i in 0..22 {
        d.user(&format!("tv{i}"));
    }
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    for _ in 0..25 {
        d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})));
    }
    let visible: Vec<u64> =
        d.events("").iter().filter(|e| !e["type"].as_str().unwrap().starts_with("TOKEN_")).map(|e| e["seq"].as_u64().unwrap()).collect();
    let (status, body) = d.tcp("GET", "/api/events?tail=3", None, Some(&viewer));
    assert_eq!(status, 200, "{body}");
    let got: Vec<u64> = lines(&body).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, visible[visible.len() - 3..], "the newest 3 a viewer may see");

    let url = format!("http://{}", d.tcp_addr());
    let out =
        d.cli().args(["--url", &url, "--token", &viewer, "-o", "json", "events", "tail"]).assert().success().get_output().stdout.clone();
    let shown: Vec<u64> = String::from_utf8(out).unwrap().lines().map(seq_of).collect();
    assert_eq!(shown, visible[visible.len() - 20..], "agt events tail: the newest 20 a viewer may see");
}

/// A `since` at the end of the numbering is simply after every event: an empty 200, not
/// a 410 claiming "events 0..0" were pruned.
#[test]
fn events_since_the_end_of_the_numbering_are_none() {
    let d = Daemon::start();
    d.user("end");
    for since in [u64::MAX, i64::MAX as u64, i64::MAX as u64 + 1] {
        assert_eq!(ended(&d, &format!("/api/events?since={since}")), Some((200, vec![])), "since={since}");
    }
    let (status, body) = d.raw("GET", "/api/events", "", &[("Last-Event-ID", "18446744073709551615")]);
    assert_eq!((status, body), (200, Value::String(String::new())));
}

/// Negative or non-numeric `since`, `limit`, `tail` and `depth` are told the range they
/// may take, as a list's `limit` is, not serde's "invalid digit found in string".
#[test]
fn events_and_book_numbers_out_of_range_say_what_is_allowed() {
    let d = Daemon::start();
    let sym = d.symbol("0.01", "1");
    for (path, name) in [
        ("/api/events?since=-1", "since"),
        ("/api/events?limit=-1", "limit"),
        ("/api/events?tail=-3", "tail"),
        ("/api/events?tail=x", "tail"),
        ("/api/audit?since=-1", "since"),
        (&format!("/api/book/{sym}?depth=-1") as &str, "depth"),
        (&format!("/api/book/{sym}?depth=0"), "depth"),
    ] {
        let (status, body) = d.req("GET", path, None);
        assert_eq!((status, code(&body)), (400, "invalid_query"), "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{name} must be a whole number")), "{path}: {message}");
        assert!(!message.contains("invalid digit"), "{path}: {message}");
    }
    assert_eq!(d.req("GET", &format!("/api/book/{sym}?depth=5000"), None).0, 200, "a deep ask gets what there is");
}

/// `agt events tail -f` whose token is revoked ends with the daemon's 401 (exit 1), not
/// "the daemon stopped" (exit 3) while it runs on; one whose daemon stops exits 3.
#[test]
fn events_tail_follow_says_why_its_stream_ended() {
    let mut d = Daemon::start();
    let made = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})));
    let (id, token) = (made["id"].as_str().unwrap().to_string(), made["token"].as_str().unwrap().to_string());
    let url = format!("http://{}", d.tcp_addr());
    let follow = |args: &[&str]| d.cli_spawn(&[args, &["events", "tail", "-f"]].concat());
    let finish = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let revoked = follow(&["--url", &url, "--token", &token]);
    std::thread::sleep(Duration::from_millis(500));
    d.ok("DELETE", &format!("/api/tokens/{id}"), None);
    d.user("after-revoke");
    let (status, stderr) = finish(revoked);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("unauthorized") && !stderr.contains("stopped"), "{stderr}");

    let stopped = follow(&[]);
    std::thread::sleep(Duration::from_millis(500));
    d.stop();
    let (status, stderr) = finish(stopped);
    assert_eq!(status, Some(3), "{stderr}");
}
