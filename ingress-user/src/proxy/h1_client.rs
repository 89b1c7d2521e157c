//! HTTP/1.1 to pods: idle keep-alive connections pooled per pod endpoint, each
//! exchange driven in the task of the request it carries.
//!
//! The client is our own, over httparse (measured, issue 11: hyper's client ran each
//! pod connection as a task of its own, and every request and every body chunk
//! crossed a channel and a task wake between it and the request's task; with
//! hyper-util's pooled client before it, the pool key, request extensions and
//! checkout were a sixth of the agent's allocations per request):
//! - a checkout is a lock and a `Vec::pop` per endpoint, the warmest connection first;
//!   a connection whose pod closed it (or sent bytes nobody asked for) while idle is
//!   seen by its socket's readiness and dropped, and the next one is tried;
//! - the request's head is written in one call; its body streams as the pod reads it
//!   (never buffered: a pod that stops reading stops the client's body);
//! - the answer is parsed by httparse into a head whose values share the read buffer;
//!   1xx interim answers are skipped; a header line without a colon, a bad or
//!   conflicting `Content-Length` or a head over `MAX_HEAD` is an error (502);
//! - the body is framed per RFC 9112 6.3: none after HEAD, 1xx, 204 or 304; chunked
//!   (decoded, trailers passed on) when `Transfer-Encoding` ends in `chunked`; by
//!   `Content-Length`; else until the pod closes;
//! - a connection goes back when its answer has been read to the end and its request
//!   sent whole, not before, so it is never handed to two requests at once; one whose
//!   answer was 204 or 304 (a late body could follow), said `Connection: close`, was
//!   HTTP/1.0, was close-delimited, or left bytes after the answer, is closed;
//! - a request whose head could not be written on a pooled connection (the pod had
//!   closed it) is sent again on another; one whose connect failed comes back to the
//!   caller unsent ([`H1Error::Connect`]), who may try another endpoint with it.
//!
//! The request goes out in origin-form (`GET /path?query`); its `Host` was set by the
//! plan.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::drain_read::poll_read_bytes;
use super::{Body, BoxError, MAX_HEAD};

/// An idle connection to a pod is let go after this long.
pub const POOL_IDLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Header fields read in a pod's answer head (as hyper's client).
const MAX_HEADERS: usize = 100;
/// The first read of an answer; reads grow to [`MAX_READ`] while they fill the buffer.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// An idle connection keeps its read buffer only up to this size.
const KEEP_BUF: usize = 16 * 1024;

/// Why a request to an HTTP/1.1 pod got no response.
#[derive(Debug)]
pub enum H1Error {
    /// No connection to the endpoint (refused, unreachable, timeout): the request was
    /// not sent and is given back.
    Connect(Box<Request<Body>>, String),
    /// The request was (or may have been) written and no answer head came, or the
    /// answer head was not forwardable.
    Failed(String),
}

/// A connection to a pod, with the bytes read from it and not yet consumed.
struct PodConn {
    stream: TcpStream,
    buf: BytesMut,
    /// Its end is in the pod leg's map (`datapath::pod_leg`): what it sends goes into
    /// the pod socket's receive queue, and the pod's answers come back the same way.
    joined: bool,
    /// Made before the pod leg knew its local address, so its pod end is not in the
    /// map: closed after its first exchange rather than pooled (once per address).
    pod_end_missing: bool,
}

struct Idle {
    conn: PodConn,
    since: Instant,
}

/// The idle connections, per endpoint.
pub struct H1Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>, foldhash::fast::RandomState>>,
    max_idle: usize,
}

