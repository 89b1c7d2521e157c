//! The client side of plain HTTP/1.1 connections, for the requests that need nothing
//! of hyper's server (issue 11: hyper's dispatcher, its head parse into a request and
//! its encoder were a quarter of the agent's instructions per request).
//!
//! The path serves a request whose head arrived whole, is HTTP/1.1, and has no body
//! and nothing to negotiate: not HEAD or CONNECT, no `Transfer-Encoding`, no
//! `Content-Length` other than one `0`, no `Upgrade`, no `Expect`. Everything else (a
//! request with a body, an upgrade, HTTP/1.0, a head split across reads, a head
//! httparse refuses) is handed to hyper with the bytes read so far, and hyper serves
//! the connection from there; when hyper parks it, idle, it comes back here. So the
//! refusals of malformed requests (400, 431, 501) stay hyper's and `refuse.rs`'s, and
//! the same [`Proxy::handle`] serves both paths.
//!
//! The answer is written as hyper writes it: the status line with its canonical reason,
//! the headers in order, a `Date` when there is none, the framing (`Content-Length`
//! from the headers or the body's exact size, else chunked, with the trailers the
//! `Trailer` field names), `Connection: close` when the client asked to close. Head
//! and the first body bytes go out in one write; each write completes before the
//! body is polled again (a client that stops reading stops the pod's body). A body
//! that fails or ends short of its length closes the connection.
//!
//! Idle, the connection keeps its buffers for `PARK_AFTER` (or half the head
//! timeout), then drops them (parked, counted as hyper's parked connections are) and
//! waits on the socket's readiness alone; it closes quietly after the head timeout,
//! at shutdown, or when its source needs the room.
//!
//! On by default; `INGRESS_H1_SERVER=hyper` in the agent's environment gives every
//! request to hyper ([`enabled`]).

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::drain_read::poll_read_bytes;
use super::h1_client::PodFields;
use super::sources::Tracked;
use super::{Body, BoxError, Proxy};

/// Header fields this path reads in a head (more: hyper's, which takes 100).
const MAX_HEADERS: usize = 64;
/// Room kept for a read of a head.
const READ_SIZE: usize = 8 * 1024;
/// Body data up to this size is copied behind the head; larger data is written from
/// its own buffer.
const COPY_MAX: usize = 16 * 1024;
/// Output gathered before it is written.
const WRITE_MAX: usize = 64 * 1024;

/// How a connection left this path.
pub(super) enum Served {
    /// Done: closed by either side, timed out, shut down or evicted.
    Closed,
    /// A request this path does not serve: hyper serves the connection from these bytes.
    Hyper(TcpStream, Bytes),
}

/// A request head this path serves.
#[derive(Debug)]
pub(super) struct FastHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// The client asked to close after this request.
    close: bool,
}

/// What a buffer holds.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    /// A head this path serves, and its length.
    Complete(FastHead, usize),
    /// No complete head yet.
    Partial,
    /// A head for hyper (see the module's comment).
    Hyper,
}

/// Whether `b` holds the empty line that ends a head (httparse takes bare LFs too).
fn head_end_seen(b: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', b).any(|i| match b.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => b.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Parses the head at the start of `data` (its values share `data`).
pub(super) fn parse(data: &Bytes) -> Parsed {
    if !head_end_seen(data) {
        return Parsed::Partial;
    }
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, data, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    if req.version != Some(1) {
        return Parsed::Hyper;
    }
    let method = match req.method.map(str::as_bytes) {
        Some(b"GET") => Method::GET,
        Some(b"HEAD" | b"CONNECT") | None => return Parsed::Hyper,
        Some(m) => match Method::from_bytes(m) {
            Ok(m) => m,
            Err(_) => return Parsed::Hyper,
        },
    };
    let Some(path) = req.path else { return Parsed::Hyper };
    let Ok(uri) = Uri::from_maybe_shared(data.slice_ref(path.as_bytes())) else { return Parsed::Hyper };
    // room for what the plan adds (X-Forwarded-For, -Proto, -Host, X-Request-Id): a map
    // sized to the client's fields alone grew three times per request (callgrind)
    let mut map = HeaderMap::with_capacity(req.headers.len() + PLAN_ADDS);
    let (mut close, mut length_seen) = (false, false);
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else { return Parsed::Hyper };
        match name {
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => return Parsed::Hyper,
            header::CONTENT_LENGTH => {
                if length_seen || h.value != b"0" {
                    return Parsed::Hyper;
                }
                length_seen = true;
            }
            header::CONNECTION => close |= has_token(h.value, b"close"),
            _ => {}
        }
        let Ok(value) = HeaderValue::from_maybe_shared(data.slice_ref(h.value)) else { return Parsed::Hyper };
        map.append(name, value);
    }
    Parsed::Complete(FastHead { method, uri, headers: map, close }, len)
}

