//! Webhooks: retried until delivered, durable across SIGKILL, never in trading's way.
//!
//! The receivers here are tiny HTTP servers on 127.0.0.1:0 that answer as each test says.
//! The daemons get `AGT_NOTIFY_BACKOFF_MS` and friends so retries take milliseconds.

use crate::util::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Retries in tens of milliseconds instead of seconds.
const FAST: &[(&str, &str)] = &[("AGT_NOTIFY_BACKOFF_MS", "50"), ("AGT_NOTIFY_TIMEOUT_MS", "1000")];

/// One request a receiver got, and what it answered (`None`: it hung).
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    /// Header names lower-cased.
    headers: HashMap<String, String>,
    body: String,
    answered: Option<u16>,
}

/// A webhook receiver: answers its n-th request (from 0) with `answer(n)`, a status code,
/// or hangs when that is `None`.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    fn start(answer: impl Fn(usize) -> Option<u16> + Send + Sync + 'static) -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap(), answer)
    }

    fn on(listener: TcpListener, answer: impl Fn(usize) -> Option<u16> + Send + Sync + 'static) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (record, answer, count) = (hits.clone(), Arc::new(answer), Arc::new(AtomicUsize::new(0)));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (record, answer, count) = (record.clone(), answer.clone(), count.clone());
                std::thread::spawn(move || serve_one(stream, &record, &*answer, &count));
            }
        });
        Receiver { port, hits }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

fn serve_one(mut s: TcpStream, record: &Mutex<Vec<Hit>>, answer: &dyn Fn(usize) -> Option<u16>, count: &AtomicUsize) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let Ok(n) = s.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if body.len() >= len {
                break (head.to_string(), body.to_string());
            }
        }
    };
    let mut lines = head.lines();
    let path = lines.next().unwrap_or("").split_whitespace().nth(1).unwrap_or("").to_string();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let answered = answer(count.fetch_add(1, Ordering::SeqCst));
    record.lock().unwrap().push(Hit { path, headers, body, answered });
    match answered {
        Some(status) => {
            let _ = s.write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
        // Hang: hold the connection until the daemon gives up on it.
        None => while s.read(&mut buf).is_ok_and(|n| n > 0) {},
    }
}

/// A port nobody listens on (connection refused).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn webhook(url: &str, events: &[&str], secret: Option<&str>) -> String {
    let mut s = format!("[[notify.webhooks]]\nurl = {url:?}\nevents = {events:?}\n");
    if let Some(k) = secret {
        s.push_str(&format!("secret = {k:?}\n"));
    }
    s
}

fn deliveries(d: &Daemon) -> Vec<Value> {
    d.ok("GET", "/api/notifications", None).as_array().expect("a JSON array").clone()
}

/// The seq of the `USER_CREATED` event of `user`.
fn created_seq(d: &Daemon, user: &str) -> u64 {
    let events = d.events("USER_CREATED");
    let e = events.iter().find(|e| e["data"]["user_id"] == user).unwrap_or_else(|| panic!("no USER_CREATED for {user}"));
    e["seq"].as_u64().unwrap()
}

/// Waits until `user`'s `USER_CREATED` has a delivery in the log, and gives it. A barrier
/// for "nothing was queued": notify handles the bus's events in order, and queues an
/// event's deliveries in the transaction that marks the event handled, so once this
/// one's is in the log every earlier event has had its deliveries queued, or none. A
/// post is always of a delivery in the log: an event with none is never posted.
fn queued_after(d: &Daemon, user: &str) -> Value {
    let seq = created_seq(d, user);
    wait_until("the later event's delivery", Duration::from_secs(20), || deliveries(d).into_iter().find(|x| x["event_seq"] == seq))
}

