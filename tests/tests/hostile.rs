//! Hostile requests through the agent on 127.0.0.1 (no privileges), written as raw
//! bytes: what RFC 9110/9112 says a server must refuse is refused and never reaches a
//! pod (the echo pods' request counts do not move), and paths are normalized before
//! routing, the pod getting the normalized path (`ingress-user/src/proxy/refuse.rs`,
//! `normalize.rs`). Some refusals are hyper's or httparse's own; they are here so a
//! dependency update that drops one fails a test.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ingress_tests::backend::Echo;
use ingress_tests::client::{Response, read_response, read_until_closed};
use ingress_tests::proxy_setup::{MAIN, SECOND, SHADOW, Setup};

/// Host `n.test` beside the standard routes: `/api` prefix -> main, exactly `/secret`
/// -> second, everything else -> shadow. No filters: the pod sees the path as routed.
const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: n, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [n.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: Exact, value: /secret}}]
    backendRefs: [{name: second, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: shadow, port: 80}]
"#;

fn setup(tag: &str) -> Setup {
    let s = Setup::local_with_manifests(tag, ROUTES, &[]);
    // the agent is ready once it serves the extra route
    let start = std::time::Instant::now();
    while s
        .client
        .send(&ingress_tests::client::Request::get("n.test", "/secret"), Duration::from_secs(2))
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "the agent never served n.test");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// Requests the three pods have answered, in all.
fn pods(s: &Setup) -> usize {
    s.requests(MAIN) + s.requests(SHADOW) + s.requests(SECOND)
}