/// Fields the plan may add to a request.
const PLAN_ADDS: usize = 4;

/// Whether the comma-separated list `v` holds `token` (any case).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The request handed to the router.
fn request(head: FastHead) -> Request<Body> {
    let mut req = Request::new(empty());
    *req.method_mut() = head.method;
    *req.uri_mut() = head.uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = head.headers;
    req
}

/// An empty body (no allocation: its box holds nothing).
fn empty() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// How an answer's body is framed for the client.
#[derive(Clone, Debug, PartialEq)]
enum Framing {
    /// No body (1xx, 204, 304).
    None,
    /// This many bytes.
    Length(u64),
    /// Chunked, with the trailer fields the `Trailer` field named.
    Chunked(Vec<HeaderName>),
}

/// Encodes the head of `parts` into `out`: the framing chosen from its headers and
/// `body` (an exact size hint), and whether the connection closes after it
/// (`close_asked`: the client's `Connection: close`).
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &impl HttpBody,
    close_asked: bool,
) -> (Framing, bool) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodyless = status.is_informational() || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let (mut length, mut date, mut close, mut trailers) = (None, false, close_asked, None::<Vec<HeaderName>>);
    let mut connection_field = false;
    if let Some(pod) = parts.extensions.get::<PodFields>() {
        // the pod's fields as it sent them (nothing of them to rewrite: `PodFields`)
        for (name, value) in pod.iter() {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        date = pod.date;
        if let Some(n) = pod.length.filter(|_| status != StatusCode::NO_CONTENT) {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
            length = Some(Some(n));
        }
    }
    for (name, value) in &parts.headers {
        match *name {
            // (never in a forwarded answer: hop-by-hop, and the pod's body was decoded)
            header::TRANSFER_ENCODING => continue,
            header::CONTENT_LENGTH => {
                if status == StatusCode::NO_CONTENT || length.is_some() {
                    continue; // (equal repeats were made one by `reframe.rs`)
                }
                length = Some(std::str::from_utf8(value.as_bytes()).ok().and_then(|v| v.parse::<u64>().ok()));
            }
            header::CONNECTION => {
                connection_field = true;
                close |= has_token(value.as_bytes(), b"close");
            }
            header::DATE => date = true,
            header::TRAILER => trailers.get_or_insert_default().extend(
                value.as_bytes().split(|b| *b == b',').filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok()),
            ),
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = if bodyless {
        Framing::None
    } else if let Some(n) = length {
        // an unreadable length (never from the pod client, which refuses it): close-framed
        match n {
            Some(n) => Framing::Length(n),
            None => {
                close = true;
                Framing::Length(u64::MAX)
            }
        }
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked(trailers.unwrap_or_default())
    };
    if close && !connection_field {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !date {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, close)
}

/// Appends the current time as an HTTP date (formatted once a second per thread).
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
    }
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == text.len() {
                text.copy_from_slice(s.as_bytes());
                *at = secs;
            } else {
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        out.extend_from_slice(text);
    });
}

