//! HTTPRouteMatch: path (Exact, PathPrefix by element, RegularExpression), headers,
//! query parameters and method, ANDed; and the precedence order between matches.

use std::cmp::Ordering;
use std::sync::Arc;

use http::HeaderMap;
use regex::Regex;

/// The parts of a request head that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Lowercase, without port.
    pub host: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Normalised: no trailing slash unless the prefix is `/`.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            Self::Exact(e) => e == v,
            Self::Regex(r) => r.is_match(v),
        }
    }
}

/// One HTTPRouteMatch, compiled.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub path: PathMatch,
    pub method: Option<String>,
    pub headers: Vec<(http::HeaderName, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    /// Tie-breakers after the spec's match-specific criteria: route creation time
    /// (RFC 3339, empty when unknown), route `namespace/name`, rule index, match index.
    pub order: (Arc<str>, Arc<str>, usize, usize),
    /// A GRPCRouteMatch: only gRPC requests match ([`is_grpc_content_type`], POST), and
    /// precedence is the GRPCRoute one. Its service/method are compiled into `path`.
    pub grpc: Option<GrpcMethodMatch>,
}

/// The method part of a GRPCRouteMatch as written (for precedence and `/routes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMethodMatch {
    /// `Exact` or `RegularExpression`; `None` for a match without `method` (every method).
    pub kind: Option<&'static str>,
    pub service: Option<String>,
    pub method: Option<String>,
}

impl GrpcMethodMatch {
    /// (service characters, method characters): the spec's precedence after hostnames.
    fn chars(&self) -> (usize, usize) {
        let n = |v: &Option<String>| v.as_deref().map_or(0, str::len);
        (n(&self.service), n(&self.method))
    }
}

/// Whether a request is gRPC by its `Content-Type`: `application/grpc`, optionally
/// followed by `+format` (`+proto`, `+json`, ...) or parameters (gRPC over HTTP/2, the
/// Request-Headers' Content-Type). gRPC-Web (`application/grpc-web*`) is not.
pub fn is_grpc_content_type(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(http::header::CONTENT_TYPE) else { return false };
    let v = v.as_bytes();
    let prefix = b"application/grpc";
    v.len() >= prefix.len()
        && v[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(v.get(prefix.len()), None | Some(b'+' | b';' | b' ' | b'\t'))
}

/// Anchors a Gateway API regular expression: matches must cover the whole value.
pub fn full_regex(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

impl PathMatch {
    pub fn prefix(value: &str) -> Self {
        let v = if value.len() > 1 { value.trim_end_matches('/') } else { value };
        Self::Prefix(if v.is_empty() { "/".into() } else { v.to_string() })
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => {
                p == "/" || (path.starts_with(p.as_str()) && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            Self::Regex(r) => r.is_match(path),
        }
    }

    /// (rank, length): Exact before PathPrefix before RegularExpression; longer first.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(p) => (0, p.len()),
            Self::Prefix(p) => (1, p.len()),
            Self::Regex(r) => (2, r.as_str().len()),
        }
    }
}

impl Matcher {
    pub fn matches(&self, req: &RequestHead<'_>) -> bool {
        if !self.path.matches(req.path) {
            return false;
        }
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        for (name, vm) in &self.headers {
            let mut values = req.headers.get_all(name).iter();
            if !values.any(|v| v.to_str().is_ok_and(|v| vm.matches(v))) {
                return false;
            }
        }
        for (name, vm) in &self.query {
            match query_param(req.query, name) {
                Some(v) if vm.matches(v) => {}
                _ => return false,
            }
        }
        // a gRPC call is a POST with a gRPC content type (gRPC over HTTP/2, Request-Headers)
        if self.grpc.is_some() && (req.method != "POST" || !is_grpc_content_type(req.headers)) {
            return false;
        }
        true
    }

    /// The spec's precedence: path type and length, method, number of header
    /// matches, number of query matches, then the tie-breakers of `order`.
    ///
    /// GRPCRoute matches order among themselves by the GRPCRoute rules (service
    /// characters, method characters, header matches, then the same tie-breakers) and
    /// before HTTPRoute matches: "Merging MUST not be done between GRPCRoutes and
    /// HTTPRoutes", and only gRPC requests can match them.
    pub fn precedence(&self, other: &Self) -> Ordering {
        match (&self.grpc, &other.grpc) {
            (Some(a), Some(b)) => {
                let ((sa, ma), (sb, mb)) = (a.chars(), b.chars());
                return sb
                    .cmp(&sa)
                    .then(mb.cmp(&ma))
                    .then(other.headers.len().cmp(&self.headers.len()))
                    .then_with(|| order_key(&self.order).cmp(&order_key(&other.order)));
            }
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => {}
        }
        let (ra, la) = self.path.rank();
        let (rb, lb) = other.path.rank();
        ra.cmp(&rb)
            .then(lb.cmp(&la))
            .then(other.method.is_some().cmp(&self.method.is_some()))
            .then(other.headers.len().cmp(&self.headers.len()))
            .then(other.query.len().cmp(&self.query.len()))
            .then_with(|| order_key(&self.order).cmp(&order_key(&other.order)))
    }

    /// A canonical text of what this match accepts: equal signatures accept the same requests.
    pub fn signature(&self) -> String {
        let path = match &self.path {
            PathMatch::Exact(p) => format!("Exact {p}"),
            PathMatch::Prefix(p) => format!("PathPrefix {p}"),
            PathMatch::Regex(r) => format!("RegularExpression {}", r.as_str()),
        };
        let vm = |v: &ValueMatch| match v {
            ValueMatch::Exact(e) => format!("={e}"),
            ValueMatch::Regex(r) => format!("~{}", r.as_str()),
        };
        let mut headers: Vec<String> = self.headers.iter().map(|(n, v)| format!("{n}{}", vm(v))).collect();
        headers.sort();
        let mut query: Vec<String> = self.query.iter().map(|(n, v)| format!("{n}{}", vm(v))).collect();
        query.sort();
        let grpc = if self.grpc.is_some() { " grpc" } else { "" };
        format!("{path} method={} headers={headers:?} query={query:?}{grpc}", self.method.as_deref().unwrap_or("*"))
    }

    /// Matches every request: `PathPrefix /` with no other condition.
    pub fn is_catch_all(&self) -> bool {
        matches!(&self.path, PathMatch::Prefix(p) if p == "/")
            && self.method.is_none()
            && self.headers.is_empty()
            && self.query.is_empty()
            && self.grpc.is_none()
    }

    /// The matched prefix, for URLRewrite/RequestRedirect ReplacePrefixMatch.
    pub fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

/// Unknown creation times sort after known ones.
fn order_key(o: &(Arc<str>, Arc<str>, usize, usize)) -> (bool, &str, &str, usize, usize) {
    (o.0.is_empty(), &o.0, &o.1, o.2, o.3)
}

/// The first value of query parameter `name` (names are case-sensitive).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}