fn metric(d: &Daemon, result: &str) -> u64 {
    let Value::String(text) = d.ok("GET", "/metrics", None) else { panic!("metrics are text") };
    let name = format!("agt_notification_deliveries_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&name)).map(|v| v.trim().parse().unwrap()).unwrap_or(0)
}

fn hmac_hex(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn a_webhook_that_fails_twice_then_succeeds_gets_exactly_one_success() {
    let hook = Receiver::start(|n| Some(if n < 2 { 500 } else { 200 }));
    let d = Daemon::with_config_env(&webhook(&hook.url(), &["USER_CREATED"], Some("s3cret")), FAST);
    let user = d.user("hooked");

    let sent =
        wait_until("the delivery to be sent", Duration::from_secs(15), || deliveries(&d).into_iter().find(|x| x["status"] == "sent"));
    // Each attempt is recorded after its answer, which the receiver gives once it has
    // counted the hit: all three are here. A wrong fourth is looked for at the end.
    let hits = hook.hits();
    assert_eq!(hits.iter().take(3).map(|h| h.answered).collect::<Vec<_>>(), [Some(500), Some(500), Some(200)], "{hits:#?}");
    for h in &hits {
        assert_eq!(h.path, "/hook");
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers["x-agt-event"], "USER_CREATED");
        assert_eq!(h.headers["x-agt-delivery"], sent["id"].as_str().unwrap(), "one delivery id across its retries");
        assert_eq!(h.headers["x-agt-signature"], format!("sha256={}", hmac_hex("s3cret", &h.body)));
        let envelope: Value = serde_json::from_str(&h.body).unwrap();
        assert_eq!(envelope["type"], "USER_CREATED");
        assert_eq!(envelope["data"]["user_id"], user.as_str(), "{envelope}");
        for k in ["seq", "event_id", "source", "timestamp"] {
            assert!(envelope.get(k).is_some(), "the body is the event envelope; {k} missing");
        }
    }

    assert_eq!(sent["attempts"], 3);
    assert_eq!(sent["event_type"], "USER_CREATED");
    assert_eq!(sent["url"], hook.url());
    assert!(sent["last_error"].is_null(), "a sent delivery keeps no error of an earlier attempt: {sent}");
    assert!(sent["delivered_at"].is_string() && sent["created_at"].is_string() && sent["event_seq"].is_u64());
    assert_eq!(deliveries(&d).len(), 1);
    assert!(!d.ok("GET", "/api/notifications", None).to_string().contains("s3cret"), "a secret is never shown");

    let notes = wait_until("NOTIFICATION_SENT", Duration::from_secs(5), || {
        let e = d.events("NOTIFICATION_SENT");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["data"]["delivery_id"], sent["id"]);
    assert_eq!(notes[0]["data"]["attempts"], 3);
    assert_eq!((metric(&d, "retry"), metric(&d, "sent"), metric(&d, "failed")), (2, 1, 0));

    let out = ok_stdout(d.cli_current(&["notify", "list"]));
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("USER_CREATED") && out.contains("sent"), "{out}");

    // No wrong fourth attempt: a later delivery to the same receiver is handed out after
    // every one due before it (per URL, oldest due first), so once it has been posted
    // and answered, a sent delivery handed out again would have been posted too.
    let later = d.user("later");
    let next = queued_after(&d, &later);
    wait_until("the later delivery to be sent", Duration::from_secs(15), || {
        deliveries(&d).into_iter().find(|x| x["id"] == next["id"] && x["status"] == "sent")
    });
    let of_first = hook.hits().into_iter().filter(|h| h.headers["x-agt-delivery"] == sent["id"].as_str().unwrap()).count();
    assert_eq!(of_first, 3, "a sent delivery is not posted again: {:#?}", hook.hits());
    assert_eq!(hook.hits().len(), 4, "{:#?}", hook.hits());
}

/// A delivery behind a dead receiver waits between attempts: `notify list` says how many
/// it has had and when the next is due, in its table and as `next_attempt_at` in JSON.
#[test]
fn notify_list_says_when_a_pending_delivery_is_tried_next() {
    let url = format!("http://127.0.0.1:{}/hook", dead_port());
    // A base of an hour, capped at 5 minutes: the first failure leaves it waiting 5 min.
    let d = Daemon::with_config_env(&webhook(&url, &["USER_CREATED"], None), &[("AGT_NOTIFY_BACKOFF_MS", "3600000")]);
    d.user("waiting");
    let pending = wait_until("a failed attempt", Duration::from_secs(10), || deliveries(&d).into_iter().find(|x| x["attempts"] == 1));
    assert_eq!(pending["status"], "pending", "{pending}");
    let next = pending["next_attempt_at"].as_str().unwrap_or_else(|| panic!("a pending delivery says when: {pending}")).to_string();
    let wait = chrono::DateTime::parse_from_rfc3339(&next).unwrap().signed_duration_since(chrono::Utc::now());
    assert!(wait > chrono::Duration::minutes(4) && wait <= chrono::Duration::minutes(5), "next attempt in {wait}");

    let out = ok_stdout(d.cli_current(&["-o", "json", "notify", "list"]));
    let listed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((&listed[0]["next_attempt_at"], &listed[0]["attempts"]), (&json!(next), &json!(1)), "{listed}");

    let out = ok_stdout(d.cli_current(&["notify", "list"]));
    let out = String::from_utf8_lossy(&out);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    let (attempts, at) = (header.find("ATTEMPTS").expect(&out), header.find("NEXT ATTEMPT").expect(&out));
    let row = lines.next().unwrap();
    assert!(row.contains("pending"), "{out}");
    assert_eq!(&row[attempts..attempts + 1], "1", "{out}");
    assert_eq!(row[at..].split_whitespace().next(), Some(next.as_str()), "{out}");
}

#[test]
fn sigkill_with_a_delivery_pending_loses_none() {
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut d = Daemon::with_config_env(&webhook(&url, &["USER_CREATED"], None), FAST);
    let user = d.user("durable");
    let pending =
        wait_until("a failed attempt", Duration::from_secs(10), || deliveries(&d).into_iter().find(|x| x["attempts"].as_u64() >= Some(1)));
    assert_eq!(pending["status"], "pending", "{pending}");
    assert!(pending["last_error"].as_str().unwrap().to_lowercase().contains("refused"), "{pending}");

    d.kill9();
    d.spawn();
    let hook = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), |_| Some(200));
    let hit = wait_until("the pending delivery after the restart", Duration::from_secs(20), || {
        hook.hits().into_iter().find(|h| h.answered == Some(200))
    });
    assert_eq!(hit.headers["x-agt-delivery"], pending["id"].as_str().unwrap(), "the same delivery, not a new one");
    assert!(hit.body.contains(&user));
    let after = wait_until("the log to say sent", Duration::from_secs(5), || {
        deliveries(&d).into_iter().find(|x| x["id"] == pending["id"] && x["status"] == "sent")
    });
    assert!(after["attempts"].as_u64().unwrap() >= 2);
    assert_eq!(deliveries(&d).len(), 1, "the restart neither lost nor duplicated the delivery");
}

