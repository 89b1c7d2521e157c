//! From objects to a [`Table`]: listener selection, route attachment (parentRefs,
//! allowedRoutes, hostname intersection), rule and filter compilation, backend
//! resolution (Service port -> EndpointSlice ready endpoints, ReferenceGrant).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use gateway_api::apis::standard::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From_,
};
use http::{HeaderName, HeaderValue};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::filters::{Cors, Filter, HeaderModifier, Mirror, PathModifier, Redirect, Rewrite};
use super::matching::{Matcher, PathMatch, ValueMatch, full_regex};
use super::{
    Backend, BackendTarget, Condition, Entry, Hostname, ListenerTable, ParentStatus, Retry, RouteReport, Rule, Table,
    Timeouts, VirtualHost,
};
use crate::config::ListenMapping;
use crate::resources::{ObjectKey, Resources, namespace_of};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Compiles the routing table for the given listen mappings.
pub fn compile(res: &Resources, mappings: &[ListenMapping]) -> Table {
    let slices = SliceIndex::new(res);
    let mut tables: Vec<TableBuilder> = mappings.iter().map(|m| TableBuilder::new(res, m)).collect();
    let mut reports = Vec::new();
    for (key, route) in &res.http_routes {
        let mut report = RouteReport { route: key.to_string(), attached: vec![], problems: vec![], parents: vec![] };
        let (attachments, parents) = attach(res, &tables, key, route, &mut report);
        if !parents.is_empty() {
            let mut issues = RuleIssues::default();
            let rules = compile_rules(res, &slices, key, route, &mut report, &mut issues);
            report.parents = parent_statuses(parents, &issues);
            for (t, listener, hostnames) in attachments {
                report.attached.push(format!("{}/{}", tables[t].table.gateway, listener));
                tables[t].add(key, &hostnames, &rules);
            }
            report.attached.sort();
            report.attached.dedup();
        }
        if !report.attached.is_empty() || !report.problems.is_empty() {
            reports.push(report);
        }
    }
    let mut listeners = Vec::new();
    for tb in tables {
        let (table, notes) = tb.finish();
        for (route, note) in notes {
            match reports.iter_mut().find(|r| r.route == route) {
                Some(r) => r.problems.push(note),
                None => reports.push(RouteReport { route, attached: vec![], problems: vec![note], parents: vec![] }),
            }
        }
        listeners.push(table);
    }
    Table { listeners, routes: reports }
}

struct TableBuilder<'a> {
    table: ListenerTable,
    gateway: Option<&'a Gateway>,
    served: Vec<&'a GatewayListeners>,
    /// hostname (None = any) -> entries
    vhosts: HashMap<Option<Hostname>, Vec<Entry>>,
    seen: HashSet<(ObjectKey, Option<Hostname>)>,
}

impl<'a> TableBuilder<'a> {
    fn new(res: &'a Resources, m: &ListenMapping) -> Self {
        let mut table = ListenerTable { gateway: m.gateway.clone(), ..Default::default() };
        let gateway = res.gateways.get(&m.gateway);
        let mut served = Vec::new();
        match gateway {
            None => table.problems.push(format!("Gateway {} not found", m.gateway)),
            Some(gw) => {
                for l in &gw.spec.listeners {
                    if m.listener_port.is_some_and(|p| i32::from(p) != l.port) {
                        continue;
                    }
                    if l.protocol != "HTTP" {
                        table.problems.push(format!(
                            "listener {} ({} port {}) is not served: only HTTP listeners are",
                            l.name, l.protocol, l.port
                        ));
                        continue;
                    }
                    served.push(l);
                    table.listeners.push((l.name.clone(), l.port as u16));
                }
                if served.is_empty() {
                    table.problems.push(format!(
                        "Gateway {} has no HTTP listener{}",
                        m.gateway,
                        m.listener_port.map(|p| format!(" on port {p}")).unwrap_or_default()
                    ));
                }
            }
        }
        Self { table, gateway, served, vhosts: HashMap::new(), seen: HashSet::new() }
    }