fn connect(s: &Setup) -> TcpStream {
    let c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// Sends `bytes` on a new connection; everything the agent wrote until it closed the
/// connection (a read timeout fails the test: the connection was kept open).
fn closed_after(s: &Setup, bytes: &[u8]) -> String {
    let mut c = connect(s);
    // the agent may close before it read everything: a reset on write is fine
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    read_until_closed(&mut c, &mut out).unwrap_or_else(|e| {
        panic!("not closed after the answer ({e}): {:?} -> {:?}", text(bytes), String::from_utf8_lossy(&out))
    });
    String::from_utf8_lossy(&out).to_string()
}

/// Sends `bytes` on a new connection and reads one response.
fn answer(s: &Setup, bytes: &[u8]) -> Response {
    let mut c = connect(s);
    c.write_all(bytes).unwrap();
    read_response(&mut BufReader::new(c), false).unwrap_or_else(|e| panic!("no answer to {:?}: {e}", text(bytes)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn status_of(out: &str) -> u16 {
    out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"))
}

/// `bytes` is answered `status` and the connection closed, with one answer only and no
/// request reaching a pod.
fn refused_and_closed(s: &Setup, what: &str, bytes: &[u8], status: u16) {
    let before = pods(s);
    let out = closed_after(s, bytes);
    assert_eq!(status_of(&out), status, "{what}: {:?} -> {out:?}", text(bytes));
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{what}: one answer, then closed: {out:?}");
    assert_eq!(pods(s), before, "{what}: reached a pod");
}

/// `bytes` is answered `status` (the connection may stay open) and reaches no pod.
fn refused(s: &Setup, what: &str, bytes: &[u8], status: u16) {
    let before = pods(s);
    let r = answer(s, bytes);
    assert_eq!(r.status, status, "{what}: {:?} -> {} {:?}", text(bytes), r.status, text(&r.body));
    assert_eq!(pods(s), before, "{what}: reached a pod");
}

#[test]
fn host_header_and_request_target_refusals() {
    let s = setup("hostile-host");
    refused(&s, "two different Hosts", b"GET /api/x HTTP/1.1\r\nHost: n.test\r\nHost: f.test\r\n\r\n", 400);
    refused(&s, "two equal Hosts", b"GET /api/x HTTP/1.1\r\nHost: n.test\r\nhost: n.test\r\n\r\n", 400);
    refused(&s, "no Host", b"GET /api/x HTTP/1.1\r\n\r\n", 400);
    refused(&s, "no Host, absolute-form", b"GET http://n.test/api/x HTTP/1.1\r\n\r\n", 400);
    for host in ["a@n.test", "u:p@n.test", "n.test x", "n.test:99999", "n.test:x", "n.test:-1", "[::1", "n.test/x"] {
        let req = format!("GET /api/x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        refused(&s, &format!("invalid Host {host:?}"), req.as_bytes(), 400);
    }
    refused(&s, "userinfo in the target", b"GET http://u@n.test/secret HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused(&s, "bad port in the target", b"GET http://n.test:99999/secret HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused_and_closed(&s, "not http", b"GET ftp://n.test/secret HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused_and_closed(&s, "asterisk-form GET", b"GET * HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused_and_closed(&s, "asterisk-form POST", b"POST * HTTP/1.1\r\nHost: n.test\r\nContent-Length: 0\r\n\r\n", 400);
    refused_and_closed(&s, "authority-form GET", b"GET n.test:8080 HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused_and_closed(&s, "CONNECT", b"CONNECT n.test:443 HTTP/1.1\r\nHost: n.test:443\r\n\r\n", 405);

    // OPTIONS * is the proxy's to answer: 200, empty, not routed, the connection goes on
    let before = pods(&s);
    let mut c = connect(&s);
    c.write_all(b"OPTIONS * HTTP/1.1\r\nHost: n.test\r\n\r\n").unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let o = read_response(&mut r, false).unwrap();
    assert_eq!((o.status, o.body.len()), (200, 0), "{o:?}");
    assert_eq!(pods(&s), before, "OPTIONS * is not routed");
    c.write_all(b"GET /secret HTTP/1.1\r\nHost: n.test\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().json::<Echo>().pod, "pod-second");

    // absolute-form: routed by its authority, not by Host; the pod gets origin-form and
    // Host = the authority (RFC 9112 3.2.2). f.test has no /secret: Host would be a 404.
    let e: Echo = answer(&s, b"GET http://n.test/secret HTTP/1.1\r\nHost: f.test\r\n\r\n").json();
    assert_eq!((e.pod.as_str(), e.path.as_str(), e.host.as_str()), ("pod-second", "/secret", "n.test"));
    let e: Echo = answer(&s, b"GET http://N.TEST:8080/api/../secret?q=1 HTTP/1.1\r\nHost: f.test\r\n\r\n").json();
    assert_eq!((e.pod.as_str(), e.path.as_str()), ("pod-second", "/secret?q=1"), "normalized too");
    assert_eq!(e.host.to_ascii_lowercase(), "n.test:8080");
    let r = answer(&s, b"GET http://f.test/secret HTTP/1.1\r\nHost: n.test\r\n\r\n");
    assert_eq!(r.status, 404, "the authority f.test has no /secret, whatever Host says");
    // valid Host forms still work
    for host in ["n.test", "N.Test:8080", "n.test.", "n.test:"] {
        let req = format!("GET /secret HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(answer(&s, req.as_bytes()).status, 200, "{host:?}");
    }
}

#[test]
fn framing_and_field_syntax_refusals() {
    let s = setup("hostile-framing");
    let post = |te: &str| {
        format!("POST /api/x HTTP/1.1\r\nHost: n.test\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    };
    // RFC 9112 6.1: codings the proxy does not implement -> 501; 6.3: unreliable framing -> 400
    refused_and_closed(&s, "gzip, chunked", post("gzip, chunked").as_bytes(), 501);
    refused_and_closed(&s, "unknown coding", post("x-custom, chunked").as_bytes(), 501);
    refused_and_closed(&s, "chunked, chunked", post("chunked, chunked").as_bytes(), 400);
    refused_and_closed(&s, "chunked with a parameter", post("chunked;x=1").as_bytes(), 400);
    refused_and_closed(&s, "not ending in chunked (hyper)", post("chunked, gzip").as_bytes(), 400);
    refused_and_closed(
        &s,
        "a coding list over two lines",
        b"POST /api/x HTTP/1.1\r\nHost: n.test\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        501,
    );
    refused_and_closed(
        &s,
        "chunked twice over two lines",
        b"POST /api/x HTTP/1.1\r\nHost: n.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    );
    refused_and_closed(
        &s,
        "Transfer-Encoding on HTTP/1.0 (hyper)",
        b"POST /api/x HTTP/1.0\r\nHost: n.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    );
    refused_and_closed(
        &s,
        "Transfer-Encoding, then Content-Length (conn.rs)",
        b"POST /api/x HTTP/1.1\r\nHost: n.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    );
    // control characters and bad names (httparse): 400 and close
    for (what, field) in [
        ("NUL in a value", &b"X-A: a\0b"[..]),
        ("bare CR in a value", b"X-A: a\rb"),
        ("DEL in a value", b"X-A: a\x7fb"),
        ("SOH in a value", b"X-A: a\x01b"),
        ("space before the colon", b"X-A : b"),
        ("parenthesis in a name", b"X(A): b"),
        ("quote in a name", b"X\"A: b"),
        ("slash in a name", b"X/A: b"),
        ("non-ASCII in a name", b"X\xc3\xa9: b"),
        ("NUL starting a value", b"X-B: \0"),
    ] {
        let mut req = b"GET /api/x HTTP/1.1\r\nHost: n.test\r\n".to_vec();
        req.extend_from_slice(field);
        req.extend_from_slice(b"\r\n\r\n");
        refused_and_closed(&s, what, &req, 400);
    }
    refused_and_closed(&s, "NUL in the target", b"GET /api/\0x HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused_and_closed(&s, "bare CR in the request line", b"GET /api/x\rHTTP/1.1\r\nHost: n.test\r\n\r\n", 400);

    // malformed chunks: 400 and close, never 502, and nothing after them is read
    let before = pods(&s);
    for (what, chunks) in [
        ("bad chunk size", "zz\r\nabc\r\n0\r\n\r\n".to_string()),
        ("chunk size overflow", "fffffffffffffffff\r\nabc\r\n0\r\n\r\n".into()),
        ("over-long chunk extension", format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(20 * 1024))),
        ("bad chunk size after a good chunk", "3\r\nabc\r\n-1\r\nabc\r\n0\r\n\r\n".into()),
        ("no CRLF after the chunk data", "3\r\nabcdef\r\n0\r\n\r\n".into()),
    ] {
        let req = format!(
            "POST /api/x HTTP/1.1\r\nHost: n.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}GET /api/smuggled HTTP/1.1\r\nHost: n.test\r\n\r\n"
        );
        let out = closed_after(&s, req.as_bytes());
        assert_eq!(status_of(&out), 400, "{what}: {out:?}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{what}: one answer, then closed: {out:?}");
    }
    // the pod saw a head and a body that never ended: no request completed
    assert_eq!(pods(&s), before, "a malformed body completed a request");
    // a body cut short (the client ends its side after 3 of 10 bytes), on a mirrored
    // route (the body is read before it is forwarded) and a plain one
    let mut c = connect(&s);
    c.write_all(b"POST /mirror HTTP/1.1\r\nHost: f.test\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert!(got.starts_with(b"HTTP/1.1 400"), "a cut body is the client's error: {:?}", text(&got));
    assert_eq!(pods(&s), before, "a mirrored route reads the whole body before forwarding");
    // a plain route streams: the pod got the 3 bytes and then the end of its
    // connection (the echo pod counts that short body as a request)
    let mut c = connect(&s);
    c.write_all(b"POST /api/x HTTP/1.1\r\nHost: n.test\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert!(got.starts_with(b"HTTP/1.1 400"), "a cut body is the client's error, not 502: {:?}", text(&got));

    // and a well-formed chunked body still goes through
    let e: Echo = answer(&s, post("chunked").as_bytes()).json();
    assert_eq!((e.pod.as_str(), e.body_len), ("pod-main", 3));
}

#[test]
fn paths_are_normalized_before_routing_and_sent_normalized() {
    let s = setup("hostile-paths");
    // (raw target, pod, path the pod gets)
    let cases = [
        ("/api/../secret", "pod-second", "/secret"),
        ("//secret", "pod-second", "/secret"),
        ("/api/%2e%2e/secret", "pod-second", "/secret"),
        ("/api/.%2E/secret", "pod-second", "/secret"),
        ("/./secret", "pod-second", "/secret"),
        ("/api/x/../../secret?q=/../a//b", "pod-second", "/secret?q=/../a//b"),
        ("/secret/", "pod-shadow", "/secret/"),
        ("/api//x", "pod-main", "/api/x"),
        ("/%61pi/x", "pod-main", "/api/x"),
        ("/a/../api/%7Euser", "pod-main", "/api/~user"),
        ("/apix/../api", "pod-main", "/api"),
        ("/..", "pod-shadow", "/"),
        ("/secret/..", "pod-shadow", "/"),
        // encoded slashes stay encoded: one segment, never a separator
        ("/api%2F..%2Fsecret", "pod-shadow", "/api%2F..%2Fsecret"),
        ("/api%2f..%2fsecret", "pod-shadow", "/api%2F..%2Fsecret"),
        ("/api/..%2Fsecret", "pod-main", "/api/..%2Fsecret"),
        ("/x/%2e%2e%5csecret", "pod-shadow", "/x/..%5Csecret"),
    ];
    for (raw, pod, path) in cases {
        let req = format!("GET {raw} HTTP/1.1\r\nHost: n.test\r\n\r\n");
        let r = answer(&s, req.as_bytes());
        assert_eq!(r.status, 200, "{raw}: {:?}", text(&r.body));
        let e: Echo = r.json();
        assert_eq!((e.pod.as_str(), e.path.as_str()), (pod, path), "{raw}");
    }
    // a rewrite works on the normalized path: f.test's /api prefix becomes /v2
    let e: Echo = answer(&s, b"GET /x/../api/./users//1 HTTP/1.1\r\nHost: f.test\r\n\r\n").json();
    assert_eq!(e.path, "/v2/users/1");
    // a redirect too
    let r = answer(&s, b"GET /a/../redirect HTTP/1.1\r\nHost: f.test\r\n\r\n");
    assert_eq!((r.status, r.headers.get("location").map(String::as_str)), (301, Some("http://f.test/redirect")));
    // refused: a raw backslash, a malformed percent-encoding
    refused(&s, "raw backslash", b"GET /api\\..\\secret HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused(&s, "bad percent-encoding", b"GET /api/%zz HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    refused(&s, "truncated percent-encoding", b"GET /api/%4 HTTP/1.1\r\nHost: n.test\r\n\r\n", 400);
    // keep-alive goes on after a normalized request
    let mut c = connect(&s);
    let mut r = BufReader::new(c.try_clone().unwrap());
    for (raw, pod) in [("/api/../secret", "pod-second"), ("/secret/../api", "pod-main"), ("/api", "pod-main")] {
        c.write_all(format!("GET {raw} HTTP/1.1\r\nHost: n.test\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(read_response(&mut r, false).unwrap().json::<Echo>().pod, pod, "{raw}");
    }
}