/// Trailer fields that may not be sent in a trailer section (hyper's list).
fn trailer_allowed(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

/// The body's bytes framed for the client.
struct Encoder {
    framing: Framing,
    /// Bytes still due by `Content-Length`.
    left: u64,
    /// The trailer fields to send (chunked, named by `Trailer`).
    trailers: Vec<(HeaderName, HeaderValue)>,
}

/// Output for the socket: `out` (a head, copied data, framing), then `big` (large
/// data, not copied), then `after` (the CRLF that ends a chunk of `big`).
#[derive(Default)]
struct Output {
    out: Vec<u8>,
    big: Bytes,
    after: &'static [u8],
}

impl Output {
    fn len(&self) -> usize {
        self.out.len() + self.big.len() + self.after.len()
    }

    fn clear(&mut self) {
        self.out.clear();
        self.big = Bytes::new();
        self.after = b"";
    }
}

impl Encoder {
    fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Self { framing, left, trailers: Vec::new() }
    }

    /// Frames `frame` into `o` (whose `big` is empty). False: data past the declared
    /// length, of which `o` holds what fits (the connection closes after it).
    fn frame(&mut self, frame: Frame<Bytes>, o: &mut Output) -> bool {
        let mut data = match frame.into_data() {
            Ok(d) => d,
            Err(frame) => {
                if let (Ok(fields), Framing::Chunked(allowed)) = (frame.into_trailers(), &self.framing) {
                    let mut name = None;
                    for (n, v) in fields {
                        // (a None name repeats the one before)
                        if let Some(n) = n {
                            name = Some(n);
                        }
                        let n = name.as_ref().expect("a first field has its name");
                        if allowed.contains(n) && trailer_allowed(n) {
                            self.trailers.push((n.clone(), v));
                        }
                    }
                }
                return true;
            }
        };
        let mut fits = true;
        match &self.framing {
            Framing::None => return true,
            Framing::Length(_) => {
                if data.len() as u64 > self.left {
                    data.truncate(self.left as usize);
                    fits = false;
                }
                self.left -= data.len() as u64;
            }
            Framing::Chunked(_) => {
                if data.is_empty() {
                    return true; // an empty chunk would end the body
                }
                push_hex(&mut o.out, data.len());
                o.out.extend_from_slice(b"\r\n");
            }
        }
        let chunked = matches!(self.framing, Framing::Chunked(_));
        if data.len() > COPY_MAX {
            o.big = data;
            o.after = if chunked { b"\r\n" } else { b"" };
        } else {
            o.out.extend_from_slice(&data);
            if chunked {
                o.out.extend_from_slice(b"\r\n");
            }
        }
        fits
    }

    /// The end of the body. False: it ended short of its length (the client must see
    /// the connection close).
    fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        match &self.framing {
            Framing::None => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked(_) => {
                out.extend_from_slice(b"0\r\n");
                for (n, v) in self.trailers.drain(..) {
                    out.extend_from_slice(n.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                true
            }
        }
    }
}

fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes all of `o` (one vectored write when the socket takes it).
async fn write_out(stream: &TcpStream, o: &Output) -> io::Result<()> {
    let mut slices = [IoSlice::new(&o.out), IoSlice::new(&o.big), IoSlice::new(o.after)];
    let mut bufs = &mut slices[..];
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match stream.try_write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The next frame of `body` if it is ready now (None: not yet).
fn ready_frame(body: &mut Body) -> impl Future<Output = Option<Option<Result<Frame<Bytes>, BoxError>>>> + '_ {
    poll_fn(move |cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(f) => Poll::Ready(Some(f)),
        Poll::Pending => Poll::Ready(None),
    })
}

/// Writes `resp` to the client. Returns whether the connection may serve another
/// request (the answer was whole and nobody asked to close).
async fn write_response(stream: &TcpStream, o: &mut Output, resp: Response<Body>, close_asked: bool) -> bool {
    let (parts, mut body) = resp.into_parts();
    o.clear();
    let (framing, close) = encode_head(&mut o.out, &parts, &body, close_asked);
    drop(parts);
    let mut enc = Encoder::new(framing);
    if enc.framing == Framing::None {
        return write_out(stream, o).await.is_ok() && !close;
    }
    loop {
        // gather what the body has ready (waiting only when nothing is queued)
        let mut ended = None;
        while o.big.is_empty() && o.out.len() < WRITE_MAX {
            let next = if o.len() == 0 { Some(body.frame().await) } else { ready_frame(&mut body).await };
            match next {
                None => break,
                Some(Some(Ok(f))) => {
                    if !enc.frame(f, o) {
                        ended = Some(false);
                        break;
                    }
                }
                Some(None) => {
                    ended = Some(enc.finish(&mut o.out));
                    break;
                }
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "the answer's body failed: the client connection closes");
                    ended = Some(false);
                    break;
                }
            }
        }
        if write_out(stream, o).await.is_err() {
            return false;
        }
        o.clear();
        if let Some(whole) = ended {
            return whole && !close;
        }
    }
}

/// The timer of one connection's idle waits. A wait for a later deadline than the one
/// armed keeps the armed one and re-arms when it fires early, so a keep-alive
/// connection does not insert and remove a timer entry per request.
struct IdleTimer {
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(first: Duration) -> Self {
        Self { sleep: Box::pin(tokio::time::sleep(first)) }
    }

