//! The routing engine: compiles Gateways, HTTPRoutes, Services and EndpointSlices into
//! an immutable table per served listen address, and looks requests up in it. Pure:
//! no I/O, no async; the proxy publishes a new [`Table`] atomically on every change.

mod attach;
mod builder;
mod compile;
mod filter_compile;
pub mod filters;
mod grpc;
mod handle;
pub mod hostname;
// delayed binding: which hosts the kernel may bind to their pod (pure)
pub mod kernel_bind;
mod matching;
// TLS passthrough: TLSRoutes on `protocol: TLS` / `tls.mode: Passthrough` listeners, by SNI
pub mod passthrough;
mod protocol;
mod refs;
mod rules;
mod status;
pub mod tls;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use compile::compile;

/// The API group of Gateway API objects.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
pub use filters::{Filter, HeaderModifier, Redirect, Rewrite};
pub use handle::TableHandle;
// L4 Service targets resolve like backendRefs.
pub use hostname::{HostProblem, Hostname, request_host, split_host_header};
pub use matching::{GrpcMethodMatch, Matcher, PathMatch, RequestHead, ValueMatch, is_grpc_content_type};
pub use refs::resolve_service_endpoints;

use crate::resources::ObjectKey;

/// The compiled routing state: one [`ListenerTable`] per `--listen` mapping, in order.
#[derive(Debug, Default)]
pub struct Table {
    pub listeners: Vec<ListenerTable>,
    /// What happened to each HTTPRoute: where it attached, and why not elsewhere.
    pub routes: Vec<RouteReport>,
    /// The same for each TLSRoute.
    pub tls_routes: Vec<RouteReport>,
}

/// The routes served on one listen address (the HTTP listeners of one Gateway).
#[derive(Debug, Default)]
pub struct ListenerTable {
    pub gateway: ObjectKey,
    /// Names and ports of the Gateway listeners this address serves.
    pub listeners: Vec<(String, u16)>,
    hosts: HashMap<String, Arc<VirtualHost>, foldhash::fast::RandomState>,
    /// Wildcard virtual hosts, longest suffix first.
    wildcards: Vec<(String, Arc<VirtualHost>)>,
    /// Routes without hostnames on listeners without hostname: any Host.
    any: Option<Arc<VirtualHost>>,
    /// Why this address serves less than asked (missing Gateway, no HTTP listener, ...).
    pub problems: Vec<String>,
    /// TLS passthrough listeners of this address and their SNI table (None: none).
    pub passthrough: Option<Arc<passthrough::PassthroughTable>>,
    /// Some: the mapping serves HTTPS listeners (TLS at accept), their certificates.
    pub tls: Option<tls::TlsListeners>,
}

/// The rules that apply to one hostname, in precedence order, with an index by the
/// first path segment so a host with thousands of path-prefix routes (one per
/// OpenChoreo component) is not scanned linearly.
#[derive(Debug)]
pub struct VirtualHost {
    pub hostname: String,
    pub entries: Vec<Entry>,
    /// First path segment of an Exact/PathPrefix value -> entry indices, ascending.
    by_segment: HashMap<String, Vec<u32>>,
    /// Entries every path may match (prefix `/`, regular expressions), ascending.
    generic: Vec<u32>,
    /// Whether whole connections to this host may be joined to one pod in the kernel,
    /// or why not.
    pub splice: Result<(), String>,
}

/// A host is splice-safe when the ingress has nothing to do per request: every rule
/// sends everything, unchanged, to the same single backend, and some rule matches
/// every request (otherwise some requests must get the ingress's 404).
fn splice_decision(entries: &[Entry]) -> Result<(), String> {
    let first = entries.first().ok_or("no rules")?;
    if !entries.iter().any(|e| e.matcher.is_catch_all()) {
        return Err("no rule matches every request (a `PathPrefix /` without conditions)".into());
    }
    let name = first.rule.backends.first().map(|b| b.name.as_str());
    for e in entries {
        let r = &e.rule;
        let at = || format!("{} rule {}", r.route_label(), r.index);
        if !r.filters.is_empty() {
            return Err(format!("{} has filters", at()));
        }
        if r.timeouts.request.is_some() || r.timeouts.backend_request.is_some() || r.retry.is_some() {
            return Err(format!("{} has timeouts or retries, enforced per request", at()));
        }
        let [b] = r.backends.as_slice() else {
            return Err(format!("{} does not send to exactly one backend", at()));
        };
        if Some(b.name.as_str()) != name {
            return Err(format!("{} goes to another backend than the host's other rules", at()));
        }
        if !b.filters.is_empty() || b.weight == 0 {
            return Err(format!("{} has backend filters or weight 0", at()));
        }
        if !matches!(&b.target, BackendTarget::Endpoints(e) if !e.is_empty()) {
            return Err(format!("{} has no ready endpoint", at()));
        }
        if b.protocol != BackendProtocol::Http1 {
            return Err(format!("{} has a {} backend: each request is re-framed", at(), b.protocol));
        }
    }
    Ok(())
}

