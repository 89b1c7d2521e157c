//! TLS passthrough: Gateway listeners with `protocol: TLS` and `tls.mode: Passthrough`,
//! the TLSRoutes (`gateway.networking.k8s.io/v1`, the standard channel of the Gateway
//! API release the gateway-api crate carries) attached to them, and the table the
//! proxy reads: SNI hostname (exact, then the longest wildcard, then a route for any
//! hostname) -> the route's weighted backendRefs, resolved to ready endpoints like an
//! HTTPRoute's. Pure: no I/O.
//!
//! Attachment is HTTPRoute's (attach.rs: parentRefs with sectionName/port,
//! allowedRoutes kinds and namespaces, hostname intersection). Two TLSRoutes claiming
//! the same hostname on one listen address: the older one (creationTimestamp, then
//! `namespace/name`) keeps it, the other gets a note.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use gateway_api::apis::experimental::httproutes::{HttpRouteParentRefs, HttpRouteRulesBackendRefs};
use gateway_api::apis::standard::gateways::{GatewayListeners, GatewayListenersTlsMode};
use gateway_api::apis::standard::tlsroutes::{TlsRoute, TlsRouteParentRefs};

use super::attach::{RouteParents, attach};
use super::builder::TableBuilder;
use super::refs::{SliceIndex, resolve_backend_from};
use super::status::{Problem, Reason, RuleIssues, parent_statuses};
use super::{Backend, BackendTarget, Hostname, RouteKind, RouteReport, Rule, Timeouts};
use crate::resources::{ObjectKey, Resources};

/// Whether a Gateway listener is a TLS passthrough one (this module's; `protocol: TLS`
/// with `mode: Terminate`, the default, is not).
pub fn is_passthrough(l: &GatewayListeners) -> bool {
    l.protocol == "TLS"
        && l.tls
            .as_ref()
            .and_then(|t| t.mode.as_ref())
            .is_some_and(|m| matches!(m, GatewayListenersTlsMode::Passthrough))
}

/// The TLS passthrough listeners of one listen address and their SNI table.
#[derive(Debug, Default)]
pub struct PassthroughTable {
    /// Names and ports of the Gateway's passthrough listeners served here.
    pub listeners: Vec<(String, u16)>,
    hosts: HashMap<String, Arc<PassthroughHost>>,
    /// `.suffix` -> host, longest suffix first.
    wildcards: Vec<(String, Arc<PassthroughHost>)>,
    /// A route without hostnames on a listener without hostname: any SNI.
    any: Option<Arc<PassthroughHost>>,
}

/// One hostname of the table and the TLSRoute rule that serves it.
#[derive(Debug)]
pub struct PassthroughHost {
    /// As written: `a.example`, `*.example`, or `*` for any.
    pub hostname: String,
    /// The route's backends (weights; an invalid one keeps its share: those connections are closed).
    pub rule: Arc<Rule>,
}

impl PassthroughTable {
    /// The host for an SNI name (any case, a trailing dot allowed): exact, then the
    /// longest wildcard, then the route for any hostname.
    pub fn lookup(&self, sni: &str) -> Option<&Arc<PassthroughHost>> {
        self.lookup_ranked(sni).map(|(h, _)| h)
    }

    /// The host for an SNI name and how specific its hostname is (for [`choose`]).
    pub fn lookup_ranked(&self, sni: &str) -> Option<(&Arc<PassthroughHost>, Specificity)> {
        let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
        if let Some(h) = self.hosts.get(&name) {
            return Some((h, Specificity::Exact));
        }
        let wild = self
            .wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(suffix, h)| (h, Specificity::Wildcard(suffix.len())));
        wild.or(self.any.as_ref().map(|h| (h, Specificity::Any)))
    }

    /// Every host: exact ones by name, then wildcards (longest first), then any.
    pub fn hosts(&self) -> Vec<&Arc<PassthroughHost>> {
        let mut v: Vec<_> = self.hosts.values().collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        v.extend(self.wildcards.iter().map(|(_, h)| h));
        v.extend(self.any.iter());
        v
    }
}

/// How specific a hostname match is: an exact name beats any wildcard, a longer
/// wildcard suffix a shorter one, and a match of any name comes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Specificity {
    Any,
    Wildcard(usize),
    Exact,
}

