//! HTTP/1.1 to pods: idle keep-alive connections pooled per pod endpoint.
//!
//! Kept here instead of in hyper-util's pooled client (measured: that client's pool
//! key, request extensions and checkout were a sixth of the agent's allocations per
//! request, and every request needed a copy of its head in case the connect failed):
//! - a checkout is a lock and a `Vec::pop` per endpoint, the warmest connection first;
//! - a connection goes back when its response body has ended, not before, so it is
//!   never handed to two requests at once;
//! - a request that was not written (the pooled connection had closed) is sent again
//!   on another connection, and one whose connect failed comes back to the caller
//!   unsent ([`H1Error::Connect`]), who may try another endpoint with it: no copy.
//!
//! The request goes out in origin-form (`GET /path?query`); its `Host` was set by the
//! plan.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::Body;

/// An idle connection to a pod is let go after this long.
pub const POOL_IDLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to an HTTP/1.1 pod got no response.
#[derive(Debug)]
pub enum H1Error {
    /// No connection to the endpoint (refused, unreachable, timeout): the request was
    /// not sent and is given back.
    Connect(Box<Request<Body>>, String),
    /// The request was (or may have been) written and no response head came.
    Failed(hyper::Error),
}

struct Idle {
    tx: SendRequest<Body>,
    since: Instant,
}

/// The idle connections, per endpoint.
pub struct H1Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    max_idle: usize,
}

impl H1Pool {
    /// At most `max_idle` idle connections are kept per endpoint. Inside a runtime, a
    /// task lets idle ones go after [`POOL_IDLE`] (it ends with the pool).
    pub fn new(max_idle: usize) -> Arc<Self> {
        let pool = Arc::new(Self { idle: Mutex::new(HashMap::new()), max_idle });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(POOL_IDLE / 3).await;
                    let Some(pool) = weak.upgrade() else { return };
                    pool.sweep();
                }
            });
        }
        pool
    }

    fn checkout(&self, endpoint: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&endpoint)?;
        while let Some(i) = list.pop() {
            if !i.tx.is_closed() && i.since.elapsed() < POOL_IDLE {
                return Some(i.tx);
            }
        }
        None
    }

    fn checkin(&self, endpoint: SocketAddr, tx: SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(endpoint).or_default();
        // the oldest go first when a burst left more than are kept
        if list.len() >= self.max_idle {
            list.remove(0);
        }
        list.push(Idle { tx, since: Instant::now() });
    }

    /// Idle connections past [`POOL_IDLE`] or closed by their pod are dropped, and
    /// endpoints without any are forgotten. Returns how many connections are idle.
    pub fn sweep(&self) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|i| !i.tx.is_closed() && i.since.elapsed() < POOL_IDLE);
            !list.is_empty()
        });
        idle.values().map(Vec::len).sum()
    }

    /// Sends `req` to `endpoint` on an idle connection, or a new one.
    pub async fn request(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, H1Error> {
        origin_form(&mut req);
        loop {
            let (mut tx, fresh) = match self.checkout(endpoint) {
                Some(tx) => (tx, false),
                None => match connect(endpoint).await {
                    Ok(tx) => (tx, true),
                    Err(e) => return Err(H1Error::Connect(Box::new(req), e)),
                },
            };
            // a pooled connection is ready once its last response was read to the end
            if let Err(e) = tx.ready().await {
                if fresh {
                    return Err(H1Error::Connect(Box::new(req), e.to_string()));
                }
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.clone().returning(endpoint, tx, resp)),
                Err(mut e) => match e.take_message() {
                    // not written: the pooled connection had closed; another one
                    Some(r) if !fresh => req = r,
                    Some(r) => return Err(H1Error::Connect(Box::new(r), e.into_error().to_string())),
                    None => return Err(H1Error::Failed(e.into_error())),
                },
            }
        }
    }

    /// The response, with a body that puts the connection back when it has ended.
    fn returning(
        self: Arc<Self>,
        endpoint: SocketAddr,
        tx: SendRequest<Body>,
        resp: Response<Incoming>,
    ) -> Response<Body> {
        // 204 and 304 have no body, but a pod may still send bytes after their head, late:
        // on a pooled connection those would be read as the answer to the next request
        // sent on it, so such a connection is closed (a HEAD answer's: `Connection: close`).
        let reusable = !matches!(resp.status(), StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
        resp.map(|inner| {
            let mut body = Returning { inner, back: reusable.then_some((self, endpoint, tx)) };
            // an empty body may never be polled: its connection is free already
            if body.inner.is_end_stream() {
                body.give_back();
            }
            body.boxed()
        })
    }
}

/// The target as a pod gets it: `/path?query`.
fn origin_form(req: &mut Request<Body>) {
    if req.uri().authority().is_some() {
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    if req.version() == http::Version::HTTP_2 {
        // hyper's HTTP/1 client refuses version 2 (an h2 client's request to an HTTP/1.1 pod)
        *req.version_mut() = http::Version::HTTP_11;
    }
}

async fn connect(endpoint: SocketAddr) -> Result<SendRequest<Body>, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect {endpoint}: {e}")),
        Err(_) => return Err(format!("connect {endpoint}: timed out after {CONNECT_TIMEOUT:?}")),
    };
    let _ = stream.set_nodelay(true);
    // The read buffer grows with what the pod sends and never shrinks while the
    // connection lives (hyper's adaptive strategy): its reads are capped at MAX_HEAD
    // (64 KiB, as for clients' heads) instead of hyper's ~408 KiB, so a pooled connection
    // that carried a bulk answer keeps a small buffer (measured: ~13 MB of worker heap
    // after the bench's 1 MiB workload). An answer head that stays incomplete past the
    // cap is refused (502), as before past 408 KiB.
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(super::MAX_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("connect {endpoint}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, error = %e, "pod connection ended with an error");
        }
    });
    Ok(tx)
}

