//! The HTTP client of the daemon's API, over the Unix socket or TCP (DESIGN.md §3, §4).
//!
//! The CLI and the TUI both talk to the daemon through [`Client`]. Every request opens
//! its own HTTP/1.1 connection: a local socket costs microseconds to dial, and a fresh
//! connection per request means a daemon restart never leaves a client holding a dead
//! one. Answers are JSON ([`serde_json::Value`]); an error answer becomes
//! [`ClientError::Api`] carrying the daemon's stable `code`.
//!
//! [`BlockingClient`] wraps a `Client` with its own current-thread runtime, for callers
//! that are not async (the CLI).
//!
//! **Stale reads.** A read of what the daemon builds from its event bus (the audit log,
//! market data, the notification log, the event list) waits for the bus and that
//! service's feed to catch up, and an answer still behind then comes marked
//! ([`BEHIND_HEADER`]: how many events, at least, it may lack). The client notes each
//! such answer in its [`Staleness`], shared by its clones, and [`Client::get_marked`]
//! gives one read's mark with its answer: the CLI warns after its output, the TUI says
//! so on its status line. The library itself prints nothing.

use crate::api::quote::quoted;
use crate::api::{ApiError, DaemonInfo, ErrorBody, BEHIND_HEADER};
use crate::daemon::Home;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long dialling the daemon may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longer than the daemon's own placement timeout (`trading.order_timeout_s`, 30 s by
/// default), so that the daemon's 504 reaches the user rather than a client-side timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody answered: no socket, connection refused, or the connection dropped before
    /// an answer. The CLI exits 3 and says how to start the daemon. `delivery` says
    /// whether the request can have reached the daemon, for callers that must know if
    /// sending it again could do it twice.
    #[error("cannot reach the agt daemon at {}: {reason}", shown_target(.target))]
    Unreachable { target: String, reason: String, delivery: Delivery },
    /// The daemon answered with its error shape `{"error": {"code", "message"}}`.
    #[error("{0}")]
    Api(ApiError),
    /// The daemon answered, but not in a shape this client understands.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon's URL (`--url`, `AGT_URL`) cannot be used.
    #[error("invalid daemon URL {}: {reason}", quoted(.url))]
    BadUrl { url: String, reason: String },
    /// The token (`--token`, `AGT_TOKEN`) cannot be sent: it is not one `agt token
    /// create` made. Not shown, as a token is a secret; the CLI exits 2 (usage).
    #[error("invalid token (--token or AGT_TOKEN): {0}")]
    BadToken(String),
}

/// What became of a request that got no answer. A person at the order form must know
/// whether sending again is safe; the words of the reason are for reading, not for that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No connection was made (no socket, connection refused, no connection in time), or
    /// hyper handed the request back unwritten: nothing reached the daemon, and sending
    /// it again is safe.
    NotSent,
    /// The request may have been written and its answer lost (the connection dropped, no
    /// answer in time): the daemon may have done it, so look before sending it again.
    AnswerLost,
}

impl ClientError {
    /// Whether the request is known never to have reached the daemon.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, ClientError::Unreachable { delivery: Delivery::NotSent, .. } | ClientError::BadUrl { .. } | ClientError::BadToken(_))
    }

    /// The daemon's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The local socket: every caller is admin, no token.
    Unix(PathBuf),
    /// A daemon's TCP listener, with a bearer token for `/api`.
    Tcp {
        /// `host:port`, as dialled and sent in `Host`.
        authority: String,
        /// A path prefix from the URL (`http://h:8000/agt` → `/agt`), usually empty.
        prefix: String,
        /// `None` sends no `Authorization` (the daemon then refuses `/api`).
        token: Option<Bearer>,
    },
}

/// A bearer token as the `Authorization` header value it is sent as, `Bearer <token>`,
/// built and checked once when the token is given (`--token`, or the admin token
/// `agt bench` makes for its load), not again for each request. Marked sensitive, so
/// `{:?}` of an endpoint does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer(HeaderValue);

