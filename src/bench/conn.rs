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
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A response: status and the whole body.
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

/// One keep-alive connection.
pub struct Conn {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    prefix: String,
    /// How many times this connection was dialled (1 when it never broke).
    pub dials: u32,
}

impl Conn {
    /// Dials `endpoint`; an unreachable daemon is [`ClientError::Unreachable`].
    pub async fn open(endpoint: &Endpoint) -> Result<Conn, ClientError> {
        let (host, auth, prefix) = match endpoint {
            Endpoint::Unix(_) => (HeaderValue::from_static("localhost"), None, String::new()),
            Endpoint::Tcp { authority, prefix, token } => {
                let bad = |what: &str| ClientError::BadUrl {
                    url: endpoint.to_string(),
                    reason: format!("the {what} cannot be sent in a header"),
                };
                let host = HeaderValue::from_str(authority).map_err(|_| bad("host"))?;
                let auth = match token {
                    Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| bad("token"))?),
                    None => None,
                };
                (host, auth, prefix.clone())
            }
        };
        let mut c = Conn { endpoint: endpoint.clone(), sender: None, host, auth, prefix, dials: 0 };
        c.dial().await.map_err(|e| ClientError::Unreachable { target: endpoint.to_string(), reason: e.0 })?;
        Ok(c)
    }

    async fn dial(&mut self) -> Result<(), ConnError> {
        self.sender = None;
        self.dials += 1;
        let sender = match &self.endpoint {
            Endpoint::Unix(path) => {
                let s = timed(tokio::net::UnixStream::connect(path)).await?;
                handshake(s).await?
            }
            Endpoint::Tcp { authority, .. } => {
                let s = timed(tokio::net::TcpStream::connect(authority.as_str())).await?;
                let _ = s.set_nodelay(true);
                handshake(s).await?
            }
        };
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole answer. `body` is JSON.
    pub async fn request(&mut self, method: Method, path: &str, body: Option<Bytes>) -> Result<Answer, ConnError> {
        // A connection the daemon closed while idle is redialled: nothing was sent on it.
        let usable = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.dial().await?;
            let s = self.sender.as_mut().expect("just dialled");
            s.ready().await.map_err(|e| ConnError(format!("the connection is not usable: {e}")))?;
        }
        let uri = if self.prefix.is_empty() { path.to_string() } else { format!("{}{path}", self.prefix) };
        let mut req = Request::builder().method(method).uri(uri).header(HOST, self.host.clone()).header(USER_AGENT, "agt-bench");
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req.body(Full::new(body.unwrap_or_default())).map_err(|e| ConnError(format!("cannot build the request: {e}")))?;
        let sender = self.sender.as_mut().expect("dialled");
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(ConnError(format!("the connection failed: {e}")));
            }
        };
        let status = resp.status().as_u16();
        match resp.into_body().collect().await {
            Ok(b) => Ok(Answer { status, body: b.to_bytes() }),
            Err(e) => {
                self.sender = None;
                Err(ConnError(format!("the connection dropped during the answer: {e}")))
            }
        }
    }

    /// [`Conn::request`] with transport failures as [`ClientError::Unreachable`], for setup.
    pub async fn call(&mut self, method: Method, path: &str, body: Option<&serde_json::Value>) -> Result<Answer, ClientError> {
        let body = body.map(|v| Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes")));
        self.request(method, path, body).await.map_err(|e| ClientError::Unreachable { target: self.endpoint.to_string(), reason: e.0 })
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

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, ConnError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| ConnError(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