impl H1Pool {
    /// At most `max_idle` idle connections are kept per endpoint. Inside a runtime, a
    /// task lets idle ones go after [`POOL_IDLE`] (it ends with the pool).
    pub fn new(max_idle: usize) -> Arc<Self> {
        let pool = Arc::new(Self { idle: Mutex::new(HashMap::default()), max_idle });
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

    fn checkout(&self, endpoint: SocketAddr) -> Option<PodConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&endpoint)?;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < POOL_IDLE && quiet(&i.conn.stream) {
                return Some(i.conn);
            }
        }
        None
    }

    /// `bodiless`: the exchange just ended had no request body, so once its answer is
    /// read nothing of it is in flight either way: the moment to join the pod leg.
    fn checkin(&self, endpoint: SocketAddr, mut conn: PodConn, bodiless: bool) {
        if !conn.buf.is_empty() {
            return; // bytes after the answer: not an HTTP/1.1 peer to reuse
        }
        if conn.pod_end_missing {
            return;
        }
        if !conn.joined
            && bodiless
            && let Some(leg) = crate::datapath::pod_leg::installed()
        {
            conn.joined = leg.join(&conn.stream);
        }
        if conn.buf.capacity() > KEEP_BUF {
            conn.buf = BytesMut::new();
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(endpoint).or_default();
        // the oldest go first when a burst left more than are kept
        if list.len() >= self.max_idle {
            list.remove(0);
        }
        list.push(Idle { conn, since: Instant::now() });
    }

    /// Idle connections past [`POOL_IDLE`] or closed by their pod are dropped, and
    /// endpoints without any are forgotten. Returns how many connections are idle.
    pub fn sweep(&self) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < POOL_IDLE && quiet(&i.conn.stream));
            !list.is_empty()
        });
        idle.values().map(Vec::len).sum()
    }

    /// Sends `req` to `endpoint` on an idle connection, or a new one. `pass_fields`:
    /// the caller writes the answer's fields as the pod sent them when it can
    /// ([`PodFields`]).
    pub async fn request(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        req: Request<Body>,
        pass_fields: bool,
    ) -> Result<Response<Body>, H1Error> {
        let (parts, body) = req.into_parts();
        let upload = Upload::of(&parts, &body);
        let head = encode_head(&parts, upload);
        let mut conn = loop {
            let (mut conn, fresh) = match self.checkout(endpoint) {
                Some(c) => (c, false),
                // boxed: a new connection is rare next to a pooled one
                None => match Box::pin(connect(endpoint)).await {
                    Ok(c) => (c, true),
                    Err(e) => return Err(H1Error::Connect(Box::new(to_request(parts, body)), e)),
                },
            };
            match write_head(&mut conn.stream, &head).await {
                Ok(()) => break conn,
                // nothing written on a pooled connection: the pod had closed it; another one
                Err((0, _)) if !fresh => continue,
                Err((0, e)) => {
                    return Err(H1Error::Connect(
                        Box::new(to_request(parts, body)),
                        format!("write to {endpoint}: {e}"),
                    ));
                }
                Err((_, e)) => return Err(H1Error::Failed(format!("write to {endpoint}: {e}"))),
            }
        };
        conn.buf.clear();
        let body = (!body.is_end_stream()).then_some(body);
        let bodiless = body.is_none() && upload == Upload::Done;
        let mut ex =
            Exchange { conn, upload, body, out: Out::default(), sent: 0, cut: false, read_size: FIRST_READ, bodiless };
        let head_request = parts.method == Method::HEAD;
        let answer = poll_fn(|cx| ex.poll_answer_head(cx, head_request, pass_fields)).await;
        let (head, decode) = answer.map_err(|e| H1Error::Failed(format!("{endpoint}: {e}")))?;
        let reusable = decode.reusable
            && !matches!(head.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
            && !wants_close(&parts.headers);
        let mut body = PodBody { ex: Some(ex), decode: decode.body, back: reusable.then(|| (self.clone(), endpoint)) };
        // an empty body may never be polled: its connection is free already
        body.finish_if_done();
        let mut resp = Response::new(body.boxed());
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        if let Some(fields) = head.fields {
            resp.extensions_mut().insert(fields);
        }
        Ok(resp)
    }
}