impl Bearer {
    /// Refuses a token an `Authorization` header cannot carry (a control character: a
    /// paste that took a terminal's escape or a line break, say) where it is given,
    /// rather than at its first request; the message says it is the token that is
    /// wrong, not the URL.
    pub fn new(token: &str) -> Result<Bearer, ClientError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::BadToken(
                "it holds a control character (a line break, an escape, ...), which an HTTP header cannot carry; \
                 pass the token exactly as `agt token create` printed it"
                    .into(),
            )
        })?;
        value.set_sensitive(true);
        Ok(Bearer(value))
    }

    /// The header's value, `Bearer <token>`.
    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(…)")
    }
}

impl Endpoint {
    /// Parses `http://host:port[/prefix]` (a bare `host:port` is taken as http).
    pub fn tcp(url: &str, token: Option<String>) -> Result<Endpoint, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl { url: url.to_string(), reason: reason.to_string() };
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(bad("https is not supported; put a TLS proxy in front or use http://"));
        } else if url.contains("://") {
            return Err(bad("only http:// URLs are supported"));
        } else {
            url
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        check_authority(authority).map_err(|reason| bad(&reason))?;
        let authority = if has_port(authority) { authority.to_string() } else { format!("{authority}:80") };
        let prefix = path.trim_end_matches('/').to_string();
        let token = token.filter(|t| !t.is_empty()).map(|t| Bearer::new(&t)).transpose()?;
        Ok(Endpoint::Tcp { authority, prefix, token })
    }

    /// The socket of the daemon of `home`: always `$AGT_HOME/agt.sock`, where its daemon
    /// binds it. Not the `socket` named in `agtd.json`: a copy of another home's
    /// `agtd.json` (a home copied with `cp -a` while its daemon ran) would send every
    /// command of this home to that other daemon.
    pub fn for_home(home: &Home) -> Endpoint {
        Endpoint::Unix(home.socket())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { authority, prefix, .. } => write!(f, "http://{authority}{prefix}"),
        }
    }
}

/// Refuses a host or port that no lookup could find (`not a url`, `host:port`, `h:99999`):
/// a usage error (exit 2) naming what is wrong, rather than a DNS lookup that fails and
/// reads as a daemon that is not running (exit 3).
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let Some((v6, after)) = rest.split_once(']') else { return Err("an IPv6 address needs its closing ']'".into()) };
            if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.')) {
                return Err(format!("{} is not an IPv6 address", quoted(v6)));
            }
            match after {
                "" => return Ok(()),
                _ => match after.strip_prefix(':') {
                    Some(port) => (None, Some(port)),
                    None => return Err(format!("unexpected {} after the IPv6 address (a port is written :PORT)", quoted(after))),
                },
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        },
    };
    if let Some(host) = host {
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
            return Err(format!(
                "{} is not a host name: write http://HOST:PORT, HOST being letters, digits, '-' and '.' (or an IPv6 address in [])",
                quoted(host)
            ));
        }
    }
    match port {
        Some(p) if p.parse::<u16>().map_or(true, |n| n == 0) => Err(format!("port {} is not a number from 1 to 65535", quoted(p))),
        _ => Ok(()),
    }
}

/// The daemon an error names: a TCP one (`--url`, which a script may fill with anything)
/// by its ends and length when long (`api::quote`), a socket's path whole (the kernel keeps
/// it under 108 bytes, and a user looks for the home in it).
fn shown_target(target: &str) -> std::borrow::Cow<'_, str> {
    if target.starts_with("http://") {
        crate::api::quote::bare(target).into()
    } else {
        target.into()
    }
}

fn has_port(authority: &str) -> bool {
    // `[::1]:8000` and `host:8000` have one; `[::1]` and `host` do not.
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']') && authority[i + 1..].parse::<u16>().is_ok(),
        None => false,
    }
}

/// Reads `$AGT_HOME/agtd.json`, if a daemon wrote one and it parses.
pub fn read_info(home: &Home) -> Option<DaemonInfo> {
    let text = std::fs::read_to_string(home.info_file()).ok()?;
    serde_json::from_str(&text).ok()
}

/// An answer the daemon marked as read behind its event bus ([`BEHIND_HEADER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// What was asked, `GET /api/audit`: the method and the path without its query (the
    /// query says how much, not what, and the CLI adds its own `limit`).
    pub request: String,
    /// At least this many events published before the read may be missing from it.
    pub events: u64,
}