    fn add(&mut self, route: &ObjectKey, hostnames: &[Option<Hostname>], rules: &[CompiledRule]) {
        for h in hostnames {
            if !self.seen.insert((route.clone(), h.clone())) {
                continue;
            }
            let entries = self.vhosts.entry(h.clone()).or_default();
            for r in rules {
                for m in &r.matchers {
                    entries.push(Entry { matcher: m.clone(), rule: r.rule.clone() });
                }
            }
        }
    }

    /// The finished table, and notes (route, text) about rules that can never match.
    fn finish(self) -> (ListenerTable, Vec<(String, String)>) {
        let mut t = self.table;
        let mut notes = Vec::new();
        for (h, mut entries) in self.vhosts {
            entries.sort_by(|a, b| a.matcher.precedence(&b.matcher));
            shadowed(&h, &entries, &mut notes);
            let name = h.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "*".into());
            let vhost = Arc::new(VirtualHost::new(name, entries));
            match h {
                Some(Hostname::Exact(e)) => {
                    t.hosts.insert(e, vhost);
                }
                Some(Hostname::Wildcard(suffix)) => t.wildcards.push((suffix, vhost)),
                None => t.any = Some(vhost),
            }
        }
        t.wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        notes.sort();
        notes.dedup();
        (t, notes)
    }
}

/// Notes for entries that an earlier entry (higher precedence) always wins over: the
/// same match, or any regular-expression path after a bare `PathPrefix /`.
fn shadowed(host: &Option<Hostname>, entries: &[Entry], notes: &mut Vec<(String, String)>) {
    let host = host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "*".into());
    let mut seen: HashMap<String, &Entry> = HashMap::new();
    let mut catch_all: Option<&Entry> = None;
    for e in entries {
        let winner = match (&e.matcher.path, catch_all) {
            (PathMatch::Regex(_), Some(c)) => Some(c),
            _ => seen.get(&e.matcher.signature()).copied(),
        };
        if let Some(w) = winner {
            if !Arc::ptr_eq(&w.rule, &e.rule) {
                notes.push((
                    e.rule.route.to_string(),
                    format!(
                        "rule {} match `{}` on host {host} never matches: {} rule {} takes precedence",
                        e.rule.index,
                        e.matcher.signature(),
                        w.rule.route,
                        w.rule.index
                    ),
                ));
            }
            continue;
        }
        seen.insert(e.matcher.signature(), e);
        if catch_all.is_none() && e.matcher.is_catch_all() {
            catch_all = Some(e);
        }
    }
}

