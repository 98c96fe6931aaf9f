//! The HTTP server: the same router on the Unix socket and on TCP.
//!
//! Each connection is served by hyper directly (HTTP/1.1, keep-alive), tagged with the
//! [`Transport`] it came in on, and tracked so shutdown can stop accepting, let the
//! requests in flight finish, and end long streams.
//!
//! A stop answers every request it takes ([`serve`]): the listener stops taking
//! connections (those the kernel had queued are still served), the requests in flight
//! finish and are answered with `Connection: close`, and a request read from then on is
//! answered 503 `service_unavailable` ("the daemon is stopping"), never cut. A connection
//! idle at the stop is closed only after [`LAST_CALL`] without a request: closed at once,
//! a request its client had just sent was reset unanswered, and the client could not
//! tell whether it had run.
//!
//! Connections allow half-closes: a client may shut its writing side and still read
//! its answer. It also keeps hyper from reading a connection while a request is in
//! flight only to notice an early close: that read reserved a fresh 8 KiB buffer per
//! request (the request still held the old one), with glibc consolidating its free
//! lists for each, ~1.5 µs of an HTTP worker per placement (BENCHMARKS.md, session
//! 23). A handler that outlives its request's reading (a followed event stream) asks
//! [`Peer::gone`] instead.
//!
//! hyper times out a request's head (30 s), not its body: a client that announced a
//! body and then stalled, or sent it a byte a second, held its connection and its
//! request for ever. Every body is read through [`TimedBody`], which ends it with
//! [`BodyTimedOut`] once it is overdue ([`BodyDeadline`]); the routes answer that 408
//! `request_timeout` (`http::read_body`).
//!
//! A request hyper cannot parse is answered by hyper itself, without a body; its answer
//! is given a JSON one on the way out ([`JsonHeads`], `daemon::malformed`).

use crate::daemon::http::Transport;
use crate::daemon::malformed::JsonHeads;
use crate::daemon::metrics::{self, ServiceLabel};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// The client end of a request's connection, as a request extension: whether the
/// client has gone (closed or reset), for a long response that writes only now and then.
#[derive(Clone, Debug)]
pub struct Peer(Arc<OwnedFd>);

impl Peer {
    /// A second descriptor of the connection (`dup`): it keeps the socket open until the
    /// last request of the connection that holds it is done with it.
    fn of(io: &impl AsFd) -> Option<Peer> {
        io.as_fd().try_clone_to_owned().ok().map(|fd| Peer(Arc::new(fd)))
    }

    /// True once the client has closed or reset the connection: a peek at what it sent
    /// finds the end of the stream or an error. Data waiting (a pipelined request) or
    /// none yet means it is still there.
    pub fn gone(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local buffer on a descriptor this owns.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        match n {
            0 => true,
            n if n > 0 => false,
            _ => !matches!(std::io::Error::last_os_error().kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted),
        }
    }

    /// Shuts the connection both ways: hyper's next write to it fails, and so it ends a
    /// response its client has stopped reading (an event stream, at the daemon's stop)
    /// instead of waiting for room to write.
    pub fn hang_up(&self) {
        // SAFETY: `shutdown` on a descriptor this owns; it closes nothing.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// How many bytes the kernel still holds to send on the connection (`TIOCOUTQ`):
    /// written by the daemon, not yet taken by the client. 0 where it cannot be asked.
    pub fn unsent(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ into a c_int on a descriptor this owns.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 {
            n.max(0) as usize
        } else {
            0
        }
    }

    /// [`Peer::hang_up`], and what the kernel still holds to send is dropped rather than
    /// delivered: the connection ends with a reset once its last descriptor closes
    /// (`SO_LINGER` of 0). For a stream whose reader may no longer read (a revoked token):
    /// a client that had stopped reading otherwise got, once it read again, every byte
    /// the kernel had taken on before the revoke, up to its send buffer (4 MiB).
    pub fn cut_off(&self) {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a descriptor this owns, with a `linger` it points at for
        // the call's length. A socket that has no such option (a Unix socket ignores it)
        // is only hung up.
        unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        self.hang_up();
    }
}

/// How long a request's body may take to arrive: `grace` for the whole of it, plus one
/// second per `min_rate` bytes received, so a large body (a CSV import of up to 64 MiB)
/// that keeps coming at a modest rate is read to its end, while a stalled or trickling
/// one is not. The time is counted from the first moment a route waits for the body,
/// not from the request's head: a route that reads it late does not make it overdue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDeadline {
    pub grace: Duration,
    /// Bytes per second that earn a body another second.
    pub min_rate: u64,
}

