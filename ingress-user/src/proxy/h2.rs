//! HTTP/2 from clients: h2c with prior knowledge on plain listeners (a connection whose
//! first bytes are the HTTP/2 preface), and, through [`Proxy::serve_h2`], any stream
//! a TLS listener negotiated `h2` on. hyper's http2 server reads the frames; every
//! stream is one request through the same path as an HTTP/1.1 request
//! ([`Proxy::handle`]: refusals, normalization, routing, filters, mirrors, metrics).
//!
//! Limits and defences (RFC 9113; the numbers are in the README):
//! - `SETTINGS_MAX_CONCURRENT_STREAMS` (`--h2-max-concurrent-streams`, default 100);
//!   streams over it are refused by h2 (`REFUSED_STREAM`).
//! - `SETTINGS_MAX_HEADER_LIST_SIZE` = [`MAX_HEAD`] (64 KiB, as an HTTP/1.1 head). A
//!   header block over it is refused by h2, one far over it closes the connection.
//! - CONTINUATION flood (CVE-2024-27316): h2 0.4.20 counts the CONTINUATION frames of
//!   one header block and sends `GOAWAY ENHANCE_YOUR_CALM` past
//!   max(5, 1.25 x header list size / max frame size) = 5 frames here, and never
//!   buffers more than the header list size of a block it is ignoring.
//! - Rapid reset (CVE-2023-44487): h2 sends `GOAWAY ENHANCE_YOUR_CALM` once
//!   [`MAX_PENDING_ACCEPT_RESETS`] streams were reset by the client before they were
//!   accepted. Streams reset after hyper accepted them (and this proxy began routing
//!   them) are counted here: past a budget of [`RESET_BURST`] such cancellations,
//!   refilled at [`RESET_RATE`] per second, the connection gets `GOAWAY` and is closed
//!   after [`RESET_GRACE`].
//! - Protocol errors the client causes on its own streams: at most
//!   [`MAX_LOCAL_ERROR_RESETS`] per connection, then `GOAWAY`.
//! - Idle: a connection with no stream open for `--h2-idle-timeout` (default 300 s)
//!   gets `GOAWAY` and closes.
//! - Graceful shutdown and the per-source cap's eviction send `GOAWAY`, let the open
//!   streams finish, then close. The per-source cap counts a connection as one,
//!   whatever its streams; it is idle (evictable) when no stream is open.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::{MAX_HEAD, Proxy, conn, plan, sources, stopped};

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Concurrent streams a client may open on one connection (`--h2-max-concurrent-streams`).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// A connection without an open stream this long is closed (`--h2-idle-timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Initial flow-control window of each stream (bytes a client may send unread).
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Initial flow-control window of the whole connection.
pub const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// Streams the client may reset before hyper accepted them, then GOAWAY (h2's default).
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams reset for the client's protocol errors per connection, then GOAWAY.
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Accepted streams the client may cancel (reset before its answer) in a burst...
pub const RESET_BURST: f64 = 200.0;
/// ...and per second after it, before the connection is closed.
pub const RESET_RATE: f64 = 100.0;
/// After GOAWAY for too many cancellations: time left to the open streams.
pub const RESET_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 limits, from the command line and config file.
#[derive(Clone, Debug, PartialEq)]
pub struct H2Config {
    pub max_concurrent_streams: u32,
    pub idle_timeout: Duration,
    /// Keep-alive PINGs to the client this often (`--h2-keepalive-interval`); None: off.
    pub keepalive_interval: Option<Duration>,
}

impl Default for H2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keepalive_interval: None,
        }
    }
}

/// A keep-alive PING not acknowledged this long closes the connection (hyper's default).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum First {
    /// A prefix of the preface: read more.
    Partial,
    /// The whole preface: HTTP/2 with prior knowledge.
    H2,
    /// Anything else: HTTP/1.x (a malformed head included: hyper answers it).
    Http1,
}

/// Classifies the first bytes read from a connection (pure).
pub(super) fn classify(bytes: &[u8]) -> First {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        First::Http1
    } else if n == PREFACE.len() {
        First::H2
    } else {
        First::Partial
    }
}

/// A connection after its first bytes were read, with those bytes (they go to the
/// server that takes the connection first).
pub(super) enum Sniffed {
    H2(Bytes),
    Http1(Bytes),
    /// Closed, timed out, shut down or evicted before a first byte decided.
    Closed,
}

/// What the first read of a connection asks for: a usual request head fits, and
/// hyper takes it from there without a read of its own.
const FIRST_READ: usize = 4096;

