//! One persistent keep-alive HTTP/1.1 connection to the daemon, over the Unix socket or
//! TCP, for the load generator.
//!
//! [`crate::client::Client`] dials a fresh connection for every request, which is right
//! for a CLI but would make a benchmark measure `connect` and accept. A [`Conn`] dials
//! once and sends every request of its worker on that connection. It redials only when
//! the connection was found closed *before* a request went out, so a placement is never
//! sent twice.

use crate::client::{ClientError, Endpoint};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::Method;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A response: status and the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The daemon's error code (`insufficient_funds`, …), or `http_<status>` when the
    /// body is not an agt error.
    pub fn error_code(&self) -> String {
        serde_json::from_slice::<crate::api::ErrorBody>(&self.body)
            .map(|b| b.error.code)
            .unwrap_or_else(|_| format!("http_{}", self.status))
    }

    /// The body as JSON, or a protocol error naming `what`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Protocol(format!("{what}: the answer is not the expected JSON ({e})")))
    }

    /// `Ok(self)` for a 2xx, else the daemon's error as a [`ClientError::Api`].
    pub fn ok(self) -> Result<Answer, ClientError> {
        if self.is_success() {
            return Ok(self);
        }
        let (code, message) = match serde_json::from_slice::<crate::api::ErrorBody>(&self.body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (format!("http_{}", self.status), String::from_utf8_lossy(&self.body).chars().take(200).collect()),
        };
        Err(ClientError::Api(crate::api::ApiError::new(self.status, code, message)))
    }
}

/// Why a request on a [`Conn`] got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnError(pub String);

/// The byte stream under a [`Conn`]: the Unix socket or TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    /// Whether the connection is unusable after sitting idle: the daemon closed its end
    /// (a read finds the end of the stream), it failed, or bytes came that no request
    /// asked for. tokio answers from the readiness it has seen: no system call while
    /// nothing happened on the socket.
    fn closed_by_peer(&self) -> bool;
}

impl Io for tokio::net::UnixStream {
    fn closed_by_peer(&self) -> bool {
        unusable(self.try_read(&mut [0u8; 1]))
    }
}

impl Io for tokio::net::TcpStream {
    fn closed_by_peer(&self) -> bool {
        unusable(self.try_read(&mut [0u8; 1]))
    }
}