    async fn until(&mut self, at: Instant) {
        loop {
            if self.sleep.deadline() > at || self.sleep.is_elapsed() {
                self.sleep.as_mut().reset(at);
            }
            self.sleep.as_mut().await;
            if Instant::now() >= at {
                return;
            }
        }
    }
}

/// Whether plain HTTP/1.1 connections are served here first: yes, unless
/// `INGRESS_H1_SERVER=hyper` (hyper serves every request; for comparing the two in a
/// benchmark, and a way back should this path misbehave).
pub(super) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("INGRESS_H1_SERVER").is_none_or(|v| v != "hyper"))
}

/// Closes the write side (the client reads the end of the answer, then the end).
fn shutdown(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a socket this stream owns; no memory is passed.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
}

/// What a connection waits with between requests.
struct Waits<'a> {
    stop: &'a mut tokio::sync::watch::Receiver<bool>,
    tracked: &'a Tracked,
    timer: IdleTimer,
    park_after: Duration,
    head_timeout: Duration,
}

impl Proxy {
    /// Serves requests on `stream` (`prefix`: bytes already read from it) until the
    /// connection ends or a request needs hyper.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve_h1(
        &self,
        stream: TcpStream,
        prefix: Bytes,
        index: usize,
        peer: SocketAddr,
        head_timeout: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        tracked: &Arc<Tracked>,
    ) -> Served {
        let activity = &tracked.activity;
        let park_after = (head_timeout / 2).min(super::PARK_AFTER);
        let mut waits = Waits { stop, tracked, timer: IdleTimer::new(park_after), park_after, head_timeout };
        let mut buf = BytesMut::from(&prefix[..]);
        drop(prefix);
        let mut o = Output::default();
        loop {
            if buf.is_empty() && !self.next_bytes(&stream, &mut buf, &mut o, &mut waits).await {
                return Served::Closed;
            }
            let data = buf.split().freeze();
            let (head, len) = match parse(&data) {
                Parsed::Complete(h, n) => (h, n),
                Parsed::Partial | Parsed::Hyper => return Served::Hyper(stream, data),
            };
            if data.len() > len {
                // pipelined: the next head's bytes
                buf.extend_from_slice(&data[len..]);
            }
            drop(data);
            let close_asked = head.close;
            // boxed: an idle connection's task holds a pointer, not a request's state
            let resp = Box::pin(self.handle(request(head), index, peer, activity, super::Writer::Direct)).await;
            if !write_response(&stream, &mut o, resp, close_asked).await || *waits.stop.borrow() {
                shutdown(&stream);
                return Served::Closed;
            }
        }
    }

    /// Waits for the bytes of a next request and reads them into `buf`. False: the
    /// connection is done (the client closed, the idle timeout, shutdown, eviction).
    async fn next_bytes(&self, stream: &TcpStream, buf: &mut BytesMut, o: &mut Output, w: &mut Waits<'_>) -> bool {
        let activity = &w.tracked.activity;
        let idle_end = Instant::now() + w.head_timeout.saturating_sub(activity.idle_for());
        loop {
            // warm: a read into the buffer kept (or made), until `park_after`
            let park_at = (Instant::now() + w.park_after).min(idle_end);
            tokio::select! {
                biased;
                r = poll_fn(|cx| poll_read_bytes(stream, cx, buf, READ_SIZE)) => return matches!(r, Ok(n) if n > 0),
                _ = w.timer.until(park_at) => {}
                _ = super::stopped(w.stop) => return false,
                _ = w.tracked.evict.notified() => return false,
            }
            if Instant::now() >= idle_end {
                return false; // idle keep-alive timeout: close quietly
            }
            // parked: the buffers go, the socket's readiness alone is waited for
            *buf = BytesMut::new();
            *o = Output::default();
            self.metrics.parked();
            tokio::select! {
                biased;
                r = stream.readable() => {
                    if r.is_err() {
                        return false;
                    }
                    // the client sent again: warm, the idle time restarts
                    activity.resumed();
                }
                _ = w.timer.until(idle_end) => return false,
                _ = super::stopped(w.stop) => return false,
                _ = w.tracked.evict.notified() => {
                    tracing::debug!("parked connection closed: its source is at --max-connections-per-source");
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
