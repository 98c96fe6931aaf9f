//! The HTTP server: the same router on the Unix socket and on TCP.
//!
//! Each connection is served by hyper directly (HTTP/1.1, keep-alive), tagged with the
//! [`Transport`] it came in on, and tracked so shutdown can stop accepting, let the
//! requests in flight finish, and end long streams.

use crate::daemon::http::Transport;
use crate::daemon::metrics::{self, ServiceLabel};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Anything that accepts connections: a `UnixListener` or a `TcpListener`.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
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
                let io = match accepted {
                    Ok(io) => io,
                    Err(e) => {
                        // EMFILE and friends: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let svc = TowerToHyperService::new(router.clone());
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(io), svc);
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
