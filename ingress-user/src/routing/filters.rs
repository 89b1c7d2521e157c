//! HTTPRoute filters, compiled, and the pure functions that apply them: header
//! modifiers, URL rewrites, redirects. Filters the ingress does not implement are
//! kept as [`Filter::Unsupported`] so matching requests get a 500, never a silent skip.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(Redirect),
    #[serde(rename = "URLRewrite")]
    UrlRewrite(Rewrite),
    #[serde(rename = "CORS")]
    Cors(Cors),
    RequestMirror(Mirror),
    /// Not implemented (yet) or not valid: requests that reach it get 500.
    Unsupported {
        reason: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    #[serde(with = "header_pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(with = "header_pairs")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(with = "header_names")]
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies set, then add, then remove, as the spec orders them.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathModifier {
    ReplaceFullPath(String),
    ReplacePrefixMatch(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: u16,
}

/// A copy of each sampled request goes to `target`; its response is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mirror {
    pub backend: String,
    pub target: super::BackendTarget,
    /// Mirror `numerator` out of `denominator` requests.
    pub numerator: u32,
    pub denominator: u32,
    /// How the copies reach the mirror's pods.
    pub protocol: super::BackendProtocol,
}

impl Mirror {
    /// Whether the request with random number `r` is mirrored.
    pub fn sampled(&self, r: u64) -> bool {
        self.denominator > 0 && (r % self.denominator as u64) < self.numerator as u64
    }
}

/// HTTPCORSFilter, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_credentials: bool,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: u32,
}

/// Does `origin` (scheme://host[:port]) match an allowOrigins entry? `*` matches any;
/// a `*` in the host matches one or more labels (`https://*.example.com`).
fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let origin = origin.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.split_once('*') {
        None => pattern == origin,
        Some((before, after)) => {
            origin.len() > before.len() + after.len() && origin.starts_with(before) && origin.ends_with(after)
        }
    }
}

fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value).ok().map(|v| (HeaderName::from_static(name), v))
}