/// The answers read behind the event bus, of a client and all its clones: a command's
/// requests go through clones of one client, and whoever shows the answers (the CLI,
/// once the command is done) asks here whether any of them was behind. Only the first
/// [`Staleness::KEPT`] are kept, the rest counted, so a long-lived client (the TUI's)
/// holds no more than that however long it polls.
#[derive(Debug, Clone, Default)]
pub struct Staleness(Arc<Mutex<StaleAnswers>>);

/// What a [`Staleness`] holds: the answers marked behind, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleAnswers {
    /// The first [`Staleness::KEPT`] of them.
    pub kept: Vec<Behind>,
    /// How many more there were.
    pub more: u64,
}

impl Staleness {
    /// How many marked answers are kept whole.
    pub const KEPT: usize = 8;

    fn note(&self, behind: Behind) {
        let mut answers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if answers.kept.len() < Self::KEPT {
            answers.kept.push(behind);
        } else {
            answers.more += 1;
        }
    }

    /// The answers marked behind so far, forgotten here: the next call sees only later ones.
    pub fn take(&self) -> StaleAnswers {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// How many events, at least, an answer says it may lack: `None` for an answer that is
/// current (no [`BEHIND_HEADER`]). A value that is not a number still marks it behind,
/// by one at least: the daemon said so.
fn behind_of<B>(resp: &Response<B>) -> Option<u64> {
    let value = resp.headers().get(BEHIND_HEADER)?;
    Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(1).max(1))
}

/// A client of one daemon. Cheap to clone; holds no connection between requests.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// Applies to whole request/response exchanges, not to streams.
    timeout: Option<Duration>,
    /// The answers read behind the event bus, shared with every clone.
    staleness: Staleness,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint, timeout: Some(DEFAULT_REQUEST_TIMEOUT), staleness: Staleness::default() }
    }

    /// The answers of this client and its clones that the daemon marked as read behind
    /// its event bus.
    pub fn staleness(&self) -> &Staleness {
        &self.staleness
    }

    /// `None` waits as long as the daemon takes.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::GET, path, None).await
    }

    /// [`Client::get`], with how many events, at least, the answer may lack (`None`: it
    /// is current): for a caller that runs reads side by side (the TUI) and must know
    /// which of them was behind. The answer is noted in [`Client::staleness`] too.
    pub async fn get_marked(&self, path: &str) -> Result<(Value, Option<u64>), ClientError> {
        let (bytes, behind) = self.exchange(Method::GET, path, None, "application/json").await?;
        Ok((json_of(path, &bytes)?, behind))
    }
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.request(Method::POST, path, body).await
    }
    pub async fn put(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.request(Method::PUT, path, body).await
    }
    pub async fn patch(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.request(Method::PATCH, path, body).await
    }
    pub async fn delete(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.request(Method::DELETE, path, body).await
    }

    /// Sends a request and returns the JSON answer (`Null` for an empty body).
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let body = body.map(|v| Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes")));
        self.request_bytes(method, path, body).await
    }

    /// [`Client::request`] with a body already written as JSON text: what a
    /// `serde_json::Value` cannot say, a number as the user typed it (`100.0`, `1e2`,
    /// `0.30000000000000001`), which a `Value` would send through a float.
    pub async fn request_text(&self, method: Method, path: &str, body: String) -> Result<Value, ClientError> {
        self.request_bytes(method, path, Some(Bytes::from(body))).await
    }

    async fn request_bytes(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Value, ClientError> {
        let (bytes, _) = self.exchange(method, path, body, "application/json").await?;
        json_of(path, &bytes)
    }

    /// Sends a GET and returns the answer as text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (bytes, _) = self.exchange(Method::GET, path, None, "text/plain").await?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ClientError::Protocol(format!("{path} did not answer UTF-8 text")))
    }

    /// Opens a GET whose answer is a stream of lines (NDJSON events) and returns it as
    /// soon as the headers arrive; lines are read as the daemon flushes them.
    pub async fn get_lines(&self, path: &str) -> Result<Lines, ClientError> {
        let resp = self.send(Method::GET, path, None, "application/x-ndjson").await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = collect(resp.into_body(), &self.endpoint).await?;
            return Err(api_error(status, &body));
        }
        self.note_behind(&Method::GET, path, behind_of(&resp));
        Ok(Lines { body: resp.into_body(), buf: Vec::new(), done: false, target: self.endpoint.to_string() })
    }

    /// Notes an answer marked behind in [`Client::staleness`].
    fn note_behind(&self, method: &Method, path: &str, behind: Option<u64>) {
        if let Some(events) = behind {
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            self.staleness.note(Behind { request: format!("{method} {path}"), events });
        }
    }

    /// One exchange: the answer's body, and how many events it says it may lack.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        accept: &'static str,
    ) -> Result<(Bytes, Option<u64>), ClientError> {
        let work = async {
            let resp = self.send(method.clone(), path, body, accept).await?;
            let status = resp.status();
            let behind = behind_of(&resp);
            let bytes = collect(resp.into_body(), &self.endpoint).await?;
            if status.is_success() {
                // Noted only once the whole answer is in: one lost on the way showed nothing.
                self.note_behind(&method, path, behind);
                Ok((bytes, behind))
            } else {
                Err(api_error(status, &bytes))
            }
        };
        match self.timeout {
            // A dial slower than the whole timeout is counted as lost too: it cannot be
            // told from a request written and never answered, and a lost one is the safe guess.
            Some(t) => tokio::time::timeout(t, work).await.map_err(|_| ClientError::Unreachable {
                target: self.endpoint.to_string(),
                reason: format!("no answer within {} s", t.as_secs()),
                delivery: Delivery::AnswerLost,
            })?,
            None => work.await,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Bytes>, accept: &'static str) -> Result<Response<Incoming>, ClientError> {
        // Until the request is handed to hyper, nothing can have reached the daemon.
        let unreachable =
            |reason: String| ClientError::Unreachable { target: self.endpoint.to_string(), reason, delivery: Delivery::NotSent };
        let has_body = body.is_some();
        let payload = body.unwrap_or_default();
        let (uri, host, token) = match &self.endpoint {
            Endpoint::Unix(_) => (path.to_string(), "localhost".to_string(), None),
            Endpoint::Tcp { authority, prefix, token } => (format!("{prefix}{path}"), authority.clone(), token.as_ref()),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(HOST, host)
            .header(USER_AGENT, concat!("agt/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, accept);
        if has_body {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, t.header().clone());
        }
        let req = req.body(Full::new(payload)).map_err(|e| ClientError::Protocol(format!("cannot build a request for {uri:?}: {e}")))?;

        let mut sender = match &self.endpoint {
            Endpoint::Unix(sock) => {
                let stream = dial(tokio::net::UnixStream::connect(sock)).await.map_err(|why| unreachable(too_long(sock).unwrap_or(why)))?;
                handshake(stream).await.map_err(unreachable)?
            }
            Endpoint::Tcp { authority, .. } => {
                let stream = dial(tokio::net::TcpStream::connect(authority.as_str())).await.map_err(unreachable)?;
                let _ = stream.set_nodelay(true);
                handshake(stream).await.map_err(unreachable)?
            }
        };
        // hyper hands the request back when it failed before writing any of it; once
        // written, the daemon may have it whatever became of the answer.
        sender.try_send_request(req).await.map_err(|e| {
            let delivery = if e.message().is_some() { Delivery::NotSent } else { Delivery::AnswerLost };
            ClientError::Unreachable {
                target: self.endpoint.to_string(),
                reason: format!("the connection failed ({})", e.error()),
                delivery,
            }
        })
    }
}

async fn dial<S>(connect: impl std::future::Future<Output = std::io::Result<S>>) -> Result<S, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(match e.kind() {
            std::io::ErrorKind::NotFound => "no socket there".to_string(),
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        }),
        Err(_) => Err(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Why a socket path cannot be dialled when it is too long for a Unix socket address
/// (the system's own words, "path must be shorter than SUN_LEN", name no fix).
fn too_long(sock: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let len = sock.as_os_str().as_bytes().len();
    // SAFETY: an all-zero sockaddr_un is a valid value; only its field's size is read.
    let max = unsafe { std::mem::zeroed::<libc::sockaddr_un>() }.sun_path.len() - 1;
    (len > max).then(|| {
        format!("the socket path is {len} bytes, longer than the {max} a Unix socket path may have; use a shorter --home or --socket")
    })
}

async fn handshake<S>(stream: S) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    // The connection task drives the socket; it ends when the exchange (or stream) does.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn collect(body: Incoming, endpoint: &Endpoint) -> Result<Bytes, ClientError> {
    body.collect().await.map(|c| c.to_bytes()).map_err(|e| ClientError::Unreachable {
        target: endpoint.to_string(),
        reason: format!("the connection dropped during the answer ({e})"),
        delivery: Delivery::AnswerLost,
    })
}

/// A JSON answer (`Null` for an empty body).
fn json_of(path: &str, bytes: &[u8]) -> Result<Value, ClientError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("{path} did not answer JSON ({e})")))
}

