//! Hostnames as Gateway API defines them: exact names and `*.`-prefixed wildcards,
//! listener/route intersection, and the Host header with its port removed.

use std::borrow::Cow;

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
    /// Not `host[:port]` (RFC 9110 7.2): userinfo, spaces, a port that is not a number
    /// up to 65535, characters no host may hold.
    Invalid,
    /// The authority of an absolute-form target is not `host[:port]`.
    InvalidAuthority,
}

impl HostProblem {
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing Host header\n",
            Self::Duplicate => "more than one Host header\n",
            Self::Invalid => "invalid Host header (expected host[:port])\n",
            Self::InvalidAuthority => "invalid authority in the request target (expected host[:port])\n",
        }
    }
}

/// The host a request is routed by, split as [`split_host_header`] does: the
/// authority of an absolute-form target wins over Host (RFC 9112 3.2.2); otherwise
/// the one Host field. Several Host fields are an error even with an authority (3.2).
/// A Host field that is not `host[:port]` is an error even with an authority (3.2).
/// The router and the splice decision both take the host from here.
pub fn request_host<'a>(
    authority: Option<&'a str>,
    mut host_fields: impl Iterator<Item = &'a [u8]>,
) -> Result<(Cow<'a, str>, Option<u16>), HostProblem> {
    let first = host_fields.next();
    if host_fields.next().is_some() {
        return Err(HostProblem::Duplicate);
    }
    if first.is_some_and(|v| !valid_authority(v.trim_ascii())) {
        return Err(HostProblem::Invalid);
    }
    if let Some(a) = authority {
        if !valid_authority(a.as_bytes()) {
            return Err(HostProblem::InvalidAuthority);
        }
        return Ok(split_host_header(a));
    }
    let value = first.ok_or(HostProblem::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| HostProblem::Invalid)?;
    Ok(split_host_header(value))
}

/// Whether `v` is `uri-host [":" port]` (RFC 3986 3.2.2-3.2.3, RFC 9110 7.2): an IP
/// literal in brackets or a reg-name (unreserved, percent-encoded, sub-delims; empty
/// allowed), and a port of at most 65535 (empty allowed). No userinfo, no spaces.
pub fn valid_authority(v: &[u8]) -> bool {
    let (host, port) = match v.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else { return false };
            let literal = &rest[..end];
            let ip_chars = |c: &u8| c.is_ascii_hexdigit() || *c == b':' || *c == b'.';
            if literal.is_empty() || !literal.iter().all(ip_chars) {
                return false;
            }
            match &rest[end + 1..] {
                [] => (&[][..], None),
                [b':', port @ ..] => (&[][..], Some(port)),
                _ => return false,
            }
        }
        None => match v.iter().rposition(|&c| c == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        },
    };
    let mut i = 0;
    while i < host.len() {
        let c = host[i];
        if c == b'%' {
            if !(host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        let unreserved = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        let sub_delim = matches!(c, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=');
        if !unreserved && !sub_delim {
            return false;
        }
        i += 1;
    }
    match port {
        None | Some([]) => true,
        Some(p) => {
            p.len() <= 5
                && p.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(p).is_ok_and(|p| p.parse::<u16>().is_ok())
        }
    }
}

/// Splits a Host header value into the lowercase host (no port, no trailing dot) and
/// the port if it carries one. IPv6 literals keep their brackets.
pub fn split_host_header(value: &str) -> (Cow<'_, str>, Option<u16>) {
    let value = value.trim();
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            // the literal with its brackets
            Some((h, p)) => (&value[..h.len() + 2], p.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (value, None),
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
            _ => (value, None),
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // most hosts arrive in lowercase: then nothing is copied
    let host = match host.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    };
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
        assert_eq!(request_host(None, bad.iter().copied()), Err(HostProblem::Invalid));
    }

    #[test]
    fn host_values_must_be_host_and_port() {
        for ok in [
            "a.test",
            "A.Test:8080",
            "a.test:",
            "10.0.0.1:80",
            "[::1]",
            "[::1]:9080",
            "[2001:db8::1]",
            "xn--bcher-kva.test",
            "a_b.test",
            "a%41.test",
            "",
            "h:65535",
        ] {
            assert!(valid_authority(ok.as_bytes()), "{ok:?} is valid");
            let one: &[&[u8]] = &[ok.as_bytes()];
            assert!(request_host(None, one.iter().copied()).is_ok(), "{ok:?}");
        }
        for bad in [
            "a@b",
            "u:p@a.test",
            "a b",
            "a.test:99999",
            "h:x",
            "h:-1",
            "h:80:80",
            "[::1",
            "[::1]x",
            "[]",
            "[a.test]:80x",
            "a/b",
            "a\\b",
            "a\tb",
            "h:0x50",
            "a%4",
            "a%zz.test",
            "h:123456",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad:?} is invalid");
            let one: &[&[u8]] = &[bad.as_bytes()];
            assert_eq!(request_host(None, one.iter().copied()), Err(HostProblem::Invalid), "{bad:?}");
            let good: &[&[u8]] = &[b"a.test"];
            assert_eq!(request_host(Some(bad), good.iter().copied()), Err(HostProblem::InvalidAuthority), "{bad:?}");
            assert_eq!(request_host(Some("a.test"), one.iter().copied()), Err(HostProblem::Invalid), "{bad:?}");
        }
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
