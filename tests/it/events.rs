//! `GET /api/events` and `agt events tail`: limits, tails, the ends of the numbering,
//! and what a viewer sees.

use crate::util::{code, wait_until, Daemon};
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
    let out = d.cli_current(&["--url", &url, "--token", &viewer, "-o", "json", "events", "tail"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = out.stdout;
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

/// Waits until `agt events tail -f` has printed its first line (then its stream is open),
/// and reads the rest of its output meanwhile on a thread, so that the pipe stays open
/// and read; `wait_with_output` then reads its stderr alone.
fn shown_an_event(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut line = String::new();
        while out.read_line(&mut line).is_ok_and(|n| n > 0) {
            let _ = first_tx.send(());
            all.push_str(&line);
            line.clear();
        }
        all
    });
    assert!(first_rx.recv_timeout(Duration::from_secs(30)).is_ok(), "the follower showed no event");
    reader
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
    // Each follower is cut once it has shown an event, which proves its stream is open:
    // a fixed half second could pass before a loaded machine had even started the CLI,
    // and a follower that never reached the daemon has no seq to resume from.
    d.user("before-revoke");
    let mut revoked = follow(&["--url", &url, "--token", &token]);
    let _shown = shown_an_event(&mut revoked);
    d.ok("DELETE", &format!("/api/tokens/{id}"), None);
    d.user("after-revoke");
    let (status, stderr) = finish(revoked);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("unauthorized") && !stderr.contains("stopped"), "{stderr}");

    let mut stopped = d.cli_spawn(&["events", "tail", "-f", "--type", "USER_CREATED"]);
    let _shown = shown_an_event(&mut stopped);
    d.stop();
    let (status, stderr) = finish(stopped);
    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("resume with `agt events tail -f --since ") && stderr.contains(" --type USER_CREATED`"), "{stderr}");
}

/// Fills the event log with a few megabytes of events (an `agt bench` run) and gives
/// the newest seq.
fn many_events(d: &Daemon, orders: &str) -> u64 {
    d.cli().args(["-q", "bench", "--orders", orders, "--concurrency", "8"]).assert().success();
    newest_seq(d)
}

/// The newest event's seq (one NDJSON line: the test client reads it as one JSON value).
fn newest_seq(d: &Daemon) -> u64 {
    d.ok("GET", "/api/events?tail=1", None)["seq"].as_u64().unwrap()
}

/// A stream request on the socket whose client reads nothing yet (a small receive
/// buffer, so the daemon soon has nowhere to write): a slow consumer.
fn stalled(d: &Daemon, path: &str) -> std::os::unix::net::UnixStream {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket this test owns, with a c_int it points at.
    unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, (&size as *const libc::c_int).cast(), 4);
    }
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    s
}

/// How many bytes the kernel holds for `s` that it has not read yet.
fn unread(s: &std::os::unix::net::UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD on a socket this test owns, into a c_int it points at.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}

/// A chunked body's events, and whether it ended with its last chunk (a complete answer)
/// rather than a dropped connection.
fn dechunk(raw: &[u8]) -> (Vec<u64>, bool) {
    let (chunks, complete) = http_chunks(raw);
    (String::from_utf8_lossy(&chunks.concat()).lines().map(seq_of).collect(), complete)
}

/// The chunks of a chunked answer (after its head), as the daemon wrote them, the last
/// one only if it came whole; and whether it ended with its last chunk.
fn http_chunks(raw: &[u8]) -> (Vec<&[u8]>, bool) {
    let (chunks, complete, _) = http_chunks_and_part(raw);
    (chunks, complete)
}

/// [`http_chunks`], and what came of a last chunk that did not come whole.
fn http_chunks_and_part(raw: &[u8]) -> (Vec<&[u8]>, bool, &[u8]) {
    let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return (vec![], false, &[]) };
    let mut rest = &raw[at + 4..];
    let mut chunks = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { return (chunks, false, &[]) };
        let Some(n) = std::str::from_utf8(&rest[..eol]).ok().and_then(|size| usize::from_str_radix(size.trim(), 16).ok()) else {
            return (chunks, false, &[]);
        };
        if n == 0 {
            return (chunks, true, &[]);
        }
        let after = &rest[eol + 2..];
        if after.len() < n {
            return (chunks, false, after);
        }
        chunks.push(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&[]);
    }
}

