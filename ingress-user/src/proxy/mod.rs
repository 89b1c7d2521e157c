//! The L7 proxy, in phases: accept, read the request head (hyper), select a rule
//! in the current routing table, apply filters, pick a backend and an endpoint,
//! forward over a pooled connection straight to the pod IP, filter the response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::datapath::Joiner;
use crate::routing::TableHandle;
use crate::routing::filters::Mirror;
use crate::telemetry::ProxyMetrics;
use crate::telemetry::prometheus::{Counted, Metrics};
use error::ProxyError;

/// What a request was routed to, for metrics: `namespace/route#rule` and the backend.
struct Tag {
    route: Arc<str>,
    backend: Arc<str>,
    /// The route and backend's series, once looked up (for the request body's bytes).
    handles: Option<Arc<crate::telemetry::prometheus::RouteHandles>>,
}

impl Default for Tag {
    fn default() -> Self {
        Self { route: plan::unlabelled(), backend: plan::unlabelled(), handles: None }
    }
}

mod conn;
mod endpoints;
pub mod error;
mod forward;
pub mod grpc_status;
pub mod plan;
mod reframe;
// the retry decision after each attempt (pure)
mod retry;
mod sources;
mod splice_route;
mod upgrade;

// TLS passthrough (TLSRoute): the ClientHello's SNI, then the connection joined to a pod
pub mod client_hello;
mod passthrough;
// HTTPS listeners (issue 12): TLS termination, SNI certificates, the ALPN dispatch
pub mod tls;

// Hostile requests (issue 11): refused before routing, paths normalized, client body errors
mod client_body;
pub mod normalize;
pub mod refuse;

// HTTP/2 (issue 12): h2c and h2 clients, h2c backends
mod drain_read;
mod h1_client;
// plain HTTP/1.1 requests without a body, served without hyper (issue 11)
mod h1_server;
pub mod h2;
mod h2_client;

// the thread-per-core runtime of the L7 data path (issue 11): worker threads, their
// SO_REUSEPORT listeners and thread-local pod pools
pub mod workers;

pub type Body = BoxBody<Bytes, BoxError>;

/// A request as hyper's server hands it over, with the proxy's body type.
pub(crate) fn boxed(req: Request<Incoming>) -> Request<Body> {
    req.map(|b| b.map_err(Into::into).boxed())
}

/// Who writes a response to the client: hyper's server, or the direct path
/// (`h1_server.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    Hyper,
    Direct,
}
/// A body's error: hyper's (a client's body), or the pod client's (`h1_client.rs`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest request head accepted; larger ones get 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// Default time a client has to send a complete request head; a keep-alive
/// connection idle that long is closed too (`--head-timeout`).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How the proxy behaves (from the command line and config file; a reload swaps it).
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// Client connections one source address may hold open (0: no cap).
    pub max_connections_per_source: u32,
    /// Time a client has to send a whole request head; also the keep-alive idle timeout.
    pub head_timeout: Duration,
    /// Add X-Forwarded-For/-Proto/-Host. Off lets splice-safe hosts be joined in the kernel.
    pub forwarded_headers: bool,
    /// Add an X-Request-Id (random, 128 bits, hex) to requests that have none.
    pub request_ids: bool,
    /// HTTP/2 limits (`--h2-*`).
    pub h2: h2::H2Config,
    /// How upgraded and splice-safe pairs are joined (`--join-mode`).
    pub join_mode: crate::datapath::join_choice::JoinMode,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_connections_per_source: DEFAULT_MAX_PER_SOURCE,
            head_timeout: HEAD_TIMEOUT,
            forwarded_headers: true,
            request_ids: false,
            h2: h2::H2Config::default(),
            join_mode: Default::default(),
        }
    }
}

/// State shared by every connection: the current table (swapped whole on change),
/// the upstream connection pool, counters.
pub struct Proxy {
    table: TableHandle,
    /// Swapped whole by a config reload ([`Proxy::set_config`]).
    config: arc_swap::ArcSwap<ProxyConfig>,
    pub metrics: ProxyMetrics,
    /// Prometheus families for `/metrics`.
    pub prom: Metrics,
    h1: Arc<h1_client::H1Pool>,
    /// Connections to h2c backends (`appProtocol: kubernetes.io/h2c`).
    h2c: Arc<h2_client::H2Pool>,
    shutdown: tokio::sync::watch::Sender<bool>,
    joiner: Arc<Joiner>,
    /// Round robin over each backend's endpoints.
    endpoints: endpoints::EndpointCursors,
    /// Open client connections per source address, and which of them are idle.
    sources: Arc<sources::Sources>,
    /// rustls configurations of the TLS mappings (HTTPS listeners)
    tls: tls::TlsConfigs,
    /// Connections accepted per worker (`workers.rs`).
    pub worker_stats: workers::WorkerStats,
}

