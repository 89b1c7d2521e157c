//! The table as a typed document, for `GET /routes` and `ingress routes`: per listen
//! address, host -> rules (match, filters, backends with weights and endpoints), and
//! what happened to each route. Serialize on the agent, Deserialize in the CLI.

use serde::{Deserialize, Serialize};

use super::matching::{PathMatch, ValueMatch};
use super::{Backend, BackendTarget, Entry, ListenerTable, Matcher, RouteReport, Table, Timeouts, VirtualHost};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableView {
    pub listeners: Vec<ListenerView>,
    pub routes: Vec<RouteReport>,
    /// What happened to each TLSRoute.
    #[serde(default)]
    pub tls_routes: Vec<RouteReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerView {
    /// `namespace/name` of the Gateway served on this listen address.
    pub gateway: String,
    pub listeners: Vec<GatewayListenerView>,
    pub problems: Vec<String>,
    pub hosts: Vec<HostView>,
    /// TLS passthrough: SNI hostname -> TLSRoute backends (exact, wildcards, any).
    #[serde(default)]
    pub passthrough: Vec<PassthroughHostView>,
    /// HTTPS listeners of this address and their certificates (empty: plain HTTP).
    #[serde(default)]
    pub tls: Vec<TlsListenerView>,
}

/// One SNI hostname of a passthrough listener and where its connections go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PassthroughHostView {
    pub hostname: String,
    pub route: String,
    pub backends: Vec<BackendView>,
}

/// An HTTPS listener: where its certificate comes from, or why it has none
/// (`InvalidCertificateRef: ...`, its ResolvedRefs=False condition).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TlsListenerView {
    pub name: String,
    pub port: u16,
    pub hostname: Option<String>,
    pub secrets: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GatewayListenerView {
    pub name: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostView {
    pub hostname: String,
    pub splice: SpliceView,
    pub rules: Vec<RuleView>,
    /// Whether the kernel may bind connections to this host to its pod (delayed binding).
    #[serde(default)]
    pub kernel_binding: BindView,
}

/// Delayed binding for one host: eligible, or why not (`routing/kernel_bind.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BindView {
    pub eligible: bool,
    pub why_not: Option<String>,
}

/// Whether connections to a host may be joined to the pod in the kernel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpliceView {
    pub safe: bool,
    pub why_not: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleView {
    pub route: String,
    pub rule: usize,
    #[serde(rename = "match")]
    pub matcher: MatchView,
    /// The filters as compiled (read by people and scripts; the CLI does not interpret them).
    pub filters: serde_json::Value,
    pub timeouts: Timeouts,
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MatchView {
    pub path: ValueView,
    pub method: Option<String>,
    pub headers: Vec<NamedMatchView>,
    #[serde(rename = "queryParams")]
    pub query_params: Vec<NamedMatchView>,
    /// A GRPCRouteMatch's method match (the rule matches gRPC calls only; `path` is
    /// what it compiles to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMethodView>,
}

/// A GRPCMethodMatch as written: `{"type": "Exact", "service": "pkg.Svc", "method": "Get"}`;
/// no type for a match without `method` (every service and method).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrpcMethodView {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl GrpcMethodView {
    /// `Exact pkg.Svc/Get`, `RegularExpression pkg\..*/*`, `* (any method)`.
    pub fn text(&self) -> String {
        match &self.kind {
            None => "* (every service and method)".into(),
            Some(k) => {
                format!("{k} {}/{}", self.service.as_deref().unwrap_or("*"), self.method.as_deref().unwrap_or("*"))
            }
        }
    }
}

/// A match as the Gateway API writes it: `{"type": "PathPrefix", "value": "/api"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValueView {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedMatchView {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: ValueView,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendView {
    pub name: String,
    pub weight: u32,
    pub endpoints: Vec<String>,
    /// Why the backendRef does not resolve (requests to it get 500).
    pub error: Option<String>,
    pub filters: serde_json::Value,
    /// `http/1.1` or `h2c` (from the Service port's appProtocol).
    #[serde(default = "http1")]
    pub protocol: String,
}

fn http1() -> String {
    super::BackendProtocol::Http1.to_string()
}

fn value_view(kind: &str, value: &str) -> ValueView {
    ValueView { kind: kind.into(), value: value.into() }
}