/// Whether an idle connection has had no event since it went idle: its pod neither
/// closed it nor sent anything (either makes its socket readable). No syscall unless
/// something came.
fn quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        // readable: bytes, a FIN or an error; or readiness left from the last answer's read
        Poll::Ready(Ok(())) => {
            let mut b = [0u8; 1];
            matches!(stream.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

fn to_request(parts: http::request::Parts, body: Body) -> Request<Body> {
    Request::from_parts(parts, body)
}

async fn connect(endpoint: SocketAddr) -> Result<PodConn, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect {endpoint}: {e}")),
        Err(_) => return Err(format!("connect {endpoint}: timed out after {CONNECT_TIMEOUT:?}")),
    };
    let _ = stream.set_nodelay(true);
    let mut pod_end_missing = false;
    if let (Some(leg), Ok(local)) = (crate::datapath::pod_leg::installed(), stream.local_addr()) {
        pod_end_missing = !leg.note_local(local);
    }
    Ok(PodConn { stream, buf: BytesMut::new(), joined: false, pod_end_missing })
}

/// Writes the whole head; on an error, how much of it was written.
async fn write_head(stream: &mut TcpStream, head: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut done = 0;
    while done < head.len() {
        match poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, &head[done..])).await {
            Ok(0) => return Err((done, io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

/// How the request's body goes to the pod.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Upload {
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked: each frame a chunk, then the last chunk and any trailers.
    Chunked,
    /// Nothing (left) to send.
    Done,
}

impl Upload {
    /// The framing of the request (its `Transfer-Encoding` was checked: only `chunked`).
    fn of(parts: &http::request::Parts, body: &Body) -> Self {
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            return Upload::Chunked;
        }
        if let Some(v) = parts.headers.get(header::CONTENT_LENGTH) {
            // (hyper and h2 checked it: a number)
            return match v.to_str().ok().and_then(|s| s.trim().parse().ok()) {
                Some(0) | None => Upload::Done,
                Some(n) => Upload::Length(n),
            };
        }
        if body.is_end_stream() {
            return Upload::Done;
        }
        match body.size_hint().exact() {
            Some(n) => Upload::Length(n),
            None => Upload::Chunked,
        }
    }
}

/// The request head as the pod gets it: origin-form target, HTTP/1.1, the fields, and
/// the framing field the body needs when the request did not carry one.
fn encode_head(parts: &http::request::Parts, upload: Upload) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fields: usize = parts.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(parts.method.as_str().len() + target.len() + fields + 64);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (n, v) in &parts.headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framed =
        parts.headers.contains_key(header::CONTENT_LENGTH) || parts.headers.contains_key(header::TRANSFER_ENCODING);
    if !framed {
        match upload {
            Upload::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Upload::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            // a method whose request usually has content: say it has none (some servers want 411 otherwise)
            Upload::Done if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) => {
                out.extend_from_slice(b"content-length: 0\r\n")
            }
            Upload::Done => {}
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether the request asked the pod to close after answering (HEAD requests do).
fn wants_close(h: &HeaderMap) -> bool {
    has_token(h, &header::CONNECTION, b"close")
}

fn has_token(h: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    h.get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Output waiting for the socket: up to three pieces (a chunk's size line, its data,
/// its CRLF), written with one vectored write.
#[derive(Default)]
struct Out {
    parts: [Bytes; 3],
}

impl Out {
    fn is_empty(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    fn push(&mut self, pieces: [Bytes; 3]) {
        debug_assert!(self.is_empty());
        self.parts = pieces;
    }

    fn advance(&mut self, mut n: usize) {
        for p in &mut self.parts {
            let k = n.min(p.len());
            p.advance(k);
            n -= k;
        }
    }
}

/// One request and its answer on one pod connection.
struct Exchange {
    conn: PodConn,
    /// The request body still to send (None: all of it handed to `out`, or none).
    body: Option<Body>,
    upload: Upload,
    out: Out,
    /// Body bytes sent so far (checked against `Content-Length`).
    sent: u64,
    /// The pod stopped taking the body (a write failed): the rest is not sent and the
    /// connection is not reused.
    cut: bool,
    read_size: usize,
    /// The request had no body (see [`H1Pool::checkin`]).
    bodiless: bool,
}

/// The answer's head: its fields in `headers`, or (passed as they came) in `fields`.
struct AnswerHead {
    status: StatusCode,
    headers: HeaderMap,
    fields: Option<PodFields>,
}

/// A pod answer's fields as the pod sent them, for the direct server to write
/// without a `HeaderMap` (`h1_server.rs`; building the map and encoding it again were
/// a sixth of the instructions per request, issue 11). Given only when the caller
/// asked (a request whose route changes no answer field) and the answer has nothing
/// to rewrite: no `Transfer-Encoding`, at most one `Content-Length`, a `Connection`
/// that names only `close` or `keep-alive`, none of the other hop-by-hop fields and
/// no `Trailer`. Else the answer's fields come in the response's `HeaderMap`.
/// httparse checked the names and values as `HeaderName` and `HeaderValue` would.
#[derive(Clone, Debug)]
pub struct PodFields {
    head: Bytes,
    /// Each forwarded field's name and value (start, length) in `head`; the
    /// hop-by-hop `Connection` and `Keep-Alive` and the framing's `Content-Length`
    /// are not among them.
    fields: Vec<[u32; 4]>,
    /// The answer's `Content-Length`.
    pub length: Option<u64>,
    /// Whether a `Date` is among the fields.
    pub date: bool,
}

impl PodFields {
    /// The forwarded fields, name and value, in the pod's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|&[n, nl, v, vl]| {
            (&self.head[n as usize..(n + nl) as usize], &self.head[v as usize..(v + vl) as usize])
        })
    }

    /// The passed fields of an answer head on the wire (tests of their writers).
    #[cfg(test)]
    pub fn of_answer(wire: &[u8]) -> Option<Self> {
        match parse_answer(&mut BytesMut::from(wire), false, true) {
            Ok(Parsed::Head(h, _)) => h.fields,
            _ => None,
        }
    }

    /// The fields of `head` (spans as [`parse_answer`] records them) and whether the
    /// pod asked to close; None when a field needs the `HeaderMap` path.
    fn of(head: &Bytes, spans: &[(u32, u32, u32, u32)]) -> Option<(Self, bool)> {
        let mut p =
            PodFields { head: head.clone(), fields: Vec::with_capacity(spans.len()), length: None, date: false };
        let mut close = false;
        for &(n, nl, v, vl) in spans {
            let (name, value) = (&head[n as usize..(n + nl) as usize], &head[v as usize..(v + vl) as usize]);
            match FieldKind::of(name) {
                FieldKind::EndToEnd => {}
                FieldKind::Date => p.date = true,
                FieldKind::ContentLength => {
                    if p.length.is_some() {
                        return None; // repeated: the map path checks and merges them
                    }
                    p.length = Some(content_length(value)?);
                    continue;
                }
                FieldKind::Connection => {
                    for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                        if t.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"keep-alive") {
                            return None; // it names a field to remove
                        }
                    }
                    continue;
                }
                FieldKind::KeepAlive => continue,
                FieldKind::Rewritten => return None,
            }
            p.fields.push([n, nl, v, vl]);
        }
        Some((p, close))
    }
}

