//! The client side of one connection, under hyper: the TCP stream (with any bytes a
//! splice decision already read put back in front), the head timer, and a scan of
//! request heads for the framing headers hyper reconciles silently.
//!
//! Head timer: when no request is in flight, the client has `--head-timeout` to send
//! a complete head. If it sent part of one, it gets `408 Request Timeout` and the
//! connection closes (slowloris); if it sent nothing, the idle keep-alive connection
//! just closes. hyper's own header timer closes without an answer, so it is off.
//!
//! Framing scan: hyper reads a request with both `Content-Length` and
//! `Transfer-Encoding` as chunked and drops the length (safe: nothing can be
//! smuggled past it), but the request should be refused with 400. The names are
//! looked for at line starts in the bytes of a head; the service reads the result.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

const CONTENT_LENGTH: u8 = 1;
const TRANSFER_ENCODING: u8 = 2;

const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 30\r\nconnection: close\r\n\r\nrequest head not sent in time\n";

/// Request activity on one connection, shared by its IO and its service.
pub struct Activity {
    /// Requests whose response has not finished.
    inflight: AtomicU32,
    /// Bumped each time the connection becomes idle (last response finished).
    idle_gen: AtomicU64,
    /// Framing header names seen in the head being read (bit flags).
    framing: AtomicU8,
    /// Bytes of a next head have arrived since the connection became idle.
    partial: AtomicBool,
    /// The `idle_gen` in which `partial` was last set: the head timer clears `partial`
    /// only when it next runs, so a flag from an earlier generation is stale.
    partial_gen: AtomicU64,
    /// Everything hyper wrote has been handed to the socket.
    flushed: AtomicBool,
    /// When the connection last became idle, in ms since `epoch`.
    idle_at_ms: AtomicU64,
    epoch: std::time::Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            inflight: AtomicU32::new(0),
            idle_gen: AtomicU64::new(0),
            framing: AtomicU8::new(0),
            partial: AtomicBool::new(false),
            partial_gen: AtomicU64::new(0),
            flushed: AtomicBool::new(true),
            idle_at_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }
}