/// Removing a webhook stops its posts, retries included: a pending delivery of a webhook
/// no longer configured is given up, not sent on to the old URL. Its secret was never
/// copied into the delivery.
///
/// The receiver answers 500 from the start, so every attempt reaches it and is counted
/// (a dead port that came alive before the removal could take a retry, and a delivery
/// sent is not given up), and attempts never time out, so each recorded one was posted.
#[test]
fn a_removed_webhook_gets_no_more_retries() {
    let hook = Receiver::start(|_| Some(500));
    let env = [("AGT_NOTIFY_BACKOFF_MS", "50"), ("AGT_NOTIFY_TIMEOUT_MS", "600000"), ("AGT_NOTIFY_MAX_ATTEMPTS", "1000")];
    let d = Daemon::with_config_env(&webhook(&hook.url(), &["USER_CREATED"], Some("0ld-s3cret")), &env);
    d.user("pending");
    let pending =
        wait_until("a failed attempt", Duration::from_secs(10), || deliveries(&d).into_iter().find(|x| x["attempts"].as_u64() >= Some(1)));
    assert_eq!(pending["status"], "pending", "{pending}");
    let raw = std::fs::read(d.path().join("data/notify.db")).unwrap();
    let wal = std::fs::read(d.path().join("data/notify.db-wal")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&[raw, wal].concat()).contains("0ld-s3cret"), "the secret is not stored with the delivery");
    d.ok("PUT", "/api/config", Some(json!({"notify.webhooks": []})));
    let given_up = wait_until("the delivery to be given up", Duration::from_secs(10), || {
        deliveries(&d).into_iter().find(|x| x["id"] == pending["id"] && x["status"] == "failed")
    });
    assert!(given_up["last_error"].as_str().unwrap().contains("removed"), "{given_up}");

    // A later event, delivered elsewhere: once it is posted, notify has moved on past the
    // removal, with nothing of the old webhook's left to hand out.
    let witness = Receiver::start(|_| Some(200));
    d.ok("POST", "/api/notifications/rules", Some(json!({"url": witness.url(), "events": ["USER_CREATED"]})));
    let later = d.user("later");
    let next = queued_after(&d, &later);
    wait_until("the later delivery to be posted", Duration::from_secs(15), || witness.hits().pop());
    let log = deliveries(&d);
    assert_eq!(log.iter().filter(|x| x["url"] == hook.url()).count(), 1, "nothing more was queued for the removed webhook: {log:?}");
    assert_eq!(next["url"], witness.url(), "{next}");
    let now = log.iter().find(|x| x["id"] == pending["id"]).unwrap();
    assert_eq!((&now["status"], &now["attempts"]), (&json!("failed"), &given_up["attempts"]), "given up for good: {now}");
    // Every post the old URL got is an attempt recorded before it was given up.
    let hits = hook.hits();
    assert!(hits.iter().all(|h| h.headers["x-agt-delivery"] == pending["id"].as_str().unwrap()), "{hits:#?}");
    assert_eq!(hits.len() as u64, given_up["attempts"].as_u64().unwrap(), "nothing was posted to the removed webhook after: {hits:#?}");
    let failed = wait_until("NOTIFICATION_FAILED", Duration::from_secs(5), || {
        let e = d.events("NOTIFICATION_FAILED");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(failed[0]["data"]["delivery_id"], pending["id"]);
}

/// Receivers that hold every request they get until the test releases them: deliveries
/// in flight for exactly as long as a test needs, with no clock involved.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<(bool, usize)>, Condvar)>);

impl Gate {
    /// Called by a receiver for each request: waits until [`Gate::release`].
    fn hold(&self) {
        let (lock, cv) = &*self.0;
        let mut state = lock.lock().unwrap();
        state.1 += 1;
        cv.notify_all();
        while !state.0 {
            state = cv.wait(state).unwrap();
        }
        state.1 -= 1;
    }

    /// Requests being held now.
    fn held(&self) -> usize {
        self.0 .0.lock().unwrap().1
    }

    fn release(&self) {
        self.0 .0.lock().unwrap().0 = true;
        self.0 .1.notify_all();
    }
}

/// Webhook receivers that hold every post (all 16 of the sender's slots, 2 per URL) do
/// not hold up the daemon: users are created, and notify lists its deliveries, while
/// every slot is held; once released, every delivery is made. (It asserted "creating a
/// user took < 2 s" beside a receiver that hung for 300 ms: a loaded machine could fail
/// that, and a daemon held up by its webhooks could pass it.) A delivery attempt that
/// blocked the runtime's threads, as a blocking HTTP client would, fails it.
#[test]
fn receivers_holding_every_delivery_slot_hold_up_no_user_creation() {
    let gate = Gate::default();
    let receivers: Vec<Receiver> = (0..8)
        .map(|_| {
            let gate = gate.clone();
            Receiver::start(move |_| {
                gate.hold();
                Some(200)
            })
        })
        .collect();
    let config: Vec<String> = receivers.iter().map(|r| webhook(&r.url(), &["USER_CREATED"], None)).collect();
    // No attempt times out: the receivers hold them until released.
    let d = Daemon::with_config_env(&config.join("\n"), &[("AGT_NOTIFY_TIMEOUT_MS", "3600000")]);
    d.user("first");
    d.user("second");
    wait_until("the receivers to hold all 16 slots", Duration::from_secs(60), || (gate.held() == 16).then_some(()));
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let made: Vec<String> = (0..5).map(|i| d.user(&format!("held{i}x"))).collect();
            let listed = deliveries(&d).len();
            let _ = done.send((made, listed));
        });
        // Not a measure of speed: only what a daemon held up by its webhooks never does
        // (it would finish once they are released) fails it.
        let outcome = finished.recv_timeout(Duration::from_secs(60));
        let held = gate.held();
        gate.release();
        let (made, listed) = outcome.expect("users created and deliveries listed while every delivery slot is held");
        assert_eq!(held, 16, "the receivers still held every slot when the users were made");
        assert_eq!(made.len(), 5);
        assert!(listed >= 16, "the held deliveries at least are listed: {listed}");
    });
    wait_until("every delivery to be made once released", Duration::from_secs(60), || {
        let all = deliveries(&d);
        (all.len() == 56 && all.iter().all(|x| x["status"] == "sent")).then_some(())
    });
}

#[test]
fn hanging_and_dead_receivers_fail_cleanly() {
    let hang = Receiver::start(|_| None);
    let dead = format!("http://127.0.0.1:{}/hook", dead_port());
    let config = format!("{}\n{}", webhook(&hang.url(), &["USER_CREATED"], None), webhook(&dead, &["*"], None));
    let env = [("AGT_NOTIFY_BACKOFF_MS", "20"), ("AGT_NOTIFY_TIMEOUT_MS", "300"), ("AGT_NOTIFY_MAX_ATTEMPTS", "2")];
    let d = Daemon::with_config_env(&config, &env);
    for i in 0..5 {
        d.user(&format!("u{i}x"));
    }
    let failed = wait_until("every delivery to fail", Duration::from_secs(20), || {
        let list: Vec<Value> = deliveries(&d).into_iter().filter(|x| x["event_type"] == "USER_CREATED").collect();
        (list.len() == 10 && list.iter().all(|x| x["status"] == "failed")).then_some(list)
    });
    for x in &failed {
        assert_eq!(x["attempts"], 2, "{x}");
        let error = x["last_error"].as_str().unwrap().to_lowercase();
        if x["url"] == hang.url() {
            assert_eq!(error, "no answer within 300 ms");
        } else {
            assert!(error.contains("refused"), "{error}");
        }
    }
    assert_eq!(hang.hits().len(), 10, "5 deliveries, 2 attempts each");
    let notes = wait_until("10 NOTIFICATION_FAILED", Duration::from_secs(5), || {
        let e = d.events("NOTIFICATION_FAILED");
        (e.len() >= 10).then_some(e)
    });
    assert!(notes.iter().all(|e| e["data"]["error"].is_string() && e["data"]["attempts"] == 2));
    // "*" leaves NOTIFICATION_* out, so the dead receiver's own failures were not queued to it.
    assert!(deliveries(&d).iter().all(|x| !x["event_type"].as_str().unwrap().starts_with("NOTIFICATION_")));
    assert_eq!(d.req("GET", "/ready", None).0, 200);
    assert!(metric(&d, "failed") >= 10);
    let (s, v) = d.req("GET", "/api/notifications?status=failed&limit=3", None);
    assert_eq!((s, v.as_array().unwrap().len()), (200, 3));
    // The CLI has the API's filters.
    let out = ok_stdout(d.cli_current(&["-o", "json", "notify", "list", "--status", "failed", "--limit", "2"]));
    let listed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(listed.as_array().unwrap().iter().all(|x| x["status"] == "failed"), "{listed}");
    let out = ok_stdout(d.cli_current(&["-o", "json", "notify", "list", "--status", "pending"]));
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), json!([]));
    d.cli().args(["notify", "list", "--status", "bogus"]).assert().code(2);
    d.cli().args(["notify", "list", "--limit", "0"]).assert().code(2);
}