impl Default for BodyDeadline {
    /// 30 s, as hyper gives a request's head, plus a second per 64 KiB: 64 MiB at
    /// 64 KiB/s (half a megabit) arrives in time.
    fn default() -> Self {
        BodyDeadline { grace: Duration::from_secs(30), min_rate: 64 * 1024 }
    }
}

impl BodyDeadline {
    /// The default, with `grace` from `AGT_HTTP_BODY_TIMEOUT_MS` (1 to 3,600,000) where
    /// set: a test's short deadline. An empty variable counts as unset; anything else out
    /// of range is an error naming the variable, and the daemon refuses to start on it.
    pub fn from_vars(env: &impl Fn(&str) -> Option<String>) -> Result<BodyDeadline, String> {
        const NAME: &str = "AGT_HTTP_BODY_TIMEOUT_MS";
        let d = BodyDeadline::default();
        let Some(raw) = env(NAME).filter(|v| !v.trim().is_empty()) else { return Ok(d) };
        match raw.trim().parse::<u64>() {
            Ok(ms) if (1..=3_600_000).contains(&ms) => Ok(BodyDeadline { grace: Duration::from_millis(ms), ..d }),
            _ => Err(format!("{NAME}: expected a whole number of milliseconds from 1 to 3600000, got {}", crate::api::quote::quoted(&raw))),
        }
    }

    /// When a body first waited for at `since`, `received` bytes in, is overdue.
    fn due(&self, since: tokio::time::Instant, received: u64) -> tokio::time::Instant {
        let earned = Duration::from_secs(received / self.min_rate.max(1));
        since + self.grace.saturating_add(earned)
    }
}

/// The error a [`TimedBody`] ends with once it is overdue: the route answers 408.
#[derive(Debug)]
pub struct BodyTimedOut(pub BodyDeadline);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let grace = self.0.grace;
        let grace = if grace.subsec_millis() == 0 { format!("{} s", grace.as_secs()) } else { format!("{} ms", grace.as_millis()) };
        write!(
            f,
            "the request body did not arrive in time: a body must come within {grace}, plus 1 s per {} KiB; send it whole, without pauses",
            self.0.min_rate >> 10
        )
    }
}

impl std::error::Error for BodyTimedOut {}

/// A request's body with a deadline ([`BodyDeadline`]). What arrives at once (nearly every
/// request: a placement's body comes with its head) passes straight through; a clock is
/// started, and a timer armed, only once the body keeps its reader waiting.
pub struct TimedBody {
    inner: hyper::body::Incoming,
    deadline: BodyDeadline,
    received: u64,
    /// Since when, and until when, the body has been waited for: set at the first wait.
    waiting: Option<(tokio::time::Instant, std::pin::Pin<Box<tokio::time::Sleep>>)>,
}

impl TimedBody {
    pub fn new(inner: hyper::body::Incoming, deadline: BodyDeadline) -> TimedBody {
        TimedBody { inner, deadline, received: 0, waiting: None }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let (since, sleep) = this.waiting.get_or_insert_with(|| {
                    let now = tokio::time::Instant::now();
                    (now, Box::pin(tokio::time::sleep_until(now + this.deadline.grace)))
                });
                // A body that keeps coming has earned more time since the timer was set.
                let due = this.deadline.due(*since, this.received);
                if sleep.deadline() != due {
                    sleep.as_mut().reset(due);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.deadline))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP client's address, as a request extension: whom a request refused for want of a
/// valid token came from (`daemon::refusals`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Anything that accepts connections: a `UnixListener` or a `TcpListener`, with the
/// client's address where it has one.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static;
    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<(Self::Io, Option<PeerAddr>)>> + Send;