/// A reader too slow for the retention (it read nothing while the events after its
/// place were pruned) gets every event up to the cut, without a gap, and then a broken
/// stream, not the end of a complete one: a script paging with `since` and `limit` used
/// to take the short page for the end of the log. `agt events tail --since` says so with
/// the daemon's 410 (exit 1) instead of exiting 0 with part of the log.
#[test]
fn events_a_slow_reader_falls_behind_the_retention_is_cut_off_not_ended() {
    let d = Daemon::start();
    let newest = many_events(&d, "4000");
    let mut raw = stalled(&d, &format!("/api/events?since=0&limit={newest}"));
    let mut cli = d.cli_spawn(&["-o", "json", "events", "tail", "--since", "0"]);
    // Both are stuck with far fewer events than the log holds: the CLI on its stdout.
    d.cli().args(["config", "set", "events.retain_s", "1"]).assert().success();
    wait_until("the events to be pruned", Duration::from_secs(30), || {
        let oldest = d.ok("GET", "/api/events?since=0&limit=1", None);
        (oldest["seq"].as_u64().unwrap() >= newest).then_some(())
    });

    let mut bytes = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.read_to_end(&mut bytes).expect("the cut stream ends");
    let (seqs, complete) = dechunk(&bytes);
    assert!(!complete, "a stream cut short does not end like a complete one");
    assert!(!seqs.is_empty() && (seqs.len() as u64) < newest, "{} of {newest} events", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every event up to the cut, no gap");

    let mut out = String::new();
    cli.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = cli.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("events_pruned") && stderr.contains("since="), "{stderr}");
    let shown: Vec<u64> = out.lines().map(seq_of).collect();
    assert_eq!(shown, (1..=shown.len() as u64).collect::<Vec<_>>(), "no gap in what the CLI printed");
    assert!((shown.len() as u64) < newest);
}

/// A follower that reads nothing does not hold the daemon's stop for the server's whole
/// grace (10 s): its connection is hung up a moment after the stop begins. The daemon
/// says when a stop waited the whole grace, so this holds on a machine of any speed.
#[test]
fn events_a_stalled_follower_does_not_hold_the_stop() {
    let mut d = Daemon::start();
    many_events(&d, "3000");
    let mut raw = stalled(&d, "/api/events?since=0&follow=true");
    // It has been sent what its buffers take, and no more: what waits for it to read has
    // stopped growing (the log holds megabytes, far more than the buffers).
    let mut last = 0;
    let mut same = 0;
    wait_until("the stream to fill the follower's buffers", Duration::from_secs(30), || {
        let queued = unread(&raw);
        (same, last) = if queued > 0 && queued == last { (same + 1, queued) } else { (0, queued) };
        (same >= 10).then_some(())
    });
    assert!(d.stop().success());
    let log = d.log();
    assert!(!log.contains("the stop waited the whole grace"), "the stalled follower held the stop: {log}");
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bytes = Vec::new();
    let _ = raw.read_to_end(&mut bytes);
    let (seqs, _) = dechunk(&bytes);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "what it got has no gap");
}