/// The daemon's error body, or a stand-in when an answer is not in that shape (a proxy's
/// page, say).
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        let e = ApiError::new(status.as_u16(), b.error.code, b.error.message);
        return ClientError::Api(match b.error.order_id {
            Some(id) => e.for_order(&id),
            None => e,
        });
    }
    // Not an agt error body (a proxy's page, another server): keep a short plain-text
    // first line, never a page of HTML.
    let text = String::from_utf8_lossy(body);
    let first = text.trim().lines().next().unwrap_or("").trim();
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if first.is_empty() || first.starts_with('<') || first.len() > 200 {
        format!("HTTP {} {reason}, without an agt error body (is this an agt daemon?)", status.as_u16())
    } else {
        format!("HTTP {} {reason}: {first}", status.as_u16())
    };
    ClientError::Api(ApiError::new(status.as_u16(), format!("http_{}", status.as_u16()), message))
}

/// A streamed answer read line by line (NDJSON).
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
    target: String,
}

impl Lines {
    /// The next non-empty line, without its newline; `None` once the daemon ends the stream.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.done {
                let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).trim().to_string();
                return Ok(if rest.is_empty() { None } else { Some(rest) });
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        target: self.target.clone(),
                        reason: format!("the stream broke ({e})"),
                        delivery: Delivery::AnswerLost,
                    })
                }
            }
        }
    }
}