/// Whether an idle connection's `try_read` shows it unusable: anything but "nothing to
/// read yet" (the end of the stream, an error, or bytes no request asked for).
fn unusable(read: std::io::Result<usize>) -> bool {
    !matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// One keep-alive connection, speaking just the HTTP/1.1 a client of the daemon needs:
/// a request with a `Content-Length` body, and an answer with a `Content-Length` or a
/// chunked body.
///
/// It writes and reads the socket itself instead of through hyper's client: hyper runs a
/// connection task beside the caller's and hands each request and answer between the
/// two, and that machinery was about a third of the generator's CPU per order — CPU
/// the daemon under test shares (BENCHMARKS.md, session 22).
pub struct Conn {
    endpoint: Endpoint,
    io: Option<Box<dyn Io>>,
    /// The request head's lines that never change: `host`, `user-agent`, `authorization`.
    fixed_headers: Vec<u8>,
    prefix: String,
    /// The request being written, and what has been read of the answer.
    out: Vec<u8>,
    inp: bytes::BytesMut,
    /// How many times this connection was dialled (1 when it never broke).
    pub dials: u32,
    /// The daemon's process id, when the kernel names the peer (the Unix socket).
    pub peer_pid: Option<u32>,
}

/// The longest answer head read before giving up: the daemon's are ~150 bytes.
const MAX_HEAD: usize = 64 * 1024;

impl Conn {
    /// Dials `endpoint`; an unreachable daemon is [`ClientError::Unreachable`].
    pub async fn open(endpoint: &Endpoint) -> Result<Conn, ClientError> {
        let bad = |what: &str| ClientError::BadUrl { url: endpoint.to_string(), reason: format!("the {what} cannot be sent in a header") };
        let (host, auth, prefix) = match endpoint {
            Endpoint::Unix(_) => ("localhost".to_string(), None, String::new()),
            Endpoint::Tcp { authority, prefix, token } => (authority.clone(), token.as_ref(), prefix.clone()),
        };
        // What hyper refused in a header, refused here too: no line breaks or controls.
        if HeaderValue::from_str(&host).is_err() {
            return Err(bad("host"));
        }
        let mut fixed_headers = format!("host: {host}\r\nuser-agent: agt-bench\r\n").into_bytes();
        // Checked as a header value when it was given (`Bearer::new`).
        if let Some(a) = auth {
            fixed_headers.extend_from_slice(b"authorization: ");
            fixed_headers.extend_from_slice(a.header().as_bytes());
            fixed_headers.extend_from_slice(b"\r\n");
        }
        let mut c = Conn {
            endpoint: endpoint.clone(),
            io: None,
            fixed_headers,
            prefix,
            out: Vec::with_capacity(512),
            inp: bytes::BytesMut::with_capacity(4096),
            dials: 0,
            peer_pid: None,
        };
        c.dial().await.map_err(|e| ClientError::Unreachable {
            target: endpoint.to_string(),
            reason: e.0,
            delivery: crate::client::Delivery::NotSent,
        })?;
        Ok(c)
    }

    async fn dial(&mut self) -> Result<(), ConnError> {
        self.io = None;
        self.dials += 1;
        let io: Box<dyn Io> = match &self.endpoint {
            Endpoint::Unix(path) => {
                let s = timed(tokio::net::UnixStream::connect(path)).await?;
                self.peer_pid = s.peer_cred().ok().and_then(|c| c.pid()).and_then(|p| u32::try_from(p).ok());
                Box::new(s)
            }
            Endpoint::Tcp { authority, .. } => {
                let s = timed(tokio::net::TcpStream::connect(authority.as_str())).await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        };
        self.io = Some(io);
        self.inp.clear();
        Ok(())
    }

    /// Sends one request and reads the whole answer. `body` is JSON.
    pub async fn request(&mut self, method: Method, path: &str, body: Option<Bytes>) -> Result<Answer, ConnError> {
        // A connection the daemon closed while idle is redialled: nothing was sent on it.
        // Once a request is written it is never sent again, whatever happens next.
        if self.io.as_ref().is_none_or(|io| io.closed_by_peer()) {
            self.dial().await?;
        }
        self.out.clear();
        let out = &mut self.out;
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(&self.fixed_headers);
        let body = body.unwrap_or_default();
        if !body.is_empty() || method == Method::POST || method == Method::PUT {
            out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        let result = exchange(self.io.as_mut().expect("dialled"), &self.out, &mut self.inp).await;
        match result {
            Ok((answer, keep)) => {
                if !keep {
                    // The daemon (or a proxy before it) closes after this answer.
                    self.io = None;
                }
                Ok(answer)
            }
            Err(e) => {
                // What is left of the stream cannot be trusted: the next request dials again.
                self.io = None;
                Err(e)
            }
        }
    }

    /// [`Conn::request`] with transport failures as [`ClientError::Unreachable`], for setup.
    pub async fn call(&mut self, method: Method, path: &str, body: Option<&serde_json::Value>) -> Result<Answer, ClientError> {
        let body = body.map(|v| Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes")));
        // The bench's own connection does not tell a failed dial from a lost answer.
        self.request(method, path, body).await.map_err(|e| ClientError::Unreachable {
            target: self.endpoint.to_string(),
            reason: e.0,
            delivery: crate::client::Delivery::AnswerLost,
        })
    }
}

/// Writes `request` and reads its answer into `inp` (empty at the start and the end);
/// with whether the connection may carry another request.
async fn exchange(io: &mut Box<dyn Io>, request: &[u8], inp: &mut bytes::BytesMut) -> Result<(Answer, bool), ConnError> {
    use tokio::io::AsyncWriteExt;
    let failed = |e: std::io::Error| ConnError(format!("the connection failed: {e}"));
    io.write_all(request).await.map_err(failed)?;
    inp.clear();
    let (status, head_len, framing, keep) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(inp) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                // HTTP/1.0 closes unless told otherwise; HTTP/1.1 keeps unless told to close.
                let keep = header(resp.headers, "connection").map_or(resp.version == Some(1), |v| {
                    if resp.version == Some(1) {
                        !v.eq_ignore_ascii_case(b"close")
                    } else {
                        v.eq_ignore_ascii_case(b"keep-alive")
                    }
                });
                break (status, n, Framing::of(status, resp.headers)?, keep);
            }
            Ok(httparse::Status::Partial) if inp.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(ConnError("the answer's head is too long".into())),
            Err(e) => return Err(ConnError(format!("the answer is not HTTP/1.1: {e}"))),
        }
        read_more(io, inp).await?;
    };
    let _ = inp.split_to(head_len);
    let body = match framing {
        Framing::Length(n) => {
            while inp.len() < n {
                read_more(io, inp).await?;
            }
            inp.split_to(n).freeze()
        }
        Framing::Chunked => read_chunked(io, inp).await?,
    };
    if !inp.is_empty() {
        return Err(ConnError("the daemon sent more than one answer".into()));
    }
    Ok((Answer { status, body }, keep))
}

/// The value of the header `name`, if the answer has it.
fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// How an answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
}