/// Whether `stream` starts with the HTTP/2 preface, waiting at most `limit` for the
/// bytes that decide (the head timeout), and giving up on shutdown or eviction (the
/// connection is idle until it sends). The bytes are read, not peeked at (a peek was
/// one more `recv` per connection), and handed on.
pub(super) async fn sniff(
    stream: &mut TcpStream,
    limit: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    tracked: &sources::Tracked,
) -> Sniffed {
    let decide = async {
        let mut got = Vec::with_capacity(FIRST_READ);
        loop {
            // the preface in pieces (rare) takes more reads; anything else decides at once
            if stream.read_buf(&mut got).await? == 0 {
                return Ok::<_, io::Error>(Sniffed::Closed);
            }
            match classify(&got) {
                First::Partial => {}
                First::H2 => return Ok(Sniffed::H2(got.into())),
                First::Http1 => return Ok(Sniffed::Http1(got.into())),
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout(limit, decide) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => Sniffed::Closed,
        },
        _ = stopped(stop) => Sniffed::Closed,
        _ = tracked.evict.notified() => Sniffed::Closed,
    }
}

/// A token bucket for streams the client cancelled (pure; time is passed in).
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
    burst: f64,
    rate: f64,
}

impl Bucket {
    pub(super) fn new(burst: f64, rate: f64, now: Instant) -> Self {
        Self { tokens: burst, last: now, burst, rate }
    }

    /// Takes one token; false when there was none left.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Cancellations of accepted streams on one connection.
struct Resets {
    bucket: Mutex<Bucket>,
    over: Notify,
    fired: AtomicBool,
}

impl Resets {
    fn new() -> Arc<Self> {
        let bucket = Bucket::new(RESET_BURST, RESET_RATE, Instant::now());
        Arc::new(Self { bucket: Mutex::new(bucket), over: Notify::new(), fired: AtomicBool::new(false) })
    }

    fn cancelled(&self) {
        let ok = self.bucket.lock().expect("reset bucket").take(Instant::now());
        if !ok && !self.fired.swap(true, Ordering::AcqRel) {
            self.over.notify_one();
        }
    }
}

/// Counts its stream as cancelled when dropped before [`Answering::done`]: hyper drops
/// a stream's service future when the client resets the stream.
struct Answering(Option<Arc<Resets>>);

impl Answering {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.cancelled();
        }
    }
}

/// Resolves once no stream has been open for `limit`.
async fn idle(activity: &conn::Activity, limit: Duration) {
    loop {
        let idle = activity.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep((limit - idle).max(Duration::from_millis(100))).await;
    }
}

