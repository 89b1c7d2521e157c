//! GRPCRoute (v1): its parentRefs for attachment, and its rules compiled into the same
//! [`Matcher`]s and [`Rule`]s as an HTTPRoute's, so that the proxy looks both up in
//! one table. A method match becomes a match on the request path `/service/method`
//! (gRPC over HTTP/2: `:path` is `/` Service-Name `/` method name), header matches are
//! HTTPRoute's, and [`Matcher::grpc`] limits the match to gRPC calls and gives it the
//! GRPCRoute precedence (`matching.rs`). Filters (request/response header modifiers,
//! RequestMirror) and backendRefs have an HTTPRoute's fields and reuse its compilers.
use std::sync::Arc;

use gateway_api::apis::experimental::httproutes::{
    HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesHeadersType,
};
use gateway_api::apis::standard::grpcroutes::{
    GrpcRoute, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType,
};
use regex::Regex;

use super::attach::RouteParents;
use super::filter_compile::{RefCtx, compile_filters};
use super::filters::Filter;
use super::matching::{GrpcMethodMatch, Matcher, PathMatch, full_regex};
use super::refs::SliceIndex;
use super::rules::{CompiledRule, compile_backends, compile_match};
use super::status::{Problem, Reason, RuleIssues};
use super::{RouteKind, RouteReport, Rule, Timeouts};
use crate::resources::{ObjectKey, Resources};

/// The GRPCRoute's hostnames and parentRefs, for [`super::attach::attach`].
pub(super) fn parents(route: &GrpcRoute) -> RouteParents<'_> {
    let parent_refs = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .map(|p| HttpRouteParentRefs {
            group: p.group.clone(),
            kind: p.kind.clone(),
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            port: p.port,
            section_name: p.section_name.clone(),
        })
        .collect();
    RouteParents { kind: RouteKind::Grpc, hostnames: route.spec.hostnames.as_deref().unwrap_or(&[]), parent_refs }
}

/// Converts between the gateway-api crate's per-place structs of the same shape (it
/// generates one per kind and place, with no conversions): through serde.
fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: &A) -> Result<B, String> {
    serde_json::to_value(a).and_then(serde_json::from_value).map_err(|e| e.to_string())
}

pub(super) fn compile_grpc_rules(
    res: &Resources,
    slices: &SliceIndex<'_>,
    key: &ObjectKey,
    route: &GrpcRoute,
    report: &mut RouteReport,
    issues: &mut RuleIssues,
) -> Vec<CompiledRule> {
    let created: Arc<str> =
        route.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default().into();
    let route_key: Arc<str> = key.to_string().into();
    let mut out = Vec::new();
    for (ri, rule) in route.spec.rules.iter().flatten().enumerate() {
        let mut matchers = Vec::new();
        // "If no matches are specified, the implementation MUST match every gRPC request."
        let default_match = [GrpcRouteRulesMatches::default()];
        let matches = rule.matches.as_deref().filter(|m| !m.is_empty()).unwrap_or(&default_match);
        for (mi, m) in matches.iter().enumerate() {
            match compile_grpc_match(m, (created.clone(), route_key.clone(), ri, mi)) {
                Ok(m) => matchers.push(m),
                Err(e) => unsupported(issues, report, format!("rule {ri} match {mi}: UnsupportedValue: {e}")),
            }
        }
        let ctx = RefCtx { res, slices, route: key, kind: RouteKind::Grpc };
        let filters: Vec<HttpRouteRulesFilters> = rule
            .filters
            .iter()
            .flatten()
            .filter_map(|f| match convert(f) {
                Ok(f) => Some(f),
                Err(e) => {
                    unsupported(issues, report, format!("rule {ri}: filter {:?}: {e}", f.r#type));
                    None
                }
            })
            .collect();
        let filters = compile_filters(&ctx, filters.iter());
        for f in &filters {
            if let Filter::Unsupported { reason } = f {
                unsupported(issues, report, format!("rule {ri}: {reason}; matching calls get an error"));
            }
        }
        let backend_refs: Vec<HttpRouteRulesBackendRefs> = rule
            .backend_refs
            .iter()
            .flatten()
            .map(|b| {
                convert(b).unwrap_or_else(|e| {
                    // same fields; a filter that does not convert is reported by the backend compiler
                    tracing::debug!(error = %e, "GRPCRoute backendRef filters do not convert");
                    HttpRouteRulesBackendRefs {
                        group: b.group.clone(),
                        kind: b.kind.clone(),
                        name: b.name.clone(),
                        namespace: b.namespace.clone(),
                        port: b.port,
                        weight: b.weight,
                        ..Default::default()
                    }
                })
            })
            .collect();
        let as_http = HttpRouteRules { backend_refs: Some(backend_refs), ..Default::default() };
        let backends = compile_backends(res, slices, (RouteKind::Grpc, key), &as_http, ri, report, issues);
        out.push(CompiledRule {
            rule: Arc::new(Rule {
                route: key.clone(),
                kind: RouteKind::Grpc,
                index: ri,
                filters,
                backends,
                timeouts: Timeouts::default(),
                retry: None,
                label: Rule::label_for(RouteKind::Grpc, key, ri),
            }),
            matchers,
        });
    }
    out
}

/// An unsupported value: reported, and the first one makes the route `Accepted=False`.
fn unsupported(issues: &mut RuleIssues, report: &mut RouteReport, msg: String) {
    issues.unsupported.get_or_insert_with(|| Problem::new(Reason::UnsupportedValue, msg.clone()));
    report.problems.push(msg);
}

/// The CRD's patterns for an Exact service and method (the API server checks them;
/// manifests are checked here).
fn exact_service(s: &str) -> bool {
    static RE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$").expect("valid service pattern")
    });
    RE.is_match(s)
}