/// A [`Client`] with its own current-thread runtime, for synchronous callers.
/// Do not use it from inside another tokio runtime.
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    inner: Client,
}

impl BlockingClient {
    pub fn new(inner: Client) -> std::io::Result<BlockingClient> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(BlockingClient { rt, inner })
    }

    pub fn client(&self) -> &Client {
        &self.inner
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.rt.block_on(self.inner.get(path))
    }
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.rt.block_on(self.inner.post(path, body))
    }
    pub fn put(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.rt.block_on(self.inner.put(path, body))
    }
    pub fn patch(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.rt.block_on(self.inner.patch(path, body))
    }
    /// A PUT of a body already written as JSON text ([`Client::request_text`]).
    pub fn put_text(&self, path: &str, body: String) -> Result<Value, ClientError> {
        self.rt.block_on(self.inner.request_text(Method::PUT, path, body))
    }
    pub fn delete(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.rt.block_on(self.inner.delete(path, body))
    }
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        self.rt.block_on(self.inner.get_text(path))
    }

    /// Streams `path` and calls `each` with every line as it arrives, until the stream
    /// ends or `each` breaks.
    pub fn for_each_line(&self, path: &str, mut each: impl FnMut(&str) -> ControlFlow<()>) -> Result<(), ClientError> {
        self.rt.block_on(async {
            let mut lines = self.inner.get_lines(path).await?;
            while let Some(line) = lines.next_line().await? {
                if each(&line).is_break() {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved
/// characters), so that any id or name a user types stays one segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&…` from the pairs whose value is present, values encoded.
pub fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        // A comma stays literal: it separates the values of list filters (`type=A,B`).
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v).replace("%2C", ","))))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// True when `path` is a Unix socket a daemon could be listening on.
pub fn socket_exists(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Endpoint::tcp("http://127.0.0.1:8000", None).unwrap(),
            Endpoint::Tcp { authority: "127.0.0.1:8000".into(), prefix: "".into(), token: None }
        );
        assert_eq!(
            Endpoint::tcp("localhost:9/agt/", Some("t".into())).unwrap(),
            Endpoint::Tcp { authority: "localhost:9".into(), prefix: "/agt".into(), token: Some(Bearer::new("t").unwrap()) }
        );
        assert_eq!(
            Endpoint::tcp("http://[::1]", None).unwrap(),
            Endpoint::Tcp { authority: "[::1]:80".into(), prefix: "".into(), token: None }
        );
        assert!(Endpoint::tcp("https://x", None).is_err());
        assert!(Endpoint::tcp("http:///x", None).is_err());
        assert!(Endpoint::tcp("http://[::1]:8000/x", None).is_ok());
        assert!(Endpoint::tcp("my_host.example-1.com:8000", None).is_ok());
    }

    /// A token is checked and made a header once, where it is given: one a header cannot
    /// carry is `BadToken` (exit 2) before any request, an empty one is no token, and
    /// `{:?}` of the endpoint does not print it.
    #[test]
    fn a_token_becomes_its_header_once() {
        match Endpoint::tcp("http://h:1", Some("s3cret".into())).unwrap() {
            Endpoint::Tcp { token: Some(t), .. } => {
                assert_eq!(t.header().as_bytes(), b"Bearer s3cret");
                assert!(t.header().is_sensitive());
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{:?}", Endpoint::tcp("http://h:1", Some("s3cret".into())).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(matches!(Endpoint::tcp("http://h:1", Some(String::new())).unwrap(), Endpoint::Tcp { token: None, .. }));
        for bad in ["line\nbreak", "esc\u{1b}[A", "nul\0"] {
            assert!(matches!(Endpoint::tcp("http://h:1", Some(bad.into())), Err(ClientError::BadToken(_))), "{bad:?}");
            assert!(matches!(Bearer::new(bad), Err(ClientError::BadToken(_))), "{bad:?}");
        }
    }

    /// A URL no lookup could find is a usage error (exit 2), not "cannot reach" (exit 3)
    /// after a failed DNS lookup.
    #[test]
    fn refuses_urls_that_name_no_host() {
        for url in ["not a url", "http://not a url", "host:port", "http://h:99999", "http://h:0", "http://h:80?x", "[::1", "[zz]", "u@h"] {
            match Endpoint::tcp(url, None) {
                Err(ClientError::BadUrl { reason, .. }) => assert!(!reason.is_empty(), "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn encodes() {
        assert_eq!(encode("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(encode("BTC-USD"), "BTC-USD");
        assert_eq!(with_query("/x", &[("a", Some("1".into())), ("b", None), ("c", Some("x,y".into()))]), "/x?a=1&c=x,y");
    }

    /// A socket nobody listens on refuses the connection: nothing was sent, whatever the
    /// words. A daemon that reads the request and hangs up: the answer was lost.
    #[tokio::test]
    async fn a_dead_socket_is_not_sent_and_a_dropped_answer_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let post = |sock: PathBuf| async move { Client::new(Endpoint::Unix(sock)).post("/api/orders", Some(&serde_json::json!({}))).await };

        let dead = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let e = post(dead).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Unreachable { delivery: Delivery::NotSent, reason, .. } if reason == "connection refused"),
            "{e:?}"
        );
        assert!(e.nothing_sent());

        let e = post(dir.path().join("none.sock")).await.unwrap_err();
        assert!(matches!(&e, ClientError::Unreachable { delivery: Delivery::NotSent, .. }) && e.nothing_sent(), "{e:?}");

        let hangs_up = dir.path().join("hangs-up.sock");
        let listener = tokio::net::UnixListener::bind(&hangs_up).unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
        });
        let e = post(hangs_up).await.unwrap_err();
        assert!(matches!(&e, ClientError::Unreachable { delivery: Delivery::AnswerLost, .. }) && !e.nothing_sent(), "{e:?}");

        let refused = ClientError::Api(ApiError::new(422, "insufficient_funds", "short"));
        assert!(!refused.nothing_sent());
    }

    #[test]
    fn error_bodies() {
        let e = api_error(StatusCode::NOT_FOUND, br#"{"error":{"code":"not_found","message":"no user"}}"#);
        assert_eq!(e.code(), Some("not_found"));
        let e = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.code(), Some("http_502"));
    }
}