/// A pod's response body; its connection goes back to the pool when it has ended
/// (dropped before that, the connection closes with it).
struct Returning {
    inner: Incoming,
    back: Option<(Arc<H1Pool>, SocketAddr, SendRequest<Body>)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((pool, endpoint, tx)) = self.back.take() {
            pool.checkin(endpoint, tx);
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{Empty, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn get(path: &str) -> Request<Body> {
        Request::get(format!("http://ignored{path}"))
            .header(http::header::HOST, "a.test")
            .body(Empty::new().map_err(|e| match e {}).boxed())
            .unwrap()
    }

    /// A pod answering `hello` to each request, counting accepted connections; with
    /// `close_after`, it closes a connection after that many answers.
    async fn pod(close_after: Option<usize>) -> (SocketAddr, Arc<AtomicUsize>) {
        pod_answering(close_after, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await
    }

    /// [`pod`] with `answer` as every answer's bytes.
    async fn pod_answering(close_after: Option<usize>, answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut answered = 0;
                    let mut pending = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end]).to_string();
                            pending.drain(..end + 4);
                            assert!(head.starts_with("GET /x?y HTTP/1.1\r\n"), "origin-form target: {head}");
                            let _ = s.write_all(answer).await;
                            answered += 1;
                            if close_after == Some(answered) {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn text(resp: Response<Body>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_was_read() {
        let (addr, accepted) = pod(None).await;
        let pool = H1Pool::new(8);
        for _ in 0..5 {
            let resp = pool.request(addr, get("/x?y")).await.unwrap();
            assert_eq!(text(resp).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "five requests in turn, one connection");
        assert_eq!(pool.sweep(), 1, "the connection is idle in the pool");
    }

    #[tokio::test]
    async fn a_connection_that_answered_204_or_304_is_not_reused() {
        for answer in [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"HTTP/1.1 304 Not Modified\r\n\r\n"] {
            let (addr, accepted) = pod_answering(None, answer).await;
            let pool = H1Pool::new(8);
            for _ in 0..3 {
                let resp = pool.request(addr, get("/x?y")).await.unwrap();
                assert!(matches!(resp.status().as_u16(), 204 | 304));
                assert_eq!(text(resp).await, "");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 3, "a connection each: {}", String::from_utf8_lossy(answer));
            assert_eq!(pool.sweep(), 0, "none of them pooled");
        }
    }

    #[tokio::test]
    async fn an_answer_not_yet_read_keeps_its_connection_out_of_the_pool() {
        let (addr, accepted) = pod(None).await;
        let pool = H1Pool::new(8);
        let first = pool.request(addr, get("/x?y")).await.unwrap();
        // the first body is still unread: a second request needs a connection of its own
        let second = pool.request(addr, get("/x?y")).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!((text(first).await, text(second).await), ("hello".into(), "hello".into()));
        assert_eq!(pool.sweep(), 2);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_pod_closed_is_replaced() {
        let (addr, accepted) = pod(Some(1)).await;
        let pool = H1Pool::new(8);
        assert_eq!(text(pool.request(addr, get("/x?y")).await.unwrap()).await, "hello");
        // let the pod's close arrive
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(text(pool.request(addr, get("/x?y")).await.unwrap()).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_read_buffer_is_capped_at_max_head_and_bulk_bodies_still_pass() {
        // a head of 4 x MAX_HEAD is refused (hyper's default cap, ~408 KiB, would take it;
        // the cap is checked when a read leaves the head incomplete, so a head a little
        // over MAX_HEAD can still pass) ...
        let big: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 5\r\n\r\nhello",
                "a".repeat(4 * super::super::MAX_HEAD)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (addr, _) = pod_answering(None, big).await;
        let pool = H1Pool::new(8);
        let got = pool.request(addr, get("/x?y")).await;
        assert!(matches!(got, Err(H1Error::Failed(_))), "an oversized head is an error: {:?}", got.map(|r| r.status()));
        // ... one just under it is read, and so is a body sixteen times the cap
        let body = "b".repeat(16 * super::super::MAX_HEAD);
        let ok: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: {}\r\n\r\n{body}",
                "a".repeat(super::super::MAX_HEAD - 1024),
                body.len()
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (addr, accepted) = pod_answering(None, ok).await;
        for _ in 0..2 {
            let resp = pool.request(addr, get("/x?y")).await.unwrap();
            assert_eq!(text(resp).await, body);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the connection was pooled and reused");
    }

    #[tokio::test]
    async fn a_refused_connect_gives_the_request_back_unsent() {
        // a port nothing listens on
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let pool = H1Pool::new(8);
        let body = Full::new(Bytes::from_static(b"payload")).map_err(|e| match e {}).boxed();
        let req = Request::post("http://ignored/upload").body(body).unwrap();
        match pool.request(addr, req).await {
            Err(H1Error::Connect(req, why)) => {
                assert!(why.contains(&addr.to_string()), "{why}");
                assert_eq!(req.uri(), "/upload", "origin-form, ready for another endpoint");
                let body = req.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"payload", "the body was not consumed");
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