/// Where a route attaches: (table index, listener name, effective hostnames; None = any).
fn attach(
    res: &Resources,
    tables: &[TableBuilder<'_>],
    key: &ObjectKey,
    route: &HttpRoute,
    report: &mut RouteReport,
) -> (Vec<(usize, String, Vec<Option<Hostname>>)>, Vec<ParentAttach>) {
    let mut parents = Vec::new();
    let route_hosts: Vec<Hostname> = route.spec.hostnames.iter().flatten().map(|h| Hostname::parse(h)).collect();
    let mut out = Vec::new();
    for pref in route.spec.parent_refs.iter().flatten() {
        if pref.group.as_deref().is_some_and(|g| g != GATEWAY_GROUP)
            || pref.kind.as_deref().is_some_and(|k| k != "Gateway")
        {
            continue; // not a Gateway parent: not ours
        }
        let gw_key = ObjectKey::new(pref.namespace.clone().unwrap_or_else(|| key.namespace.clone()), &pref.name);
        let mut matched_any_table = false;
        let before = out.len();
        let mut reasons = Vec::new();
        for (t, tb) in tables.iter().enumerate() {
            if tb.table.gateway != gw_key || tb.gateway.is_none() {
                continue;
            }
            matched_any_table = true;
            for l in &tb.served {
                match listener_accepts(res, tb.gateway.unwrap(), l, pref, &key.namespace, &route_hosts) {
                    Ok(hosts) => out.push((t, l.name.clone(), hosts)),
                    Err(reason) => reasons.push(format!("{}/{}: {reason}", gw_key, l.name)),
                }
            }
        }
        if !matched_any_table {
            continue;
        }
        let accepted_here = out.len() > before;
        let rejection = if accepted_here {
            None
        } else {
            // The most telling reason: a listener that the ref selects but refuses the
            // route beats "no listener selected".
            let reason = ["NotAllowedByListeners", "NoMatchingListenerHostname"]
                .into_iter()
                .find(|r| reasons.iter().any(|m| m.contains(r)))
                .unwrap_or("NoMatchingParent");
            let why = if reasons.is_empty() { "no HTTP listener served".to_string() } else { reasons.join("; ") };
            report.problems.push(format!("parentRef {gw_key}: not accepted: {why}"));
            Some((reason.to_string(), why))
        };
        parents.push(ParentAttach {
            gateway: gw_key,
            section_name: pref.section_name.clone(),
            port: pref.port,
            rejection,
        });
    }
    (out, parents)
}

/// A parentRef to a served Gateway, and why it was not accepted (reason, message).
struct ParentAttach {
    gateway: ObjectKey,
    section_name: Option<String>,
    port: Option<i32>,
    rejection: Option<(String, String)>,
}

/// The first problem of each kind found while compiling a route's rules.
#[derive(Default)]
struct RuleIssues {
    /// (reason, message) for Accepted=False: an unsupported value.
    unsupported: Option<(String, String)>,
    /// (reason, message) for ResolvedRefs=False.
    unresolved: Option<(String, String)>,
}

fn split_reason(s: &str) -> (String, String) {
    match s.split_once(": ") {
        Some((r, m)) if !r.contains(' ') => (r.to_string(), m.to_string()),
        _ => ("UnsupportedValue".to_string(), s.to_string()),
    }
}

fn parent_statuses(parents: Vec<ParentAttach>, issues: &RuleIssues) -> Vec<ParentStatus> {
    parents
        .into_iter()
        .map(|p| {
            let accepted = match (&p.rejection, &issues.unsupported) {
                (Some((r, m)), _) | (None, Some((r, m))) => {
                    Condition { kind: "Accepted".into(), status: false, reason: r.clone(), message: m.clone() }
                }
                (None, None) => Condition {
                    kind: "Accepted".into(),
                    status: true,
                    reason: "Accepted".into(),
                    message: "the route is served".into(),
                },
            };
            let resolved = match &issues.unresolved {
                Some((r, m)) => {
                    Condition { kind: "ResolvedRefs".into(), status: false, reason: r.clone(), message: m.clone() }
                }
                None => Condition {
                    kind: "ResolvedRefs".into(),
                    status: true,
                    reason: "ResolvedRefs".into(),
                    message: "all references resolved".into(),
                },
            };
            ParentStatus {
                gateway: p.gateway,
                section_name: p.section_name,
                port: p.port,
                conditions: vec![accepted, resolved],
            }
        })
        .collect()
}

/// Whether listener `l` accepts the route through `pref`; the effective hostnames if so.
fn listener_accepts(
    res: &Resources,
    gw: &Gateway,
    l: &GatewayListeners,
    pref: &HttpRouteParentRefs,
    route_ns: &str,
    route_hosts: &[Hostname],
) -> Result<Vec<Option<Hostname>>, String> {
    if pref.section_name.as_ref().is_some_and(|s| s != &l.name) {
        return Err("NoMatchingParent: sectionName does not name this listener".into());
    }
    if pref.port.is_some_and(|p| p != l.port) {
        return Err("NoMatchingParent: port does not match this listener".into());
    }
    let allowed = l.allowed_routes.as_ref();
    if let Some(kinds) = allowed.and_then(|a| a.kinds.as_ref()) {
        let ok =
            kinds.iter().any(|k| k.kind == "HTTPRoute" && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP);
        if !ok {
            return Err("NotAllowedByListeners: listener allowedRoutes.kinds excludes HTTPRoute".into());
        }
    }
    let ns = allowed.and_then(|a| a.namespaces.as_ref());
    let gw_ns = namespace_of(&gw.metadata);
    let ns_ok = match ns.and_then(|n| n.from.as_ref()).unwrap_or(&From_::Same) {
        From_::All => true,
        From_::Same => route_ns == gw_ns,
        From_::Selector => {
            let sel = ns.and_then(|n| n.selector.as_ref());
            let labels = namespace_labels(res, route_ns);
            sel.is_some_and(|s| {
                let ml = s.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
                let me = s.match_expressions.iter().flatten().all(|e| {
                    let vals = e.values.clone().unwrap_or_default();
                    match e.operator.as_str() {
                        "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
                        "NotIn" => !labels.get(&e.key).is_some_and(|v| vals.contains(v)),
                        "Exists" => labels.contains_key(&e.key),
                        "DoesNotExist" => !labels.contains_key(&e.key),
                        _ => false,
                    }
                });
                ml && me
            })
        }
    };
    if !ns_ok {
        return Err(format!("NotAllowedByListeners: namespace {route_ns} is not allowed"));
    }
    let listener_host = l.hostname.as_deref().map(Hostname::parse);
    let hosts: Vec<Option<Hostname>> = match (&listener_host, route_hosts.is_empty()) {
        (None, true) => vec![None],
        (None, false) => route_hosts.iter().cloned().map(Some).collect(),
        (Some(lh), true) => vec![Some(lh.clone())],
        (Some(lh), false) => route_hosts.iter().filter_map(|rh| Hostname::intersect(lh, rh)).map(Some).collect(),
    };
    if hosts.is_empty() {
        return Err("NoMatchingListenerHostname: no route hostname matches the listener's".into());
    }
    Ok(hosts)
}

/// Labels of a namespace, with the `kubernetes.io/metadata.name` label Kubernetes sets.
fn namespace_labels(res: &Resources, ns: &str) -> BTreeMap<String, String> {
    let mut labels = res.namespaces.get(ns).and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    labels
}

struct CompiledRule {
    rule: Arc<Rule>,
    matchers: Vec<Matcher>,
}

fn compile_rules(
    res: &Resources,
    slices: &SliceIndex<'_>,
    key: &ObjectKey,
    route: &HttpRoute,
    report: &mut RouteReport,
    issues: &mut RuleIssues,
) -> Vec<CompiledRule> {
    let created: Arc<str> =
        route.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default().into();
    let route_key: Arc<str> = key.to_string().into();
    let mut out = Vec::new();
    for (ri, rule) in route.spec.rules.iter().flatten().enumerate() {
        let mut matchers = Vec::new();
        let default_match = [HttpRouteRulesMatches::default()];
        let matches = rule.matches.as_deref().filter(|m| !m.is_empty()).unwrap_or(&default_match);
        for (mi, m) in matches.iter().enumerate() {
            match compile_match(m, (created.clone(), route_key.clone(), ri, mi)) {
                Ok(m) => matchers.push(m),
                Err(e) => {
                    let msg = format!("rule {ri} match {mi}: UnsupportedValue: {e}");
                    issues.unsupported.get_or_insert_with(|| ("UnsupportedValue".into(), msg.clone()));
                    report.problems.push(msg);
                }
            }
        }
        let ctx = RefCtx { res, slices, route: key };
        let filters = compile_filters(&ctx, rule.filters.iter().flatten());
        for f in &filters {
            if let Filter::Unsupported { reason } = f {
                let msg = format!("rule {ri}: {reason}; matching requests get 500");
                issues.unsupported.get_or_insert_with(|| ("UnsupportedValue".into(), msg.clone()));
                report.problems.push(msg);
            }
        }
        let backends = compile_backends(res, slices, key, rule, ri, report);
        for b in &backends {
            if let BackendTarget::Invalid(why) = &b.target {
                let (reason, msg) = split_reason(why);
                issues.unresolved.get_or_insert_with(|| (reason, format!("rule {ri} backendRef {}: {msg}", b.name)));
            }
        }
        let timeouts = compile_timeouts(rule, ri, report);
        let retry = compile_retry(rule, ri, report);
        out.push(CompiledRule {
            rule: Arc::new(Rule { route: key.clone(), index: ri, filters, backends, timeouts, retry }),
            matchers,
        });
    }
    out
}

fn compile_match(m: &HttpRouteRulesMatches, order: (Arc<str>, Arc<str>, usize, usize)) -> Result<Matcher, String> {
    let path = match &m.path {
        None => PathMatch::prefix("/"),
        Some(p) => {
            let v = p.value.as_deref().unwrap_or("/");
            match p.r#type.as_ref().unwrap_or(&HttpRouteRulesMatchesPathType::PathPrefix) {
                HttpRouteRulesMatchesPathType::Exact => PathMatch::Exact(v.to_string()),
                HttpRouteRulesMatchesPathType::PathPrefix => PathMatch::prefix(v),
                HttpRouteRulesMatchesPathType::RegularExpression => {
                    PathMatch::Regex(full_regex(v).map_err(|e| format!("path regex {v:?}: {e}"))?)
                }
            }
        }
    };
    let method = m
        .method
        .as_ref()
        .map(|m| serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default());
    let mut headers = Vec::new();
    let mut seen = HashSet::new();
    for h in m.headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("header name {:?}", h.name))?;
        // "If multiple entries specify equivalent header names, only the first ... MUST be considered."
        if !seen.insert(name.clone()) {
            continue;
        }
        let vm = match h.r#type.as_ref().unwrap_or(&HttpRouteRulesMatchesHeadersType::Exact) {
            HttpRouteRulesMatchesHeadersType::Exact => ValueMatch::Exact(h.value.clone()),
            HttpRouteRulesMatchesHeadersType::RegularExpression => {
                ValueMatch::Regex(full_regex(&h.value).map_err(|e| format!("header regex {:?}: {e}", h.value))?)
            }
        };
        headers.push((name, vm));
    }
    let mut query = Vec::new();
    let mut seen = HashSet::new();
    for q in m.query_params.iter().flatten() {
        if !seen.insert(q.name.clone()) {
            continue;
        }
        let vm = match q.r#type.as_ref().unwrap_or(&HttpRouteRulesMatchesQueryParamsType::Exact) {
            HttpRouteRulesMatchesQueryParamsType::Exact => ValueMatch::Exact(q.value.clone()),
            HttpRouteRulesMatchesQueryParamsType::RegularExpression => {
                ValueMatch::Regex(full_regex(&q.value).map_err(|e| format!("query regex {:?}: {e}", q.value))?)
            }
        };
        query.push((q.name.clone(), vm));
    }
    Ok(Matcher { path, method, headers, query, order })
}