/// `follow` reads as every yes/no switch does (`follow=1`), a typo is told what is
/// allowed, and a `type` that names no type is a 400, not an empty 200.
#[test]
fn events_follow_and_type_say_what_they_take() {
    let d = Daemon::start();
    d.user("switch");
    assert_eq!(ended(&d, "/api/events?since=0&limit=1&follow=1").map(|(s, e)| (s, e.len())), Some((200, 1)));
    for (path, says) in [
        ("/api/events?follow=maybe", "follow must be true or false"),
        ("/api/events?follow=", "follow must be true or false"),
        ("/api/events?type=,", "type names no event type"),
        ("/api/events?type=%20,%20&follow=true", "type names no event type"),
    ] {
        let (status, body) = d.req("GET", path, None);
        assert_eq!((status, code(&body)), (400, "invalid_query"), "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with(says), "{path}: {body}");
    }
}

/// The events of an NDJSON body, however the helper read it (one line parses as JSON).
fn events_of(body: Value) -> Vec<Value> {
    match body {
        Value::String(text) => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
        one @ Value::Object(_) => vec![one],
        other => panic!("not events: {other}"),
    }
}

/// A trader token reads its own user's orders, fills, deposits and user record from the
/// event stream, replayed, counted by `tail` and followed; never another user's events,
/// the tape's order ids, or the platform's own (tokens, services, config).
#[test]
fn a_trader_reads_its_own_users_events_alone() {
    let d = Daemon::start();
    let (sym, alice, bob) = d.market_pair("1000000", "1000");
    let tok = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})))["token"].as_str().unwrap().to_string();
    let sell = d.place(&bob, &sym, "sell", "1", Some("10")).1;
    let buy = d.place(&alice, &sym, "buy", "1", Some("10")).1;
    assert_eq!(buy["status"], "filled", "{buy}");
    d.place(&bob, &sym, "sell", "5", Some("12"));
    d.deposit(&bob, "USD", "5");
    let own = |e: &Value| e["data"]["user_id"] == alice.as_str();
    let (s, body) = d.tcp("GET", "/api/events?limit=1000", None, Some(&tok));
    assert_eq!(s, 200, "{body}");
    let text = body.to_string();
    assert!(!text.contains(&bob) && !text.contains(sell["order_id"].as_str().unwrap()), "another user's events leaked: {text}");
    let seen = events_of(body);
    let kinds: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(seen.iter().all(own), "{kinds:?}");
    for k in ["USER_CREATED", "ACCOUNT_DEPOSITED", "ORDER_CREATED", "ORDER_EXECUTED"] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert!(!kinds.iter().any(|k| k.starts_with("TRADE_") || k.starts_with("TOKEN_") || k.starts_with("SERVICE_")), "{kinds:?}");
    let fill = seen.iter().find(|e| e["type"] == "ORDER_EXECUTED").unwrap();
    assert_eq!(fill["data"]["trades"][0]["trade_id"], buy["fills"][0]["trade_id"], "the fill names its trade: {fill}");
    // An admin reads the same events, and the rest.
    let all = events_of(d.ok("GET", "/api/events?limit=1000", None));
    let admins_own: Vec<&Value> = all.iter().filter(|e| own(e) && e["type"] != "TOKEN_CREATED").collect();
    assert_eq!(admins_own.len(), seen.len(), "the trader missed some of its own events");
    // Other types are refused, by name.
    let (s, e) = d.tcp("GET", "/api/events?type=TRADE_EXECUTED", None, Some(&tok));
    assert_eq!((s, code(&e)), (403, "forbidden"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("ORDER_EXECUTED"), "the message lists what it may read: {e}");
    let (s, fills) = d.tcp("GET", "/api/events?type=ORDER_EXECUTED", None, Some(&tok));
    assert_eq!(s, 200);
    assert_eq!(events_of(fills).len(), 1);
    // `tail` counts the trader's own events, not the newest of everyone's.
    let (s, last) = d.tcp("GET", "/api/events?tail=2", None, Some(&tok));
    assert_eq!(s, 200);
    let last = events_of(last);
    assert_eq!(last.len(), 2, "{last:?}");
    assert_eq!(last[1]["seq"], seen.last().unwrap()["seq"], "{last:?}");
    // `agt events tail` with the token: its own newest, and another type refused.
    let url = format!("http://{}", d.tcp_addr());
    let out = d.cli_current(&["--url", &url, "--token", &tok, "-o", "json", "events", "tail"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(alice.as_str()) && !text.contains(bob.as_str()) && text.contains("ORDER_EXECUTED"), "{text}");
    d.cli().args(["--url", &url, "--token", &tok, "events", "tail", "--type", "TRADE_EXECUTED"]).assert().code(1);
    // Followed: another user's new events are skipped, its own arrive.
    let addr = d.tcp_addr();
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let since = seen.last().unwrap()["seq"].as_u64().unwrap();
    let request = format!("GET /api/events?since={since}&follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let mut r = std::io::BufReader::new(s);
    std::io::Write::write_all(r.get_mut(), request.as_bytes()).unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        assert!(!line.is_empty(), "the stream ended before its head");
        if line == "\r\n" {
            break;
        }
    }
    d.deposit(&bob, "USD", "7");
    d.place(&bob, &sym, "sell", "1", Some("13"));
    d.deposit(&alice, "USD", "3");
    let next = loop {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut r, &mut line).unwrap() > 0, "the stream ended");
        if let Some(at) = line.find("{\"seq\":") {
            break serde_json::from_str::<Value>(line[at..].trim()).unwrap();
        }
    };
    assert_eq!((next["type"].as_str(), next["data"]["user_id"].as_str()), (Some("ACCOUNT_DEPOSITED"), Some(alice.as_str())), "{next}");
    assert_eq!(next["data"]["amount"], "3", "{next}");
}

