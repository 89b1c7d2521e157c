//! The per-request decision, pure: from the request head and the listener's table to
//! a [`Plan`]: answer here (a local response or a redirect), or forward to a backend
//! endpoint with the head rewritten by the filters. No sockets, no async: the
//! connection code executes the plan (`mod.rs`, `forward.rs`, `upgrade.rs`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

use super::MAX_HEAD;
use crate::routing::filters::{Filter, HeaderModifier, Mirror, RedirectInput, modify_path};
use crate::routing::{Backend, BackendTarget, ListenerTable, RequestHead, Rule, request_host};

/// What the plan needs besides the request: the proxy's options and its choices
/// (random numbers for weights and mirror sampling, the endpoint rotation).
pub trait Choices {
    fn random(&mut self) -> u64;
    fn endpoint(&mut self, backend: &Backend) -> Option<SocketAddr>;
}

#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// Add X-Forwarded-For/-Proto/-Host.
    pub forwarded_headers: bool,
    /// Add an X-Request-Id to requests that have none.
    pub request_ids: bool,
    /// The client's scheme (`http`, or `https` behind TLS): X-Forwarded-Proto, and a
    /// redirect's scheme when the filter names none.
    pub scheme: &'static str,
}

/// The scheme a request reached the proxy with (`http` or `https`), put in the
/// request's extensions by the connection code that knows (`h2.rs`); absent: `http`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientScheme(pub &'static str);

/// The request as the plan sees it. The plan rewrites `headers` in place (filters,
/// Host, X-Forwarded-*, hop-by-hop fields).
pub struct Head<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a mut HeaderMap,
    pub peer: SocketAddr,
}

/// The texts of the 500s for a backendRef that cannot be used (gRPC: UNAVAILABLE,
/// `grpc_status.rs`).
pub const INVALID_BACKEND: &str = "invalid backend reference\n";
pub const NO_USABLE_BACKEND: &str = "no usable backend\n";

/// A response the proxy makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub status: StatusCode,
    pub body: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Close the client connection after it (the request may have been misread).
    pub close: bool,
}

impl Local {
    fn new(status: StatusCode, body: &'static str) -> Self {
        Self { status, body, headers: vec![], close: false }
    }

    fn closing(status: StatusCode, body: &'static str) -> Self {
        Self { close: true, ..Self::new(status, body) }
    }

    /// The answer to a request refused before routing (`refuse.rs`).
    pub fn refused(r: super::refuse::Refusal) -> Self {
        Self { close: r.close, ..Self::new(r.status, r.body) }
    }

    /// The answer to `OPTIONS *`: about the proxy itself, not routed (RFC 9110 9.3.7).
    pub fn options_asterisk() -> Self {
        Self { headers: vec![(header::CONTENT_LENGTH, HeaderValue::from_static("0"))], ..Self::new(StatusCode::OK, "") }
    }
}

/// Everything the forwarding code needs; the head it sends is the rewritten one.
#[derive(Debug)]
pub struct Forward {
    pub rule: Arc<Rule>,
    /// Index of the chosen backend in `rule.backends`.
    pub backend: usize,
    pub endpoint: SocketAddr,
    /// The new request target, addressed to the endpoint (`http://10.42.0.5:8080/x?y`);
    /// [`Forward::path_and_query`] is its path and query as sent to the pod.
    pub uri: Uri,
    /// `Some(protocol)` when the client asked to upgrade (WebSocket): the hop-by-hop
    /// fields are then left for the upgrade code.
    pub upgrade: Option<HeaderValue>,
    /// Applied to the response, in order.
    pub response_modifiers: Vec<HeaderModifier>,
    /// CORS headers added to the response.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Mirrors this request was sampled for.
    pub mirrors: Vec<Mirror>,
}

impl Forward {
    pub fn backend(&self) -> &Backend {
        &self.rule.backends[self.backend]
    }