/// What a pod answer's field is to [`PodFields::of`].
#[derive(Debug, PartialEq)]
enum FieldKind {
    EndToEnd,
    Date,
    ContentLength,
    Connection,
    KeepAlive,
    /// Transfer-Encoding, TE, Upgrade, Trailer, Proxy-Authorization,
    /// Proxy-Connection, HTTP2-Settings: the `HeaderMap` path's to handle.
    Rewritten,
}

impl FieldKind {
    fn of(name: &[u8]) -> Self {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            4 if is("date") => Self::Date,
            14 if is("content-length") => Self::ContentLength,
            10 if is("connection") => Self::Connection,
            10 if is("keep-alive") => Self::KeepAlive,
            2 | 7 | 14 | 16 | 17 | 19
                if is("te")
                    || is("upgrade")
                    || is("trailer")
                    || is("http2-settings")
                    || is("proxy-connection")
                    || is("transfer-encoding")
                    || is("proxy-authorization") =>
            {
                Self::Rewritten
            }
            _ => Self::EndToEnd,
        }
    }
}

/// One `Content-Length` value: digits only (a list or anything else: the map path).
fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// How the answer's body is read, and whether the connection can serve another request.
struct Framing {
    body: Decode,
    reusable: bool,
}

impl Exchange {
    /// Sends what it can of the request body. Ready(Ok) once it is all sent, or once a
    /// write failed (the upload is cut there: the pod may still answer, e.g. 413
    /// before closing). An error: the client's body failed or broke its framing, and
    /// the request cannot be completed.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if !self.out.is_empty() {
                let slices = self.out.parts.each_ref().map(|b| io::IoSlice::new(b));
                match Pin::new(&mut self.conn.stream).poll_write_vectored(cx, &slices) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        // the pod stopped reading: no more body; its answer may follow
                        self.body = None;
                        self.out = Out::default();
                        self.cut = true;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        continue;
                    }
                }
            }
            let Some(body) = self.body.as_mut() else { return Poll::Ready(Ok(())) };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        self.sent += data.len() as u64;
                        match self.upload {
                            Upload::Length(n) if self.sent > n => {
                                return Poll::Ready(Err("request body longer than its Content-Length".into()));
                            }
                            Upload::Chunked => {
                                let size = Bytes::from(format!("{:x}\r\n", data.len()));
                                self.out.push([size, data, Bytes::from_static(b"\r\n")]);
                            }
                            _ => self.out.push([data, Bytes::new(), Bytes::new()]),
                        }
                    }
                    Err(frame) => {
                        if let (Upload::Chunked, Ok(trailers)) = (self.upload, frame.into_trailers()) {
                            self.body = None;
                            self.out.push([
                                Bytes::from_static(b"0\r\n"),
                                encode_fields(&trailers),
                                Bytes::from_static(b"\r\n"),
                            ]);
                        }
                    }
                },
                Some(Err(e)) => {
                    self.body = None;
                    return Poll::Ready(Err(e));
                }
                None => {
                    self.body = None;
                    match self.upload {
                        Upload::Length(n) if self.sent != n => {
                            return Poll::Ready(Err("request body shorter than its Content-Length".into()));
                        }
                        Upload::Chunked => {
                            self.out.push([Bytes::from_static(b"0\r\n\r\n"), Bytes::new(), Bytes::new()])
                        }
                        _ => {}
                    }
                }
            }
            if self.body.is_none() && self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Whether the whole request went to the pod.
    fn sent_whole(&self) -> bool {
        self.body.is_none() && self.out.is_empty() && !self.cut
    }

    /// Reads more of the answer into the buffer. Ready(Ok(0)): the pod closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let n = ready!(poll_read_bytes(&self.conn.stream, cx, &mut self.conn.buf, self.read_size))?;
        if n >= self.read_size && self.read_size < MAX_READ {
            self.read_size *= 2; // the reads fill the buffer: bulk, read more at once
        }
        Poll::Ready(Ok(n))
    }

    /// Sends the request body while waiting for the answer head; 1xx answers skipped.
    fn poll_answer_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        pass_fields: bool,
    ) -> Poll<Result<(AnswerHead, Framing), BoxError>> {
        loop {
            if let Poll::Ready(Err(e)) = self.poll_upload(cx) {
                return Poll::Ready(Err(e)); // the client's body failed: no request to answer
            }
            match parse_answer(&mut self.conn.buf, head_request, pass_fields)? {
                Parsed::Head(head, framing) => return Poll::Ready(Ok((head, framing))),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
            if self.conn.buf.len() >= MAX_HEAD {
                return Poll::Ready(Err(format!("answer head over {MAX_HEAD} bytes").into()));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err("the pod closed the connection before answering".into()));
            }
        }
    }
}