impl Activity {
    /// How long the connection has been idle (zero while a request is in flight).
    pub fn idle_for(&self) -> Duration {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_millis(self.idle_at_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(since)
    }

    /// Whether hyper holds nothing of this connection but its buffers: no request in
    /// flight, no byte of a next head read, all output handed to the socket, and idle
    /// for at least `after`. Then the connection can be taken back from hyper and
    /// parked without buffers until the client sends again.
    pub fn parkable(&self, after: Duration) -> bool {
        self.inflight.load(Ordering::Acquire) == 0
            && !self.partial.load(Ordering::Acquire)
            && self.flushed.load(Ordering::Acquire)
            && self.idle_for() >= after
    }

    /// How long the connection has been idle, or None while it is busy: a request in
    /// flight, or bytes of a next head read. For the per-source cap's eviction.
    pub fn idle_age(&self) -> Option<Duration> {
        let partial = self.partial.load(Ordering::Acquire)
            && self.partial_gen.load(Ordering::Acquire) == self.idle_gen.load(Ordering::Acquire);
        if self.inflight.load(Ordering::Acquire) > 0 || partial {
            return None;
        }
        Some(self.idle_for())
    }

    /// The client sent again after the connection was parked: idle time restarts now.
    pub fn resumed(&self) {
        self.idle_at_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// A request began: returns its guard (drop it when the response has finished)
    /// and whether its head had both Content-Length and Transfer-Encoding.
    pub fn begin(self: &Arc<Self>) -> (InFlight, bool) {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let seen = self.framing.swap(0, Ordering::AcqRel);
        (InFlight(self.clone()), seen == CONTENT_LENGTH | TRANSFER_ENCODING)
    }
}

/// A request in flight; dropped with the response body.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_at_ms.store(self.0.epoch.elapsed().as_millis() as u64, Ordering::Release);
            self.0.idle_gen.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// How long an answer whose body failed (the pod closed or reset mid-body) waits for
/// hyper to write out what it already queued for the client, at most.
const FLUSH_BEFORE_ERROR: Duration = Duration::from_secs(2);

/// A response body on its way to the client, holding its request in flight. When the
/// body fails (a pod that died mid-answer), hyper drops the connection at once, and
/// with it the bytes it had queued and not yet written: the client would get less than
/// the pod sent. So the error waits until hyper's buffer is written out (`flushed`,
/// cleared at the error and set by hyper's next flush of the socket, which it makes
/// only once its own buffer is empty), at most [`FLUSH_BEFORE_ERROR`], looking every
/// millisecond.
/// (HTTP/1.1 only: an h2 stream's error resets that stream alone, and no `ClientIo`
/// flag follows an h2 connection's writes.)
pub struct ToClient<B> {
    inner: B,
    guard: InFlight,
    /// Whether an error waits for the flush (HTTP/1.1).
    wait: bool,
    held: Option<(super::BoxError, Pin<Box<Sleep>>, Instant)>,
}

impl<B> ToClient<B> {
    pub fn new(inner: B, guard: InFlight, wait: bool) -> Self {
        Self { inner, guard, wait, held: None }
    }
}

impl<B> http_body::Body for ToClient<B>
where
    B: http_body::Body<Data = Bytes, Error = super::BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, super::BoxError>>> {
        let this = &mut *self;
        if this.held.is_none() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) if this.wait => {
                    // hyper may have queued bytes since it last flushed: the flag is set
                    // again only by its next flush, which comes once its queue is written
                    this.guard.0.flushed.store(false, Ordering::Release);
                    let now = Instant::now();
                    this.held = Some((e, Box::pin(tokio::time::sleep_until(now)), now + FLUSH_BEFORE_ERROR));
                }
                other => return other,
            }
        }
        let flushed = &this.guard.0.flushed;
        let (_, sleep, deadline) = this.held.as_mut().expect("set above");
        loop {
            if flushed.load(Ordering::Acquire) || Instant::now() >= *deadline {
                let (e, _, _) = this.held.take().expect("held");
                return Poll::Ready(Some(Err(e)));
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = Instant::now() + Duration::from_millis(1);
            sleep.as_mut().reset(next);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct HeadTimer {
    activity: Arc<Activity>,
    timeout: Duration,
    /// Fires at or before `deadline` (never after): moving the deadline later is only a
    /// store, the timer is re-armed when it fires early (no timer-wheel insert and
    /// remove per request on a keep-alive connection).
    sleep: Pin<Box<Sleep>>,
    deadline: Instant,
    seen_gen: u64,
    /// Still looking for framing headers in the current head.
    scanning: bool,
    /// The end of the previous read, for a name split across reads.
    carry: [u8; 20],
    carry_len: usize,
}

impl HeadTimer {
    fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        Self {
            activity,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            deadline: Instant::now() + timeout,
            seen_gen: 0,
            scanning: true,
            carry: [0; 20],
            carry_len: 0,
        }
    }

    fn sync_gen(&mut self) {
        let g = self.activity.idle_gen.load(Ordering::Acquire);
        if g != self.seen_gen {
            self.seen_gen = g;
            self.activity.partial.store(false, Ordering::Release);
            self.scanning = true;
            self.carry_len = 0;
            self.deadline = Instant::now() + self.timeout;
        }
    }

    /// `bytes` were handed to hyper.
    fn saw(&mut self, bytes: &[u8]) {
        self.sync_gen();
        if self.activity.inflight.load(Ordering::Acquire) > 0 {
            return; // a body, or a pipelined head read early: not scanned
        }
        self.activity.partial_gen.store(self.seen_gen, Ordering::Release);
        self.activity.partial.store(true, Ordering::Release);
        if !self.scanning {
            return;
        }
        // A name (or the empty line) split at the read boundary: the end of the last
        // read (it holds the '\n' before any name split there) plus the start of this.
        let (mut flags, mut end) = (0, false);
        if self.carry_len > 0 {
            let mut joined = [0u8; 40];
            let head = bytes.len().min(20);
            joined[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            joined[self.carry_len..self.carry_len + head].copy_from_slice(&bytes[..head]);
            (flags, end) = scan(&joined[..self.carry_len + head], false);
        }
        if !end {
            let (f, e) = scan(bytes, self.carry_len == 0);
            flags |= f;
            end = e;
        }
        if flags != 0 {
            self.activity.framing.fetch_or(flags, Ordering::AcqRel);
        }
        let tail = &bytes[bytes.len().saturating_sub(20)..];
        if end {
            self.scanning = false;
        } else if tail.len() == 20 {
            self.carry.copy_from_slice(tail);
            self.carry_len = 20;
        } else {
            // short read: keep what fits of the old carry and the new bytes
            let keep = (20 - tail.len()).min(self.carry_len);
            self.carry.copy_within(self.carry_len - keep..self.carry_len, 0);
            self.carry[keep..keep + tail.len()].copy_from_slice(tail);
            self.carry_len = keep + tail.len();
        }
    }

    /// Whether the connection has been idle, or inside a head, for too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.sync_gen();
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.sleep.deadline() < self.deadline {
                // fired for an earlier deadline than the current one: wait for the rest
                let at = self.deadline;
                self.sleep.as_mut().reset(at);
                continue;
            }
            if self.activity.inflight.load(Ordering::Acquire) == 0 {
                return true;
            }
            // a request is being served: no limit; look again later
            self.deadline = Instant::now() + self.timeout;
            let at = self.deadline;
            self.sleep.as_mut().reset(at);
        }
    }
}