fn header_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs
        .map(|(n, v)| {
            Ok((
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}"))?,
                HeaderValue::from_str(v).map_err(|_| format!("invalid header value {v:?}"))?,
            ))
        })
        .collect()
}

/// What resolving a backendRef needs.
struct RefCtx<'a> {
    res: &'a Resources,
    slices: &'a SliceIndex<'a>,
    route: &'a ObjectKey,
}

fn compile_filters<'a>(ctx: &RefCtx<'_>, filters: impl Iterator<Item = &'a HttpRouteRulesFilters>) -> Vec<Filter> {
    let mut out: Vec<Filter> = filters.map(|f| compile_filter(ctx, f)).collect();
    let has = |out: &[Filter], f: fn(&Filter) -> bool| out.iter().any(f);
    if has(&out, |f| matches!(f, Filter::RequestRedirect(_))) && has(&out, |f| matches!(f, Filter::UrlRewrite(_))) {
        out.push(Filter::Unsupported { reason: "RequestRedirect and URLRewrite cannot be used together".into() });
    }
    out
}

fn compile_filter(ctx: &RefCtx<'_>, f: &HttpRouteRulesFilters) -> Filter {
    let unsupported = |reason: String| Filter::Unsupported { reason };
    let missing = |what: &str| unsupported(format!("filter {what} has no {what} field"));
    match f.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier | HttpRouteRulesFiltersType::ResponseHeaderModifier => {
            let request = f.r#type == HttpRouteRulesFiltersType::RequestHeaderModifier;
            // The request and response modifier types have the same shape.
            let json = if request {
                serde_json::to_value(&f.request_header_modifier)
            } else {
                serde_json::to_value(&f.response_header_modifier)
            };
            let Ok(json) = json else {
                return unsupported("header modifier".into());
            };
            if json.is_null() {
                return missing(if request { "requestHeaderModifier" } else { "responseHeaderModifier" });
            }
            match header_modifier(&json) {
                Ok(m) if request => Filter::RequestHeaderModifier(m),
                Ok(m) => Filter::ResponseHeaderModifier(m),
                Err(e) => unsupported(format!("UnsupportedValue: {e}")),
            }
        }
        HttpRouteRulesFiltersType::UrlRewrite => {
            let Some(r) = &f.url_rewrite else {
                return missing("urlRewrite");
            };
            let path = match &r.path {
                None => None,
                Some(p) => match path_modifier(
                    p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath,
                    &p.replace_full_path,
                    &p.replace_prefix_match,
                ) {
                    Ok(m) => Some(m),
                    Err(e) => return unsupported(e),
                },
            };
            Filter::UrlRewrite(Rewrite { hostname: r.hostname.clone(), path })
        }
        HttpRouteRulesFiltersType::RequestRedirect => {
            let Some(r) = &f.request_redirect else {
                return missing("requestRedirect");
            };
            let status = r.status_code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return unsupported(format!("UnsupportedValue: redirect statusCode {status}"));
            }
            let path = match &r.path {
                None => None,
                Some(p) => match path_modifier(
                    p.r#type == gateway_api::apis::experimental::httproutes::HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
                    &p.replace_full_path,
                    &p.replace_prefix_match,
                ) {
                    Ok(m) => Some(m),
                    Err(e) => return unsupported(e),
                },
            };
            Filter::RequestRedirect(Redirect {
                scheme: r.scheme.as_ref().map(|s| match s {
                    HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".into(),
                    HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".into(),
                }),
                hostname: r.hostname.clone(),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path,
                status: status as u16,
            })
        }
        HttpRouteRulesFiltersType::RequestMirror => {
            let Some(m) = &f.request_mirror else { return missing("requestMirror") };
            let b = &m.backend_ref;
            let as_ref = HttpRouteRulesBackendRefs {
                group: b.group.clone(),
                kind: b.kind.clone(),
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
                ..Default::default()
            };
            let ns = b.namespace.clone().unwrap_or_else(|| ctx.route.namespace.clone());
            let target = resolve_backend(ctx.res, ctx.slices, ctx.route, &as_ref, &ns);
            if let BackendTarget::Invalid(why) = &target {
                return unsupported(format!("RequestMirror backendRef {ns}/{}: {why}", b.name));
            }
            let (numerator, denominator) = match (&m.fraction, m.percent) {
                (Some(fr), _) => (fr.numerator.max(0) as u32, fr.denominator.unwrap_or(100).max(0) as u32),
                (None, Some(p)) => (p.clamp(0, 100) as u32, 100),
                (None, None) => (1, 1),
            };
            if numerator > denominator {
                return unsupported(format!("UnsupportedValue: RequestMirror fraction {numerator}/{denominator}"));
            }
            Filter::RequestMirror(Mirror {
                backend: format!("{ns}/{}:{}", b.name, b.port.unwrap_or(0)),
                target,
                numerator,
                denominator,
            })
        }
        HttpRouteRulesFiltersType::Cors => {
            let Some(c) = &f.cors else { return missing("cors") };
            Filter::Cors(Cors {
                allow_origins: c.allow_origins.clone().unwrap_or_default(),
                allow_credentials: c.allow_credentials.unwrap_or(false),
                allow_methods: c.allow_methods.clone().unwrap_or_default(),
                allow_headers: c.allow_headers.clone().unwrap_or_default(),
                expose_headers: c.expose_headers.clone().unwrap_or_default(),
                max_age: c.max_age.unwrap_or(5).max(0) as u32,
            })
        }
        HttpRouteRulesFiltersType::ExternalAuth => unsupported("filter ExternalAuth is not supported".into()),
        HttpRouteRulesFiltersType::ExtensionRef => unsupported(format!(
            "filter ExtensionRef {} is not supported",
            f.extension_ref.as_ref().map(|e| format!("{}/{}", e.kind, e.name)).unwrap_or_default()
        )),
    }
}