/// Trailer (or header) fields as they go on the wire, ending with the empty line's CRLF
/// left to the caller.
fn encode_fields(h: &HeaderMap) -> Bytes {
    let mut out = Vec::new();
    for (n, v) in h {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.into()
}

enum Parsed {
    Head(AnswerHead, Framing),
    /// A 1xx answer, consumed: the final one follows.
    Interim,
    Partial,
}

/// Parses an answer head at the start of `buf` (consumed when complete); its fields
/// as [`PodFields`] when `pass_fields` and they can be.
fn parse_answer(buf: &mut BytesMut, head_request: bool, pass_fields: bool) -> Result<Parsed, BoxError> {
    // offsets of names and values, so the values can share the head's bytes (neither
    // array is initialized first: 4.8 KB of stores per answer otherwise, measured)
    let mut spans = [std::mem::MaybeUninit::<(u32, u32, u32, u32)>::uninit(); MAX_HEADERS];
    let (len, code, http10, count) = {
        let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len =
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut fields) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
                Err(e) => return Err(format!("malformed answer head: {e}").into()),
            };
        let base = buf.as_ptr() as usize;
        for (s, f) in spans.iter_mut().zip(resp.headers.iter()) {
            s.write((
                (f.name.as_ptr() as usize - base) as u32,
                f.name.len() as u32,
                (f.value.as_ptr() as usize - base) as u32,
                f.value.len() as u32,
            ));
        }
        (len, resp.code.unwrap_or(0), resp.version == Some(0), resp.headers.len())
    };
    let status = StatusCode::from_u16(code).map_err(|_| format!("bad status {code}"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("101 Switching Protocols to a request that asked for no upgrade".into());
        }
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let head = buf.split_to(len).freeze();
    if pass_fields {
        // SAFETY: the first `count` spans were written above, one per parsed field;
        // MaybeUninit<T> has T's layout.
        let spans = unsafe { std::slice::from_raw_parts(spans.as_ptr().cast::<(u32, u32, u32, u32)>(), count) };
        if let Some((fields, close)) = PodFields::of(&head, spans) {
            let keep = !http10 && !close;
            let framing = if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                Framing { body: Decode::Done, reusable: keep }
            } else {
                by_length(fields.length, keep)
            };
            return Ok(Parsed::Head(AnswerHead { status, headers: HeaderMap::new(), fields: Some(fields) }, framing));
        }
    }
    let mut headers = HeaderMap::with_capacity(count);
    for span in &spans[..count] {
        // SAFETY: the first `count` spans were written above, one per parsed field.
        let (n, nl, v, vl) = unsafe { span.assume_init() };
        let name = HeaderName::from_bytes(&head[n as usize..(n + nl) as usize])
            .map_err(|_| "invalid header name in the answer")?;
        let value = HeaderValue::from_maybe_shared(head.slice(v as usize..(v + vl) as usize))
            .map_err(|_| "invalid header value in the answer")?;
        headers.append(name, value);
    }
    let framing = framing(&headers, status, head_request, http10)?;
    Ok(Parsed::Head(AnswerHead { status, headers, fields: None }, framing))
}