impl Proxy {
    /// Serves one HTTP/2 connection (the preface not yet read from `io`, or read and
    /// put back in front of it) on listen mapping `index`: every stream goes through
    /// [`Proxy::handle`]. `scheme` (`http` or `https`) is the client's, for
    /// X-Forwarded-Proto and redirects. `tracked` is the connection's place under the
    /// per-source cap ([`Proxy::serve`] admits it). `secure`: the connection is TLS
    /// (ALPN chose h2, [`Proxy::dispatch_tls`]), its listener marked on every request.
    /// Returns when the connection closed.
    pub(crate) async fn serve_h2<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self: Arc<Self>,
        io: I,
        index: usize,
        peer: SocketAddr,
        scheme: &'static str,
        secure: Option<super::tls::Secure>,
        tracked: Arc<sources::Tracked>,
    ) {
        self.metrics.h2_connection();
        let cfg = self.config().h2.clone();
        let mut builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(cfg.max_concurrent_streams)
            .max_header_list_size(MAX_HEAD as u32)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
            // a dead peer under a long stream is found by PINGs (off by default)
            .keep_alive_interval(cfg.keepalive_interval)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        let activity = tracked.activity.clone();
        let resets = Resets::new();
        let svc = {
            let (proxy, activity, resets) = (self.clone(), activity.clone(), resets.clone());
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let (proxy, activity, resets) = (proxy.clone(), activity.clone(), resets.clone());
                req.extensions_mut().insert(plan::ClientScheme(scheme));
                if let Some(s) = &secure {
                    req.extensions_mut().insert(s.clone());
                }
                Box::pin(async move {
                    let answering = Answering(Some(resets));
                    let mut resp = proxy.handle(super::boxed(req), index, peer, &activity, super::Writer::Hyper).await;
                    answering.done();
                    // HTTP/2 has no `Connection` (a refusal's `close` is for HTTP/1.1
                    // framing; streams are framed by h2)
                    resp.headers_mut().remove(header::CONNECTION);
                    Ok::<_, Infallible>(resp)
                })
            })
        };
        let mut stop = self.shutdown.subscribe();
        let mut conn = std::pin::pin!(builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc));
        let result = tokio::select! {
            r = &mut conn => r,
            _ = stopped(&mut stop) => {
                // GOAWAY; the open streams finish (bounded by the drain timeout)
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = tracked.evict.notified() => {
                tracing::debug!(%peer, "idle h2 connection closed: its source is at --max-connections-per-source");
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = idle(&activity, cfg.idle_timeout) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = resets.over.notified() => {
                self.metrics.h2_reset_flood();
                tracing::info!(%peer, "h2 connection closed: too many streams cancelled by the client (rapid reset)");
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(RESET_GRACE, conn).await {
                    Ok(r) => r,
                    Err(_) => Ok(()), // dropped: closed
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "h2 client connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_preface_is_http2() {
        assert_eq!(classify(PREFACE), First::H2);
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(classify(&more), First::H2, "the preface and a SETTINGS frame");
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), First::Partial);
        assert_eq!(classify(b"P"), First::Partial);
        for http1 in
            [&b"POST / HTTP/1.1\r\n"[..], b"PUT /", b"GET / HTTP/1.1\r\n\r\n", b"PRI * HTTP/1.1\r\n\r\n", b"\r\n"]
        {
            assert_eq!(classify(http1), First::Http1, "{:?}", String::from_utf8_lossy(http1));
        }
    }

    #[test]
    fn the_cancel_budget_is_a_burst_then_a_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3.0, 10.0, t0);
        assert!((0..3).all(|_| b.take(t0)), "the burst");
        assert!(!b.take(t0), "then nothing at once");
        assert!(b.take(t0 + Duration::from_millis(100)), "one more after 1/rate");
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // refills only up to the burst
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[tokio::test]
    async fn the_sniff_reads_the_first_bytes_and_hands_every_one_on() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tracked =
            sources::Tracked { activity: Arc::new(super::super::conn::Activity::default()), evict: Default::default() };
        let (_keep, mut stop) = tokio::sync::watch::channel(false);
        let limit = Duration::from_secs(5);
        // HTTP/1.1: one read decides, and the head comes back whole
        let head = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        c.write_all(head).await.unwrap();
        match sniff(&mut s, limit, &mut stop, &tracked).await {
            Sniffed::Http1(b) => assert_eq!(&b[..], &head[..]),
            _ => panic!("not HTTP/1.1"),
        }
        // the preface in two pieces, then a SETTINGS frame: every byte read comes back
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let mut all = PREFACE.to_vec();
        all.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let writer = tokio::spawn(async move {
            c.write_all(&all[..5]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.write_all(&all[5..]).await.unwrap();
            (c, all)
        });
        let got = sniff(&mut s, limit, &mut stop, &tracked).await;
        let (_c, all) = writer.await.unwrap();
        match got {
            Sniffed::H2(b) => {
                assert!(b.starts_with(PREFACE) && all.starts_with(&b), "{b:?}");
                let mut rest = vec![0u8; all.len() - b.len()];
                s.read_exact(&mut rest).await.unwrap();
                assert_eq!([&b[..], &rest[..]].concat(), all, "nothing lost between the sniff and the server");
            }
            _ => panic!("not h2"),
        }
        // closed before a byte
        let c = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        drop(c);
        assert!(matches!(sniff(&mut s, limit, &mut stop, &tracked).await, Sniffed::Closed));
    }

    #[tokio::test]
    async fn a_dropped_answer_counts_and_a_finished_one_does_not() {
        let r = Resets::new();
        for _ in 0..RESET_BURST as usize {
            Answering(Some(r.clone())).done();
        }
        assert!(!r.fired.load(Ordering::Acquire), "finished streams cost nothing");
        for _ in 0..RESET_BURST as usize {
            drop(Answering(Some(r.clone())));
        }
        assert!(!r.fired.load(Ordering::Acquire), "within the burst");
        for _ in 0..10 {
            drop(Answering(Some(r.clone())));
        }
        assert!(r.fired.load(Ordering::Acquire), "over the budget");
        // the permit waits for the connection's select
        tokio::time::timeout(Duration::from_secs(1), r.over.notified()).await.expect("notified");
    }
}
