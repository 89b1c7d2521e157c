//! Rules: matches (path, headers, query, method; precedence order), timeouts, retry.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
use http::HeaderName;

use super::filters::Filter;
use super::matching::{Matcher, PathMatch, ValueMatch, full_regex};
use super::{Retry, RouteKind, RouteReport, Rule, Timeouts};
use crate::resources::{ObjectKey, Resources};

use super::filter_compile::{RefCtx, compile_filter, compile_filters};
use super::refs::{SliceIndex, resolve_backend_from};
use super::status::{Problem, Reason, RuleIssues};
use super::{Backend, BackendTarget};

pub(super) struct CompiledRule {
    pub(super) rule: Arc<Rule>,
    pub(super) matchers: Vec<Matcher>,
}

pub(super) fn compile_rules(
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
                    issues.unsupported.get_or_insert_with(|| Problem::new(Reason::UnsupportedValue, msg.clone()));
                    report.problems.push(msg);
                }
            }
        }
        let ctx = RefCtx { res, slices, route: key, kind: RouteKind::Http };
        let filters = compile_filters(&ctx, rule.filters.iter().flatten());
        for f in &filters {
            if let Filter::Unsupported { reason } = f {
                let msg = format!("rule {ri}: {reason}; matching requests get 500");
                issues.unsupported.get_or_insert_with(|| Problem::new(Reason::UnsupportedValue, msg.clone()));
                report.problems.push(msg);
            }
        }
        let backends = compile_backends(res, slices, (RouteKind::Http, key), rule, ri, report, issues);
        let timeouts = compile_timeouts(rule, ri, report);
        let retry = compile_retry(rule, ri, report);
        out.push(CompiledRule {
            rule: Arc::new(Rule {
                route: key.clone(),
                kind: RouteKind::Http,
                index: ri,
                filters,
                backends,
                timeouts,
                retry,
                label: Rule::label_for(RouteKind::Http, key, ri),
            }),
            matchers,
        });
    }
    out
}

pub(super) fn compile_match(
    m: &HttpRouteRulesMatches,
    order: (Arc<str>, Arc<str>, usize, usize),
) -> Result<Matcher, String> {
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
    // the generated method enum has no as_str; its serde name is the wire name (GET, ...)
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
    Ok(Matcher { path, method, headers, query, order, grpc: None })
}

pub(super) fn compile_timeouts(rule: &HttpRouteRules, ri: usize, report: &mut RouteReport) -> Timeouts {
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

pub(super) fn compile_retry(rule: &HttpRouteRules, ri: usize, report: &mut RouteReport) -> Option<Retry> {
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

/// A Gateway API duration (GEP-2257: 1 to 4 `<number><unit>`, units h, m, s, ms),
/// parsed by the gateway-api crate.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: gateway_api::Duration =
        s.parse().map_err(|e| format!("{s:?} is not a Gateway API duration like 10s, 1m30s or 500ms ({e})"))?;
    Ok(Duration::new(d.as_secs(), d.subsec_nanos()))
}

pub(super) fn compile_backends(
    res: &Resources,
    slices: &SliceIndex<'_>,
    (kind, key): (RouteKind, &ObjectKey),
    rule: &HttpRouteRules,
    ri: usize,
    report: &mut RouteReport,
    issues: &mut RuleIssues,
) -> Vec<Backend> {
    let mut out = Vec::new();
    for b in rule.backend_refs.iter().flatten() {
        let weight = b.weight.unwrap_or(1);
        let ns = b.namespace.clone().unwrap_or_else(|| key.namespace.clone());
        let name = format!("{ns}/{}:{}", b.name, b.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into()));
        let target = match resolve_backend_from(res, slices, kind, key, b, &ns) {
            Ok(endpoints) => BackendTarget::Endpoints(endpoints),
            Err(p) => {
                report.problems.push(format!("rule {ri} backendRef {name}: {p}"));
                issues.unresolved.get_or_insert_with(|| p.within(&format!("rule {ri} backendRef {name}")));
                BackendTarget::Invalid(p.to_string())
            }
        };
        // Backend filters have the same shape as rule filters: reuse the rule compiler.
        // gateway-api generates separate, identical structs with no conversion: serde converts.
        let mut filters: Vec<Filter> = b
            .filters
            .iter()
            .flatten()
            .map(|f| match serde_json::to_value(f).and_then(serde_json::from_value::<HttpRouteRulesFilters>) {
                Ok(f) => compile_filter(&RefCtx { res, slices, route: key, kind }, &f),
                Err(e) => Filter::Unsupported { reason: format!("backendRef filter: {e}") },
            })
            .collect();
        super::filter_compile::exclusive(&mut filters);
        for f in &filters {
            if let Filter::Unsupported { reason } = f {
                let msg = format!("rule {ri} backendRef {name}: {reason}; requests sent to it get 500");
                issues.unsupported.get_or_insert_with(|| Problem::new(Reason::UnsupportedValue, msg.clone()));
                report.problems.push(msg);
            }
        }
        let protocol = super::refs::backend_protocol(res, &ns, &b.name, b.port);
        out.push(Backend::new(name, weight.max(0) as u32, filters, target).with_protocol(protocol));
    }
    out
}