fn header_modifier(json: &serde_json::Value) -> Result<HeaderModifier, String> {
    let pairs = |k: &str| -> Vec<(String, String)> {
        json.get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p.get("name").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                            p.get("value").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let set = pairs("set");
    let add = pairs("add");
    let remove = json
        .get("remove")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    Ok(HeaderModifier {
        set: header_pairs(set.iter().map(|(n, v)| (n.as_str(), v.as_str())))?,
        add: header_pairs(add.iter().map(|(n, v)| (n.as_str(), v.as_str())))?,
        remove: remove
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}")))
            .collect::<Result<_, _>>()?,
    })
}

fn path_modifier(full: bool, full_path: &Option<String>, prefix: &Option<String>) -> Result<PathModifier, String> {
    if full {
        full_path
            .clone()
            .map(PathModifier::ReplaceFullPath)
            .ok_or_else(|| "ReplaceFullPath without replaceFullPath".into())
    } else {
        prefix
            .clone()
            .map(PathModifier::ReplacePrefixMatch)
            .ok_or_else(|| "ReplacePrefixMatch without replacePrefixMatch".into())
    }
}

fn compile_backends(
    res: &Resources,
    slices: &SliceIndex<'_>,
    key: &ObjectKey,
    rule: &HttpRouteRules,
    ri: usize,
    report: &mut RouteReport,
) -> Vec<Backend> {
    let mut out = Vec::new();
    for b in rule.backend_refs.iter().flatten() {
        let weight = b.weight.unwrap_or(1);
        let ns = b.namespace.clone().unwrap_or_else(|| key.namespace.clone());
        let name = format!("{ns}/{}:{}", b.name, b.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into()));
        let target = resolve_backend(res, slices, key, b, &ns);
        if let BackendTarget::Invalid(why) = &target {
            report.problems.push(format!("rule {ri} backendRef {name}: {why}"));
        }
        // Backend filters have the same shape as rule filters: reuse the rule compiler.
        let filters = b
            .filters
            .iter()
            .flatten()
            .map(|f| match serde_json::to_value(f).and_then(serde_json::from_value::<HttpRouteRulesFilters>) {
                Ok(f) => compile_filter(&RefCtx { res, slices, route: key }, &f),
                Err(e) => Filter::Unsupported { reason: format!("backendRef filter: {e}") },
            })
            .collect();
        out.push(Backend::new(name, weight.max(0) as u32, filters, target));
    }
    out
}

