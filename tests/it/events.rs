//! `GET /api/events` and `agt events tail`: limits, tails, the ends of the numbering,
//! and what a viewer sees.

use crate::util::Daemon;
use serde_json::Value;
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