/// Idle upstream connections kept per pod endpoint (more are closed when they go idle).
pub const POOL_MAX_IDLE: usize = 256;

/// Client connections one source address may hold open (`--max-connections-per-source`).
pub const DEFAULT_MAX_PER_SOURCE: u32 = 1024;

impl Proxy {
    /// `joiner` joins upgraded and splice-safe connections (in the kernel when the
    /// eBPF dataplane loaded its splice program, else in user space).
    pub fn new(config: ProxyConfig, table: TableHandle, joiner: Joiner) -> Arc<Self> {
        // per pod endpoint: idle connections kept 30 s, at most POOL_MAX_IDLE of them
        let h1 = h1_client::H1Pool::new(POOL_MAX_IDLE);
        Arc::new(Self {
            table,
            metrics: ProxyMetrics::default(),
            prom: Metrics::default(),
            h1,
            h2c: Default::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            joiner: Arc::new(joiner),
            endpoints: Default::default(),
            sources: sources::Sources::new(config.max_connections_per_source),
            config: arc_swap::ArcSwap::from_pointee(config),
            tls: Default::default(),
            worker_stats: Default::default(),
        })
    }

    /// The HTTP/1.1 pod pool: this worker's own (`workers.rs`), else the shared one.
    fn h1(&self) -> Arc<h1_client::H1Pool> {
        workers::local_h1(self).unwrap_or_else(|| self.h1.clone())
    }

    /// The h2c pod pool: this worker's own, else the shared one.
    fn h2c(&self) -> Arc<h2_client::H2Pool> {
        workers::local_h2c(self).unwrap_or_else(|| self.h2c.clone())
    }

    pub fn config(&self) -> Arc<ProxyConfig> {
        self.config.load_full()
    }

    /// New limits and headers (a config reload): new connections and requests use them.
    pub fn set_config(&self, config: ProxyConfig) {
        self.sources.set_max(config.max_connections_per_source);
        self.config.store(Arc::new(config));
    }