/// The answer body's framing, RFC 9112 6.3.
fn framing(h: &HeaderMap, status: StatusCode, head_request: bool, http10: bool) -> Result<Framing, BoxError> {
    let keep = !http10 && !has_token(h, &header::CONNECTION, b"close");
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing { body: Decode::Done, reusable: keep });
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        let last = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|c| !c.is_empty());
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => {
                Framing { body: Decode::Chunked(Chunk::Size), reusable: keep }
            }
            // not chunked last: the body runs until the close (reframe.rs refuses it)
            _ => Framing { body: Decode::Close, reusable: false },
        });
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length in the answer".into());
            }
            let n: u64 = std::str::from_utf8(part).expect("digits").parse().map_err(|_| "Content-Length overflow")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values in the answer".into());
            }
            length = Some(n);
        }
    }
    Ok(by_length(length, keep))
}

/// A body framed by its `Content-Length`, or (none) by the pod's close.
fn by_length(length: Option<u64>, keep: bool) -> Framing {
    match length {
        Some(0) => Framing { body: Decode::Done, reusable: keep },
        Some(n) => Framing { body: Decode::Length(n), reusable: keep },
        None => Framing { body: Decode::Close, reusable: false },
    }
}

/// Where the answer's body stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Decode {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    Chunked(Chunk),
    /// Until the pod closes.
    Close,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// Bytes left of a chunk's data.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// What the chunked decoder made of the buffer.
#[derive(Debug, PartialEq)]
enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// More bytes are needed.
    Need,
    End,
}