    /// Stops listening, and hands back the connections the kernel had queued and nobody
    /// accepted yet: closing the listener would reset them, and their clients could not
    /// tell a request refused from one lost.
    fn close(self) -> Vec<(Self::Io, Option<PeerAddr>)>;
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<PeerAddr>)> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| (s, None))
    }

    /// `shutdown(SHUT_RD)` on a listening Unix socket refuses every connect from then on
    /// (`ECONNREFUSED`), under the socket's lock, and leaves the queue to be accepted: no
    /// connection can slip in between the last accept and the close.
    fn close(self) -> Vec<(Self::Io, Option<PeerAddr>)> {
        // SAFETY: `shutdown` on a descriptor this listener owns; it closes nothing.
        unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_RD) };
        let Ok(listener) = self.into_std() else { return Vec::new() };
        std::iter::from_fn(|| listener.accept().ok())
            .filter_map(|(s, _)| s.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(s)).ok())
            .map(|s| (s, None))
            .collect()
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<PeerAddr>)> {
        let (s, addr) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, Some(PeerAddr(addr))))
    }

    /// TCP has no way to refuse new connections and keep the queue (`shutdown` on a
    /// listener resets the queue): a connection that completes between the last accept
    /// here and the close, microseconds, is reset. Later ones are refused.
    fn close(self) -> Vec<(Self::Io, Option<PeerAddr>)> {
        let Ok(listener) = self.into_std() else { return Vec::new() };
        std::iter::from_fn(|| listener.accept().ok())
            .filter_map(|(s, addr)| {
                let _ = s.set_nodelay(true);
                let s = s.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(s)).ok()?;
                Some((s, Some(PeerAddr(addr))))
            })
            .collect()
    }
}

/// How long a connection idle when the daemon begins to stop is kept open for a request
/// its client may have sent meanwhile (answered 503, then closed). As long as a client
/// that stopped reading an event stream is given (`routes::events`).
pub const LAST_CALL: Duration = Duration::from_secs(1);

/// How long a stop waits for the connections in flight before it goes on without them.
const GRACE: Duration = Duration::from_secs(10);

/// The answer to a request read once the daemon is stopping: not run, and the connection
/// closes after it.
fn stopping_answer() -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = crate::daemon::http::Failure(crate::api::ApiError::daemon_stopping()).into_response();
    resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    resp
}