/// An SSE stream that is cut says why in the stream itself (`event: cut`, the API's error
/// shape) before the connection closes; an NDJSON one has no such line.
#[test]
fn a_cut_sse_stream_says_why_in_band() {
    let d = Daemon::start();
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})));
    let (token, id) = (viewer["token"].as_str().unwrap().to_string(), viewer["id"].as_str().unwrap().to_string());
    let s = std::net::TcpStream::connect(d.tcp_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = std::io::BufReader::new(s);
    let request = format!(
        "GET /api/events?follow=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    std::io::Write::write_all(r.get_mut(), request.as_bytes()).unwrap();
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(std::io::BufRead::read_line(&mut r, &mut head).unwrap() > 0, "no head: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    d.ok("DELETE", &format!("/api/tokens/{id}"), None);
    d.user("after_the_revoke");
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    let data = rest.split("event: cut\ndata: ").nth(1).unwrap_or_else(|| panic!("no cut event: {rest:?}"));
    let error: Value = serde_json::from_str(data.lines().next().unwrap()).unwrap();
    assert_eq!(code(&error), "unauthorized", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("revoked"), "{error}");
    assert!(!rest.contains("after_the_revoke"), "{rest}");
}

/// A followed stream over TCP with `token`, its answer's head read (a 200): what is left
/// is its body (with `tail=0`, nothing of which comes while no event it reads is
/// published).
fn followed(d: &Daemon, token: &str, query: &str, sse: bool) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let s = std::net::TcpStream::connect(d.tcp_addr()).unwrap();
    // Well under the streams' 5 s peer check: a stream that ends only at that check
    // fails the read below with a timeout.
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut r = std::io::BufReader::new(s);
    let accept = if sse { "Accept: text/event-stream\r\n" } else { "" };
    write!(
        r.get_mut(),
        "GET /api/events?follow=true{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{accept}Authorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(r.read_line(&mut head).unwrap() > 0, "no head: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    r
}

/// What is left of a stream, read to its end: an error if it did not end within the
/// read timeout (3 s) of its last byte.
fn rest_of(mut r: std::io::BufReader<std::net::TcpStream>) -> std::io::Result<String> {
    let mut rest = String::new();
    r.read_to_string(&mut rest).map(|_| rest)
}

/// Asserts a stream ended cut (not complete), and, for SSE, with a `cut` event of `code`.
fn assert_cut(rest: &str, sse: bool, want: &str) {
    if sse {
        let data = rest.split("event: cut\ndata: ").nth(1).unwrap_or_else(|| panic!("no cut event: {rest:?}"));
        let error: Value = serde_json::from_str(data.lines().next().unwrap()).unwrap();
        assert_eq!(code(&error), want, "{error}");
    } else {
        assert!(!rest.ends_with("0\r\n\r\n"), "cut, not ended as complete: {rest:?}");
    }
}

/// Revoking a token ends every stream it opened at once, even one with nothing to send:
/// a trader's stream never reads `TOKEN_REVOKED` (nor a viewer's), so it noticed the
/// revoke only at its 5 s peer check. Over TCP, as an integration holds such a stream.
#[test]
fn revoking_a_token_ends_its_quiet_streams_at_once() {
    let d = Daemon::start();
    let alice = d.user("alice");
    let trader = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})));
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})));
    let secret = |t: &Value| t["token"].as_str().unwrap().to_string();
    let streams = [
        (followed(&d, &secret(&trader), "&tail=0", false), false),
        (followed(&d, &secret(&trader), "&tail=0&type=ORDER_EXECUTED", true), true),
        (followed(&d, &secret(&viewer), "&tail=0", false), false),
    ];
    // One token only: the viewer's stream stays.
    d.cli().args(["token", "revoke", trader["id"].as_str().unwrap()]).assert().success();
    let [trader_ndjson, trader_sse, viewer_stream] = streams;
    for (r, sse) in [trader_ndjson, trader_sse] {
        let rest = rest_of(r).unwrap_or_else(|e| panic!("the revoked token's stream did not end at once (sse {sse}): {e}"));
        assert_cut(&rest, sse, "unauthorized");
    }
    let mut quiet = viewer_stream.0;
    let mut byte = [0u8; 1];
    assert!(std::io::Read::read(&mut quiet, &mut byte).is_err(), "another token's stream goes on (a read times out)");

    d.ok("DELETE", &format!("/api/tokens/{}", viewer["id"].as_str().unwrap()), None);
    let rest = rest_of(quiet).unwrap_or_else(|e| panic!("the viewer's stream did not end at once: {e}"));
    assert_cut(&rest, false, "unauthorized");
    let (s, e) = d.tcp("GET", "/api/events?follow=true", None, Some(&secret(&trader)));
    assert_eq!((s, code(&e)), (401, "unauthorized"), "{e}");
}

