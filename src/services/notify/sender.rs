//! The sender: the one place where notify touches the network.
//!
//! A tokio task that asks the notify actor for due deliveries (a long poll, answered when
//! something is due), POSTs each in its own task, at most [`MAX_IN_FLIGHT`] at once and
//! each bounded by the attempt timeout, and tells the actor what became of it. A receiver
//! that hangs holds at most [`MAX_IN_FLIGHT_PER_URL`] slots until their timeouts (the
//! actor hands out no more for its URL); the other receivers' deliveries use the rest.

use super::{parse_url, signature, Attempt, AttemptResult, Cmd, Outcome, Tuning};
use crate::services::actor::Handle;
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinSet;

/// Deliveries being attempted at once, at most.
pub const MAX_IN_FLIGHT: usize = 16;
/// Deliveries to one URL being attempted at once, at most (the actor keeps to it when it
/// hands deliveries out: `Notify::due`). Without it a receiver that hangs, with a backlog,
/// took every slot and held back every other webhook for its timeout at each round. Two,
/// not one, so that one slow answer does not serialize a healthy receiver's burst.
pub const MAX_IN_FLIGHT_PER_URL: usize = 2;
/// How much of a failed answer's body goes into `last_error`.
const ERROR_BODY_CHARS: usize = 200;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Starts the sender; it ends when `shutdown` turns true. Deliveries it was attempting
/// then stay pending in `notify.db` and go out after the next start.
pub fn spawn(notify: Handle<Cmd>, shutdown: tokio::sync::watch::Receiver<bool>, tuning: Tuning) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(notify, shutdown, tuning))
}

