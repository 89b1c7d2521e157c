//! Hostnames as Gateway API defines them: exact names and `*.`-prefixed wildcards,
//! listener/route intersection, and the Host header with its port removed.

/// A hostname from a listener or a route, lowercased. `Wildcard` holds the suffix
/// with its leading dot: `*.example.com` -> `.example.com`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hostname {
    Exact(String),
    Wildcard(String),
}

impl Hostname {
    pub fn parse(s: &str) -> Self {
        let s = s.trim().to_ascii_lowercase();
        match s.strip_prefix('*') {
            Some(suffix) => Self::Wildcard(suffix.to_string()),
            None => Self::Exact(s),
        }
    }

    /// Does a request host (lowercase, no port) match? A wildcard matches one or more
    /// labels before its suffix: `*.example.com` matches `a.example.com` and
    /// `a.b.example.com`, not `example.com`.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }

    /// The hostnames a listener hostname and a route hostname have in common, as the
    /// spec defines the intersection (the more specific of the two, if they overlap).
    pub fn intersect(listener: &Self, route: &Self) -> Option<Self> {
        match (listener, route) {
            (Self::Exact(l), Self::Exact(r)) => (l == r).then(|| route.clone()),
            (Self::Wildcard(_), Self::Exact(r)) => listener.matches(r).then(|| route.clone()),
            (Self::Exact(l), Self::Wildcard(_)) => route.matches(l).then(|| listener.clone()),
            (Self::Wildcard(l), Self::Wildcard(r)) => {
                if l.ends_with(r.as_str()) {
                    Some(listener.clone())
                } else if r.ends_with(l.as_str()) {
                    Some(route.clone())
                } else {
                    None
                }
            }
        }
    }
}

impl std::fmt::Display for Hostname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// Why a request has no host to be routed by (answered 400, RFC 9112 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostProblem {
    Missing,
    Duplicate,
    NotText,
}

impl HostProblem {
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing Host header\n",
            Self::Duplicate => "more than one Host header\n",
            Self::NotText => "Host header is not text\n",
        }
    }
}

/// The host a request is routed by, split as [`split_host_header`] does: the
/// authority of an absolute-form target wins over Host (RFC 9112 3.2.2); otherwise
/// the one Host field. Several Host fields are an error even with an authority (3.2).
/// The router and the splice decision both take the host from here.
pub fn request_host<'a>(
    authority: Option<&str>,
    mut host_fields: impl Iterator<Item = &'a [u8]>,
) -> Result<(String, Option<u16>), HostProblem> {
    let first = host_fields.next();
    if host_fields.next().is_some() {
        return Err(HostProblem::Duplicate);
    }
    if let Some(a) = authority {
        return Ok(split_host_header(a));
    }
    let value = first.ok_or(HostProblem::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| HostProblem::NotText)?;
    Ok(split_host_header(value))
}

/// Splits a Host header value into the lowercase host (no port, no trailing dot) and
/// the port if it carries one. IPv6 literals keep their brackets.
pub fn split_host_header(value: &str) -> (String, Option<u16>) {
    let value = value.trim();
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (format!("[{h}]"), p.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (value.to_string(), None),
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().ok()),
            _ => (value.to_string(), None),
        }
    };
    let mut host = host.to_ascii_lowercase();
    if host.ends_with('.') {
        host.pop();
    }
    (host, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hostname {
        Hostname::parse(s)
    }

    #[test]
    fn the_authority_wins_and_host_must_be_single() {
        let one: &[&[u8]] = &[b"bound.test:9080"];
        assert_eq!(request_host(None, one.iter().copied()), Ok(("bound.test".into(), Some(9080))));
        assert_eq!(request_host(Some("proxied.test"), one.iter().copied()), Ok(("proxied.test".into(), None)));
        let two: &[&[u8]] = &[b"a.test", b"a.test"];
        assert_eq!(request_host(None, two.iter().copied()), Err(HostProblem::Duplicate));
        assert_eq!(request_host(Some("a.test"), two.iter().copied()), Err(HostProblem::Duplicate));
        assert_eq!(request_host(None, [].iter().copied()), Err(HostProblem::Missing));
        let bad: &[&[u8]] = &[b"\xffa.test"];
        assert_eq!(request_host(None, bad.iter().copied()), Err(HostProblem::NotText));
    }

    #[test]
    fn wildcard_matching_follows_the_spec() {
        // "*.example.com" matches "test.example.com" and "foo.test.example.com", not "example.com"
        assert!(h("*.example.com").matches("test.example.com"));
        assert!(h("*.example.com").matches("foo.test.example.com"));
        assert!(!h("*.example.com").matches("example.com"));
        assert!(!h("*.example.com").matches("badexample.com"));
        assert!(h("Foo.Example.com").matches("foo.example.com"));
        assert!(!h("foo.example.com").matches("bar.example.com"));
    }

    #[test]
    fn intersection_cases_from_the_spec() {
        let cases = [
            // listener, route, result
            ("foo.example.com", "foo.example.com", Some("foo.example.com")),
            ("foo.example.com", "bar.example.com", None),
            ("*.example.com", "foo.example.com", Some("foo.example.com")),
            ("*.example.com", "foo.bar.example.com", Some("foo.bar.example.com")),
            ("*.example.com", "example.com", None),
            ("foo.example.com", "*.example.com", Some("foo.example.com")),
            ("*.example.com", "*.bar.example.com", Some("*.bar.example.com")),
            ("*.bar.example.com", "*.example.com", Some("*.bar.example.com")),
            ("*.example.com", "*.example.net", None),
            ("*.example.com", "*.example.com", Some("*.example.com")),
        ];
        for (l, r, want) in cases {
            assert_eq!(Hostname::intersect(&h(l), &h(r)), want.map(h), "{l} ∩ {r}");
        }
    }

    #[test]
    fn host_header_port_is_ignored() {
        assert_eq!(
            split_host_header("API.openchoreovm.localhost:8080"),
            ("api.openchoreovm.localhost".into(), Some(8080))
        );
        assert_eq!(split_host_header("example.com"), ("example.com".into(), None));
        assert_eq!(split_host_header("example.com."), ("example.com".into(), None));
        assert_eq!(split_host_header("[::1]:9080"), ("[::1]".into(), Some(9080)));
        assert_eq!(split_host_header("[::1]"), ("[::1]".into(), None));
    }
}
