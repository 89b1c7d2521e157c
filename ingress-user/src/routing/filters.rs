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