/// `agt daemon run` on a home with `config` and extra `env`, which must refuse to start:
/// its standard error.
fn refused_start(config: &str, env: &[(&str, &str)]) -> String {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("agt.toml"), format!("{BASE_CONFIG}\n{config}")).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["--home", home.path().to_str().unwrap(), "daemon", "run"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until("the daemon to refuse its config", Duration::from_secs(10), || child.try_wait().unwrap());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[test]
fn a_webhook_url_that_cannot_be_delivered_to_stops_the_daemon_at_start() {
    for (url, expect) in [("https://example.com/hook", "https"), ("ftp://example.com/hook", "notify.webhooks[0].url")] {
        let err = refused_start(&webhook(url, &["*"], None), &[]);
        assert!(err.contains(expect) && err.contains("notify.webhooks"), "{url}: {err}");
    }
}

/// A tuning variable the daemon cannot use stops it, naming the variable, as a bad
/// `AGT_<SECTION>_<KEY>` does, instead of leaving the default in force unnoticed.
#[test]
fn a_bad_notify_tuning_variable_stops_the_daemon_at_start() {
    for (name, value) in [("AGT_NOTIFY_TIMEOUT_MS", "5s"), ("AGT_NOTIFY_MAX_ATTEMPTS", "0"), ("AGT_NOTIFY_BACKOFF_MS", "-5")] {
        let err = refused_start("", &[(name, value)]);
        assert!(err.contains(name) && err.contains("expected a whole number"), "{name}={value}: {err}");
    }
}

/// Notify's feed hands it only the event types some webhook names (`notify::Interest`):
/// a webhook set through the live config is read as it stands, so its events arrive
/// from the change on, and one it does not name is skipped.
#[test]
fn a_webhook_set_in_the_running_config_gets_the_events_it_names() {
    let hook = Receiver::start(|_| Some(204));
    let d = Daemon::with_config_env("", FAST);
    d.user("before");
    let (s, body) = d.req("PUT", "/api/config", Some(json!({"notify.webhooks": [{"url": hook.url(), "events": ["USER_CREATED"]}]})));
    assert_eq!(s, 200, "{body}");
    let user = d.user("after");
    d.deposit(&user, "USD", "10");
    let hit = wait_until("a delivery through the configured webhook", Duration::from_secs(10), || hook.hits().pop());
    assert!(hit.body.contains(&user) && hit.body.contains("USER_CREATED"), "{}", hit.body);
    // Once a later user's delivery is queued, the deposit has been handled: only the
    // two users' creations were queued, so only they are ever posted.
    let later = d.user("later");
    queued_after(&d, &later);
    let queued: Vec<(Value, Value)> = deliveries(&d).into_iter().map(|x| (x["event_type"].clone(), x["event_seq"].clone())).rev().collect();
    let created = |u: &str| (json!("USER_CREATED"), json!(created_seq(&d, u)));
    assert_eq!(queued, [created(&user), created(&later)], "only the type it names, from the change on");
    let hits = wait_until("both posts", Duration::from_secs(10), || Some(hook.hits()).filter(|h| h.len() >= 2));
    assert_eq!(hits.len(), 2, "{:?}", hits.iter().map(|h| &h.body).collect::<Vec<_>>());
}

#[test]
fn run_time_rules_persist_and_the_log_is_for_readers_only() {
    let hook = Receiver::start(|_| Some(204));
    let mut d = Daemon::with_config_env("", FAST);
    let (s, rule) =
        d.req("POST", "/api/notifications/rules", Some(json!({"url": hook.url(), "events": ["USER_CREATED"], "secret": "k3y"})));
    assert_eq!(s, 201, "{rule}");
    assert_eq!((rule["secret"].as_str(), rule["source"].as_str()), (Some("***"), Some("api")));
    for (body, want) in [
        (json!({"url": "https://example.com/", "events": ["*"]}), "invalid_url"),
        (json!({"url": "not a url", "events": ["*"]}), "invalid_url"),
        (json!({"url": hook.url(), "events": ["NOPE"]}), "invalid_events"),
        (json!({"url": hook.url(), "events": []}), "invalid_events"),
        (json!({"url": hook.url()}), "invalid_request"),
    ] {
        let (s, e) = d.req("POST", "/api/notifications/rules", Some(body.clone()));
        assert_eq!((s, code(&e)), (400, want), "{body}");
    }
    d.restart();
    let rules = d.ok("GET", "/api/notifications/rules", None);
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    assert!(!rules.to_string().contains("k3y"));

    let user = d.user("ruled");
    let hit = wait_until("a delivery through the run-time rule", Duration::from_secs(10), || hook.hits().pop());
    assert!(hit.body.contains(&user));
    assert_eq!(hit.headers["x-agt-signature"], format!("sha256={}", hmac_hex("k3y", &hit.body)));
    wait_until("the log to say sent", Duration::from_secs(5), || {
        deliveries(&d).iter().any(|x| x["status"] == "sent" && x["rule"] == rule["id"]).then_some(())
    });

    let id = rule["id"].as_str().unwrap();
    assert_eq!(d.ok("DELETE", &format!("/api/notifications/rules/{id}"), None)["id"], id);
    assert_eq!(d.req("DELETE", &format!("/api/notifications/rules/{id}"), None).0, 404);
    // Another rule's delivery of the next user is the barrier: once it is queued, that
    // user's creation has been handled, and the removed rule queued nothing for it.
    let witness = Receiver::start(|_| Some(204));
    let other = d.ok("POST", "/api/notifications/rules", Some(json!({"url": witness.url(), "events": ["USER_CREATED"]})));
    let unheard = d.user("unheard");
    let seq = created_seq(&d, &unheard);
    assert_eq!(queued_after(&d, &unheard)["rule"], other["id"]);
    let log = deliveries(&d);
    assert!(!log.iter().any(|x| x["event_seq"] == seq && x["rule"] == rule["id"]), "a removed rule queues nothing more: {log:?}");
    assert_eq!(log.iter().filter(|x| x["rule"] == rule["id"]).count(), 1, "{log:?}");
    assert_eq!(hook.hits().len(), 1, "a removed rule posts nothing more");

    for (q, want) in [("status=bogus", "invalid_status"), ("limit=0", "invalid_limit"), ("limit=abc", "invalid_limit")] {
        let (s, e) = d.req("GET", &format!("/api/notifications?{q}"), None);
        assert_eq!((s, code(&e)), (400, want), "{q}");
    }

    // Over TCP: viewers read the log, traders may not, and only admins change rules.
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    let trader = d.ok("POST", "/api/tokens", Some(json!({"role": "trader", "user_id": user})))["token"].as_str().unwrap().to_string();
    assert_eq!(d.tcp("GET", "/api/notifications", None, Some(&viewer)).0, 200);
    assert_eq!(d.tcp("GET", "/api/notifications", None, Some(&trader)).0, 403);
    assert_eq!(d.tcp("GET", "/api/notifications", None, None).0, 401);
    let body = json!({"url": hook.url(), "events": ["*"]});
    assert_eq!(d.tcp("POST", "/api/notifications/rules", Some(body), Some(&viewer)).0, 403);
}

/// What the running daemon accepts as a webhook URL, its next start accepts: `config set`,
/// `PUT /api/config` and `POST /api/notifications/rules` refuse what start-up would
/// (credentials, a character a URL cannot hold, a port that is no port), saying what to fix.
#[test]
fn a_webhook_url_start_up_would_refuse_is_refused_at_run_time() {
    let mut d = Daemon::with_config_env("", FAST);
    let bad = [
        ("http://user:pw@127.0.0.1:18701/cred", "credentials"),
        ("http://x/<>", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("http://127.0.0.1:99999/typo", "from 1 to 65535"),
        ("http://127.0.0.1:abc/", "from 1 to 65535"),
    ];
    for (url, says) in bad {
        let (s, e) = d.req("PUT", "/api/config", Some(json!({"notify.webhooks": [{"url": url, "events": ["*"]}]})));
        assert_eq!((s, code(&e)), (400, "invalid_config"), "{url}: {e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains("notify.webhooks[0].url") && message.contains(says), "{url}: {message}");
        assert!(!message.contains("pw@"), "{message}");

        let value = json!([{"url": url, "events": ["*"]}]).to_string();
        let out = d.cli().args(["config", "set", "notify.webhooks", &value]).assert().code(1).get_output().stderr.clone();
        assert!(String::from_utf8_lossy(&out).contains(says), "{url}: {}", String::from_utf8_lossy(&out));

        let (s, e) = d.req("POST", "/api/notifications/rules", Some(json!({"url": url, "events": ["*"]})));
        assert_eq!((s, code(&e)), (400, "invalid_url"), "{url}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{url}: {e}");
    }
    assert!(d.ok("GET", "/api/notifications/rules", None).as_array().unwrap().is_empty());
    assert!(!std::fs::read_to_string(d.path().join("agt.toml")).unwrap().contains("webhooks"), "nothing was saved");
    d.restart();
}

/// `config get` shows a secret as `***`; sent back with a changed URL there is no secret
/// to keep, so the change is refused rather than made unsigned.
#[test]
fn the_masked_secret_with_a_changed_url_is_refused() {
    let hook = Receiver::start(|_| Some(204));
    let d = Daemon::with_config_env(&webhook(&hook.url(), &["USER_CREATED"], Some("k3y")), FAST);
    let shown = d.ok("GET", "/api/config", None)["notify"]["webhooks"].clone();
    assert_eq!(shown[0]["secret"], "***");
    let mut moved = shown.clone();
    moved[0]["url"] = json!(format!("{}/v2", hook.url()));
    let (s, e) = d.req("PUT", "/api/config", Some(json!({"notify.webhooks": moved})));
    assert_eq!((s, code(&e)), (400, "invalid_config"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"***\" is the masked value") && message.contains("give the secret again"), "{message}");
    // The same URL keeps its secret: deliveries are still signed with it.
    d.ok("PUT", "/api/config", Some(json!({"notify.webhooks": shown})));
    d.user("signed");
    let hit = wait_until("a signed delivery", Duration::from_secs(10), || hook.hits().pop());
    assert_eq!(hit.headers["x-agt-signature"], format!("sha256={}", hmac_hex("k3y", &hit.body)));
}

/// A rule's secret never reaches the audit log, which viewers read: not under a key
/// spelled in capitals, not in a body cut short (malformed JSON is otherwise kept as text).
#[test]
fn a_rule_secret_never_reaches_the_audit_log() {
    let d = Daemon::with_config_env("", FAST);
    let truncated = r#"{"url":"http://127.0.0.1:9/hook","events":["*"],"secret":"TRUNC4TED"#;
    let (s, e) = d.raw("POST", "/api/notifications/rules", truncated, &[]);
    assert_eq!(s, 400, "{e}");
    let capital = r#"{"url":"http://127.0.0.1:9/hook","events":["*"],"Secret":"CAPIT4L"}"#;
    let (s, e) = d.raw("POST", "/api/notifications/rules", capital, &[]);
    assert_eq!(s, 400, "an unknown key is refused, and still recorded: {e}");
    let viewer = d.ok("POST", "/api/tokens", Some(json!({"role": "viewer"})))["token"].as_str().unwrap().to_string();
    let (s, log) = d.tcp("GET", "/api/audit?limit=1000", None, Some(&viewer));
    assert_eq!(s, 200);
    let text = log.to_string();
    assert!(!text.contains("TRUNC4TED") && !text.contains("CAPIT4L"), "{text}");
    let tried: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "POST /api/notifications/rules" && r["detail"]["body"].is_string())
        .collect();
    assert!(tried.iter().any(|r| r["detail"]["body"].as_str().unwrap().contains("withheld")), "the record says what was masked: {tried:?}");
}

/// A config webhook and a run-time rule on one URL are two subscriptions: the receiver
/// gets a delivery for each, each signed with its own subscription's secret.
#[test]
fn a_rule_and_a_config_webhook_on_one_url_each_sign_with_their_own_secret() {
    let hook = Receiver::start(|_| Some(204));
    let d = Daemon::with_config_env(&webhook(&hook.url(), &["USER_CREATED"], Some("from-config")), FAST);
    let rule =
        d.ok("POST", "/api/notifications/rules", Some(json!({"url": hook.url(), "events": ["USER_CREATED"], "secret": "from-rule"})));
    let user = d.user("twice");
    let hits = wait_until("a delivery per subscription", Duration::from_secs(10), || {
        let hits = hook.hits();
        (hits.len() >= 2).then_some(hits)
    });
    let mut signed_with: Vec<&str> = hits
        .iter()
        .map(|h| {
            assert!(h.body.contains(&user));
            let sig = &h.headers["x-agt-signature"];
            if *sig == format!("sha256={}", hmac_hex("from-config", &h.body)) {
                "config"
            } else if *sig == format!("sha256={}", hmac_hex("from-rule", &h.body)) {
                "rule"
            } else {
                panic!("signed with neither secret: {h:?}")
            }
        })
        .collect();
    signed_with.sort();
    assert_eq!(signed_with, ["config", "rule"]);
    assert_ne!(hits[0].headers["x-agt-delivery"], hits[1].headers["x-agt-delivery"]);
    let sent = wait_until("both to be sent", Duration::from_secs(5), || {
        let list: Vec<Value> = deliveries(&d).into_iter().filter(|x| x["status"] == "sent").collect();
        (list.len() == 2).then_some(list)
    });
    let mut rules: Vec<&str> = sent.iter().map(|x| x["rule"].as_str().unwrap()).collect();
    let mut want = vec!["config:0", rule["id"].as_str().unwrap()];
    rules.sort();
    want.sort();
    assert_eq!(rules, want);
}

/// A receiver that hangs holds at most two of the sender's slots: another receiver's
/// deliveries go out at once instead of waiting for the hanging ones' timeouts.
#[test]
fn a_hanging_receiver_does_not_hold_up_another() {
    let hang = Receiver::start(|_| None);
    let healthy = Receiver::start(|_| Some(204));
    let config = format!("{}\n{}", webhook(&hang.url(), &["USER_CREATED"], None), webhook(&healthy.url(), &["USER_CREATED"], None));
    // Attempts time out only after the test's deadline: what the healthy receiver gets,
    // it gets while the hanging one holds its slots.
    let d = Daemon::with_config_env(&config, &[("AGT_NOTIFY_BACKOFF_MS", "50"), ("AGT_NOTIFY_TIMEOUT_MS", "60000")]);
    const USERS: usize = 40;
    for i in 0..USERS {
        d.user(&format!("h{i}x"));
    }
    wait_until("every delivery to the healthy receiver", Duration::from_secs(15), || (healthy.hits().len() >= USERS).then_some(()));
    assert_eq!(healthy.hits().len(), USERS);
    assert!(hang.hits().len() <= 2, "the hanging receiver has at most two attempts in flight: {}", hang.hits().len());
    let pending = d.ok("GET", "/api/notifications?status=pending&limit=1000", None);
    assert_eq!(pending.as_array().unwrap().len(), USERS, "the hanging receiver's deliveries wait their turn");
}

/// A crash of notify (the supervisor restarts it) leaves the sender's attempts running.
/// A rule removed while its delivery was being attempted: the restarted notify found the
/// rule gone and gave the delivery up (`NOTIFICATION_FAILED`), though the attempt then
/// delivered it. The new notify takes what the sender says it is attempting, and the
/// delivery ends as its attempt does: sent.
#[test]
fn an_attempt_in_flight_across_a_restart_of_notify_ends_as_it_went() {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let arrived = Arc::new(AtomicUsize::new(0));
    let held = Receiver::start({
        let (gate, arrived) = (gate.clone(), arrived.clone());
        move |_| {
            arrived.fetch_add(1, Ordering::SeqCst);
            let (open, turn) = &*gate;
            let _open = turn.wait_while(open.lock().unwrap(), |open| !*open).unwrap();
            Some(200)
        }
    });
    let healthy = Receiver::start(|_| Some(200));
    let config = format!(
        "[supervisor]\nmax_restarts = 100\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n\n{}",
        webhook(&healthy.url(), &["USER_CREATED"], None)
    );
    // Attempts time out only after the test's deadline: the held one is in flight throughout.
    let d = Daemon::with_config_env(&config, &[("AGT_NOTIFY_BACKOFF_MS", "50"), ("AGT_NOTIFY_TIMEOUT_MS", "60000")]);
    let rule = d.ok("POST", "/api/notifications/rules", Some(json!({"url": held.url(), "events": ["USER_CREATED"]})));
    let rule = rule["id"].as_str().unwrap().to_string();
    d.user("held");
    wait_until("the rule's delivery to be in flight", Duration::from_secs(10), || (arrived.load(Ordering::SeqCst) == 1).then_some(()));
    let (s, body) = d.req("DELETE", &format!("/api/notifications/rules/{rule}"), None);
    assert_eq!(s, 200, "{body}");

    let (s, body) = d.req("POST", "/api/services/notify/crash", None);
    assert_eq!(s, 202, "{body}");
    // The restarted notify hands out a new delivery: it has looked at the held one's URL.
    d.user("after");
    wait_until("a delivery by the restarted notify", Duration::from_secs(10), || (healthy.hits().len() == 2).then_some(()));
    let services = d.ok("GET", "/api/services", None);
    let notify = services.as_array().unwrap().iter().find(|s| s["name"] == "notify").unwrap().clone();
    assert_eq!(notify["restarts"], 1, "{notify}");
    let of_rule = || deliveries(&d).into_iter().find(|x| x["rule"] == rule.as_str()).unwrap();
    assert_eq!(of_rule()["status"], "pending", "being attempted, it is left to its attempt: {}", of_rule());

    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let sent = wait_until("the held delivery to be sent", Duration::from_secs(10), || Some(of_rule()).filter(|x| x["status"] == "sent"));
    assert_eq!(sent["attempts"], 1, "{sent}");
    let notes = wait_until("NOTIFICATION_SENT", Duration::from_secs(5), || {
        let e = d.events("NOTIFICATION_SENT");
        (e.len() == 3).then_some(e)
    });
    assert!(notes.iter().any(|e| e["data"]["delivery_id"] == sent["id"]), "{notes:?}");
    assert!(d.events("NOTIFICATION_FAILED").is_empty(), "{:?}", d.events("NOTIFICATION_FAILED"));
    assert_eq!(held.hits().len(), 1, "posted once");
}

/// `GET /api/notifications/rules` shows a secret as `***`: a rule sent back with it (one
/// copied from the list) is refused, as the config refuses it, instead of signing every
/// post with `***`, a key no receiver has.
#[test]
fn a_rule_given_the_masked_secret_is_refused() {
    let d = Daemon::with_config_env("", FAST);
    let rule = json!({"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": "***"});
    let (s, e) = d.req("POST", "/api/notifications/rules", Some(rule));
    assert_eq!((s, code(&e)), (400, "invalid_secret"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("real secret"), "{e}");
    assert!(d.ok("GET", "/api/notifications/rules", None).as_array().unwrap().is_empty());
}

/// A webhook URL is at most 2048 bytes, wherever it is given, and a refusal quotes only its
/// start (the URL goes into every delivery, event and `notify list` line); a rule that
/// names an event type many times keeps it once.
#[test]
fn a_huge_webhook_url_is_refused_and_a_repeated_event_type_is_kept_once() {
    let d = Daemon::with_config_env("", FAST);
    let url = format!("http://127.0.0.1:9/{}", "a".repeat(100_000));
    let (s, e) = d.req("POST", "/api/notifications/rules", Some(json!({"url": url, "events": ["*"]})));
    // Failures print the start of an answer only: it may quote the whole URL.
    let head = |v: &dyn ToString| v.to_string().chars().take(300).collect::<String>();
    assert_eq!((s, code(&e)), (400, "invalid_url"), "{}", head(&e));
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("at most 2048 bytes") && message.len() < 300, "{}", head(&message));
    let (s, e) = d.req("PUT", "/api/config", Some(json!({"notify.webhooks": [{"url": url, "events": ["*"]}]})));
    assert_eq!((s, code(&e)), (400, "invalid_config"), "{}", head(&e));
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("notify.webhooks[0].url") && message.len() < 300, "{}", head(&message));
    assert!(d.ok("GET", "/api/notifications/rules", None).as_array().unwrap().is_empty());

    let rule =
        d.ok("POST", "/api/notifications/rules", Some(json!({"url": "http://127.0.0.1:9/hook", "events": vec!["USER_CREATED"; 1000]})));
    assert_eq!(rule["events"], json!(["USER_CREATED"]));
}

/// A `config set` of `notify.webhooks` to the list it is (its secret as `***` or written
/// out) is no change and announces nothing, as for any key; a new secret is a change.
#[test]
fn setting_the_webhooks_to_what_they_are_announces_nothing() {
    let d = Daemon::with_config_env(&webhook("http://127.0.0.1:9/hook", &["USER_CREATED"], Some("k1")), FAST);
    let before = d.events("CONFIG_CHANGED").len();
    let hooks =
        |secret: &str| json!({"notify.webhooks": [{"url": "http://127.0.0.1:9/hook", "events": ["USER_CREATED"], "secret": secret}]});
    d.ok("PUT", "/api/config", Some(hooks("***")));
    d.ok("PUT", "/api/config", Some(hooks("k1")));
    d.ok("PUT", "/api/config", Some(hooks("k2")));
    // Events are in order: once the new secret's is there, any before it would be too.
    let changes = wait_until("the new secret's CONFIG_CHANGED", Duration::from_secs(10), || {
        let all = d.events("CONFIG_CHANGED");
        (all.len() > before).then_some(all)
    });
    assert_eq!(changes.len(), before + 1, "{changes:?}");
}

/// `agt notify rules` lists, adds and removes webhook rules as the API does (the README
/// told users to curl them): a secret through stdin, signing the deliveries, never shown.
#[test]
fn cli_notify_rules_add_list_and_remove() {
    let hook = Receiver::start(|_| Some(204));
    let d = Daemon::with_config_env(&webhook(&format!("http://127.0.0.1:{}/cfg", dead_port()), &["TOKEN_CREATED"], None), FAST);
    let out = d
        .cli()
        .args(["-o", "json", "notify", "rules", "add", &hook.url(), "--events", "USER_CREATED,TRADE_EXECUTED", "--secret", "-"])
        .write_stdin("s3cret\n")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let rule: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((rule["source"].as_str(), rule["secret"].as_str()), (Some("api"), Some("***")), "{rule}");
    assert_eq!(rule["events"], json!(["USER_CREATED", "TRADE_EXECUTED"]));
    let id = rule["id"].as_str().unwrap().to_string();

    // The table: the config's webhook and the rule; `rules` alone is `rules list`.
    let table = String::from_utf8(d.cli().args(["notify", "rules"]).assert().success().get_output().stdout.clone()).unwrap();
    assert!(table.starts_with("ID") && table.contains("config:0") && table.contains(&id), "{table}");
    assert!(table.contains("USER_CREATED,TRADE_EXECUTED") && table.contains("***") && !table.contains("s3cret"), "{table}");
    let listed: Value =
        serde_json::from_slice(&d.cli().args(["-o", "json", "notify", "rules", "list"]).assert().success().get_output().stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let user = d.user("hooked");
    let hit = wait_until("a delivery through the CLI's rule", Duration::from_secs(10), || hook.hits().pop());
    assert!(hit.body.contains(&user));
    assert_eq!(hit.headers["x-agt-signature"], format!("sha256={}", hmac_hex("s3cret", &hit.body)), "the secret as typed, no newline");

    // What the daemon refuses is exit 1 with its code; what nothing could mean is exit 2.
    d.cli()
        .args(["notify", "rules", "add", &hook.url(), "--events", "NOPE"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("invalid_events"));
    for (args, arg) in [
        (&["notify", "rules", "add", "", "--events", "*"][..], "URL"),
        (&["notify", "rules", "add", "http://127.0.0.1:1/", "--events", "USER_CREATED,,TRADE_EXECUTED"], "--events"),
        (&["notify", "rules", "add", "http://127.0.0.1:1/", "--events", "*", "--secret", ""], "--secret"),
        (&["notify", "rules", "remove", " "], "ID"),
    ] {
        d.cli().args(args).assert().code(2).stderr(predicates::str::contains(format!("{arg} cannot be empty")));
    }
    d.cli().args(["notify", "rules", "add", "http://127.0.0.1:1/"]).assert().code(2);

    d.cli().args(["notify", "rules", "remove", &id]).assert().success().stdout(format!("removed webhook rule {id} ({})\n", hook.url()));
    d.cli().args(["notify", "rules", "rm", &id]).assert().code(1).stderr(predicates::str::contains("not_found"));
    let left = d.ok("GET", "/api/notifications/rules", None);
    assert_eq!(left.as_array().unwrap().len(), 1, "only the config's: {left}");
}

/// A start that finds `config.key` gone (or not holding a key) cannot compare the webhook
/// secrets with the history's fingerprints, so it says so: a warning in the log, and each
/// webhook with a secret announced as possibly changed (`"changed": "unknown"`), masked. A
/// secret changed offline then was not let through without a word. A normal restart, and
/// a webhook without a secret, say nothing.
#[test]
fn a_lost_config_key_makes_the_next_start_say_it_cannot_compare_secrets() {
    let secret = "kept-s3cret-Qv";
    let config = format!(
        "{}\n{}",
        webhook("http://127.0.0.1:9/a", &["USER_CREATED"], None),
        webhook("http://127.0.0.1:9/b", &["USER_CREATED"], Some(secret))
    );
    let mut d = Daemon::with_config_env(&config, FAST);
    let unknown =
        |d: &Daemon| -> Vec<Value> { d.events("CONFIG_CHANGED").into_iter().filter(|e| e["data"]["changed"] == "unknown").collect() };
    let warned = |d: &Daemon| d.log().matches("cannot be told at this start").count();
    d.restart();
    assert_eq!((unknown(&d).len(), warned(&d)), (0, 0), "a normal restart says nothing: {}", d.log());

    let key = d.path().join("config.key");
    d.stop();
    std::fs::remove_file(&key).unwrap();
    d.spawn();
    let said = unknown(&d);
    assert_eq!(said.len(), 1, "the webhook with a secret, alone: {said:?}");
    let data = &said[0]["data"];
    assert_eq!(data["key"], "notify.webhooks.1.secret", "{data}");
    assert_eq!((&data["old"], &data["value"], &data["applied"]), (&json!("***"), &json!("***"), &json!("at start")), "{data}");
    assert_eq!(warned(&d), 1, "{}", d.log());
    assert!(d.log().contains("config.key was missing"), "{}", d.log());
    assert!(key.exists(), "a new key is kept for the next start");

    // The new key fingerprinted the secrets: the next start compares again, silently.
    d.restart();
    assert_eq!((unknown(&d).len(), warned(&d)), (1, 1), "{}", d.log());

    // A key file cut short or edited is replaced, and said the same way.
    d.stop();
    std::fs::write(&key, "0123abc\n").unwrap();
    d.spawn();
    assert_eq!(unknown(&d).len(), 2);
    assert!(d.log().contains("config.key did not hold a key"), "{}", d.log());
    d.stop();
    assert!(!d.log().contains(secret), "the secret in clear in the log");
}

/// A webhook secret changed in `agt.toml` while the daemon was stopped is announced at
/// the next start, once, masked: the baseline a start compares with keeps the webhooks
/// masked, so only a keyed fingerprint of the secrets (never the secrets) tells it. A
/// start with nothing edited announces nothing, and neither the store nor the log ever
/// holds a secret.
#[test]
fn a_webhook_secret_changed_while_stopped_is_announced_at_start() {
    let (first, second) = ("first-s3cret-Zq", "second-s3cret-Wx");
    let mut d = Daemon::with_config_env(&webhook("http://127.0.0.1:9/hook", &["USER_CREATED"], Some(first)), FAST);
    let changes = |d: &Daemon| d.events("CONFIG_CHANGED").into_iter().filter(|e| e["data"]["key"] == "notify.webhooks").count();
    assert_eq!(changes(&d), 0, "the first start only takes the configuration as its baseline");
    d.stop();
    let file = d.path().join("agt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace(first, second)).unwrap();
    d.spawn();
    let announced: Vec<Value> = d.events("CONFIG_CHANGED").into_iter().filter(|e| e["data"]["key"] == "notify.webhooks").collect();
    assert_eq!(announced.len(), 1, "{announced:?}");
    let data = &announced[0]["data"];
    assert_eq!((&data["value"][0]["secret"], &data["old"][0]["secret"]), (&json!("***"), &json!("***")), "{data}");
    assert_eq!(data["applied"], "at start");
    d.restart();
    assert_eq!(changes(&d), 1, "a start with nothing edited announces nothing");
    d.stop();
    // The history, its baseline and the log: no secret, old or new, in clear.
    let mut files = vec![d.path().join("data/config.db"), d.path().join("data/config.db-wal"), d.path().join("daemon.out")];
    files.extend(std::fs::read_dir(d.path().join("logs")).into_iter().flatten().flatten().map(|e| e.path()));
    for path in files {
        let bytes = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
        for secret in [first, second] {
            assert!(!bytes.contains(secret), "{secret} in {}", path.display());
        }
    }
}

/// Notify records an attempt's outcome in a batch that commits a few milliseconds later.
/// A crash in between lost the outcome, and the restarted notify posted the delivery
/// again. The sender reports what it has not seen committed to the restarted notify, so
/// a receiver that answered 200 gets one post, and one `NOTIFICATION_SENT` is announced.
#[test]
fn an_outcome_lost_with_a_crash_of_notify_is_not_posted_again() {
    let hook = Receiver::start(|_| Some(200));
    let config = format!("[supervisor]\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n\n{}", webhook(&hook.url(), &["USER_CREATED"], None));
    // Notify crashes right after recording the first outcome, before its commit.
    let d = Daemon::with_config_env(&config, &[("AGT_NOTIFY_BACKOFF_MS", "50"), ("AGT_FAULT_NOTIFY_OUTCOME", "1")]);
    let user = d.user("once");
    // Asked while notify restarts too: it answers 503 then, and the wait goes on.
    let sent = wait_until("the delivery to be sent", Duration::from_secs(15), || {
        let (status, list) = d.req("GET", "/api/notifications", None);
        (status == 200).then_some(())?;
        list.as_array()?.iter().find(|x| x["status"] == "sent").cloned()
    });
    let services = d.ok("GET", "/api/services", None);
    let notify = services.as_array().unwrap().iter().find(|s| s["name"] == "notify").unwrap().clone();
    assert_eq!(notify["restarts"], 1, "the fault fired: {notify}");
    assert_eq!(sent["attempts"], 1, "{sent}");
    let hits = hook.hits();
    assert_eq!(hits.len(), 1, "posted once: {hits:#?}");
    assert!(hits[0].body.contains(&user));
    let notes = wait_until("NOTIFICATION_SENT", Duration::from_secs(5), || {
        let e = d.events("NOTIFICATION_SENT");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["data"]["delivery_id"], sent["id"]);
    assert_eq!(metric(&d, "sent"), 1);
}

/// With all 16 of the sender's slots held by hanging receivers, a restarted notify got
/// the sender's list of attempts only when a slot freed, an attempt timeout later, and
/// until then gave up nothing: a webhook removed meanwhile kept its pending deliveries.
/// The sender gives a restarted notify its list at once, so the removal takes effect
/// now, not after the hanging attempts' timeout (an hour here).
#[test]
fn a_restarted_notify_with_every_slot_busy_acts_at_once() {
    const HANGING: usize = 8; // two slots each: all 16
    let hanging: Vec<Receiver> = (0..HANGING).map(|_| Receiver::start(|_| None)).collect();
    let mut config = String::from("[supervisor]\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n\n");
    for r in &hanging {
        config.push_str(&webhook(&r.url(), &["USER_CREATED"], None));
        config.push('\n');
    }
    let d = Daemon::with_config_env(&config, &[("AGT_NOTIFY_BACKOFF_MS", "50"), ("AGT_NOTIFY_TIMEOUT_MS", "3600000")]);
    d.user("first");
    d.user("second");
    wait_until("every slot to be taken", Duration::from_secs(10), || hanging.iter().all(|r| r.hits().len() == 2).then_some(()));
    let late = Receiver::start(|_| Some(200));
    let rule = d.ok("POST", "/api/notifications/rules", Some(json!({"url": late.url(), "events": ["USER_CREATED"]})));
    let rule = rule["id"].as_str().unwrap().to_string();
    d.user("third");
    let of_rule = || deliveries(&d).into_iter().find(|x| x["rule"] == rule.as_str());
    let queued = wait_until("the rule's delivery", Duration::from_secs(10), of_rule);
    assert_eq!(queued["status"], "pending", "no slot is free: {queued}");

    // Restarted and running again: a command sent while it starts is refused (503).
    let restarted = |d: &Daemon| {
        let services = d.ok("GET", "/api/services", None);
        let notify = services.as_array().unwrap().iter().find(|s| s["name"] == "notify").unwrap().clone();
        notify["restarts"].as_u64() == Some(1) && notify["state"] == "running"
    };
    let (s, body) = d.req("POST", "/api/services/notify/crash", None);
    assert_eq!(s, 202, "{body}");
    wait_until("notify to be restarted and running", Duration::from_secs(10), || restarted(&d).then_some(()));
    assert_eq!(d.ok("DELETE", &format!("/api/notifications/rules/{rule}"), None)["id"], rule.as_str());
    let given_up =
        wait_until("the removed rule's delivery to be given up", Duration::from_secs(10), || of_rule().filter(|x| x["status"] == "failed"));
    assert!(given_up["last_error"].as_str().unwrap().contains("removed"), "{given_up}");
    let failed = wait_until("NOTIFICATION_FAILED", Duration::from_secs(5), || {
        let e = d.events("NOTIFICATION_FAILED");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(late.hits().is_empty());
    assert!(hanging.iter().all(|r| r.hits().len() == 2), "the hanging attempts were not made again");
}

/// The stdout of an `agt` run that must have succeeded.
fn ok_stdout(out: std::process::Output) -> Vec<u8> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