/// Disabling a user ends its trader token's streams at once even when they read nothing:
/// the disable's own `USER_UPDATED` cut a stream that reads it, but one asking only for
/// fills (`type=ORDER_EXECUTED`) went on until its 5 s peer check.
#[test]
fn disabling_a_user_ends_its_quiet_filtered_streams_at_once() {
    let d = Daemon::start();
    let alice = d.user("alice");
    let token = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})))["token"].as_str().unwrap().to_string();
    let fills =
        [(followed(&d, &token, "&type=ORDER_EXECUTED", false), false), (followed(&d, &token, "&tail=0&type=ORDER_EXECUTED", true), true)];
    d.cli().args(["user", "disable", &alice]).assert().success();
    for (r, sse) in fills {
        let rest = rest_of(r).unwrap_or_else(|e| panic!("the disabled user's stream did not end at once (sse {sse}): {e}"));
        assert_cut(&rest, sse, "user_disabled");
    }
    let (s, e) = d.tcp("GET", "/api/events?follow=true", None, Some(&token));
    assert_eq!((s, code(&e)), (403, "user_disabled"), "{e}");
}

/// Two replays of the whole log at once (each on a read connection of its own) both get
/// to its end, each with every event once, in order; a third that reads nothing
/// meanwhile holds neither back.
#[test]
fn replays_side_by_side_each_see_every_event_once_in_order() {
    let d = Daemon::start();
    let newest = many_events(&d, "3000");
    let path = format!("/api/events?since=0&limit={newest}");
    let _stalled = stalled(&d, &path);
    let replays: Vec<_> = (0..2)
        .map(|_| {
            let (sock, path) = (d.sock(), path.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                let mut raw = Vec::new();
                s.read_to_end(&mut raw).unwrap();
                dechunk(&raw)
            })
        })
        .collect();
    for r in replays {
        let (seqs, complete) = r.join().unwrap();
        assert!(complete, "the replay ended as complete");
        assert_eq!(seqs.len() as u64, newest);
        assert!(seqs.iter().copied().eq(1..=newest), "every event once, in order");
    }
    // SSE frames each event with its seq and type, as a followed event is.
    let (s, body) = d.raw("GET", "/api/events?since=0&limit=3", "", &[("Accept", "text/event-stream")]);
    assert_eq!(s, 200);
    let text = body.as_str().unwrap();
    let first: Vec<&str> = text.split("\n\n").next().unwrap().lines().collect();
    assert_eq!(first[0], "id: 1", "{text}");
    assert!(first[1].starts_with("event: ") && first[2].starts_with("data: {\"seq\":1,"), "{text}");
    assert_eq!(text.matches("\nevent: ").count(), 3, "{text}");
}

/// The tcp listener's open connections, from `/metrics` (asked on the socket).
fn tcp_connections(d: &Daemon) -> Option<u64> {
    use std::io::Write;
    let mut ask = std::os::unix::net::UnixStream::connect(d.sock()).ok()?;
    ask.write_all(b"GET /metrics HTTP/1.0\r\nHost: agt\r\n\r\n").ok()?;
    let mut text = String::new();
    ask.read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| l.strip_prefix("active_connections{service=\"tcp\"} ")).and_then(|n| n.trim().parse().ok())
}

