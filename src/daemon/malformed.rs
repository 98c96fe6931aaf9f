//! The answers hyper writes itself, given a JSON body like every other error.
//!
//! A request hyper cannot parse never reaches the router: a garbage request line or
//! header (400), a head over its limits (431: more than 100 headers, or ~400 KiB), a URI
//! over 64 KiB (414). hyper answers it with an empty body and closes the connection, and
//! has no hook to change that answer (hyper 1.x builds a bare head for it in
//! `Http1Transaction::on_error`). Every other error of the API is JSON (DESIGN.md §4).
//! So a connection's writes pass through [`JsonHeads`], which knows such an answer by its
//! shape — one of those three statuses, `content-length: 0`, no `content-type`, a head
//! alone in one write — and writes in its place the same head with a JSON body. No answer
//! of the router has that shape (its errors all carry a JSON body), and a look at a
//! write's first bytes is all it costs them.

use crate::api::ApiError;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's stream, with hyper's own error answers rewritten as JSON ones.
pub struct JsonHeads<S> {
    inner: S,
    /// A rewritten answer not yet written whole: it goes out before anything else does.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonHeads<S> {
    pub fn new(inner: S) -> JsonHeads<S> {
        JsonHeads { inner, pending: Vec::new(), written: 0 }
    }
}

/// The status lines of the answers hyper makes itself, with the error each stands for.
const ANSWERS: [(&[u8; 13], u16, &str, &str); 3] = [
    (
        b"HTTP/1.1 400 ",
        400,
        "malformed_request",
        "the request is not valid HTTP/1.1: it needs a request line `METHOD /path HTTP/1.1`, then `Name: value` headers of visible ASCII, each line ending in CRLF, then an empty line",
    ),
    (
        b"HTTP/1.1 414 ",
        414,
        "uri_too_long",
        "the request's URI is over 65534 bytes: send long input in a JSON body, not in the path or query",
    ),
    (
        b"HTTP/1.1 431 ",
        431,
        "headers_too_large",
        "the request's head is too large: at most 100 headers, and under 400 KiB in all",
    ),
];

/// hyper's own answer to a request it could not parse, as the same head with a JSON
/// error body (and `connection: close`: hyper closes the connection after it); `None`
/// for any other write.
fn rewrite(write: &[u8]) -> Option<Vec<u8>> {
    let (_, status, code, message) = ANSWERS.iter().find(|(line, ..)| write.starts_with(&line[..]))?;
    let head = std::str::from_utf8(write.strip_suffix(b"\r\n\r\n")?).ok()?;
    let mut lines = head.split("\r\n");
    let mut out = format!("{}\r\n", lines.next()?);
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
            continue;
        }
        if !name.eq_ignore_ascii_case("connection") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::to_string(&ApiError::new(*status, *code, *message).body()).ok()?;
    out.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()));
    Some(out.into_bytes())
}

impl<S: AsyncWrite + Unpin> JsonHeads<S> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `write` whole, if it is an answer to rewrite: its JSON form goes out instead.
    fn took(&mut self, write: &[u8]) -> bool {
        if !write.starts_with(b"HTTP/1.1 4") {
            return false;
        }
        match rewrite(write) {
            Some(json) => {
                self.pending = json;
                self.written = 0;
                true
            }
            None => false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonHeads<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonHeads<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.took(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // hyper's own answer is a head alone: one slice with something in it.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(first), None) = (filled.next(), filled.next()) {
            if this.took(first) {
                return Poll::Ready(Ok(first.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const DATE: &str = "date: Sun, 06 Dec 2026 13:00:00 GMT\r\n";

    #[test]
    fn hyper_s_bare_error_heads_get_a_json_body() {
        for (status, code) in [(400, "malformed_request"), (414, "uri_too_long"), (431, "headers_too_large")] {
            let reason = axum::http::StatusCode::from_u16(status).unwrap().canonical_reason().unwrap();
            let bare = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n{DATE}\r\n");
            let text = String::from_utf8(rewrite(bare.as_bytes()).expect("rewritten")).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} {reason}\r\n")), "{head}");
            assert!(head.contains(DATE.trim_end()) && head.contains("content-type: application/json"), "{head}");
            assert!(head.contains(&format!("content-length: {}\r\n", body.len())) && head.ends_with("connection: close"), "{head}");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["code"], code);
        }
    }

    #[test]
    fn the_router_s_answers_pass_as_they_are() {
        for other in [
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n{DATE}\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ncontent-type: text/plain\r\n{DATE}\r\n"),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{DATE}\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\n{{}}"),
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{DATE}\r\n"),
        ] {
            assert_eq!(rewrite(other.as_bytes()), None, "{other}");
        }
    }

    /// Through the stream: the JSON answer goes out whole, even a byte at a time, and
    /// before what is written after it.
    #[tokio::test]
    async fn a_rewritten_answer_is_written_whole_before_anything_else() {
        let (near, mut far) = tokio::io::duplex(1);
        let mut io = JsonHeads::new(near);
        let bare = format!("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n{DATE}\r\n");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        io.write_all(bare.as_bytes()).await.unwrap();
        io.write_all(b"after").await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        let got = reader.await.unwrap();
        assert!(got.starts_with("HTTP/1.1 431 ") && got.contains("\"headers_too_large\""), "{got}");
        assert!(got.ends_with("}after"), "{got}");
    }
}
