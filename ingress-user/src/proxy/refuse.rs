//! Requests refused before routing (RFC 9110 / RFC 9112), pure: what hyper and
//! httparse let through and the proxy must not forward. Checked on every request
//! before it is planned; the request never reaches a pod.
//!
//! Already refused below us (tested in `tests/tests/hostile.rs`): NUL, bare CR and other
//! control characters in header values, invalid header-name characters, obs-fold,
//! differing Content-Lengths, a Transfer-Encoding whose last coding is not `chunked`,
//! Transfer-Encoding on HTTP/1.0 (hyper: 400 and close); both Content-Length and
//! Transfer-Encoding (`conn.rs`: 400 and close); malformed chunks (hyper's decoder;
//! `mod.rs` answers 400 instead of the upstream error). Host values are checked by
//! the router's own [`crate::routing::request_host`], which the splice decision shares.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri, Version};

/// A request the proxy answers itself, and closes the connection after when its
/// framing may have been misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub body: &'static str,
    pub close: bool,
}

impl Refusal {
    const fn closing(status: StatusCode, body: &'static str) -> Self {
        Self { status, body, close: true }
    }
}

/// What a request that passes is: routed, or `OPTIONS *` (answered by the proxy: it
/// is about the server, not a resource a route could name; RFC 9110 9.3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Route,
    OptionsAsterisk,
}

/// Checks the request line and framing fields of a request hyper parsed.
pub fn check(method: &Method, uri: &Uri, version: Version, headers: &HeaderMap) -> Result<Accepted, Refusal> {
    if version == Version::HTTP_2 {
        h2_fields(uri, headers)?;
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        transfer_codings(version, headers)?;
    }
    // HTTP/1.1 requires Host even with an absolute-form target (RFC 9112 3.2).
    if version == Version::HTTP_11 && !headers.contains_key(header::HOST) {
        return Err(Refusal { status: StatusCode::BAD_REQUEST, body: "missing Host header\n", close: false });
    }
    // HTTP/2 frames each stream: a refusal never needs the connection closed
    target_form(method, uri).map_err(|r| if version == Version::HTTP_2 { Refusal { close: false, ..r } } else { r })
}

/// RFC 9113 8.2.2 / 8.3.1, for HTTP/2 requests (h2 already resets streams with most
/// of these; checked again so no other path can pass them): no connection-specific
/// field (`Connection`, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
/// `Upgrade`), `TE` only as `trailers`, and a `Host` beside `:authority` naming the
/// same authority (the router goes by `:authority`, the pod could go by `Host`).
/// Malformed requests get 400; the stream ends, not the connection.
fn h2_fields(uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
    let bad = |body| Err(Refusal { status: StatusCode::BAD_REQUEST, body, close: false });
    for n in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"] {
        if headers.contains_key(n) {
            return bad("connection-specific header field in an HTTP/2 request\n");
        }
    }
    if headers.get_all(header::TE).iter().any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers")) {
        return bad("TE other than trailers in an HTTP/2 request\n");
    }
    if let (Some(authority), Some(host)) = (uri.authority(), headers.get(header::HOST)) {
        if !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) {
            return bad("Host differs from :authority\n");
        }
    }
    Ok(())
}

/// RFC 9112 6.1 / 6.3 / 7: a request body is framed by exactly one final `chunked`.
/// Another coding (`gzip, chunked`, unknown ones) is one the proxy does not implement:
/// 501 (6.1, "SHOULD respond with 501"). `chunked` not last, more than once, with
/// parameters, or on HTTP/1.0: the body length cannot be determined: 400 (6.3, "MUST
/// respond with 400 and then close"). Both close: the body is never read.
fn transfer_codings(version: Version, headers: &HeaderMap) -> Result<(), Refusal> {
    const BAD: Refusal = Refusal::closing(StatusCode::BAD_REQUEST, "invalid Transfer-Encoding\n");
    const UNKNOWN: Refusal =
        Refusal::closing(StatusCode::NOT_IMPLEMENTED, "transfer coding not implemented (only chunked)\n");
    if version < Version::HTTP_11 {
        return Err(BAD);
    }
    let (mut chunked, mut other, mut last_chunked) = (0usize, 0usize, false);
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(v) = v.to_str() else { return Err(BAD) };
        // empty list elements are ignored (RFC 9110 5.6.1)
        for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            last_chunked = coding.eq_ignore_ascii_case("chunked");
            if last_chunked {
                chunked += 1;
            } else if coding.split(';').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")) {
                return Err(BAD); // chunked takes no parameters
            } else {
                other += 1;
            }
        }
    }
    if !last_chunked || chunked > 1 {
        return Err(BAD);
    }
    if other > 0 {
        return Err(UNKNOWN);
    }
    Ok(())
}