/// `/a/b` -> `a`; `/` -> ``.
fn first_segment(path: &str) -> &str {
    let p = path.strip_prefix('/').unwrap_or(path);
    p.split('/').next().unwrap_or("")
}

impl VirtualHost {
    /// `entries` must already be in precedence order.
    pub fn new(hostname: String, entries: Vec<Entry>) -> Self {
        let mut by_segment: HashMap<String, Vec<u32>> = HashMap::new();
        let mut generic = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match &e.matcher.path {
                PathMatch::Exact(p) => by_segment.entry(first_segment(p).to_string()).or_default().push(i as u32),
                PathMatch::Prefix(p) if p != "/" => {
                    by_segment.entry(first_segment(p).to_string()).or_default().push(i as u32)
                }
                _ => generic.push(i as u32),
            }
        }
        let splice = splice_decision(&entries);
        Self { hostname, entries, by_segment, generic, splice }
    }

    /// The backend every request of a splice-safe host goes to.
    pub fn splice_backend(&self) -> Option<&Backend> {
        self.splice.as_ref().ok().and_then(|_| self.entries.first()).map(|e| &e.rule.backends[0])
    }

    /// The first entry, in precedence order, that matches the request.
    pub fn find(&self, req: &RequestHead<'_>) -> Option<&Entry> {
        let specific: &[u32] = self.by_segment.get(first_segment(req.path)).map(Vec::as_slice).unwrap_or(&[]);
        let (mut a, mut b) = (specific.iter().peekable(), self.generic.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => return None,
            };
            let e = &self.entries[*next.expect("peeked") as usize];
            if e.matcher.matches(req) {
                return Some(e);
            }
        }
    }
}

/// One HTTPRouteMatch of one rule, with the rule it leads to.
#[derive(Debug)]
pub struct Entry {
    pub matcher: Matcher,
    pub rule: Arc<Rule>,
}

/// A rule of an HTTPRoute (or a GRPCRoute), with its backends resolved to endpoints.
#[derive(Debug)]
pub struct Rule {
    pub route: ObjectKey,
    /// The kind of route the rule belongs to.
    pub kind: RouteKind,
    pub index: usize,
    pub filters: Vec<Filter>,
    pub backends: Vec<Backend>,
    pub timeouts: Timeouts,
    /// HTTPRouteRetry (experimental channel), carried for the proxy.
    pub retry: Option<Retry>,
    /// `namespace/route#rule` (see [`Rule::label_for`]), made once at compile time: the
    /// metrics of every request routed here carry it without formatting it again.
    pub label: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Response codes that are retried (5xx only, per the spec).
    pub codes: Vec<u16>,
    pub backoff: Option<Duration>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Whole request, from the head received to the response head sent. None = no limit.
    pub request: Option<Duration>,
    /// One attempt to the backend. None = no limit.
    pub backend_request: Option<Duration>,
}

/// A backendRef resolved as far as possible.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port` as written in the route.
    pub name: String,
    /// `name`, shared: the metrics label of every request sent here (no copy per request).
    pub label: Arc<str>,
    pub weight: u32,
    pub filters: Vec<Filter>,
    pub target: BackendTarget,
    /// How requests reach the pod: HTTP/1.1, or HTTP/2 over cleartext (the Service
    /// port's `appProtocol`, see [`BackendProtocol::from_app_protocol`]).
    pub protocol: BackendProtocol,
}

pub use protocol::BackendProtocol;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum BackendTarget {
    /// Ready endpoints (pod IP, container port). May be empty: 503.
    Endpoints(Vec<SocketAddr>),
    /// The reference cannot be used (unknown Service or port, kind, not permitted): 500.
    Invalid(String),
}

impl Backend {
    pub fn new(name: String, weight: u32, filters: Vec<Filter>, target: BackendTarget) -> Self {
        Self { label: name.as_str().into(), name, weight, filters, target, protocol: BackendProtocol::Http1 }
    }

    /// The same backend, spoken to in `protocol`.
    pub fn with_protocol(mut self, protocol: BackendProtocol) -> Self {
        self.protocol = protocol;
        self
    }
}

/// The kinds of route the engine compiles into a listener's virtual hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    #[default]
    Http,
    Grpc,
    /// TLS passthrough (routing/passthrough.rs): its reports are kept apart, in `Table.tls_routes`.
    Tls,
}

impl RouteKind {
    /// The Kubernetes kind (`HTTPRoute`, `GRPCRoute`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Grpc => "GRPCRoute",
            Self::Tls => "TLSRoute",
        }
    }

    /// How a route of this kind is named in reports, `/routes` and metrics: an
    /// HTTPRoute as `namespace/name` (as before), a GRPCRoute as `GRPCRoute namespace/name`.
    pub fn label(self, key: &ObjectKey) -> String {
        match self {
            Self::Http | Self::Tls => key.to_string(),
            Self::Grpc => format!("GRPCRoute {key}"),
        }
    }
}