impl Specificity {
    /// Of a listener's hostname (None: any name).
    pub fn of(h: Option<&Hostname>) -> Self {
        match h {
            None => Self::Any,
            Some(Hostname::Wildcard(suffix)) => Self::Wildcard(suffix.len()),
            Some(Hostname::Exact(_)) => Self::Exact,
        }
    }
}

/// What a connection to an address with TLS passthrough listeners becomes, by its
/// ClientHello's server name.
#[derive(Debug)]
pub enum SniChoice<'a> {
    /// Passed through to this host's backends, bytes unchanged.
    Passthrough(&'a Arc<PassthroughHost>),
    /// Terminated by the HTTPS listener of the same address that matches the name
    /// (proxy/tls.rs chooses it again and refuses it if its certificate is unusable).
    Terminate,
    /// Closed: no name was sent (and no HTTPS listener takes a ClientHello without one).
    NoSni,
    /// Closed: neither a TLSRoute nor an HTTPS listener serves the name.
    NoRoute,
}

/// Listeners sharing a port are told apart by hostname (Gateway API): the passthrough
/// route matching `sni` (a TLSRoute hostname, intersected with its listener's), else the
/// HTTPS listener matching it, terminated; when both match, the more specific hostname
/// wins ([`Specificity`]), the passthrough route on a tie. A ClientHello without SNI is
/// never passed through (no TLSRoute can claim it); an HTTPS listener without hostname
/// terminates it.
pub fn choose<'a>(
    pt: &'a PassthroughTable,
    tls: Option<&super::tls::TlsListeners>,
    sni: Option<&str>,
) -> SniChoice<'a> {
    use super::tls::Selected;
    let pass = sni.and_then(|s| pt.lookup_ranked(s));
    let term = tls.and_then(|t| match t.select(sni) {
        Selected::Serve(l, _) | Selected::Invalid(l, _) => Some(Specificity::of(l.hostname.as_ref())),
        Selected::NoMatch => None,
    });
    match (pass, term) {
        (Some((_, p)), Some(t)) if t > p => SniChoice::Terminate,
        (Some((host, _)), _) => SniChoice::Passthrough(host),
        (None, Some(_)) => SniChoice::Terminate,
        (None, None) if sni.is_none() => SniChoice::NoSni,
        (None, None) => SniChoice::NoRoute,
    }
}

/// The route's parentRef in the shape attach.rs reads (the generated types differ only by name).
fn http_parent_ref(p: &TlsRouteParentRefs) -> HttpRouteParentRefs {
    HttpRouteParentRefs {
        group: p.group.clone(),
        kind: p.kind.clone(),
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        port: p.port,
        section_name: p.section_name.clone(),
    }
}