    /// Path and query as sent to the pod (for retries and mirrors).
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

#[derive(Debug)]
pub enum Plan {
    Local(Local),
    Forward(Box<Forward>),
}

/// The planned request, with the labels its metrics are counted under
/// (`namespace/route#rule` and the backend name, once known; empty before). Shared
/// with the table ([`Rule::label`], [`Backend::label`]): no copy per request.
#[derive(Debug)]
pub struct Planned {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub plan: Plan,
}

/// The label of what is not known (yet): the empty string, allocated once.
pub fn unlabelled() -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// Decides what to do with one request on listener table `lt`.
pub fn plan(lt: &ListenerTable, head: Head<'_>, opts: PlanOptions, choices: &mut dyn Choices) -> Planned {
    let mut labels = Labels { route: unlabelled(), backend: unlabelled() };
    let plan = match decide(lt, head, opts, choices, &mut labels) {
        Ok(f) => Plan::Forward(Box::new(f)),
        Err(l) => Plan::Local(l),
    };
    Planned { route: labels.route, backend: labels.backend, plan }
}

/// The metrics labels, filled in as far as the decision got.
struct Labels {
    route: Arc<str>,
    backend: Arc<str>,
}

fn decide(
    lt: &ListenerTable,
    head: Head<'_>,
    opts: PlanOptions,
    choices: &mut dyn Choices,
    labels: &mut Labels,
) -> Result<Forward, Local> {
    let Head { method, uri, headers, peer } = head;
    // hyper stops reading a head at MAX_HEAD only when it arrives in pieces; one that
    // fits in a single read is measured here.
    if head_size(method, uri, headers) > MAX_HEAD {
        return Err(Local::closing(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large\n"));
    }
    // Host: the absolute-form authority, else the one Host header (HTTP/1.1 requires one).
    let authority = uri.authority().map(|a| a.as_str());
    let fields = headers.get_all(header::HOST).iter().map(|v| v.as_bytes());
    let (host, host_port) =
        request_host(authority, fields).map_err(|p| Local::new(StatusCode::BAD_REQUEST, p.message()))?;
    // A proxy forwards an absolute-form request with Host made from its target
    // (RFC 9112 3.2.2; set below, before the filters), and the target in origin-form.
    let host_value = match authority {
        Some(a) => HeaderValue::from_str(a).ok(),
        None => headers.get(header::HOST).cloned(),
    };
    // Routed by, and sent to the pod as, the normalized path (`normalize.rs`).
    let path = super::normalize::normalize(uri.path()).map_err(|e| Local::new(StatusCode::BAD_REQUEST, e.message()))?;
    let path: &str = &path;
    let query = uri.query();
    let found = {
        let req = RequestHead { method: method.as_str(), host: &host, path, query, headers };
        lt.find(&req).map(|m| (m.rule, m.matcher.prefix()))
    };
    let Some((rule, prefix)) = found else { return Err(Local::new(StatusCode::NOT_FOUND, "no route\n")) };
    labels.route = rule.label.clone();
    if let Some(reason) = unsupported(&rule.filters) {
        tracing::debug!(route = %rule.route, rule = rule.index, %reason, "500: unsupported filter");
        return Err(Local::new(StatusCode::INTERNAL_SERVER_ERROR, "route uses an unsupported filter\n"));
    }
    if let Some(r) = rule.redirect() {
        let input = RedirectInput {
            scheme: opts.scheme,
            host: &host,
            host_port,
            listener_port: lt.listener_port().unwrap_or(80),
            path,
            query,
            matched_prefix: prefix,
        };
        return Err(backend_redirect::answer(r, &input));
    }
    // CORS: a preflight is answered here; an actual request gets headers added.
    let mut response_headers = Vec::new();
    let cors = rule.filters.iter().find_map(|f| match f {
        Filter::Cors(c) => Some(c),
        _ => None,
    });
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if let (Some(cors), Some(origin)) = (cors, origin) {
        let text = |n| headers.get(n).and_then(|v: &HeaderValue| v.to_str().ok());
        if let (true, Some(pm)) = (*method == Method::OPTIONS, text(header::ACCESS_CONTROL_REQUEST_METHOD)) {
            let allowed = cors.preflight(origin, pm, text(header::ACCESS_CONTROL_REQUEST_HEADERS));
            return Err(Local { headers: allowed.unwrap_or_default(), ..Local::new(StatusCode::OK, "") });
        }
        response_headers = cors.response_headers(origin);
    }
    let Some(index) = rule.pick_backend_index(choices.random()) else {
        return Err(Local::new(StatusCode::INTERNAL_SERVER_ERROR, NO_USABLE_BACKEND));
    };
    let backend = &rule.backends[index];
    labels.backend = backend.label.clone();
    if let BackendTarget::Invalid(why) = &backend.target {
        tracing::debug!(backend = %backend.name, %why, "500: invalid backendRef");
        return Err(Local::new(StatusCode::INTERNAL_SERVER_ERROR, INVALID_BACKEND));
    }
    if unsupported(&backend.filters).is_some() {
        return Err(Local::new(StatusCode::INTERNAL_SERVER_ERROR, "backend uses an unsupported filter\n"));
    }
    // a RequestRedirect on the chosen backendRef answers instead (`plan/backend_redirect.rs`)
    if let Some(r) = backend_redirect::of(backend) {
        let input = RedirectInput {
            scheme: opts.scheme,
            host: &host,
            host_port,
            listener_port: lt.listener_port().unwrap_or(80),
            path,
            query,
            matched_prefix: prefix.as_deref(),
        };
        return Err(backend_redirect::answer(r, &input));
    }
    let Some(endpoint) = choices.endpoint(backend) else {
        return Err(Local::new(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint\n"));
    };

    if let (Some(_), Some(v)) = (authority, &host_value) {
        headers.insert(header::HOST, v.clone());
    }
    // Request filters: the rule's, then the backend's.
    let mut new_path = std::borrow::Cow::Borrowed(path);
    let mut response_modifiers = Vec::new();
    let mut mirrors = Vec::new();
    for f in rule.filters.iter().chain(backend.filters.iter()) {
        match f {
            Filter::RequestHeaderModifier(m) => m.apply(headers),
            Filter::ResponseHeaderModifier(m) => response_modifiers.push(m.clone()),
            Filter::UrlRewrite(rw) => {
                if let Some(h) = &rw.hostname {
                    let v = HeaderValue::from_str(h)
                        .map_err(|_| Local::new(StatusCode::INTERNAL_SERVER_ERROR, "bad rewrite hostname\n"))?;
                    headers.insert(header::HOST, v);
                }
                if let Some(pm) = &rw.path {
                    new_path = modify_path(pm, path, prefix)
                        .map_err(|_| Local::new(StatusCode::INTERNAL_SERVER_ERROR, "bad rewrite\n"))?
                        .into();
                }
            }
            Filter::RequestMirror(m) => {
                if m.sampled(choices.random()) {
                    mirrors.push(m.clone());
                }
            }
            Filter::RequestRedirect(_) | Filter::Unsupported { .. } | Filter::Cors(_) => {}
        }
    }
    // the path and query in one string, handed to the Uri without a copy; the
    // endpoint's authority made once per thread (`pod_authority`), not per request
    let mut target = String::with_capacity(new_path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(&new_path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let bad_target = |_| Local::new(StatusCode::BAD_REQUEST, "bad request target\n");
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(pod_authority(endpoint));
    parts.path_and_query =
        Some(http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(target)).map_err(bad_target)?);
    let uri = Uri::from_parts(parts).map_err(|_| Local::new(StatusCode::BAD_REQUEST, "bad request target\n"))?;
    if !headers.contains_key(header::HOST) {
        if let Some(v) = &host_value {
            headers.insert(header::HOST, v.clone());
        }
    }
    if opts.forwarded_headers {
        forwarded_headers(headers, peer, host_value.as_ref(), opts.scheme);
    }
    if opts.request_ids && !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, request_id(choices));
    }
    let upgrade = requested(headers);
    if upgrade.is_none() {
        strip_hop_by_hop(headers);
        // hyper answers `100 Continue` itself when the body is first read; the pod
        // gets the body without being asked (as Envoy does by default)
        headers.remove(header::EXPECT);
    }
    Ok(Forward {
        rule: rule.clone(),
        backend: index,
        endpoint,
        uri,
        upgrade,
        response_modifiers,
        response_headers,
        mirrors,
    })
}

/// Bytes of the request line and headers as received (up to whitespace).
fn head_size(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    // the target as sent: `scheme://authority` (absolute-form) and path and query
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let line = method.as_str().len() + target + 12;
    line + headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>() + 2
}

fn unsupported(filters: &[Filter]) -> Option<&str> {
    filters.iter().find_map(|f| match f {
        Filter::Unsupported { reason } => Some(reason.as_str()),
        _ => None,
    })
}

/// Removes the hop-by-hop headers (RFC 9110 7.6.1) and those named in `Connection`.
/// `Trailer` (the names of trailer fields) is end to end and kept; `TE: trailers` is
/// passed on, so the pod knows the client takes trailers and hyper forwards them.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names says which of the eight are there. Most requests carry
    // none; most pod answers only `Connection: keep-alive`, so only what is there is
    // removed, and the fields Connection names are removed by their text (no
    // `HeaderName` made for each).
    let present = h.keys().fold(0u8, |bits, n| bits | hop_bit(n));
    if present == 0 {
        return;
    }
    let te_trailers = present & hop_bit(&header::TE) != 0
        && h.get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers")));
    if present & hop_bit(&header::CONNECTION) != 0 {
        let first = h.get(header::CONNECTION).cloned();
        // several Connection lines are rare: collecting the others allocates only then
        let rest: Vec<HeaderValue> = h.get_all(header::CONNECTION).iter().skip(1).cloned().collect();
        h.remove(header::CONNECTION);
        for v in first.iter().chain(&rest) {
            for name in v.to_str().unwrap_or("").split(',').map(str::trim).filter(|n| !n.is_empty()) {
                // an invalid name names no field (`remove` finds nothing)
                h.remove(name);
            }
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

// (constants: a name that is not a standard header is copied each time it is made)
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
/// The fields [`strip_hop_by_hop`] removes (Connection included, so the fields it
/// names are looked at too); bit `i` of [`hop_bit`] is `HOP_BY_HOP[i]`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    HTTP2_SETTINGS,
];

/// `n`'s bit when it is one of [`HOP_BY_HOP`], else 0.
fn hop_bit(n: &HeaderName) -> u8 {
    HOP_BY_HOP.iter().position(|h| h == n).map_or(0, |i| 1 << i)
}

/// `addr` as text, appended to `out` (IPv4 digits written directly: `fmt`'s address
/// formatting showed in the per-request instruction profile).
fn push_ip(out: &mut String, addr: std::net::IpAddr) {
    match addr {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u16(out, u16::from(*o));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `addr` as an authority (`10.0.0.1:80`, `[::1]:80`), appended to `out`.
fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "[{v6}]");
        }
        ip => push_ip(out, ip),
    }
    out.push(':');
    push_u16(out, addr.port());
}

fn push_u16(out: &mut String, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// 128 random bits as 32 hex digits.
fn request_id(choices: &mut dyn Choices) -> HeaderValue {
    let mut id = [0u8; 32];
    let (a, b) = (choices.random(), choices.random());
    for (i, d) in id.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        let nibble = (word >> (4 * (15 - i % 16))) & 0xf;
        *d = b"0123456789abcdef"[nibble as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

fn forwarded_headers(h: &mut HeaderMap, peer: SocketAddr, host: Option<&HeaderValue>, scheme: &'static str) {
    let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let mut xff = String::with_capacity(prev.len() + 2 + 39);
            xff.push_str(prev);
            xff.push_str(", ");
            push_ip(&mut xff, peer.ip());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)).ok()
        }
        None => Some(peer_text(peer.ip())),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    if !h.contains_key(X_FORWARDED_HOST) {
        if let Some(v) = host {
            h.insert(X_FORWARDED_HOST, v.clone());
        }
    }
}

/// `endpoint` as a URI authority, remembered per thread for the last few endpoints
/// (a route's pods): formatting and parsing it showed in the per-request profile.
fn pod_authority(endpoint: SocketAddr) -> http::uri::Authority {
    const KEEP: usize = 8;
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<(SocketAddr, http::uri::Authority)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SEEN.with_borrow_mut(|seen| {
        if let Some((_, a)) = seen.iter().find(|(e, _)| *e == endpoint) {
            return a.clone();
        }
        let mut text = String::with_capacity(47);
        push_socket_addr(&mut text, endpoint);
        let a = http::uri::Authority::from_maybe_shared(bytes::Bytes::from(text)).expect("an address is an authority");
        if seen.len() == KEEP {
            seen.remove(0);
        }
        seen.push((endpoint, a.clone()));
        a
    })
}

/// `ip` as a header value, remembered per thread for the last address seen: a
/// connection's requests (and, behind Docker's NAT, most clients) share one source,
/// so the text is made once and shared, not formatted per request.
fn peer_text(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, v)) if *seen == ip => v.clone(),
        _ => {
            let mut text = String::with_capacity(39);
            push_ip(&mut text, ip);
            let v =
                HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).expect("an address is a valid header value");
            *last = Some((ip, v.clone()));
            v
        }
    })
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` + `Upgrade: X`).
pub fn requested(h: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    let up = h.get(header::UPGRADE)?;
    // HTTP/1.1's upgrade to h2c (RFC 7540 3.2, dropped by RFC 9113) is not offered: the
    // request is served as HTTP/1.1 (a tunnel to one pod would carry later requests
    // past the router); its Upgrade and HTTP2-Settings fields are removed as hop-by-hop
    if up.as_bytes().split(|b| *b == b',').any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c")) {
        return None;
    }
    Some(up.clone())
}

#[cfg(test)]
mod tests;
// redirect answers: a rule's RequestRedirect and one on a backendRef
mod backend_redirect;