impl Rule {
    /// The metrics label of rule `index` of a route: `namespace/route#rule`.
    pub fn label_for(kind: RouteKind, route: &ObjectKey, index: usize) -> Arc<str> {
        format!("{}#{index}", kind.label(route)).into()
    }

    /// The route's name as reports show it ([`RouteKind::label`]).
    pub fn route_label(&self) -> String {
        self.kind.label(&self.route)
    }

    /// Total weight of the backends; 0 means "no backend can be chosen".
    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| b.weight as u64).sum()
    }

    /// Weighted choice: `r` is a uniformly random number. None when every weight is 0
    /// (or there are no backends): the caller answers 500.
    pub fn pick_backend(&self, r: u64) -> Option<&Backend> {
        self.pick_backend_index(r).map(|i| &self.backends[i])
    }

    /// [`Rule::pick_backend`], as the index in `backends`.
    pub fn pick_backend_index(&self, r: u64) -> Option<usize> {
        let total = self.total_weight();
        if total == 0 {
            return None;
        }
        let mut x = r % total;
        for (i, b) in self.backends.iter().enumerate() {
            let w = b.weight as u64;
            if x < w {
                return Some(i);
            }
            x -= w;
        }
        None
    }

    /// The redirect filter of this rule, if any (a rule redirects instead of forwarding).
    pub fn redirect(&self) -> Option<&Redirect> {
        self.filters.iter().find_map(|f| match f {
            Filter::RequestRedirect(r) => Some(r),
            _ => None,
        })
    }
}

/// A successful lookup: the rule, and the path prefix that matched (for ReplacePrefixMatch).
#[derive(Debug)]
pub struct RouteMatch<'t> {
    pub rule: &'t Arc<Rule>,
    pub matcher: &'t Matcher,
    pub vhost: &'t str,
}

impl ListenerTable {
    /// The virtual host for a request host (lowercase, no port): an exact name first,
    /// then the longest matching wildcard, then the catch-all.
    pub fn vhost(&self, host: &str) -> Option<&Arc<VirtualHost>> {
        if let Some(v) = self.hosts.get(host) {
            return Some(v);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, v)| v)
            .or(self.any.as_ref())
    }

    /// Whether some host on this address is splice-safe.
    pub fn any_splice_safe(&self) -> bool {
        self.hosts
            .values()
            .chain(self.wildcards.iter().map(|(_, v)| v))
            .chain(self.any.iter())
            .any(|v| v.splice.is_ok())
    }

    /// Finds the rule for a request, or None (404).
    pub fn find(&self, req: &RequestHead<'_>) -> Option<RouteMatch<'_>> {
        let vhost = self.vhost(req.host)?;
        vhost.find(req).map(|e| RouteMatch { rule: &e.rule, matcher: &e.matcher, vhost: &vhost.hostname })
    }

    /// Every virtual host, for `ingress routes` and `/routes`: exact, wildcards, catch-all.
    pub fn vhosts(&self) -> Vec<&Arc<VirtualHost>> {
        let mut v: Vec<_> = self.hosts.values().collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        v.extend(self.wildcards.iter().map(|(_, v)| v));
        v.extend(self.any.iter());
        v
    }

    /// The port of the first served listener: the port a redirect without a Host port uses.
    pub fn listener_port(&self) -> Option<u16> {
        self.listeners.first().map(|(_, p)| *p)
    }
}

/// How one route fared against the served Gateways (`route` is [`RouteKind::label`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteReport {
    pub route: String,
    /// `namespace/gateway/listener` for every listener the route attached to.
    pub attached: Vec<String>,
    /// Why the route (or one of its parentRefs / backendRefs) is not fully in service,
    /// each with the Gateway API reason (`NotAllowedByListeners`, `BackendNotFound`, ...).
    pub problems: Vec<String>,
    /// One entry per parentRef that names a served Gateway: the route's status there.
    pub parents: Vec<ParentStatus>,
}

/// A Gateway API condition, without the bookkeeping fields the writer adds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Condition {
    /// `Accepted` or `ResolvedRefs`.
    #[serde(rename = "type")]
    pub kind: std::borrow::Cow<'static, str>,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// The status of a route under one parentRef.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParentStatus {
    pub gateway: ObjectKey,
    pub section_name: Option<String>,
    pub port: Option<i32>,
    /// Accepted, then ResolvedRefs.
    pub conditions: Vec<Condition>,
}

impl ParentStatus {
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod grpc_tests;

// filters on backendRefs (RequestRedirect), compiled and reported
#[cfg(test)]
mod backend_filter_tests;