impl Cors {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|p| origin_matches(p, origin))
    }

    fn allow_origin_value<'a>(&self, origin: &'a str) -> &'a str {
        // With credentials the spec forbids `*`: echo the origin.
        if self.allow_origins.iter().any(|p| p == "*") && !self.allow_credentials { "*" } else { origin }
    }

    /// Headers of the answer to a preflight (OPTIONS with Origin and
    /// Access-Control-Request-Method). None when the origin is not allowed: the
    /// answer then carries no CORS header, and the browser refuses.
    pub fn preflight(
        &self,
        origin: &str,
        method: &str,
        req_headers: Option<&str>,
    ) -> Option<Vec<(HeaderName, HeaderValue)>> {
        if !self.origin_allowed(origin) {
            return None;
        }
        let wildcard = |list: &[String]| list.iter().any(|m| m == "*");
        let methods = if wildcard(&self.allow_methods) {
            if self.allow_credentials { method.to_string() } else { "*".to_string() }
        } else {
            self.allow_methods.join(", ")
        };
        let headers = if wildcard(&self.allow_headers) {
            if self.allow_credentials { req_headers.unwrap_or("").to_string() } else { "*".to_string() }
        } else {
            self.allow_headers.join(", ")
        };
        let mut out: Vec<_> = [
            header("access-control-allow-origin", self.allow_origin_value(origin)),
            header("access-control-allow-methods", &methods),
            header("access-control-max-age", &self.max_age.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !headers.is_empty() {
            out.extend(header("access-control-allow-headers", &headers));
        }
        if self.allow_credentials {
            out.extend(header("access-control-allow-credentials", "true"));
        }
        Some(out)
    }

    /// Headers added to the response of an actual (non-preflight) cross-origin request.
    pub fn response_headers(&self, origin: &str) -> Vec<(HeaderName, HeaderValue)> {
        if !self.origin_allowed(origin) {
            return vec![];
        }
        let mut out: Vec<_> =
            header("access-control-allow-origin", self.allow_origin_value(origin)).into_iter().collect();
        if self.allow_credentials {
            out.extend(header("access-control-allow-credentials", "true"));
        }
        if !self.expose_headers.is_empty() {
            out.extend(header("access-control-expose-headers", &self.expose_headers.join(", ")));
        }
        out
    }
}

/// Replaces the matched `prefix` of `path` with `replacement`, element-wise:
/// `/prefix/one` -> `/` turns `/prefix/one/three` into `/three` and `/prefix/one` into `/`.
pub fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = if prefix == "/" { path } else { path.get(prefix.len()..).unwrap_or("") };
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    if out.ends_with('/') && rest.starts_with('/') {
        out.push_str(&rest[1..]);
    } else if !rest.is_empty() && !rest.starts_with('/') && !out.ends_with('/') {
        out.push('/');
        out.push_str(rest);
    } else {
        out.push_str(rest);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The new path for a path modifier. `Err` when ReplacePrefixMatch is used with a
/// match that is not a PathPrefix (the spec forbids it).
pub fn modify_path(m: &PathModifier, path: &str, matched_prefix: Option<&str>) -> Result<String, &'static str> {
    match m {
        PathModifier::ReplaceFullPath(p) => Ok(p.clone()),
        PathModifier::ReplacePrefixMatch(r) => match matched_prefix {
            Some(prefix) => Ok(replace_prefix(path, prefix, r)),
            None => Err("ReplacePrefixMatch needs a PathPrefix match"),
        },
    }
}

/// What a redirect needs to know about the request.
pub struct RedirectInput<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    /// The port in the request's Host header, if it had one.
    pub host_port: Option<u16>,
    /// The Gateway listener's port (80 for the control plane even though the VM serves 8080).
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub matched_prefix: Option<&'a str>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Redirect {
    /// The Location of the redirect. Port: the filter's; else the well-known port of a
    /// scheme the filter sets; else the port of the request's Host header (a browser on
    /// the VM sends `name:8080` because the VM maps 8080 to the listener's 80); else the
    /// listener's port. The port is left out when it is the scheme's default.
    pub fn location(&self, req: &RedirectInput<'_>) -> Result<String, &'static str> {
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let host = self.hostname.as_deref().unwrap_or(req.host);
        let port = self
            .port
            .or_else(|| self.scheme.as_deref().and_then(default_port))
            .or(req.host_port)
            .unwrap_or(req.listener_port);
        let path = match &self.path {
            Some(m) => modify_path(m, req.path, req.matched_prefix)?,
            None => req.path.to_string(),
        };
        let mut loc = format!("{scheme}://{host}");
        if default_port(scheme) != Some(port) {
            loc.push_str(&format!(":{port}"));
        }
        loc.push_str(&path);
        if let Some(q) = req.query {
            loc.push('?');
            loc.push_str(q);
        }
        Ok(loc)
    }
}

mod header_pairs {
    use http::{HeaderName, HeaderValue};
    use serde::Serializer;
    use serde::ser::SerializeMap;

    pub fn serialize<S: Serializer>(v: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (n, val) in v {
            m.serialize_entry(n.as_str(), val.to_str().unwrap_or("<binary>"))?;
        }
        m.end()
    }
}

mod header_names {
    use http::HeaderName;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|n| n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_cases_from_conformance() {
        // HTTPRouteRewritePath / HTTPRouteRedirectPath conformance cases
        for (path, prefix, repl, want) in [
            ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
            ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
            ("/strip-prefix", "/strip-prefix", "/", "/"),
            ("/strip-prefix/", "/strip-prefix", "/", "/"),
            ("/greeter-service/greet", "/greeter-service", "/", "/greet"),
            ("/greeter-service", "/greeter-service", "/", "/"),
            ("/api/v1", "/", "/prefix", "/prefix/api/v1"),
            ("/full/path", "/full", "/replaced/", "/replaced/path"),
        ] {
            assert_eq!(replace_prefix(path, prefix, repl), want, "{path} {prefix} -> {repl}");
        }
    }

    fn input<'a>(host_port: Option<u16>, listener_port: u16) -> RedirectInput<'a> {
        RedirectInput {
            scheme: "http",
            host: "app.openchoreovm.localhost",
            host_port,
            listener_port,
            path: "/a/b",
            query: Some("x=1"),
            matched_prefix: Some("/a"),
        }
    }

    #[test]
    fn redirect_port_rules() {
        let plain = Redirect { scheme: None, hostname: None, port: None, path: None, status: 302 };
        // Host header carries :8080 (VM port mapped to listener 80): keep it
        assert_eq!(plain.location(&input(Some(8080), 80)).unwrap(), "http://app.openchoreovm.localhost:8080/a/b?x=1");
        // no port in Host: the listener port, 80, is the default for http -> omitted
        assert_eq!(plain.location(&input(None, 80)).unwrap(), "http://app.openchoreovm.localhost/a/b?x=1");
        assert_eq!(plain.location(&input(None, 19080)).unwrap(), "http://app.openchoreovm.localhost:19080/a/b?x=1");
        // scheme https without port: well-known 443, omitted
        let https = Redirect { scheme: Some("https".into()), ..plain.clone() };
        assert_eq!(https.location(&input(Some(8080), 80)).unwrap(), "https://app.openchoreovm.localhost/a/b?x=1");
        // explicit port wins
        let port = Redirect { port: Some(8443), ..https.clone() };
        assert_eq!(port.location(&input(Some(8080), 80)).unwrap(), "https://app.openchoreovm.localhost:8443/a/b?x=1");
        // hostname and prefix replacement
        let r = Redirect {
            hostname: Some("other.example".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/z".into())),
            ..plain
        };
        assert_eq!(r.location(&input(None, 80)).unwrap(), "http://other.example/z/b?x=1");
    }

    #[test]
    fn cors_origins_preflight_and_responses() {
        let c = Cors {
            allow_origins: vec!["https://app.example.com".into(), "https://*.openchoreo.dev".into()],
            allow_credentials: false,
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-api-key".into()],
            expose_headers: vec!["x-request-id".into()],
            max_age: 5,
        };
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(c.origin_allowed("https://a.openchoreo.dev"));
        assert!(!c.origin_allowed("https://openchoreo.dev"));
        assert!(!c.origin_allowed("http://app.example.com"));
        let p = c.preflight("https://app.example.com", "POST", Some("x-api-key")).unwrap();
        let get = |name: &str| p.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(get("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
        assert_eq!(get("access-control-allow-methods").as_deref(), Some("GET, POST"));
        assert_eq!(get("access-control-allow-headers").as_deref(), Some("x-api-key"));
        assert_eq!(get("access-control-max-age").as_deref(), Some("5"));
        assert!(c.preflight("https://evil.example", "POST", None).is_none());
        let r = c.response_headers("https://a.openchoreo.dev");
        assert_eq!(r.len(), 2);
        assert!(c.response_headers("https://evil.example").is_empty());
        // "*" with credentials: origin and method are echoed
        let star = Cors {
            allow_origins: vec!["*".into()],
            allow_credentials: true,
            allow_methods: vec!["*".into()],
            ..c.clone()
        };
        let p = star.preflight("https://x.test", "DELETE", None).unwrap();
        assert!(p.iter().any(|(n, v)| n == "access-control-allow-origin" && v == "https://x.test"));
        assert!(p.iter().any(|(n, v)| n == "access-control-allow-methods" && v == "DELETE"));
        assert!(p.iter().any(|(n, v)| n == "access-control-allow-credentials" && v == "true"));
        let open = Cors { allow_credentials: false, ..star };
        assert!(
            open.response_headers("https://x.test").iter().any(|(n, v)| n == "access-control-allow-origin" && v == "*")
        );
    }

    #[test]
    fn mirror_sampling() {
        let m = Mirror {
            backend: "b".into(),
            target: super::super::BackendTarget::Endpoints(vec![]),
            numerator: 1,
            denominator: 4,
            protocol: Default::default(),
        };
        assert_eq!((0..400).filter(|r| m.sampled(*r)).count(), 100);
        let none = Mirror { numerator: 0, ..m.clone() };
        assert!(!(0..100).any(|r| none.sampled(r)));
    }

    #[test]
    fn header_modifier_order() {
        let m = HeaderModifier {
            set: vec![(HeaderName::from_static("x-set"), HeaderValue::from_static("s"))],
            add: vec![(HeaderName::from_static("x-add"), HeaderValue::from_static("a2"))],
            remove: vec![HeaderName::from_static("x-remove")],
        };
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("a1"));
        h.insert("x-remove", HeaderValue::from_static("gone"));
        m.apply(&mut h);
        assert_eq!(h.get("x-set").unwrap(), "s");
        assert_eq!(h.get_all("x-add").iter().count(), 2);
        assert!(h.get("x-remove").is_none());
    }
}