/// Serves `router` on `listener` until `shutdown` flips, then stops (see the module's
/// doc): the listener is closed and its queued connections served; every request read
/// from then on is answered 503, every answer carries `Connection: close`; a connection
/// idle at the stop gets [`LAST_CALL`] for a last request; then the stop waits (up to
/// [`GRACE`]) for the connections in flight.
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    transport: Transport,
    deadline: BodyDeadline,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let router = router.layer(axum::Extension(transport));
    // Read for every request: an atomic, not the watch channel's lock.
    let stopping = Arc::new(AtomicBool::new(false));
    // Every connection's task holds a sender: the channel closes when the last one ends.
    let (live, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
    let told = shutdown.clone();
    let label = ServiceLabel {
        service: match transport {
            Transport::Socket => "socket",
            Transport::Tcp => "tcp",
        },
    };
    let connection = |io: L::Io, addr: Option<PeerAddr>| {
        let peer = Peer::of(&io);
        let (mut router, stopping) = (router.clone(), stopping.clone());
        let svc = tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let stopping = stopping.clone();
            let answer = (!stopping.load(Ordering::Acquire)).then(|| {
                let mut req = req.map(|body| axum::body::Body::new(TimedBody::new(body, deadline)));
                if let Some(peer) = &peer {
                    req.extensions_mut().insert(peer.clone());
                }
                if let Some(addr) = addr {
                    req.extensions_mut().insert(addr);
                }
                tower::Service::call(&mut router, req)
            });
            async move {
                let Some(answer) = answer else { return Ok::<_, std::convert::Infallible>(stopping_answer()) };
                let mut resp = answer.await?;
                // Answered during the stop: the client is told not to send another
                // request on this connection, which closes after this answer.
                if stopping.load(Ordering::Acquire) {
                    resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                }
                Ok(resp)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .half_close(true)
            .serve_connection(TokioIo::new(JsonHeads::new(io)), TowerToHyperService::new(svc));
        let gauge = metrics::get().active_connections.get_or_create(&label).clone();
        gauge.inc();
        let (live, mut stop) = (live.clone(), told.clone());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { drop(stop.wait_for(|stopped| *stopped).await) } => {
                    // A request in flight is answered (with `Connection: close`) and ends
                    // the connection; an idle one is given a last call, then closed.
                    if tokio::time::timeout(LAST_CALL, conn.as_mut()).await.is_err() {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            gauge.dec();
            drop(live);
        });
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((io, addr)) => connection(io, addr),
                    Err(e) => {
                        // EMFILE and friends: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            _ = async { drop(shutdown.wait_for(|stopped| *stopped).await) } => break,
        }
    }
    // Closed first, then the answers say the daemon stops: a client that reconnects on
    // hearing it is refused, rather than queued on a listener about to close.
    for (io, addr) in listener.close() {
        connection(io, addr);
    }
    stopping.store(true, Ordering::Release);
    drop(live);
    if tokio::time::timeout(GRACE, all_ended.recv()).await.is_err() {
        // Said, so that a stop that took the whole grace is explained (and a test can
        // tell a connection that held the stop from a machine that was merely slow).
        let open = metrics::get().active_connections.get_or_create(&label).get();
        tracing::warn!(
            transport = label.service,
            open,
            grace_s = GRACE.as_secs(),
            "the stop waited the whole grace for connections in flight and goes on without them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A body earns a second per 64 KiB on top of the grace: a 64 MiB import has ~17
    /// minutes, one byte at a time has the grace alone. A test shortens the grace.
    #[test]
    fn a_body_deadline_grows_with_what_arrived() {
        let env = |v: Option<&'static str>| move |name: &str| (name == "AGT_HTTP_BODY_TIMEOUT_MS").then(|| v.map(String::from)).flatten();
        let d = BodyDeadline::from_vars(&env(None)).unwrap();
        assert_eq!(d, BodyDeadline::default());
        assert_eq!(BodyDeadline::from_vars(&env(Some(""))).unwrap(), d, "empty is unset");
        let since = tokio::time::Instant::now();
        assert_eq!(d.due(since, 1000) - since, Duration::from_secs(30));
        assert_eq!(d.due(since, 64 << 20) - since, Duration::from_secs(30 + 1024));
        let short = BodyDeadline::from_vars(&env(Some(" 500 "))).unwrap();
        assert_eq!(short.due(since, 0) - since, Duration::from_millis(500));
        assert!(BodyTimedOut(short).to_string().contains("within 500 ms, plus 1 s per 64 KiB"));
        assert!(BodyTimedOut(d).to_string().contains("within 30 s,"));
        for bad in ["0", "-1", "5s", "3600001"] {
            let e = BodyDeadline::from_vars(&env(Some(bad))).unwrap_err();
            assert!(e.starts_with("AGT_HTTP_BODY_TIMEOUT_MS: expected a whole number of milliseconds"), "{bad}: {e}");
        }
        crate::services::config::settings::check_env_names(["AGT_HTTP_BODY_TIMEOUT_MS".to_string()].into_iter())
            .expect("a tuning knob, not a setting");
    }

    #[test]
    fn a_peer_is_gone_once_its_client_closes_and_not_before() {
        let (server, mut client) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = Peer::of(&server).unwrap();
        assert!(!peer.gone(), "connected, nothing sent");
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert!(!peer.gone(), "a request waiting is a client still there");
        assert!(!peer.gone(), "the peek left the request for hyper");
        drop(client);
        assert!(!peer.gone(), "unread data comes before the end of the stream");
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut &server, &mut rest).unwrap();
        assert!(peer.gone(), "closed");
    }
}