/// Looks for `content-length:` and `transfer-encoding:` at line starts. Returns the
/// flags found and whether the end of a head (an empty line) was seen.
fn scan(bytes: &[u8], at_line_start: bool) -> (u8, bool) {
    let mut flags = 0;
    let mut start = if at_line_start { Some(0) } else { None };
    let mut i = 0;
    loop {
        if let Some(s) = start {
            let line = &bytes[s..];
            if line.starts_with(b"\r\n") || line.starts_with(b"\n") {
                return (flags, true);
            }
            if starts_with_ignore_case(line, b"content-length:") {
                flags |= CONTENT_LENGTH;
            } else if starts_with_ignore_case(line, b"transfer-encoding:") {
                flags |= TRANSFER_ENCODING;
            }
        }
        match memchr::memchr(b'\n', &bytes[i..]) {
            Some(p) => {
                i += p + 1;
                start = Some(i);
            }
            None => return (flags, false),
        }
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// A client connection as hyper sees it: over TCP, or over TLS (`S` a rustls stream,
/// proxy/tls.rs), with the same head timer and framing scan.
pub struct ClientIo<S = TcpStream> {
    prefix: Bytes,
    pub inner: S,
    timer: Option<HeadTimer>,
}

impl<S> ClientIo<S> {
    /// A plain connection, or one with `prefix` already read from it.
    pub fn new(inner: S, prefix: Bytes) -> Self {
        Self { prefix, inner, timer: None }
    }

    /// Arms the head timer and framing scan.
    pub fn watch(mut self, activity: Arc<Activity>, timeout: Duration) -> Self {
        self.timer = Some(HeadTimer::new(activity, timeout));
        self
    }

    /// The stream and the bytes read from it that hyper has not consumed.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> AsyncRead for ClientIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
        } else {
            // over TCP, a read that drains the socket clears its readiness (drain_read.rs)
            let read = match (&mut this.inner as &mut dyn std::any::Any).downcast_mut::<TcpStream>() {
                Some(tcp) => super::drain_read::poll_read(tcp, cx, buf),
                None => Pin::new(&mut this.inner).poll_read(cx, buf),
            };
            match read {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Some(t) = this.timer.as_mut() else { return Poll::Pending };
                    if !t.expired(cx) {
                        return Poll::Pending;
                    }
                    if t.activity.partial.load(Ordering::Acquire) {
                        // best effort: it fits any socket buffer
                        let _ = Pin::new(&mut this.inner).poll_write(cx, TIMEOUT_408);
                        // over TLS the record is written out on flush
                        let _ = Pin::new(&mut this.inner).poll_flush(cx);
                        tracing::debug!("408: request head not complete in time");
                    }
                    return Poll::Ready(Ok(())); // end of stream: hyper closes
                }
            }
        }
        if let Some(t) = this.timer.as_mut() {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                t.saw(new);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> ClientIo<S> {
    fn wrote(&self, p: &Poll<io::Result<usize>>) {
        if let (Some(t), Poll::Ready(Ok(n))) = (&self.timer, p) {
            if *n > 0 {
                t.activity.flushed.store(false, Ordering::Release);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&p);
        p
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        // hyper flushes the socket only once its own buffer is written out
        if let (Some(t), Poll::Ready(Ok(()))) = (&self.timer, &p) {
            t.activity.flushed.store(true, Ordering::Release);
        }
        p
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&p);
        p
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The answer to a client that stopped mid-head, for paths that read heads themselves.
pub async fn send_408(stream: &mut TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(TIMEOUT_408)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_names_are_found_at_line_starts_only() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTRANSFER-ENCODING: chunked\r\n\r\nabc";
        assert_eq!(scan(head, true), (CONTENT_LENGTH | TRANSFER_ENCODING, true));
        let inside = b"GET / HTTP/1.1\r\nX-A: content-length: 3\r\n";
        assert_eq!(scan(inside, true), (0, false));
        // a body after the empty line is not looked at
        let body = b"GET / HTTP/1.1\r\n\r\nContent-Length: 1\r\n";
        assert_eq!(scan(body, true), (0, true));
        // the middle of a line (a read that starts inside a header) is skipped
        assert_eq!(scan(b"ength: 3\r\nTransfer-Encoding: x\r\n", false), (TRANSFER_ENCODING, false));
    }

    #[tokio::test]
    async fn a_name_split_across_reads_is_found() {
        let a = Arc::new(Activity::default());
        let mut t = HeadTimer::new(a.clone(), Duration::from_secs(1));
        t.saw(b"POST / HTTP/1.1\r\nContent-Len");
        t.saw(b"gth: 3\r\nTransfer-");
        t.saw(b"Encoding: chunked\r\n\r\n");
        let (guard, both) = a.begin();
        assert!(both);
        drop(guard);
        // the next head starts clean
        t.saw(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(!a.begin().1);
    }

    #[tokio::test]
    async fn idle_age_is_none_while_busy_or_inside_a_head() {
        let a = Arc::new(Activity::default());
        let mut t = HeadTimer::new(a.clone(), Duration::from_secs(10));
        assert!(a.idle_age().is_some(), "a new connection is idle");
        t.saw(b"GET / HTTP/1.1\r\nHo");
        assert_eq!(a.idle_age(), None, "a head being read");
        t.saw(b"st: a\r\n\r\n");
        let (guard, _) = a.begin();
        assert_eq!(a.idle_age(), None, "a request in flight");
        drop(guard);
        // idle again, before the head timer ran again (it clears `partial` only then)
        assert!(a.idle_age().is_some(), "idle after its answer");
        t.saw(b"GET /next");
        assert_eq!(a.idle_age(), None, "the next head being read");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_body_waits_for_hyper_to_write_out_what_it_queued() {
        use http_body::Body as _;
        let frames: Vec<Result<http_body::Frame<Bytes>, super::super::BoxError>> =
            vec![Ok(http_body::Frame::data(Bytes::from_static(b"abc"))), Err("the pod died".into())];
        let inner = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let a = Arc::new(Activity::default());
        let (guard, _) = a.begin();
        let mut body = std::pin::pin!(ToClient::new(inner, guard, true));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(body.as_mut().poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))), "data passes");
        assert!(body.as_mut().poll_frame(&mut cx).is_pending(), "the error waits for the flush");
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(body.as_mut().poll_frame(&mut cx).is_pending(), "still not flushed");
        a.flushed.store(true, Ordering::Release); // hyper's next flush of the socket
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(matches!(body.as_mut().poll_frame(&mut cx), Poll::Ready(Some(Err(_)))), "then the error");
        // never flushed: the error comes after FLUSH_BEFORE_ERROR at the latest
        let frames: Vec<Result<http_body::Frame<Bytes>, super::super::BoxError>> = vec![Err("x".into())];
        let b = Arc::new(Activity::default());
        let (guard, _) = b.begin();
        let mut body =
            std::pin::pin!(ToClient::new(http_body_util::StreamBody::new(futures::stream::iter(frames)), guard, true));
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        tokio::time::advance(FLUSH_BEFORE_ERROR + Duration::from_millis(2)).await;
        assert!(matches!(body.as_mut().poll_frame(&mut cx), Poll::Ready(Some(Err(_)))));
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_idle_connection_expires() {
        let a = Arc::new(Activity::default());
        let mut t = HeadTimer::new(a.clone(), Duration::from_secs(10));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(!t.expired(&mut cx));
        let (guard, _) = a.begin();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!t.expired(&mut cx), "a request in flight has no head deadline");
        drop(guard);
        assert!(!t.expired(&mut cx), "idle restarts the clock");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(t.expired(&mut cx));
        assert!(!a.partial.load(Ordering::Acquire), "nothing was sent: a quiet close, no 408");
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_kept_without_rearming_the_timer() {
        let a = Arc::new(Activity::default());
        let mut t = HeadTimer::new(a.clone(), Duration::from_secs(10));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(!t.expired(&mut cx));
        let (guard, _) = a.begin();
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(guard);
        // idle from t=5: the deadline moves to t=15, the timer armed for t=10 stays
        assert!(!t.expired(&mut cx));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!t.expired(&mut cx), "the first arming fired at t=10: idle for 6 s of 10, not expired");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!t.expired(&mut cx), "t=14");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(t.expired(&mut cx), "t=16: idle for 11 s");
    }
}