fn resolve_backend(
    res: &Resources,
    slices: &SliceIndex<'_>,
    route: &ObjectKey,
    b: &HttpRouteRulesBackendRefs,
    ns: &str,
) -> BackendTarget {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !(group.is_empty() || group == "core") || kind != "Service" {
        return BackendTarget::Invalid(format!("InvalidKind: {group}/{kind} is not a Service"));
    }
    if ns != route.namespace && !reference_granted(res, &route.namespace, ns, &b.name) {
        return BackendTarget::Invalid(format!(
            "RefNotPermitted: no ReferenceGrant in {ns} allows HTTPRoutes from {}",
            route.namespace
        ));
    }
    let Some(port) = b.port else {
        return BackendTarget::Invalid("UnsupportedValue: a Service backendRef needs a port".into());
    };
    let Some(svc) = res.services.get(&ObjectKey::new(ns, &b.name)) else {
        return BackendTarget::Invalid(format!("BackendNotFound: Service {ns}/{} not found", b.name));
    };
    let Some(sp) = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|ps| ps.iter().find(|p| p.port == port))
    else {
        return BackendTarget::Invalid(format!("BackendNotFound: Service {ns}/{} has no port {port}", b.name));
    };
    BackendTarget::Endpoints(slices.ready_endpoints(ns, &b.name, sp.name.as_deref().unwrap_or("")))
}