/// RFC 9112 3.2: origin-form (`/p?q`), absolute-form (`http://a/p`, routed by its
/// authority), asterisk-form only for OPTIONS, authority-form only for CONNECT, which a
/// gateway does not tunnel.
fn target_form(method: &Method, uri: &Uri) -> Result<Accepted, Refusal> {
    if method == Method::CONNECT {
        return Err(Refusal::closing(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n"));
    }
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Refusal::closing(StatusCode::BAD_REQUEST, "request target scheme is not http\n"));
        }
        return Ok(Accepted::Route);
    }
    if uri.authority().is_some() {
        return Err(Refusal::closing(StatusCode::BAD_REQUEST, "authority-form target outside CONNECT\n"));
    }
    if uri.path() == "*" {
        if method == Method::OPTIONS {
            return Ok(Accepted::OptionsAsterisk);
        }
        return Err(Refusal::closing(StatusCode::BAD_REQUEST, "asterisk-form target outside OPTIONS\n"));
    }
    if !uri.path().starts_with('/') {
        return Err(Refusal::closing(StatusCode::BAD_REQUEST, "request target is not an absolute path\n"));
    }
    Ok(Accepted::Route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn te(version: Version, lines: &[&str]) -> Result<Accepted, u16> {
        let mut fields = vec![("host", "a.test")];
        fields.extend(lines.iter().map(|l| ("transfer-encoding", *l)));
        let uri: Uri = "/x".parse().unwrap();
        check(&Method::POST, &uri, version, &head(&fields)).map_err(|r| {
            assert!(r.close, "a refused body framing closes: {lines:?}");
            r.status.as_u16()
        })
    }

    #[test]
    fn only_one_final_chunked_frames_a_body() {
        let v11 = Version::HTTP_11;
        assert_eq!(te(v11, &["chunked"]), Ok(Accepted::Route));
        assert_eq!(te(v11, &["Chunked"]), Ok(Accepted::Route));
        assert_eq!(te(v11, &[" , chunked"]), Ok(Accepted::Route), "empty list elements are ignored");
        // codings the proxy does not implement: 501
        assert_eq!(te(v11, &["gzip, chunked"]), Err(501));
        assert_eq!(te(v11, &["x-custom, chunked"]), Err(501));
        assert_eq!(te(v11, &["gzip", "chunked"]), Err(501), "a list over two lines");
        // framing that cannot be trusted: 400
        assert_eq!(te(v11, &["chunked, chunked"]), Err(400));
        assert_eq!(te(v11, &["chunked", "chunked"]), Err(400));
        assert_eq!(te(v11, &["chunked, gzip"]), Err(400), "chunked not last");
        assert_eq!(te(v11, &["gzip"]), Err(400));
        assert_eq!(te(v11, &["chunked;q=1"]), Err(400), "chunked has no parameters");
        assert_eq!(te(v11, &["gzip, chunked;x"]), Err(400));
        assert_eq!(te(v11, &[""]), Err(400));
        assert_eq!(te(Version::HTTP_10, &["chunked"]), Err(400), "no Transfer-Encoding in HTTP/1.0");
    }

    fn target(method: Method, t: &str) -> Result<Accepted, (u16, &'static str)> {
        let uri: Uri = t.parse().unwrap();
        check(&method, &uri, Version::HTTP_11, &head(&[("host", "a.test")])).map_err(|r| (r.status.as_u16(), r.body))
    }

    #[test]
    fn request_target_forms() {
        assert_eq!(target(Method::GET, "/x?y"), Ok(Accepted::Route));
        assert_eq!(target(Method::GET, "http://b.test/x"), Ok(Accepted::Route));
        assert_eq!(target(Method::GET, "HTTP://b.test"), Ok(Accepted::Route));
        assert_eq!(target(Method::OPTIONS, "*"), Ok(Accepted::OptionsAsterisk));
        assert_eq!(target(Method::GET, "*").unwrap_err().0, 400);
        assert_eq!(target(Method::POST, "*").unwrap_err().0, 400);
        assert_eq!(target(Method::GET, "ftp://b.test/x").unwrap_err().0, 400);
        assert_eq!(target(Method::GET, "b.test:80").unwrap_err(), (400, "authority-form target outside CONNECT\n"));
        assert_eq!(target(Method::CONNECT, "b.test:443").unwrap_err().0, 405);
    }

    #[test]
    fn http_1_1_needs_a_host() {
        let uri: Uri = "http://b.test/x".parse().unwrap();
        let r = check(&Method::GET, &uri, Version::HTTP_11, &HeaderMap::new()).unwrap_err();
        assert_eq!((r.status.as_u16(), r.body), (400, "missing Host header\n"));
        assert_eq!(check(&Method::GET, &uri, Version::HTTP_10, &HeaderMap::new()), Ok(Accepted::Route));
    }

    fn h2(method: Method, target: &str, fields: &[(&str, &str)]) -> Result<Accepted, (u16, &'static str)> {
        let uri: Uri = target.parse().unwrap();
        check(&method, &uri, Version::HTTP_2, &head(fields)).map_err(|r| {
            assert!(!r.close, "an HTTP/2 refusal ends its stream only");
            (r.status.as_u16(), r.body)
        })
    }

    #[test]
    fn http2_requests_follow_rfc_9113() {
        let ok = Ok(Accepted::Route);
        // :authority alone, Host alone (no :authority), both the same: routed; no Host needed
        assert_eq!(h2(Method::GET, "http://a.test/x", &[]), ok);
        assert_eq!(h2(Method::GET, "https://a.test:8443/x", &[("host", "A.test:8443")]), ok);
        assert_eq!(h2(Method::GET, "/x", &[("host", "a.test")]), ok);
        assert_eq!(h2(Method::POST, "http://a.test/p.S/M", &[("te", "trailers")]), ok, "gRPC's TE");
        assert_eq!(
            h2(Method::GET, "http://a.test/x", &[("host", "b.test")]).unwrap_err().1,
            "Host differs from :authority\n"
        );
        for (n, v) in [
            ("connection", "close"),
            ("keep-alive", "5"),
            ("proxy-connection", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
        ] {
            let e = h2(Method::GET, "http://a.test/", &[(n, v)]).unwrap_err();
            assert_eq!(e, (400, "connection-specific header field in an HTTP/2 request\n"), "{n}");
        }
        assert_eq!(h2(Method::GET, "http://a.test/", &[("te", "gzip")]).unwrap_err().0, 400);
        // CONNECT (no extended CONNECT): not tunnelled, but the connection stays
        assert_eq!(h2(Method::CONNECT, "a.test:443", &[]).unwrap_err().0, 405);
        assert_eq!(h2(Method::OPTIONS, "*", &[]), Ok(Accepted::OptionsAsterisk));
    }
}