impl Framing {
    fn of(status: u16, headers: &[httparse::Header]) -> Result<Framing, ConnError> {
        // These never have a body, whatever the headers say.
        if status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(Framing::Length(0));
        }
        let mut framing = None;
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                framing = Some(Framing::Length(n.ok_or_else(|| ConnError("the answer's content-length is not a number".into()))?));
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") && h.value.eq_ignore_ascii_case(b"chunked") {
                return Ok(Framing::Chunked);
            }
        }
        // Without either, the body runs to the end of the stream: not something the daemon
        // sends on a kept-alive connection.
        framing.ok_or_else(|| ConnError("the answer has neither a content-length nor chunks".into()))
    }
}

/// Reads more of the stream into `inp`; the end of the stream is an error (mid-answer).
async fn read_more(io: &mut Box<dyn Io>, inp: &mut bytes::BytesMut) -> Result<(), ConnError> {
    use tokio::io::AsyncReadExt;
    inp.reserve(4096);
    match io.read_buf(inp).await {
        Ok(0) => Err(ConnError("the connection closed before the whole answer came".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(ConnError(format!("the connection failed: {e}"))),
    }
}

/// A chunked body (`size CRLF data CRLF`… `0 CRLF CRLF`), without trailers.
async fn read_chunked(io: &mut Box<dyn Io>, inp: &mut bytes::BytesMut) -> Result<Bytes, ConnError> {
    let mut body = bytes::BytesMut::new();
    loop {
        let line_end = loop {
            if let Some(at) = inp.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            if inp.len() > MAX_HEAD {
                return Err(ConnError("a chunk's size line is too long".into()));
            }
            read_more(io, inp).await?;
        };
        let size = std::str::from_utf8(&inp[..line_end])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok())
            .ok_or_else(|| ConnError("a chunk's size is not a hex number".into()))?;
        while inp.len() < line_end + 2 + size + 2 {
            read_more(io, inp).await?;
        }
        let _ = inp.split_to(line_end + 2);
        body.extend_from_slice(&inp.split_to(size));
        if inp.split_to(2).as_ref() != b"\r\n" {
            return Err(ConnError("a chunk does not end where its size says".into()));
        }
        if size == 0 {
            return Ok(body.freeze());
        }
    }
}

async fn timed<S>(connect: impl std::future::Future<Output = std::io::Result<S>>) -> Result<S, ConnError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ConnError(match e.kind() {
            std::io::ErrorKind::NotFound => "no socket there".to_string(),
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        })),
        Err(_) => Err(ConnError(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    /// A daemon stand-in on a Unix socket: for each connection, `script` gets the stream.
    fn serve<F, Fut>(dir: &tempfile::TempDir, script: F) -> Endpoint
    where
        F: Fn(UnixStream, usize) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let path = dir.path().join("agt.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((s, _)) = listener.accept().await else { return };
                tokio::spawn(script(s, n));
            }
        });
        Endpoint::Unix(path)
    }

    /// Reads one request (head and a `content-length` body) and returns it as text.
    async fn read_request(s: &mut UnixStream) -> Option<String> {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + len {
                    return Some(text);
                }
            }
        }
    }

    #[tokio::test]
    async fn keeps_one_connection_and_sends_what_the_daemon_expects() {
        let dir = tempfile::tempdir().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let ep = serve(&dir, move |mut s, _| {
            let log = log.clone();
            async move {
                while let Some(req) = read_request(&mut s).await {
                    log.lock().unwrap().push(req);
                    s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\ncontent-type: application/json\r\n\r\n{\"ok\":true}")
                        .await
                        .unwrap();
                }
            }
        });
        let mut c = Conn::open(&ep).await.unwrap();
        let a = c.request(Method::POST, "/api/orders", Some(Bytes::from_static(b"{\"q\":1}"))).await.unwrap();
        assert_eq!((a.status, &a.body[..]), (201, &b"{\"ok\":true}"[..]));
        let a = c.request(Method::GET, "/api/orders/o1", None).await.unwrap();
        assert!(a.is_success());
        assert_eq!(c.dials, 1, "both requests on one connection");
        let seen = seen.lock().unwrap();
        assert!(seen[0].starts_with("POST /api/orders HTTP/1.1\r\nhost: localhost\r\n"), "{}", seen[0]);
        assert!(seen[0].contains("content-type: application/json\r\ncontent-length: 7\r\n\r\n{\"q\":1}"), "{}", seen[0]);
        assert!(seen[1].starts_with("GET /api/orders/o1 HTTP/1.1\r\n") && !seen[1].contains("content-length"), "{}", seen[1]);
    }

    #[tokio::test]
    async fn reads_a_chunked_answer_split_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let ep = serve(&dir, |mut s, _| async move {
            while read_request(&mut s).await.is_some() {
                for part in ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n[1,2", "\r\n", "3\r\n,3]\r\n0\r\n\r\n"] {
                    s.write_all(part.as_bytes()).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut c = Conn::open(&ep).await.unwrap();
        for _ in 0..2 {
            let a = c.request(Method::GET, "/api/x", None).await.unwrap();
            assert_eq!(&a.body[..], b"[1,2,3]");
        }
        assert_eq!(c.dials, 1);
    }

    #[tokio::test]
    async fn redials_a_connection_closed_while_idle_but_never_sends_a_request_twice() {
        let dir = tempfile::tempdir().unwrap();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = requests.clone();
        let ep = serve(&dir, move |mut s, n| {
            let count = count.clone();
            async move {
                let Some(_) = read_request(&mut s).await else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // The first connection answers once, then closes while idle; the second
                // takes the request and dies without answering.
                if n == 0 {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
                }
            }
        });
        let mut c = Conn::open(&ep).await.unwrap();
        assert!(c.request(Method::GET, "/a", None).await.is_ok());
        // Wait until the runtime has seen the first connection's end (yielding lets it
        // poll the socket's readiness).
        while !c.io.as_ref().unwrap().closed_by_peer() {
            tokio::task::yield_now().await;
        }
        let lost = c.request(Method::POST, "/b", Some(Bytes::from_static(b"{}"))).await;
        assert!(lost.is_err(), "an answer that never came is an error");
        assert_eq!(c.dials, 2, "redialled once, before the request went out");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2, "the lost request was not sent again");
    }

    #[tokio::test]
    async fn a_garbled_answer_is_an_error_and_the_next_request_dials_again() {
        let dir = tempfile::tempdir().unwrap();
        let ep = serve(&dir, |mut s, n| async move {
            while read_request(&mut s).await.is_some() {
                let answer: &[u8] = if n == 0 { b"SMTP ready\r\n\r\n" } else { b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" };
                s.write_all(answer).await.unwrap();
            }
        });
        let mut c = Conn::open(&ep).await.unwrap();
        assert!(c.request(Method::GET, "/a", None).await.unwrap_err().0.contains("not HTTP/1.1"));
        assert_eq!(c.request(Method::GET, "/a", None).await.unwrap().status, 200);
        assert_eq!(c.dials, 2);
    }

    #[tokio::test]
    async fn an_answer_that_closes_the_connection_or_has_no_body_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let ep = serve(&dir, |mut s, n| async move {
            while read_request(&mut s).await.is_some() {
                let answer: &[u8] = match n {
                    // A proxy that closes after each answer.
                    0 => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
                    _ => b"HTTP/1.1 204 No Content\r\n\r\n",
                };
                s.write_all(answer).await.unwrap();
                if n == 0 {
                    return;
                }
            }
        });
        let mut c = Conn::open(&ep).await.unwrap();
        assert_eq!(&c.request(Method::GET, "/a", None).await.unwrap().body[..], b"{}");
        let a = c.request(Method::DELETE, "/b", None).await.unwrap();
        assert_eq!((a.status, a.body.len()), (204, 0));
        assert_eq!(c.dials, 2, "the closing answer made the next request dial first");
        assert!(c.request(Method::DELETE, "/b", None).await.is_ok(), "the 204 left the connection usable");
        assert_eq!(c.dials, 2);
    }
}
