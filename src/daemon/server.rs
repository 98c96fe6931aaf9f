//! The HTTP server: the same router on the Unix socket and on TCP.
//!
//! Each connection is served by hyper directly (HTTP/1.1, keep-alive), tagged with the
//! [`Transport`] it came in on, and tracked so shutdown can stop accepting, let the
//! requests in flight finish, and end long streams.
//!
//! Connections allow half-closes: a client may shut its writing side and still read
//! its answer. It also keeps hyper from reading a connection while a request is in
//! flight only to notice an early close: that read reserved a fresh 8 KiB buffer per
//! request (the request still held the old one), with glibc consolidating its free
//! lists for each, ~1.5 µs of an HTTP worker per placement (BENCHMARKS.md, session
//! 23). A handler that outlives its request's reading (a followed event stream) asks
//! [`Peer::gone`] instead.

use crate::daemon::http::Transport;
use crate::daemon::metrics::{self, ServiceLabel};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<PeerAddr>)> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| (s, None))
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<PeerAddr>)> {
        let (s, addr) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, Some(PeerAddr(addr))))
    }
}

/// Serves `router` on `listener` until `shutdown` flips, then waits (up to 10 s) for the
/// connections in flight.
pub async fn serve<L: Accept>(listener: L, router: Router, transport: Transport, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let router = router.layer(axum::Extension(transport));
    let graceful = GracefulShutdown::new();
    let label = ServiceLabel {
        service: match transport {
            Transport::Socket => "socket",
            Transport::Tcp => "tcp",
        },
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (io, addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let peer = Peer::of(&io);
                let svc = tower::ServiceExt::map_request(router.clone(), move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if let Some(peer) = &peer {
                        req.extensions_mut().insert(peer.clone());
                    }
                    if let Some(addr) = addr {
                        req.extensions_mut().insert(addr);
                    }
                    req
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .half_close(true)
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn);
                let gauge = metrics::get().active_connections.get_or_create(&label).clone();
                gauge.inc();
                tokio::spawn(async move {
                    let _ = conn.await;
                    gauge.dec();
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