/// Decodes what `buf` holds of a chunked body (pure, but for `buf`).
fn decode_chunked(state: &mut Chunk, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match *state {
            Chunk::Size => {
                let Some(eol) = memchr::memchr(b'\n', buf) else {
                    return if buf.len() > MAX_CHUNK_LINE { Err("chunk-size line too long") } else { Ok(Step::Need) };
                };
                if eol > MAX_CHUNK_LINE {
                    return Err("chunk-size line too long");
                }
                let line = &buf[..eol];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                if digits == 0 {
                    return Err("bad chunk size");
                }
                if digits > 16 {
                    return Err("chunk size overflow");
                }
                let rest = line[digits..].trim_ascii_start();
                if !rest.is_empty() && rest[0] != b';' {
                    return Err("bad chunk size");
                }
                let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).expect("hex digits"), 16)
                    .map_err(|_| "chunk size overflow")?;
                buf.advance(eol + 1);
                *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::Need);
                }
                let n = (left as usize).min(buf.len());
                let data = buf.split_to(n).freeze();
                *state = if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
                return Ok(Step::Data(data));
            }
            Chunk::DataEnd => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                } else if buf.starts_with(b"\n") {
                    buf.advance(1);
                } else if buf.len() < 2 && (buf.is_empty() || buf[0] == b'\r') {
                    return Ok(Step::Need);
                } else {
                    return Err("chunk data not followed by CRLF");
                }
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                // the trailer section ends with an empty line; commonly it is only that
                if buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
                    buf.advance(if buf[0] == b'\r' { 2 } else { 1 });
                    return Ok(Step::End);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for f in fields.iter() {
                            let (Ok(n), Ok(v)) =
                                (HeaderName::from_bytes(f.name.as_bytes()), HeaderValue::from_bytes(f.value))
                            else {
                                return Err("invalid trailer field");
                            };
                            trailers.append(n, v);
                        }
                        buf.advance(len);
                        return Ok(if trailers.is_empty() { Step::End } else { Step::Trailers(trailers) });
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(Step::Need),
                    Ok(httparse::Status::Partial) => return Err("trailer section too large"),
                    Err(_) => return Err("malformed trailer section"),
                }
            }
        }
    }
}

/// A pod's answer body; its connection goes back to the pool when the answer has been
/// read to the end (dropped before that, the connection closes with it).
struct PodBody {
    ex: Option<Exchange>,
    decode: Decode,
    back: Option<(Arc<H1Pool>, SocketAddr)>,
}

impl PodBody {
    /// At the end of the answer: the connection back to the pool if it can serve
    /// another request (its request was sent whole), else closed.
    fn finish_if_done(&mut self) {
        if self.decode != Decode::Done {
            return;
        }
        if let (Some(ex), Some((pool, endpoint))) = (self.ex.take(), self.back.take())
            && ex.sent_whole()
        {
            pool.checkin(endpoint, ex.conn, ex.bodiless);
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.ex = None;
        self.back = None;
        self.decode = Decode::Done;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl HttpBody for PodBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(ex) = this.ex.as_mut() else { return Poll::Ready(None) };
            // the rest of the request body goes on while the answer streams
            if let Poll::Ready(Err(e)) = ex.poll_upload(cx) {
                return this.fail(e);
            }
            let ex = this.ex.as_mut().expect("checked above");
            let step = match &mut this.decode {
                Decode::Done => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                Decode::Length(left) if !ex.conn.buf.is_empty() => {
                    let n = (*left as usize).min(ex.conn.buf.len());
                    let data = ex.conn.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.decode = Decode::Done;
                        this.finish_if_done();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decode::Close if !ex.conn.buf.is_empty() => {
                    let data = ex.conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decode::Length(_) | Decode::Close => Step::Need,
                Decode::Chunked(state) => match decode_chunked(state, &mut ex.conn.buf) {
                    Ok(s) => s,
                    Err(e) => return this.fail(format!("the pod's chunked body: {e}")),
                },
            };
            match step {
                Step::Data(d) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Step::Trailers(t) => {
                    this.decode = Decode::Done;
                    this.finish_if_done();
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Step::End => {
                    this.decode = Decode::Done;
                    continue;
                }
                Step::Need => {}
            }
            let ex = this.ex.as_mut().expect("checked above");
            match ready!(ex.poll_fill(cx)) {
                Ok(0) if this.decode == Decode::Close => {
                    // the end of a close-delimited body; the connection is not reused
                    this.back = None;
                    this.decode = Decode::Done;
                }
                Ok(0) => return this.fail("the pod closed the connection inside the body"),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