/// Attaches every TLSRoute to the passthrough listeners of `tables`, fills each
/// table's [`PassthroughTable`] (and its served listener list), and returns what
/// happened to each route.
pub(super) fn compile_tls_routes(
    res: &Resources,
    slices: &SliceIndex<'_>,
    tables: &mut [TableBuilder<'_>],
) -> Vec<RouteReport> {
    let mut order: Vec<(&ObjectKey, &TlsRoute)> = res.tls_routes.iter().collect();
    // Conflicts go to the oldest route, then the first by namespace/name (the spec's rule).
    let created = |r: &TlsRoute| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    order.sort_by(|a, b| created(a.1).cmp(&created(b.1)).then(a.0.cmp(b.0)));
    let mut hosts: Vec<HashMap<Option<Hostname>, Arc<PassthroughHost>>> =
        tables.iter().map(|_| HashMap::new()).collect();
    let mut reports = Vec::new();
    for (key, route) in order {
        let mut report = RouteReport { route: key.to_string(), attached: vec![], problems: vec![], parents: vec![] };
        let parent_refs: Vec<HttpRouteParentRefs> =
            route.spec.parent_refs.iter().flatten().map(http_parent_ref).collect();
        let of = RouteParents { kind: RouteKind::Tls, hostnames: &route.spec.hostnames, parent_refs };
        let (attachments, parents) = attach(res, tables, key, &of, &mut report);
        if !parents.is_empty() {
            let mut issues = RuleIssues::default();
            let rule = Arc::new(compile_rule(res, slices, key, route, &mut report, &mut issues));
            report.parents = parent_statuses(parents, &issues);
            for (_, t, listener, hostnames) in attachments {
                report.attached.push(format!("{}/{}", tables[t].table.gateway, listener));
                for h in hostnames {
                    let shown = h.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "*".into());
                    match hosts[t].entry(h) {
                        Entry::Occupied(e) if e.get().rule.route != *key => report.problems.push(format!(
                            "hostname {shown} on {}: served by TLSRoute {} (older, or first by name)",
                            tables[t].table.gateway,
                            e.get().rule.route
                        )),
                        Entry::Occupied(_) => {}
                        Entry::Vacant(v) => {
                            v.insert(Arc::new(PassthroughHost { hostname: shown, rule: rule.clone() }));
                        }
                    }
                }
            }
            report.attached.sort();
            report.attached.dedup();
        }
        if !report.attached.is_empty() || !report.problems.is_empty() {
            reports.push(report);
        }
    }
    for (tb, hosts) in tables.iter_mut().zip(hosts) {
        if tb.passthrough.is_empty() {
            continue;
        }
        let mut pt = PassthroughTable {
            listeners: tb.passthrough.iter().map(|l| (l.name.clone(), l.port as u16)).collect(),
            ..Default::default()
        };
        for (h, host) in hosts {
            match h {
                Some(Hostname::Exact(e)) => {
                    pt.hosts.insert(e, host);
                }
                Some(Hostname::Wildcard(suffix)) => pt.wildcards.push((suffix, host)),
                None => pt.any = Some(host),
            }
        }
        pt.wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        tb.table.listeners.extend(pt.listeners.iter().cloned());
        tb.table.passthrough = Some(Arc::new(pt));
    }
    reports
}

/// The route's rule: the backendRefs of all its rules, pooled and weighted together
/// (TLSRoute rules have no matches), resolved (Service port -> ready endpoints,
/// cross-namespace only with a ReferenceGrant from TLSRoutes).
fn compile_rule(
    res: &Resources,
    slices: &SliceIndex<'_>,
    key: &ObjectKey,
    route: &TlsRoute,
    report: &mut RouteReport,
    issues: &mut RuleIssues,
) -> Rule {
    // v1 allows one rule (maxItems 1); v1alpha2/v1alpha3, read as v1, allow up to 16
    // with no matches, so nothing tells a connection which rule it is for: every rule's
    // backendRefs are pooled, each weight a share of the whole route's connections.
    let mut backends = Vec::new();
    for b in route.spec.rules.iter().flat_map(|r| r.backend_refs.iter()) {
        let ns = b.namespace.clone().unwrap_or_else(|| key.namespace.clone());
        let name = format!("{ns}/{}:{}", b.name, b.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into()));
        let as_http = HttpRouteRulesBackendRefs {
            group: b.group.clone(),
            kind: b.kind.clone(),
            name: b.name.clone(),
            namespace: b.namespace.clone(),
            port: b.port,
            weight: b.weight,
            ..Default::default()
        };
        let target = match resolve_backend_from(res, slices, RouteKind::Tls, key, &as_http, &ns) {
            Ok(endpoints) => BackendTarget::Endpoints(endpoints),
            Err(p) => {
                report.problems.push(format!("backendRef {name}: {p}"));
                issues.unresolved.get_or_insert_with(|| p.within(&format!("backendRef {name}")));
                BackendTarget::Invalid(p.to_string())
            }
        };
        backends.push(Backend::new(name, b.weight.unwrap_or(1).max(0) as u32, vec![], target));
    }
    if backends.is_empty() {
        let p = Problem::new(Reason::BackendNotFound, "the route has no backendRefs: its connections are closed");
        report.problems.push(p.to_string());
        issues.unresolved.get_or_insert(p);
    }
    Rule {
        route: key.clone(),
        kind: RouteKind::Tls,
        index: 0,
        filters: vec![],
        backends,
        timeouts: Timeouts::default(),
        retry: None,
        label: Rule::label_for(RouteKind::Tls, key, 0),
    }
}

#[cfg(test)]
mod tests;