fn client(timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

async fn run(notify: Handle<Cmd>, mut shutdown: tokio::sync::watch::Receiver<bool>, tuning: Tuning) {
    let client = client(tuning.timeout);
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    // The deliveries being attempted, id to URL: each `Due` tells the actor (which forgets
    // them when it restarts), and a delivery handed out again is not sent twice at once.
    let mut sending: HashMap<String, String> = HashMap::new();
    // Outcomes told to the actor and not yet known committed, oldest first: each `Due`
    // carries them, and an answered `Due` confirms the ones it carried (`Cmd::Due`).
    let mut reported: Vec<Outcome> = Vec::new();
    // How many of `reported` (its first ones) the outstanding `Due` carries.
    let mut carried = 0;
    // The actor's restart count when the outstanding or last answered `Due` was sent:
    // while it stands, the running actor has this sender's lists. `None` when a `Due`
    // was lost (or none was ever answered): the next incarnation has not got them.
    let mut listed_at: Option<u32> = None;
    let mut due = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let free = MAX_IN_FLIGHT.saturating_sub(sending.len());
        let restarts = notify.status.restarts.load(Ordering::Relaxed);
        // With every slot busy the sender has nothing to ask for, but a restarted actor
        // hands out and gives up nothing until it has the lists: it gets them now (a
        // `Due` for none), not at the next free slot, up to an attempt timeout later.
        if due.is_none() && (free > 0 || listed_at != Some(restarts)) {
            let attempting = sending.iter().map(|(id, url)| (id.clone(), url.clone())).collect();
            let told = reported.clone();
            // Refused while notify is not running; the pause below retries.
            due = notify.send(|reply| Cmd::Due { max: free, sending: attempting, reported: told, reply }).ok();
            if due.is_some() {
                (carried, listed_at) = (reported.len(), Some(restarts));
            }
        }
        tokio::select! {
            r = async { due.as_mut().expect("guarded by is_some").await }, if due.is_some() => {
                due = None;
                match r {
                    Ok(Ok(list)) => {
                        // Committed before this answer: no longer needed for a restarted actor.
                        reported.drain(..carried);
                        carried = 0;
                        for a in list {
                            if !sending.contains_key(&a.id) {
                                sending.insert(a.id.clone(), a.url.clone());
                                let (client, timeout) = (client.clone(), tuning.timeout);
                                tasks.spawn(async move {
                                    let result = std::panic::AssertUnwindSafe(attempt(&client, &a, timeout))
                                        .catch_unwind()
                                        .await
                                        .unwrap_or_else(|_| AttemptResult::Failed { error: "the attempt panicked".into(), permanent: false });
                                    Outcome { id: a.id, attempts: a.attempts, result }
                                });
                            }
                        }
                    }
                    // The actor's incarnation ended with the request (its parked reply was
                    // dropped): ask the next one at once, with the lists.
                    Err(_) => listed_at = None,
                    // Refused: ask again soon.
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(outcome) = done {
                    sending.remove(&outcome.id);
                    reported.push(outcome.clone());
                    notify.tell(Cmd::Outcome(outcome));
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if due.is_none() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Makes one attempt at one delivery.
async fn attempt(client: &HttpClient, a: &Attempt, timeout: Duration) -> AttemptResult {
    let uri = match parse_url(&a.url) {
        Ok(u) => u,
        Err(error) => return AttemptResult::Failed { error, permanent: true },
    };
    let mut req = hyper::Request::post(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, concat!("agt/", env!("CARGO_PKG_VERSION")))
        .header("X-Agt-Event", &a.event_type)
        .header("X-Agt-Delivery", &a.id);
    if let Some(secret) = &a.secret {
        req = req.header("X-Agt-Signature", signature(secret, a.payload.as_bytes()));
    }
    let req = match req.body(Full::new(Bytes::from(a.payload.clone()))) {
        Ok(r) => r,
        Err(e) => return AttemptResult::Failed { error: format!("cannot build the request: {e}"), permanent: true },
    };
    let exchange = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        // Read the answer (bounded) so the connection can be reused and an error can quote it.
        let body = Limited::new(resp.into_body(), 64 * 1024).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => AttemptResult::Failed { error: format!("no answer within {} ms", timeout.as_millis()), permanent: false },
        Ok(Err(e)) => AttemptResult::Failed { error: error_chain(&e), permanent: false },
        Ok(Ok((status, _))) if status.is_success() => AttemptResult::Delivered,
        Ok(Ok((status, body))) => {
            let text: String = String::from_utf8_lossy(&body).trim().chars().take(ERROR_BODY_CHARS).collect();
            let error = if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") };
            AttemptResult::Failed { error, permanent: false }
        }
    }
}

/// An error with its causes ("client error (Connect): tcp connect error: Connection refused"),
/// since hyper's top-level message alone does not say what went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn delivery(url: String, secret: Option<&str>) -> Attempt {
        Attempt {
            id: "d-1".into(),
            url,
            secret: secret.map(Into::into),
            event_type: "USER_CREATED".into(),
            payload: r#"{"seq":1,"type":"USER_CREATED"}"#.into(),
            attempts: 0,
        }
    }

    /// A receiver that answers each connection with `answer` and hands back what it got.
    async fn receiver(answer: &'static str) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    // Headers, then the body by Content-Length.
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&got).to_string());
                    if !answer.is_empty() {
                        let _ = s.write_all(answer.as_bytes()).await;
                    } else {
                        tokio::time::sleep(Duration::from_secs(30)).await; // hang
                    }
                });
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn a_delivery_is_a_signed_json_post() {
        let (url, mut got) = receiver("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await;
        let a = delivery(url, Some("k"));
        assert_eq!(attempt(&client(Duration::from_secs(5)), &a, Duration::from_secs(5)).await, AttemptResult::Delivered);
        let req = got.recv().await.unwrap().to_ascii_lowercase();
        assert!(req.starts_with("post /hook http/1.1\r\n"), "{req}");
        assert!(req.contains("content-type: application/json\r\n"));
        assert!(req.contains("x-agt-event: user_created\r\n"));
        assert!(req.contains("x-agt-delivery: d-1\r\n"));
        assert!(req.contains(&format!("x-agt-signature: {}\r\n", signature("k", a.payload.as_bytes()))));
        assert!(req.ends_with(&a.payload.to_ascii_lowercase()));
    }

    #[tokio::test]
    async fn errors_say_what_went_wrong() {
        let c = client(Duration::from_secs(5));
        let (url, _got) = receiver("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops").await;
        let r = attempt(&c, &delivery(url, None), Duration::from_secs(5)).await;
        assert_eq!(r, AttemptResult::Failed { error: "HTTP 500 Internal Server Error: oops".into(), permanent: false });

        let (url, _got) = receiver("").await;
        let r = attempt(&c, &delivery(url, None), Duration::from_millis(200)).await;
        assert_eq!(r, AttemptResult::Failed { error: "no answer within 200 ms".into(), permanent: false });

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = attempt(&c, &delivery(format!("http://127.0.0.1:{port}/"), None), Duration::from_secs(5)).await;
        match r {
            AttemptResult::Failed { error, permanent: false } => assert!(error.to_lowercase().contains("refused"), "{error}"),
            other => panic!("{other:?}"),
        }

        let r = attempt(&c, &delivery("https://example.com/".into(), None), Duration::from_secs(5)).await;
        assert!(matches!(r, AttemptResult::Failed { permanent: true, .. }), "{r:?}");
    }
}