fn exact_method(s: &str) -> bool {
    static RE: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z_0-9]*$").expect("valid method pattern"));
    RE.is_match(s)
}

/// One GRPCRouteMatch: the method match as a path match, the header matches as an
/// HTTPRoute's, and the gRPC marker. `order` as in [`compile_match`].
pub(super) fn compile_grpc_match(
    m: &GrpcRouteRulesMatches,
    order: (Arc<str>, Arc<str>, usize, usize),
) -> Result<Matcher, String> {
    let headers = m
        .headers
        .iter()
        .flatten()
        .map(|h| HttpRouteRulesMatchesHeaders {
            name: h.name.clone(),
            r#type: h.r#type.as_ref().map(|t| match t {
                GrpcRouteRulesMatchesHeadersType::Exact => HttpRouteRulesMatchesHeadersType::Exact,
                GrpcRouteRulesMatchesHeadersType::RegularExpression => {
                    HttpRouteRulesMatchesHeadersType::RegularExpression
                }
            }),
            value: h.value.clone(),
        })
        .collect();
    let mut matcher = compile_match(&HttpRouteRulesMatches { headers: Some(headers), ..Default::default() }, order)?;
    let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let (path, grpc) = match &m.method {
        None => (PathMatch::prefix("/"), GrpcMethodMatch { kind: None, service: None, method: None }),
        Some(mm) => {
            let (service, method) = (nonempty(&mm.service), nonempty(&mm.method));
            if service.is_none() && method.is_none() {
                return Err("a method match needs a service or a method".into());
            }
            let regex = matches!(mm.r#type, Some(GrpcRouteRulesMatchesMethodType::RegularExpression));
            let part = |v: &Option<String>, what: &str, exact_ok: fn(&str) -> bool| -> Result<String, String> {
                match v {
                    None => Ok("[^/]+".into()),
                    Some(v) if regex => {
                        Regex::new(v).map_err(|e| format!("{what} regex {v:?}: {e}"))?;
                        Ok(format!("(?:{v})"))
                    }
                    Some(v) if exact_ok(v) => Ok(regex::escape(v)),
                    Some(v) => Err(format!("{what} {v:?} is not a valid gRPC {what} name")),
                }
            };
            let (s, me) = (part(&service, "service", exact_service)?, part(&method, "method", exact_method)?);
            let path = match (&service, &method, regex) {
                (Some(s), Some(me), false) => PathMatch::Exact(format!("/{s}/{me}")),
                _ => {
                    let re = format!("/{s}/{me}");
                    PathMatch::Regex(full_regex(&re).map_err(|e| format!("method match {re:?}: {e}"))?)
                }
            };
            let kind = Some(if regex { "RegularExpression" } else { "Exact" });
            (path, GrpcMethodMatch { kind, service, method })
        }
    };
    matcher.path = path;
    matcher.grpc = Some(grpc);
    Ok(matcher)
}