fn value_match(v: &ValueMatch) -> ValueView {
    match v {
        ValueMatch::Exact(s) => value_view("Exact", s),
        ValueMatch::Regex(r) => value_view("RegularExpression", r.as_str()),
    }
}

fn match_view(m: &Matcher) -> MatchView {
    let path = match &m.path {
        PathMatch::Exact(p) => value_view("Exact", p),
        PathMatch::Prefix(p) => value_view("PathPrefix", p),
        PathMatch::Regex(r) => value_view("RegularExpression", r.as_str()),
    };
    let named = |name: &str, v: &ValueMatch| NamedMatchView { name: name.into(), matcher: value_match(v) };
    MatchView {
        path,
        method: m.method.clone(),
        headers: m.headers.iter().map(|(n, v)| named(n.as_str(), v)).collect(),
        query_params: m.query.iter().map(|(n, v)| named(n, v)).collect(),
        grpc: m.grpc.as_ref().map(|g| GrpcMethodView {
            kind: g.kind.map(str::to_string),
            service: g.service.clone(),
            method: g.method.clone(),
        }),
    }
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("compiled filters serialize")
}

fn backend_view(b: &Backend) -> BackendView {
    let (endpoints, error) = match &b.target {
        BackendTarget::Endpoints(e) => (e.iter().map(|a| a.to_string()).collect(), None),
        BackendTarget::Invalid(w) => (vec![], Some(w.clone())),
    };
    let protocol = b.protocol.to_string();
    BackendView { name: b.name.clone(), weight: b.weight, endpoints, error, filters: json(&b.filters), protocol }
}

fn rule_view(e: &Entry) -> RuleView {
    let r = &e.rule;
    RuleView {
        route: r.route_label(),
        rule: r.index,
        matcher: match_view(&e.matcher),
        filters: json(&r.filters),
        timeouts: r.timeouts,
        backends: r.backends.iter().map(backend_view).collect(),
    }
}

fn host_view(v: &VirtualHost, bind: Result<(), String>) -> HostView {
    HostView {
        hostname: v.hostname.clone(),
        splice: SpliceView { safe: v.splice.is_ok(), why_not: v.splice.clone().err() },
        rules: v.entries.iter().map(rule_view).collect(),
        kernel_binding: BindView { eligible: bind.is_ok(), why_not: bind.err() },
    }
}

fn listener_view(l: &ListenerTable) -> ListenerView {
    ListenerView {
        gateway: l.gateway.to_string(),
        listeners: l.listeners.iter().map(|(n, p)| GatewayListenerView { name: n.clone(), port: *p }).collect(),
        problems: l.problems.clone(),
        hosts: l.kernel_binding().into_iter().map(|(v, bind)| host_view(v, bind)).collect(),
        passthrough: l.passthrough.iter().flat_map(|p| p.hosts()).map(|h| passthrough_view(h)).collect(),
        tls: l.tls.iter().flat_map(|t| &t.listeners).map(tls_listener_view).collect(),
    }
}

fn tls_listener_view(l: &super::tls::TlsListener) -> TlsListenerView {
    TlsListenerView {
        name: l.name.clone(),
        port: l.port,
        hostname: l.hostname.as_ref().map(|h| h.to_string()),
        secrets: l.secrets.clone(),
        error: l.certificate.as_ref().err().map(|p| p.to_string()),
    }
}

fn passthrough_view(h: &super::passthrough::PassthroughHost) -> PassthroughHostView {
    PassthroughHostView {
        hostname: h.hostname.clone(),
        route: h.rule.route.to_string(),
        backends: h.rule.backends.iter().map(backend_view).collect(),
    }
}

/// A backend as `ingress routes` prints it.
fn backend_text(b: &BackendView) -> String {
    match &b.error {
        Some(e) => format!("{} w{} ERROR {e}", b.name, b.weight),
        None => format!("{} w{} -> [{}]", b.name, b.weight, b.endpoints.join(" ")),
    }
}

impl TableView {
    pub fn of(t: &Table) -> Self {
        TableView {
            listeners: t.listeners.iter().map(listener_view).collect(),
            routes: t.routes.clone(),
            tls_routes: t.tls_routes.clone(),
        }
    }

    /// Marks every splice-safe host as not joined, for `why` (a runtime reason: the
    /// agent adds headers to every request, or has no sockmap program).
    pub fn not_spliced_because(&mut self, why: &str) {
        for h in self.listeners.iter_mut().flat_map(|l| l.hosts.iter_mut()) {
            if h.splice.safe {
                h.splice = SpliceView { safe: false, why_not: Some(why.into()) };
            }
        }
    }

