//! Whole-connection splicing for splice-safe hosts: the first request head is read
//! and routed here; if its host sends everything unchanged to one backend, the
//! client connection is joined to a new connection to the pod, in the kernel, and
//! every later request on it goes straight there. Otherwise hyper serves the
//! connection, starting with the bytes already read.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::conn::{ClientIo, send_408};
use super::{MAX_HEAD, Proxy};
use crate::routing::split_host_header;

pub enum Peeked {
    /// The connection was spliced (and has ended) or closed before a request.
    Done,
    /// Serve it with hyper.
    Proxy(ClientIo),
}

/// The Host of a complete request head, if the head is complete and parses. None
/// inside: hyper serves it (a malformed head, no Host, or a connection that ends after
/// this request: `Connection: close` or HTTP/1.0, which gains nothing from a join).
fn head_host(buf: &[u8]) -> Option<Option<String>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        // hyper will answer the malformed head
        Err(_) => return Some(None),
    }
    let closes = req.version == Some(0)
        || req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection")
                && h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
    if closes {
        return Some(None);
    }
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(|h| split_host_header(h).0);
    Some(host)
}

impl Proxy {
    /// Whether connections on listen mapping `index` may be spliced at all.
    pub(super) fn splice_possible(&self, index: usize) -> bool {
        !self.forwarded_headers()
            && self.joiner().counters().available
            && self.table.load().listeners.get(index).is_some_and(|l| l.any_splice_safe())
    }

    /// Reads the first request head (bounded in size and time), routes it, and
    /// either splices the connection or hands it, bytes included, to hyper.
    pub(super) async fn peek_first(self: &Arc<Self>, mut stream: TcpStream, index: usize, limit: Duration) -> Peeked {
        let mut buf = Vec::with_capacity(4096);
        let read_head = async {
            loop {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<_, io::Error>(None);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(host) = head_host(&buf) {
                    return Ok(Some(host));
                }
                if buf.len() > MAX_HEAD {
                    return Ok(Some(None)); // hyper answers 431
                }
            }
        };
        let host = match tokio::time::timeout(limit, read_head).await {
            Ok(Ok(Some(h))) => h,
            // closed or failed before a whole head: nothing to serve
            Ok(Ok(None)) | Ok(Err(_)) => return Peeked::Done,
            Err(_) => {
                if !buf.is_empty() {
                    send_408(&mut stream).await;
                }
                return Peeked::Done;
            }
        };
        let table = self.table.load();
        let backend = host
            .as_deref()
            .and_then(|h| table.listeners.get(index)?.vhost(h))
            .and_then(|v| v.splice_backend().map(|b| (b.name.clone(), b.pick_endpoint())));
        let prefixed = |stream, buf: Vec<u8>| Peeked::Proxy(ClientIo::new(stream, Bytes::from(buf)));
        let Some((backend, Some(endpoint))) = backend else { return prefixed(stream, buf) };
        drop(table);
        let upstream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(endpoint)).await {
            Ok(Ok(u)) => u,
            // Let the proxy path answer (it tries other endpoints, or says 503).
            _ => return prefixed(stream, buf),
        };
        let _ = upstream.set_nodelay(true);
        self.metrics.request();
        tracing::debug!(%endpoint, %backend, "connection spliced to the pod");
        self.joiner().run(stream, Bytes::from(buf), upstream, Bytes::new()).await;
        Peeked::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_heads_of_lasting_connections_are_spliced() {
        assert_eq!(head_host(b"GET / HTTP/1.1\r\nHost: a.test:9080\r\n\r\n"), Some(Some("a.test".into())));
        assert_eq!(head_host(b"GET / HTTP/1.1\r\nHost: a.test\r\n"), None, "incomplete");
        assert_eq!(head_host(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, Close\r\n\r\n"), Some(None));
        assert_eq!(head_host(b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n"), Some(None), "HTTP/1.0 closes");
        assert_eq!(head_host(b"GET /\r\n\r\n"), Some(None), "malformed: hyper answers");
    }
}