/// A TCP connection to `addr` whose receive buffer is set to 4 KiB before it connects
/// (tcp(7): set after, it no longer bounds the window the peer was offered), so a client
/// that reads nothing holds only a few KiB: the rest waits in the daemon.
fn small_window_connect(addr: &str) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let Ok(std::net::SocketAddr::V4(v4)) = addr.parse() else { panic!("the daemon listens on IPv4 here: {addr}") };
    // SAFETY: a new socket this function owns until it is handed to the TcpStream; the
    // options and the address are locals that outlive each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 4096;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&size as *const libc::c_int).cast(), 4);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), len);
        assert_eq!(r, 0, "connect to {addr}: {}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// A revoked token's replay ends at once even while its client reads nothing: the
/// replay, waiting for room to send, looked at the revoke only once its send went
/// through, so the daemon held the connection (and its queued chunks) until the client
/// read again, and then sent it the rest of the page it had read. Now the connection is
/// closed with the client still not reading, which then gets what its socket held, and
/// the end: never the backlog, nor what the daemon's kernel had taken on to send (up to
/// 4 MiB: the connection is reset, not closed after it; without that, this test read
/// 2.8 MB).
#[test]
fn a_revoke_ends_a_replay_whose_client_reads_nothing_at_once() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let d = Daemon::start();
    let newest = many_events(&d, "4000");
    let (_, all) = d.raw("GET", &format!("/api/events?since=0&limit={newest}"), "", &[]);
    let backlog = all.as_str().unwrap().len();
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})));
    let mut s = small_window_connect(d.tcp_addr());
    let token = viewer["token"].as_str().unwrap();
    write!(s, "GET /api/events?since=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
    // The replay has begun (its first bytes wait in the client's buffer); with megabytes
    // to send it is soon stuck on a client that reads nothing.
    wait_until("the replay to send", Duration::from_secs(10), || {
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD into a c_int on a socket this test owns.
        unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut waiting) };
        (waiting > 0).then_some(())
    });
    assert_eq!(tcp_connections(&d), Some(1));

    d.ok("DELETE", &format!("/api/tokens/{}", viewer["id"].as_str().unwrap()), None);
    let got = read_after_cut(&d, s);
    let (seqs, complete) = dechunk(&got);
    assert!(!complete, "a stream cut short does not end like a complete one");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "what it got has no gap");
    assert!(got.len() < backlog / 8, "{} bytes read of a {backlog}-byte backlog", got.len());
}

/// What the kernel holds to send on the daemon's end of the TCP connection whose client
/// end is `client` (`/proc/net/tcp`'s `tx_queue`: written by the daemon, not yet taken
/// by the client), if that end is listed.
fn daemon_unsent(d: &Daemon, client: &std::net::TcpStream) -> Option<usize> {
    let (daemon_port, client_port) = (d.tcp_addr().rsplit_once(':')?.1.parse::<u16>().ok()?, client.local_addr().ok()?.port());
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |addr: &str| addr.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let (local, remote, queues) = (cols.get(1)?, cols.get(2)?, cols.get(4)?);
        (port(local)? == daemon_port && port(remote)? == client_port).then_some(())?;
        usize::from_str_radix(queues.split_once(':')?.0, 16).ok()
    })
}

/// How much a live stream's client leaves unread before its reader is refused: the
/// daemon's kernel holds at least this much for it (well past the client's own 4 KiB
/// receive buffer, and the 8 pieces the stream queues), so it is stuck on its sends.
const BACKLOG: usize = 256 * 1024;

/// A followed stream of live events only (`tail=0`: nothing stored is replayed) over TCP
/// with `token`, from a client with a small window ([`small_window_connect`]) that reads
/// nothing once its answer has begun, and the seq it follows from.
fn live_stream_read_by_nobody(d: &Daemon, token: &str) -> (std::net::TcpStream, u64) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let from = newest_seq(d);
    let mut s = small_window_connect(d.tcp_addr());
    write!(s, "GET /api/events?follow=true&tail=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n")
        .unwrap();
    wait_until("the stream's head", Duration::from_secs(10), || {
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD into a c_int on a socket this test owns.
        unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut waiting) };
        (waiting > 0).then_some(())
    });
    (s, from)
}

/// Runs `more` (which makes events for the stream) until the daemon's kernel holds
/// [`BACKLOG`] unsent on `s`: what it holds then.
fn until_backlog(d: &Daemon, s: &std::net::TcpStream, mut more: impl FnMut()) -> usize {
    wait_until("the daemon's send buffer to fill", Duration::from_secs(120), || {
        daemon_unsent(d, s).filter(|&n| n >= BACKLOG).or_else(|| {
            more();
            None
        })
    })
}