    /// Marks every bindable host as not bound, for `why` (a runtime reason: the agent
    /// adds headers to every request).
    pub fn not_bound_because(&mut self, why: &str) {
        for h in self.listeners.iter_mut().flat_map(|l| l.hosts.iter_mut()) {
            if h.kernel_binding.eligible {
                h.kernel_binding = BindView { eligible: false, why_not: Some(why.into()) };
            }
        }
    }

    /// The running binding's decisions (`datapath::bind`, after the agent left out the
    /// hosts whose pod namespace it could not attach `pod_bind` in): a host the table
    /// found eligible but the agent did not bind says why.
    pub fn apply_bind_decisions(&mut self, decisions: &[crate::datapath::bind::HostDecision]) {
        for d in decisions {
            let Err(why) = &d.decision else { continue };
            let Some(l) = self.listeners.get_mut(d.listener) else { continue };
            for h in l.hosts.iter_mut().filter(|h| h.hostname == d.hostname && h.kernel_binding.eligible) {
                h.kernel_binding = BindView { eligible: false, why_not: Some(why.clone()) };
            }
        }
    }

    /// Human-readable form for `ingress routes`.
    pub fn format_text(&self) -> String {
        let mut out = String::new();
        for l in &self.listeners {
            let ls: Vec<String> = l.listeners.iter().map(|x| format!("{}:{}", x.name, x.port)).collect();
            out += &format!("gateway {} (listeners {})\n", l.gateway, ls.join(", "));
            for p in &l.problems {
                out += &format!("  ! {p}\n");
            }
            for t in &l.tls {
                let host = t.hostname.as_deref().unwrap_or("*");
                let what = match &t.error {
                    None => format!("certificate from {}", t.secrets.join(", ")),
                    Some(e) => format!("NOT serving: ResolvedRefs=False {e}"),
                };
                out += &format!("  https {}:{} ({host}): {what}\n", t.name, t.port);
            }
            for h in &l.hosts {
                let splice = match &h.splice.why_not {
                    None => "splice-safe: connections are joined to the pod in the kernel".to_string(),
                    Some(w) => format!("not splice-safe: {w}"),
                };
                out += &format!("  host {}  ({splice})\n", h.hostname);
                out += &match &h.kernel_binding.why_not {
                    None if h.kernel_binding.eligible => "    kernel binding: eligible\n".to_string(),
                    None => "    kernel binding: no\n".to_string(),
                    Some(w) => format!("    kernel binding: no: {w}\n"),
                };
                for r in &h.rules {
                    let backends: Vec<String> = r
                        .backends
                        .iter()
                        .map(|b| match &b.error {
                            Some(e) => format!("{} w{} ERROR {e}", b.name, b.weight),
                            None => format!("{} w{} {} -> [{}]", b.name, b.weight, b.protocol, b.endpoints.join(" ")),
                        })
                        .collect();
                    let what = match &r.matcher.grpc {
                        Some(g) => format!("gRPC {}", g.text()),
                        None => format!(
                            "{} {} {}",
                            r.matcher.path.kind,
                            r.matcher.path.value,
                            r.matcher.method.as_deref().unwrap_or("")
                        ),
                    };
                    let headers: Vec<String> = r
                        .matcher
                        .headers
                        .iter()
                        .filter(|_| r.matcher.grpc.is_some())
                        .map(|h| format!(" header {} {} {}", h.name, h.matcher.kind, h.matcher.value))
                        .collect();
                    out += &format!(
                        "    {what}{}  ({} rule {})  {}\n",
                        headers.concat(),
                        r.route,
                        r.rule,
                        backends.join(", ")
                    );
                }
            }
            for h in &l.passthrough {
                let backends: Vec<String> = h.backends.iter().map(backend_text).collect();
                out += &format!(
                    "  passthrough {}  (TLS by SNI, bytes unchanged)  ({})  {}\n",
                    h.hostname,
                    h.route,
                    backends.join(", ")
                );
            }
        }
        for r in &self.routes {
            for p in &r.problems {
                out += &format!("route {}: {p}\n", r.route);
            }
        }
        for r in &self.tls_routes {
            for p in &r.problems {
                out += &format!("tlsroute {}: {p}\n", r.route);
            }
        }
        out
    }
}
