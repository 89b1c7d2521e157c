//! Filter compilation: the Gateway API filters of a rule or backendRef into the
//! proxy's [`Filter`]s (an unsupported or invalid one becomes `Filter::Unsupported`:
//! requests that reach it get 500).

use gateway_api::apis::experimental::httproutes::{
    HttpRouteRulesBackendRefs, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewritePathType,
};
use http::{HeaderName, HeaderValue};

use super::BackendTarget;
use super::filters::{Cors, Filter, HeaderModifier, Mirror, PathModifier, Redirect, Rewrite};
use crate::resources::{ObjectKey, Resources};

use super::RouteKind;
use super::refs::{SliceIndex, resolve_backend_from};

/// What resolving a backendRef needs.
pub(super) struct RefCtx<'a> {
    pub(super) res: &'a Resources,
    pub(super) slices: &'a SliceIndex<'a>,
    pub(super) route: &'a ObjectKey,
    /// The kind of the route (the kind a ReferenceGrant for a mirror must name).
    pub(super) kind: RouteKind,
}

pub(super) fn compile_filters<'a>(
    ctx: &RefCtx<'_>,
    filters: impl Iterator<Item = &'a HttpRouteRulesFilters>,
) -> Vec<Filter> {
    let mut out: Vec<Filter> = filters.map(|f| compile_filter(ctx, f)).collect();
    exclusive(&mut out);
    out
}

/// "RequestRedirect and URLRewrite cannot be used together" in one list of filters
/// (a rule's, or a backendRef's): such a list gets an Unsupported entry.
pub(super) fn exclusive(out: &mut Vec<Filter>) {
    let has = |out: &[Filter], f: fn(&Filter) -> bool| out.iter().any(f);
    if has(out, |f| matches!(f, Filter::RequestRedirect(_))) && has(out, |f| matches!(f, Filter::UrlRewrite(_))) {
        out.push(Filter::Unsupported { reason: "RequestRedirect and URLRewrite cannot be used together".into() });
    }
}

pub(super) fn compile_filter(ctx: &RefCtx<'_>, f: &HttpRouteRulesFilters) -> Filter {
    let unsupported = |reason: String| Filter::Unsupported { reason };
    let missing = |what: &str| unsupported(format!("filter {what} has no {what} field"));
    match f.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier | HttpRouteRulesFiltersType::ResponseHeaderModifier => {
            let request = f.r#type == HttpRouteRulesFiltersType::RequestHeaderModifier;
            // The request and response modifier types have the same shape, but gateway-api
            // generates one struct per place with no conversion between them: serde converts.
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
            let target = match resolve_backend_from(ctx.res, ctx.slices, ctx.kind, ctx.route, &as_ref, &ns) {
                Ok(endpoints) => BackendTarget::Endpoints(endpoints),
                Err(why) => return unsupported(format!("RequestMirror backendRef {ns}/{}: {why}", b.name)),
            };
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
                protocol: super::refs::backend_protocol(ctx.res, &ns, &b.name, b.port),
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

pub(super) fn header_modifier(json: &serde_json::Value) -> Result<HeaderModifier, String> {
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

pub(super) fn path_modifier(
    full: bool,
    full_path: &Option<String>,
    prefix: &Option<String>,
) -> Result<PathModifier, String> {
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

pub(super) fn header_pairs<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs
        .map(|(n, v)| {
            Ok((
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}"))?,
                HeaderValue::from_str(v).map_err(|_| format!("invalid header value {v:?}"))?,
            ))
        })
        .collect()
}