/// What a client that read nothing gets of its cut stream once it reads again, after the
/// daemon has closed the connection: everything up to the end, or the reset.
fn read_after_cut(d: &Daemon, mut s: std::net::TcpStream) -> Vec<u8> {
    wait_until("the daemon to close the refused stream's connection", Duration::from_secs(10), || (tcp_connections(d)? == 0).then_some(()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Asserts a cut live stream gave its client the first of the events it may read
/// (`visible`, in order, those published up to the refusal), with no gap and nothing
/// after, and no more than its own socket could hold: not the `held` bytes the daemon's
/// kernel had taken on for it.
fn assert_cut_at_once(got: &[u8], visible: &[u64], held: usize) {
    // The events of its whole chunks and the whole lines of a chunk it got part of: a
    // chunk frames every event ready together, and the first one can be larger than the
    // client's socket holds (a loaded machine readied many at once; the client held 6 KB
    // of the first chunk, and no chunk whole).
    let (chunks, complete, part) = http_chunks_and_part(got);
    let whole_lines = &part[..part.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1)];
    let seqs: Vec<u64> = String::from_utf8_lossy(&[chunks.concat(), whole_lines.to_vec()].concat()).lines().map(seq_of).collect();
    assert!(!complete, "a stream cut short does not end like a complete one");
    assert!(!seqs.is_empty(), "the client's socket held some events: {} bytes", got.len());
    assert_eq!(Some(&seqs[..]), visible.get(..seqs.len()), "what it got has no gap, and nothing after the refusal");
    let in_part = String::from_utf8_lossy(whole_lines).lines().count();
    eprintln!(
        "live stream cut: the client read {} bytes ({} events, {in_part} of a chunk it got part of); the daemon's kernel held {held} unsent",
        got.len(),
        seqs.len()
    );
    assert!(got.len() < BACKLOG / 4, "{} bytes read; the daemon's kernel held {held} unsent", got.len());
}

/// A revoked token's live stream ends at once while its client reads nothing and the
/// orders keep coming. The replay's case is above; a followed stream is stuck elsewhere:
/// on its live feed's chunks (and, once it lags, on a replay catching up), with the
/// kernel's send buffer full of events its client has not taken. The client, reading
/// again, gets what its own socket held and the end: not the daemon's backlog, and
/// nothing published after the revoke.
#[test]
fn a_revoke_ends_a_live_stream_whose_client_reads_nothing_at_once() {
    let d = Daemon::start();
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})));
    let (s, from) = live_stream_read_by_nobody(&d, viewer["token"].as_str().unwrap());
    let mut bench = d.cli_spawn(&["-q", "bench", "--orders", "6000", "--concurrency", "8"]);
    let held = until_backlog(&d, &s, || {
        assert!(bench.try_wait().unwrap().is_none(), "the bench ended before the stream's backlog reached {BACKLOG} bytes");
    });
    // The orders go on while the token is revoked.
    d.ok("DELETE", &format!("/api/tokens/{}", viewer["id"].as_str().unwrap()), None);
    let revoked = newest_seq(&d);
    let got = read_after_cut(&d, s);
    assert!(bench.wait().unwrap().success(), "the bench, while the stream was stuck and cut");
    let (_, after) = d.raw("GET", &format!("/api/events?since={from}&limit={}", revoked - from), "", &[]);
    let visible: Vec<u64> = events_of(after)
        .iter()
        .filter(|e| !e["type"].as_str().unwrap().starts_with("TOKEN_"))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_cut_at_once(&got, &visible, held);
}