/// EndpointSlices by (namespace, Service), built once per compile.
struct SliceIndex<'a>(HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>);

impl<'a> SliceIndex<'a> {
    fn new(res: &'a Resources) -> Self {
        let mut m: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for (k, slice) in &res.endpoint_slices {
            if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
                m.entry((k.namespace.as_str(), svc.as_str())).or_default().push(slice);
            }
        }
        Self(m)
    }

    /// Ready endpoints of a Service port, from every EndpointSlice of the Service: the
    /// slice port with the Service port's name gives the container port.
    fn ready_endpoints(&self, ns: &str, service: &str, port_name: &str) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for slice in self.0.get(&(ns, service)).into_iter().flatten() {
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
            else {
                continue;
            };
            for ep in &slice.endpoints {
                // "ready" unset means ready (EndpointSlice API).
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        out.push(SocketAddr::new(ip, port as u16));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn reference_granted(res: &Resources, from_ns: &str, to_ns: &str, service: &str) -> bool {
    res.reference_grants.iter().any(|(k, g)| {
        k.namespace == to_ns
            && g.spec.from.iter().any(|f| f.group == GATEWAY_GROUP && f.kind == "HTTPRoute" && f.namespace == from_ns)
            && g.spec.to.iter().any(|t| {
                (t.group.is_empty() || t.group == "core")
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == service)
            })
    })
}

fn compile_timeouts(rule: &HttpRouteRules, ri: usize, report: &mut RouteReport) -> Timeouts {
    let mut t = Timeouts::default();
    if let Some(to) = &rule.timeouts {
        for (field, value, slot) in
            [("request", &to.request, &mut t.request), ("backendRequest", &to.backend_request, &mut t.backend_request)]
        {
            if let Some(v) = value {
                match parse_duration(v) {
                    Ok(d) => *slot = (!d.is_zero()).then_some(d),
                    Err(e) => report.problems.push(format!("rule {ri} timeouts.{field}: UnsupportedValue: {e}")),
                }
            }
        }
    }
    t
}

fn compile_retry(rule: &HttpRouteRules, ri: usize, report: &mut RouteReport) -> Option<Retry> {
    let r = rule.retry.as_ref()?;
    let backoff = match r.backoff.as_deref().map(parse_duration) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            report.problems.push(format!("rule {ri} retry.backoff: UnsupportedValue: {e}"));
            None
        }
        None => None,
    };
    let codes: Vec<u16> =
        r.codes.iter().flatten().filter_map(|c| u16::try_from(*c).ok()).filter(|c| (500..600).contains(c)).collect();
    Some(Retry { attempts: r.attempts.unwrap_or(0).clamp(0, 10) as u32, codes, backoff })
}

/// Gateway API Duration (GEP-2257): 1 to 4 `<number><unit>` with units h, m, s, ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a Gateway API duration like 10s, 1m30s or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * n as u32;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}