    /// Accepts connections on `listener` and serves listen mapping number `index`,
    /// until [`Proxy::shutdown`]: then it stops accepting, and each connection
    /// finishes its in-flight request and closes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, index: usize) {
        let mut stop = self.shutdown.subscribe();
        let worker = workers::current(&self);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => return,
            };
            self.worker_stats.accepted(worker);
            let Some(source) = self.admit(peer) else {
                tracing::debug!(%peer, "connection refused: too many busy connections from this source");
                drop(stream);
                continue;
            };
            let tracked = source.tracked.clone();
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let stop = self.shutdown.subscribe();
            let guard = self.metrics.connection();
            let proxy_timeout = self.config.load().head_timeout.max(Duration::from_millis(1));
            tokio::spawn(async move {
                let _guard = (guard, source.slot);
                // a TLS passthrough address: the ClientHello's SNI picks the pod (a plain
                // connection there is HTTP/1.1 when the address also maps HTTP listeners)
                // (boxed, like the TLS and h2 paths below: the task of every connection is
                // as large as its largest branch, and idle plain connections must stay small)
                if proxy.passthrough_served(index) {
                    // (or an SNI for an HTTPS listener of the same port: terminated, the bytes read replayed)
                    match Box::pin(proxy.serve_passthrough(stream, index, proxy_timeout, &tracked)).await {
                        Some(passthrough::Handoff::Http(io)) => {
                            let (stream, prefix) = io.into_parts();
                            proxy.serve_plain(stream, prefix, index, peer, proxy_timeout, stop, tracked).await
                        }
                        Some(passthrough::Handoff::Tls(io)) => {
                            Box::pin(proxy.serve_tls_io(io, index, peer, proxy_timeout, stop, tracked)).await
                        }
                        None => {}
                    }
                    return;
                }
                // an HTTPS address: TLS first, then HTTP/1.1 or h2 as ALPN chose (proxy/tls.rs)
                if proxy.tls_mapping(index) {
                    return Box::pin(proxy.serve_tls(stream, index, peer, proxy_timeout, stop, tracked)).await;
                }
                // h2c with prior knowledge: the preface is looked at before anything reads
                let mut stream = stream;
                let mut sniff_stop = proxy.shutdown.subscribe();
                let prefix = match h2::sniff(&mut stream, proxy_timeout, &mut sniff_stop, &tracked).await {
                    h2::Sniffed::H2(prefix) => {
                        let io = conn::ClientIo::new(stream, prefix);
                        // boxed: HTTP/1.1 connection tasks do not carry its size
                        return Box::pin(proxy.serve_h2(io, index, peer, "http", None, tracked)).await;
                    }
                    h2::Sniffed::Http1(prefix) => prefix,
                    h2::Sniffed::Closed => return,
                };
                let (stream, prefix) = if proxy.splice_possible(index) {
                    // busy while its first head is read and while it is spliced: never evicted
                    let busy = tracked.activity.begin();
                    // boxed: its read buffer is not part of every connection's task
                    match Box::pin(proxy.peek_first(stream, prefix, index, proxy_timeout)).await {
                        splice_route::Peeked::Done => return,
                        splice_route::Peeked::Proxy(io) => {
                            drop(busy);
                            io.into_parts()
                        }
                    }
                } else {
                    (stream, prefix)
                };
                proxy.serve_plain(stream, prefix, index, peer, proxy_timeout, stop, tracked).await;
            });
        }
    }

    /// Serves a plain HTTP/1.1 connection: the direct path (`h1_server.rs`) while its
    /// requests need nothing of hyper, hyper from the first one that does until hyper
    /// parks the connection idle.
    #[allow(clippy::too_many_arguments)]
    async fn serve_plain(
        self: Arc<Self>,
        mut stream: tokio::net::TcpStream,
        mut prefix: Bytes,
        index: usize,
        peer: SocketAddr,
        head_timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        tracked: Arc<sources::Tracked>,
    ) {
        loop {
            if h1_server::enabled() {
                match self.serve_h1(stream, prefix, index, peer, head_timeout, &mut stop, &tracked).await {
                    h1_server::Served::Closed => return,
                    h1_server::Served::Hyper(s, p) => (stream, prefix) = (s, p),
                }
            }
            let io = conn::ClientIo::new(stream, prefix);
            match self.clone().serve_http(io, index, peer, head_timeout, stop.clone(), tracked.clone()).await {
                Some(parked) => (stream, prefix) = parked,
                None => return,
            }
        }
    }

    /// Serves one client connection with hyper: HTTP/1.1, upgrades, graceful close.
    /// Returns the connection once hyper parked it idle and the client sent again.
    async fn serve_http(
        self: Arc<Self>,
        io: conn::ClientIo,
        index: usize,
        peer: SocketAddr,
        head_timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        tracked: Arc<sources::Tracked>,
    ) -> Option<(tokio::net::TcpStream, Bytes)> {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            // ClientIo times heads out and answers 408; hyper's timer would close silently
            .header_read_timeout(None)
            // a head over 64 KiB: 431
            .max_buf_size(MAX_HEAD)
            .keep_alive(true);
        let park_after = (head_timeout / 2).min(PARK_AFTER);
        // one Activity for the connection's life: the per-source cap reads it
        let activity = tracked.activity.clone();
        let proxy = self.clone();
        let svc = {
            let activity = activity.clone();
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                let activity = activity.clone();
                // boxed: an idle keep-alive connection then holds a pointer, not the
                // space of a request in flight
                Box::pin(async move {
                    Ok::<_, Infallible>(proxy.handle(boxed(req), index, peer, &activity, Writer::Hyper).await)
                })
            })
        };
        // a head not complete in time (slowloris): 408; an idle keep-alive: closed
        let watched = io.watch(activity.clone(), head_timeout);
        // boxed: a parked connection's task then holds a pointer, not hyper's state
        let mut conn = Box::pin(builder.serve_connection(TokioIo::new(watched), svc).with_upgrades());
        let result = tokio::select! {
            r = &mut conn => r,
            _ = stopped(&mut stop) => {
                // Finish the request in flight, then close; idle connections close now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = tracked.evict.notified() => {
                // Chosen to make room for a new connection of this source while idle
                // (if a request began since, it is finished first).
                tracing::debug!(%peer, "idle connection closed: its source is at --max-connections-per-source");
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = parkable(&activity, park_after) => {
                // Idle: take the socket back from hyper, which keeps ~16 KiB of
                // buffers per connection, and wait for the next request without them.
                let parts = std::pin::Pin::into_inner(conn).into_parts()?;
                self.metrics.parked();
                let hyper::server::conn::http1::Parts { io: watched, read_buf, .. } = parts;
                let (stream, rest) = watched.into_inner().into_parts();
                let mut prefix = bytes::BytesMut::from(&read_buf[..]);
                prefix.extend_from_slice(&rest);
                // hyper's read buffer (8 KiB or more) must not live on while parked
                drop((read_buf, rest));
                if prefix.is_empty() {
                    let left = head_timeout.saturating_sub(activity.idle_for());
                    tokio::select! {
                        r = tokio::time::timeout(left, stream.readable()) => {
                            if !matches!(r, Ok(Ok(()))) {
                                return None; // idle keep-alive timeout: close quietly
                            }
                        }
                        _ = stopped(&mut stop) => return None,
                        _ = tracked.evict.notified() => {
                            tracing::debug!(%peer, "parked connection closed: its source is at --max-connections-per-source");
                            return None;
                        }
                    }
                }
                activity.resumed();
                return Some((stream, prefix.freeze()));
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
        None
    }

    /// A connection place for `peer`'s address (its oldest idle connection closed to
    /// make room when it is at its cap), or None when all its connections are busy.
    fn admit(&self, peer: SocketAddr) -> Option<sources::Admitted> {
        let admitted = self.sources.admit(peer.ip());
        match &admitted {
            None => self.metrics.refused(),
            Some(a) if a.evicted => self.metrics.evicted(),
            Some(_) => {}
        }
        admitted
    }

    pub fn joiner(&self) -> &Arc<Joiner> {
        &self.joiner
    }

    /// Stops accepting and asks every connection to close after its in-flight
    /// request. Returns once no client connection is left, or after `drain`.
    pub async fn shutdown(&self, drain: Duration) -> usize {
        self.shutdown.send_replace(true);
        let start = std::time::Instant::now();
        while self.metrics.snapshot().connections_active > 0 && start.elapsed() < drain {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.metrics.snapshot().connections_active as usize
    }

    async fn handle(
        &self,
        req: Request<Body>,
        index: usize,
        peer: SocketAddr,
        activity: &Arc<conn::Activity>,
        writer: Writer,
    ) -> Response<Body> {
        self.metrics.request();
        let start = std::time::Instant::now();
        let mut tag = Tag::default();
        // a gRPC call gets the proxy's own answers as gRPC statuses (`grpc_status.rs`)
        let grpc = grpc_status::answer_content_type(req.headers());
        // an error of the body waits for hyper's flush (HTTP/1.1 under hyper; the
        // direct path writes each piece out before it polls the body again)
        let wait_flush = req.version() != http::Version::HTTP_2 && writer == Writer::Hyper;
        let (in_flight, length_and_chunked) = activity.begin();
        let resp = if length_and_chunked {
            // hyper would read it as chunked; a request that says both is refused
            let mut r = local(StatusCode::BAD_REQUEST, "both Content-Length and Transfer-Encoding\n");
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        } else {
            match refuse::check(req.method(), req.uri(), req.version(), req.headers()) {
                Ok(refuse::Accepted::Route) => self.route_and_forward(req, index, peer, &mut tag, writer).await,
                Ok(refuse::Accepted::OptionsAsterisk) => local_response(plan::Local::options_asterisk()),
                Err(r) => local_response(plan::Local::refused(r)),
            }
        };
        let status = resp.status().as_u16();
        self.metrics.response(status);
        let handles = tag.handles.take().unwrap_or_else(|| self.prom.handles(&tag.route, &tag.backend));
        handles.record(&self.prom, status, start.elapsed());
        let resp = match grpc {
            Some(content_type) => as_grpc(resp, content_type),
            None => resp,
        };
        let out = handles.bytes_out.clone();
        // the request stays in flight (no head timeout) until its body is done
        // (and an error of its body waits for what hyper queued to be written out)
        resp.map(|b| conn::ToClient::new(Counted::new(b, out), in_flight, wait_flush).boxed())
    }

    async fn route_and_forward(
        &self,
        mut req: Request<Body>,
        index: usize,
        peer: SocketAddr,
        tag: &mut Tag,
        writer: Writer,
    ) -> Response<Body> {
        let table = self.table.load();
        let Some(lt) = table.listeners.get(index) else {
            return ProxyError::ListenerMissing.into();
        };
        let config = self.config.load();
        // requests served over TLS carry tls::Secure (proxy/tls.rs): 421 for another listener's host
        let secure = req.extensions().get::<tls::Secure>();
        let scheme = if secure.is_some() {
            "https"
        } else {
            req.extensions().get::<plan::ClientScheme>().map_or("http", |s| s.0)
        };
        let authority =
            req.uri().authority().map(|a| a.as_str()).or_else(|| req.headers().get(header::HOST)?.to_str().ok());
        if let Some(l) = secure.zip(authority).and_then(|(s, host)| tls::misdirected(lt, s, host)) {
            return local_response(l);
        }
        let opts =
            plan::PlanOptions { forwarded_headers: config.forwarded_headers, request_ids: config.request_ids, scheme };
        drop(config);
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let head = plan::Head { method: &method, uri: &uri, headers: req.headers_mut(), peer };
        let planned = plan::plan(lt, head, opts, &mut ProxyChoices(&self.endpoints));
        drop(table);
        tag.route = planned.route;
        tag.backend = planned.backend;
        let f = match planned.plan {
            plan::Plan::Local(l) => return local_response(l),
            plan::Plan::Forward(f) => f,
        };
        *req.uri_mut() = f.uri.clone();
        if let Some(proto) = f.upgrade.clone() {
            // (boxed, as the mirror below: rare paths do not grow every request's future,
            // which is moved into its box once per request)
            return Box::pin(self.upgrade(req, proto, f.endpoint, &f.backend().name)).await;
        }
        let req = if f.mirrors.is_empty() {
            req
        } else {
            match Box::pin(self.mirror(req, &f.mirrors, f.path_and_query())).await {
                Ok(r) => r,
                Err(resp) => return resp,
            }
        };
        let handles = self.prom.handles(&tag.route, &tag.backend);
        let bytes_in = handles.bytes_in.clone();
        tag.handles = Some(handles);
        let watch = client_body::BodyWatch::for_body(req.body());
        let mut req = req.map(|b| watch.wrap(Counted::new(b, bytes_in).boxed()));
        if req.method() == http::Method::HEAD {
            // a pod's body after a HEAD answer must never be read as the next answer on
            // a pooled connection: that connection is used once (proxy/reframe.rs)
            req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }

        // the direct server writes the pod's fields as they came when nothing here
        // changes them (`h1_client::PodFields`; hyper's encoder needs a HeaderMap)
        let pass_fields = writer == Writer::Direct && f.response_modifiers.is_empty() && f.response_headers.is_empty();
        let mut resp = match self.forward(req, &f.rule, f.backend(), f.endpoint, f.path_and_query(), pass_fields).await
        {
            Ok(r) => r,
            // the client's body was malformed (a bad chunk): its error, not the pod's
            Err(_) if watch.failed() => return client_body::malformed(),
            Err(resp) => return resp,
        };
        if let reframe::Verdict::Reject(why) = reframe::sanitize(resp.headers_mut()) {
            self.metrics.backend_error();
            tracing::debug!(endpoint = %f.endpoint, backend = %f.backend().name, why, "502: the pod's answer is not forwardable");
            return ProxyError::BackendFailed.into();
        }
        plan::strip_hop_by_hop(resp.headers_mut());
        for m in &f.response_modifiers {
            m.apply(resp.headers_mut());
        }
        for (n, v) in &f.response_headers {
            resp.headers_mut().insert(n.clone(), v.clone());
        }
        resp
    }

    /// Sends a copy of `req` to each mirror (fire and forget) and returns the request
    /// to forward. Bodies are buffered when their length is known and at most
    /// [`MIRROR_BODY_LIMIT`]; other requests are forwarded unmirrored. `Err`: the
    /// client's body could not be read (the answer to give it).
    async fn mirror(&self, req: Request<Body>, mirrors: &[Mirror], pq: &str) -> Result<Request<Body>, Response<Body>> {
        let len =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        let bufferable = !chunked && len.unwrap_or(0) <= MIRROR_BODY_LIMIT;
        if !bufferable {
            tracing::debug!(?len, chunked, "request not mirrored: body too large or of unknown length");
            return Ok(req);
        }
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            // The client went away mid-body or framed it badly: nothing is forwarded.
            Err(e) => {
                tracing::debug!(error = %e, "reading the request body for mirroring failed");
                return Err(client_body::malformed());
            }
        };
        for m in mirrors {
            let crate::routing::BackendTarget::Endpoints(eps) = &m.target else { continue };
            if eps.is_empty() {
                continue;
            }
            let ep = eps[fastrand::usize(..eps.len())];
            let Ok(uri) = format!("http://{ep}{pq}").parse::<Uri>() else { continue };
            let mut copy = Request::builder().method(parts.method.clone()).uri(uri).version(parts.version);
            if let Some(h) = copy.headers_mut() {
                *h = parts.headers.clone();
            }
            let Ok(copy) = copy.body(full(bytes.clone())) else { continue };
            let (h1, h2c, protocol) = (self.h1(), self.h2c(), m.protocol);
            let backend = m.backend.clone();
            tokio::spawn(async move {
                let sent = async {
                    match protocol {
                        crate::routing::BackendProtocol::H2c => h2c
                            .request(ep, copy)
                            .await
                            .map(|r| r.map(|b| b.map_err(Into::into).boxed()))
                            .map_err(|e| e.to_string()),
                        crate::routing::BackendProtocol::Http1 => {
                            h1.request(ep, copy, false).await.map_err(|e| match e {
                                h1_client::H1Error::Connect(_, e) => e,
                                h1_client::H1Error::Failed(e) => e,
                            })
                        }
                    }
                };
                match tokio::time::timeout(MIRROR_TIMEOUT, sent).await {
                    Ok(Ok(resp)) => {
                        // Drain so the connection returns to the pool.
                        let _ = resp.into_body().collect().await;
                    }
                    Ok(Err(e)) => tracing::debug!(%backend, error = %e, "mirror request failed"),
                    Err(_) => tracing::debug!(%backend, "mirror request timed out"),
                }
            });
        }
        Ok(Request::from_parts(parts, full(bytes)))
    }
}

/// Largest request body copied to mirrors.
pub const MIRROR_BODY_LIMIT: u64 = 1 << 20;
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// Resolves once shutdown was asked (the `Ref` of `wait_for` must not live across awaits).
/// An idle keep-alive connection is taken back from hyper after this long (or half
/// the head timeout, when that is shorter).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Resolves once the connection can be parked (see [`conn::Activity::parkable`]).
async fn parkable(activity: &conn::Activity, after: Duration) {
    loop {
        let idle = activity.idle_for();
        tokio::time::sleep(after.saturating_sub(idle).max(after / 4)).await;
        if activity.parkable(after) {
            return;
        }
    }
}

async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn empty() -> Body {
    full(Bytes::new())
}

/// A response the proxy made itself ([`grpc_status::LocalAnswer`]) in its gRPC form.
fn as_grpc(resp: Response<Body>, content_type: &'static str) -> Response<Body> {
    let Some(answer) = resp.extensions().get::<grpc_status::LocalAnswer>().copied() else { return resp };
    let Some((status, fields)) = grpc_status::grpc_answer(&answer, content_type) else { return resp };
    let mut out = Response::builder().status(status).body(empty()).expect("valid gRPC answer");
    out.headers_mut().extend(fields);
    if let Some(c) = resp.headers().get(header::CONNECTION) {
        out.headers_mut().insert(header::CONNECTION, c.clone());
    }
    out
}

/// The response of a [`plan::Local`].
fn local_response(l: plan::Local) -> Response<Body> {
    let mut b = Response::builder().status(l.status);
    if !l.body.is_empty() {
        b = b.header(header::CONTENT_TYPE, "text/plain");
    }
    let mut resp = b.body(full(Bytes::from_static(l.body.as_bytes()))).expect("valid local response");
    resp.extensions_mut().insert(grpc_status::LocalAnswer { status: l.status, message: l.body });
    for (n, v) in l.headers {
        resp.headers_mut().insert(n, v);
    }
    if l.close {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The proxy's choices for [`plan::plan`]: fastrand for weights and sampling, the
/// round-robin cursors for endpoints.
struct ProxyChoices<'a>(&'a endpoints::EndpointCursors);

impl plan::Choices for ProxyChoices<'_> {
    fn random(&mut self) -> u64 {
        fastrand::u64(..)
    }

    fn endpoint(&mut self, backend: &crate::routing::Backend) -> Option<SocketAddr> {
        self.0.pick(backend)
    }
}

impl From<ProxyError> for Response<Body> {
    fn from(e: ProxyError) -> Self {
        let (status, body) = e.answer();
        local(status, body)
    }
}

/// A response the proxy makes itself.
pub fn local(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .extension(grpc_status::LocalAnswer { status, message: body })
        .body(Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}).boxed())
        .expect("valid local response")
}