/// Disabling a user ends its trader token's live stream at once while the client reads
/// nothing and the user's own orders keep it busy, as a revoke does.
#[test]
fn a_disable_ends_a_live_stream_whose_client_reads_nothing_at_once() {
    let d = Daemon::start();
    let (sym, alice, bob) = d.market_pair("100000000", "10000000");
    let token = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": alice})))["token"].as_str().unwrap().to_string();
    let (s, from) = live_stream_read_by_nobody(&d, &token);
    // Alice's buys fill against Bob's sells: her orders' lives and fills, for her stream.
    let trade = || {
        assert_eq!(d.place(&bob, &sym, "sell", "1", Some("10")).0, 201);
        assert_eq!(d.place(&alice, &sym, "buy", "1", Some("10")).0, 201);
    };
    let held = until_backlog(&d, &s, trade);
    d.cli().args(["user", "disable", &alice]).assert().success();
    let disabled = newest_seq(&d);
    let got = read_after_cut(&d, s);
    let (_, after) = d.raw("GET", &format!("/api/events?since={from}&limit={}", disabled - from), "", &[]);
    let hers: Vec<u64> = events_of(after)
        .iter()
        .filter(|e| e["data"]["user_id"] == alice.as_str() && TRADER_TYPES.contains(&e["type"].as_str().unwrap()))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_cut_at_once(&got, &hers, held);
}

/// The event types a trader token reads (`routes/events.rs`), where they name its user.
const TRADER_TYPES: &[&str] = &[
    "USER_CREATED",
    "USER_UPDATED",
    "ACCOUNT_DEPOSITED",
    "ACCOUNT_WITHDRAWN",
    "ORDER_CREATED",
    "ORDER_REJECTED",
    "ORDER_STATUS_UPDATED",
    "ORDER_EXECUTED",
    "ORDER_CANCELLED",
    "ORDER_EXPIRED",
];

/// A burst of orders reaches a follower whole: every event once, in order, no seq
/// skipped, byte for byte what a replay of the same range sends, though the live feed
/// frames the events ready together into one chunk (`take_ready`) where the replay frames
/// pages of the store. A chunk that dropped, repeated or reordered an event at a chunk's
/// edge, or a follower that fell behind the feed and caught up from the store, would show
/// here.
#[test]
fn a_follower_gets_a_burst_of_orders_whole_and_in_order() {
    use std::io::Write;
    let d = Daemon::start();
    let from = newest_seq(&d);
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /api/events?follow=true&tail=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before its head");
        raw.extend_from_slice(&buf[..n]);
    }
    // The follower reads as the orders come, until it has the newest event the burst
    // made (looking for it between reads: a short read timeout, not a bound on anything).
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (newest_tx, newest_rx) = std::sync::mpsc::channel::<u64>();
    let follower = std::thread::spawn(move || {
        let mut newest = None;
        let mut since_any = std::time::Instant::now();
        loop {
            newest = newest.or_else(|| newest_rx.try_recv().ok());
            if newest.is_some_and(|newest| dechunk(&raw).0.last().is_some_and(|&seq| seq >= newest)) {
                return raw;
            }
            match s.read(&mut buf) {
                Ok(0) => panic!("the followed stream ended"),
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    since_any = std::time::Instant::now();
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    let last = dechunk(&raw).0.last().copied();
                    assert!(
                        since_any.elapsed() < Duration::from_secs(60),
                        "the follower got nothing for a minute after {last:?} (newest {newest:?})"
                    );
                }
                Err(e) => panic!("the followed stream broke: {e}"),
            }
        }
    });
    many_events(&d, "3000");
    let newest = newest_seq(&d);
    newest_tx.send(newest).unwrap();
    let raw = follower.join().unwrap();
    let (followed, _) = http_chunks(&raw);
    let followed = followed.concat();

    let replay = format!("/api/events?since={from}&limit={}", newest - from);
    let mut r = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    write!(r, "GET {replay} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut replayed = Vec::new();
    r.read_to_end(&mut replayed).unwrap();
    let (replayed, complete) = http_chunks(&replayed);
    assert!(complete, "the replay ended as complete");
    let replayed = replayed.concat();

    let seqs: Vec<u64> = String::from_utf8_lossy(&followed).lines().map(seq_of).collect();
    assert!(
        seqs.iter().copied().eq(from + 1..=newest),
        "every event once, in order, no seq skipped: {} events from {:?}",
        seqs.len(),
        seqs.first()
    );
    assert!(followed == replayed, "the followed events are the replayed ones, byte for byte");
    let (chunks, _) = http_chunks(&raw);
    eprintln!("followed {} events ({} bytes) in {} chunks", seqs.len(), followed.len(), chunks.len());
    assert!(chunks.len() < seqs.len(), "events ready together went in one chunk: {} chunks for {} events", chunks.len(), seqs.len());
}
