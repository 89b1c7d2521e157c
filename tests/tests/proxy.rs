//! The L7 proxy end to end: the agent binary with manifests in a temporary
//! directory (`ingress_tests::proxy_setup`). On 127.0.0.1 (no privileges) with echo
//! backends on loopback ports: filters (URLRewrite, header modifiers, CORS,
//! RequestMirror, redirects), timeouts, the error statuses, weights, limits, and hot
//! reload keeping the last good table. The forwarding scenarios that also run in the
//! k3d-shaped topology are `ingress_tests::scenarios` (`scenarios_loopback.rs`,
//! `scenarios_topology.rs`).

use std::time::{Duration, Instant};

use ingress_tests::backend::Echo;
use ingress_tests::client::{Closed, Request, read_response, read_until_closed};
use ingress_tests::proxy_setup::{MAIN, SHADOW, Setup};

#[test]
fn filters_statuses_and_weights_through_the_proxy() {
    let s = Setup::local("filters");
    // URLRewrite + request/response header modifiers
    let r = s.send(Request::get("f.test:8080", "/api/users?x=1").header("x-drop", "1").header("x-keep", "1"));
    assert_eq!(r.status, 200);
    let e: Echo = r.json();
    assert_eq!(e.path, "/v2/users?x=1");
    assert_eq!(e.host, "f.test:8080");
    assert_eq!(e.headers.get("x-env").map(String::as_str), Some("test"));
    assert!(!e.headers.contains_key("x-drop"));
    assert!(e.headers.contains_key("x-keep"));
    assert_eq!(r.headers.get("x-resp").map(String::as_str), Some("yes"));

    // CORS: preflight answered by the proxy, actual request decorated
    let before = s.requests(MAIN);
    let pre = s.send(
        Request::get("f.test", "/cors")
            .method("OPTIONS")
            .header("Origin", "https://ui.test")
            .header("Access-Control-Request-Method", "POST"),
    );
    assert_eq!(pre.status, 200);
    assert_eq!(pre.headers.get("access-control-allow-origin").map(String::as_str), Some("https://ui.test"));
    assert_eq!(pre.headers.get("access-control-allow-methods").map(String::as_str), Some("GET, POST"));
    assert_eq!(pre.headers.get("access-control-max-age").map(String::as_str), Some("60"));
    assert_eq!(s.requests(MAIN), before, "a preflight does not reach the backend");
    let denied = s.send(
        Request::get("f.test", "/cors")
            .method("OPTIONS")
            .header("Origin", "https://evil.test")
            .header("Access-Control-Request-Method", "POST"),
    );
    assert!(!denied.headers.contains_key("access-control-allow-origin"));
    let actual = s.send(Request::get("f.test", "/cors").header("Origin", "https://ui.test"));
    assert_eq!(actual.status, 200);
    assert_eq!(actual.headers.get("access-control-allow-origin").map(String::as_str), Some("https://ui.test"));

    // RequestMirror: the shadow gets a copy, the client the main backend's answer
    let shadow_before = s.requests(SHADOW);
    let mut req = Request::get("f.test", "/mirror").method("POST");
    req.body = b"payload".to_vec();
    let r = s.send(req);
    assert_eq!(r.json::<Echo>().pod, "pod-main");
    assert_eq!(r.json::<Echo>().body_len, 7);
    let start = Instant::now();
    while s.requests(SHADOW) == shadow_before {
        assert!(start.elapsed() < Duration::from_secs(3), "the mirror got no copy");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Redirects: the Host header's port is kept (VM 8080 -> listener 80); https uses 443
    let r = s.get("/redirect");
    assert_eq!(r.status, 301);
    assert_eq!(r.headers.get("location").map(String::as_str), Some("http://f.test:8080/redirect"));
    let r = s.get("/to-https");
    assert_eq!(r.status, 302);
    assert_eq!(r.headers.get("location").map(String::as_str), Some("https://f.test/to-https"));

    // Timeouts and error statuses
    let before = s.requests(MAIN);
    let r = s.send(Request::get("f.test", "/slow").header("x-echo-sleep-ms", "1500"));
    assert_eq!(r.status, 504, "request timeout 300ms");
    // the pod counts the request the proxy gave up on when its sleep ends: wait for
    // that, so it cannot land in the retry counts below
    s.wait_requests(MAIN, before + 1, Duration::from_secs(5));
    assert_eq!(s.get("/slow").status, 200);
    assert_eq!(s.get("/ext").status, 500, "unsupported filter");
    assert_eq!(s.get("/missing").status, 500, "unresolvable backendRef");
    assert_eq!(s.get("/none").status, 500, "no backendRefs, no redirect");
    assert_eq!(s.get("/empty").status, 503, "no ready endpoint");
    assert_eq!(s.get("/nothing-here").status, 404);
    assert_eq!(s.send(Request::get("other.test", "/api")).status, 404);
    let mut no_host = Request::get("x", "/api");
    no_host.host = None;
    assert_eq!(s.send(no_host).status, 400, "HTTP/1.1 without Host");

    // Upstream failures: a refused endpoint is skipped for the next one; a reset
    // before the answer is 502; retry codes are retried `attempts` times
    for _ in 0..6 {
        assert_eq!(s.get("/half").status, 200, "connect failure -> next endpoint");
    }
    assert_eq!(s.send(Request::get("f.test", "/api/x").header("x-echo-close", "1")).status, 502);
    let before = s.requests(MAIN);
    assert_eq!(s.send(Request::get("f.test", "/retry").header("x-echo-status", "503")).status, 503);
    assert_eq!(s.requests(MAIN) - before, 3, "1 attempt + 2 retries");
    let before = s.requests(MAIN);
    assert_eq!(s.send(Request::get("f.test", "/retry").header("x-echo-status", "500")).status, 500);
    assert_eq!(s.requests(MAIN) - before, 1, "500 is not in the retry codes");

    // Weights: 1/1/0 -> main and second, never shadow
    let shadow_before = s.requests(SHADOW);
    let pods: Vec<String> = (0..40).map(|_| s.get("/weights").json::<Echo>().pod).collect();
    assert!(pods.iter().any(|p| p == "pod-main") && pods.iter().any(|p| p == "pod-second"), "{pods:?}");
    assert!(!pods.iter().any(|p| p == "pod-shadow"));
    assert_eq!(s.requests(SHADOW), shadow_before);

    // Prometheus metrics per route and backend
    let (status, text) = s.agent.admin_get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains(r#"ingress_requests_total{route="apps/r#0",backend="apps/main:80",class="2xx"}"#), "{text}");
    assert!(
        text.contains(r#"ingress_requests_total{route="apps/r#7",backend="apps/missing:80",class="5xx"} 1"#),
        "{text}"
    );
    let bytes = text
        .lines()
        .find(|l| l.starts_with(r#"ingress_response_body_bytes_total{route="apps/r#0",backend="apps/main:80"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(bytes > 100, "response bytes counted: {bytes}");
    assert!(text.contains("ingress_request_duration_seconds_bucket"), "{text}");
}

#[test]
fn a_bad_manifest_keeps_the_last_good_table_and_shows_in_readyz() {
    let s = Setup::local("reload");
    assert_eq!(s.get("/api").status, 200);
    std::fs::write(s.dir.join("zz-bad.yaml"), "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: b, namespace: apps}\nspec:\n  rules: [{matches: [{path: {type: Nope}}]}]\n").unwrap();
    let start = Instant::now();
    let body = loop {
        let (status, body) = s.agent.admin_get("/readyz").unwrap();
        if status == 503 {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "readyz did not report the bad manifest");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(body.contains("zz-bad.yaml: document 1, line 5, field `spec.rules[0].matches[0].path.type`"), "{body}");
    assert_eq!(s.get("/api").status, 200, "still served from the last good table");
    let (_, routes) = s.agent.admin_get("/routes").unwrap();
    assert!(routes.contains("zz-bad.yaml"), "ingress routes shows the error");
    std::fs::remove_file(s.dir.join("zz-bad.yaml")).unwrap();
    let start = Instant::now();
    while s.agent.admin_get("/readyz").unwrap().0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(5), "readyz did not recover");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn websocket_upgrade_is_forwarded_and_joined() {
    use std::io::{BufReader, Read, Write};
    let s = Setup::local("upgrade");
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /api/socket HTTP/1.1\r\nHost: f.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 101);
    assert_eq!(head.headers.get("x-pod").map(String::as_str), Some("pod-main"));
    assert_eq!(head.headers.get("upgrade").map(String::as_str), Some("websocket"));
    for msg in [&b"hello"[..], &[7u8; 100_000][..]] {
        c.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        r.read_exact(&mut back).unwrap();
        assert_eq!(back, msg, "bytes echoed through the joined connection");
    }
    let (_, stats) = s.agent.admin_get("/stats").unwrap();
    let stats: ingress::telemetry::StatsView = serde_json::from_str(&stats).unwrap();
    assert_eq!((stats.proxy.upgraded_active, stats.proxy.upgraded_total), (1, 1));
    drop(r);
    drop(c);
    let start = Instant::now();
    loop {
        let (_, stats) = s.agent.admin_get("/stats").unwrap();
        let stats: ingress::telemetry::StatsView = serde_json::from_str(&stats).unwrap();
        if stats.proxy.upgraded_active == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the joined connection was not closed with the client");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_requests_get_4xx_and_the_connection_is_closed() {
    use std::io::{Read, Write};
    let s = Setup::local("bad");
    // the answer, then the agent closes the connection: read_to_end ends in EOF, not
    // in the read timeout
    let raw = |bytes: &[u8]| -> String {
        let mut c = s.connect();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        c.write_all(bytes).unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("not closed after the answer ({e}): {:?}", String::from_utf8_lossy(&out)));
        String::from_utf8_lossy(&out).to_string()
    };
    let huge = format!("GET / HTTP/1.1\r\nHost: f.test\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let got = raw(huge.as_bytes());
    assert!(got.starts_with("HTTP/1.1 431"), "head over 64 KiB: {got:?}");
    assert!(raw(b"GET / HTTP/1.1\r\nHost f.test\r\n\r\n").starts_with("HTTP/1.1 400"), "malformed header");
    assert!(raw(b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400"), "malformed request line");
    assert!(
        raw(b"POST /api HTTP/1.1\r\nHost: f.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
            .starts_with("HTTP/1.1 400"),
        "two differing Content-Lengths"
    );
    assert!(
        raw(b"POST /api HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: gzip\r\n\r\n").starts_with("HTTP/1.1 400"),
        "Transfer-Encoding that does not end in chunked"
    );
    assert!(
        raw(b"GET /api HTTP/1.1\r\nHost: f.test\r\nX-A: a\r\n  folded\r\n\r\n").starts_with("HTTP/1.1 400"),
        "obs-fold"
    );
    let before = s.requests(MAIN);
    let got = raw(b"POST /api HTTP/1.1\r\nHost: f.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: f.test\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 400"), "Content-Length with Transfer-Encoding: {got:?}");
    assert_eq!(got.matches("HTTP/1.1").count(), 1, "one answer, then the connection is closed: {got:?}");
    // the same names split across writes
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for part in [
        &b"POST /api HTTP/1.1\r\nHost: f.test\r\nContent-Len"[..],
        b"gth: 3\r\nTransfer-Enc",
        b"oding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ] {
        c.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = Vec::new();
    c.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not closed after the 400 ({e}): {:?}", String::from_utf8_lossy(&out)));
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "split Content-Length with Transfer-Encoding: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(s.requests(MAIN), before, "nothing reached the backend");
    // the agent still serves
    assert_eq!(s.get("/api/x").status, 200);
}

#[test]
fn sigterm_drains_in_flight_requests_and_stops_accepting() {
    let mut s = Setup::local("drain");
    let client = s.client.clone();
    let slow = std::thread::spawn(move || {
        client.send(&Request::get("f.test", "/api/slow").header("x-echo-sleep-ms", "1500"), Duration::from_secs(10))
    });
    // SIGTERM once the agent holds the request (its answer is 1.5 s away)
    let start = Instant::now();
    loop {
        let p = s.agent.stats().proxy;
        let answered = p.responses_2xx + p.responses_3xx + p.responses_4xx + p.responses_5xx;
        if p.requests > answered {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the slow request never reached the agent: {p:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.agent.terminate_async();
    // new connections are refused soon after
    let start = Instant::now();
    while s.client.try_connect().is_ok() {
        assert!(start.elapsed() < Duration::from_secs(2), "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = slow.join().unwrap().expect("the in-flight request completes");
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<Echo>().path, "/v2/slow");
    let status = s.agent.wait_exit(Duration::from_secs(5)).expect("the agent exits after draining");
    assert!(status.success(), "{status}");
}

#[test]
fn connections_per_source_are_capped() {
    use std::io::Write;
    let s = Setup::local_with("cap", &["--max-connections-per-source", "2"]);
    let open = || s.connect();
    // two connections held open, each proven served, then busy (a slow request in
    // flight): an idle one would be closed to make room (tests/framing.rs)
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = open();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&Request::get("f.test", "/api/held").to_bytes()).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        assert_eq!(read_response(&mut r, false).unwrap().status, 200);
        c.write_all(&Request::get("f.test", "/api/busy").header("x-echo-sleep-ms", "2000").to_bytes()).unwrap();
        held.push(c);
    }
    let start = Instant::now();
    loop {
        let p = s.agent.stats().proxy;
        if p.requests - (p.responses_2xx + p.responses_3xx + p.responses_4xx + p.responses_5xx) == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "the slow requests did not reach the agent: {p:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // a third is closed at once, unanswered: EOF or a reset, not a read timeout
    let mut third = open();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = third.write_all(&Request::get("f.test", "/api/third").to_bytes());
    let mut buf = Vec::new();
    let end = read_until_closed(&mut third, &mut buf)
        .unwrap_or_else(|e| panic!("the third connection from the same source was kept open ({e})"));
    assert!(buf.is_empty(), "the third connection got an answer ({end:?}): {:?}", String::from_utf8_lossy(&buf));
    // one slot freed: served again
    drop(held.pop());
    let start = Instant::now();
    loop {
        if s.client.send(&Request::get("f.test", "/api/again"), Duration::from_secs(2)).is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "a freed slot was not reusable");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_keep_alive_and_slow_heads_are_closed_after_the_head_timeout() {
    use std::io::Write;
    const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
    let s = Setup::local_with("idle", &["--head-timeout", &HEAD_TIMEOUT.as_secs().to_string()]);
    // idle after one answered request
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&Request::get("f.test", "/api/idle").to_bytes()).unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    // idle past half the head timeout (parked without buffers from then on) but within
    // it, then served again, two pipelined requests in one write included
    std::thread::sleep(HEAD_TIMEOUT * 4 / 5);
    let mut two = Request::get("f.test", "/api/p1").to_bytes();
    two.extend(Request::get("f.test", "/api/p2").to_bytes());
    c.write_all(&two).unwrap();
    for p in ["/v2/p1", "/v2/p2"] {
        assert_eq!(read_response(&mut r, false).unwrap().json::<Echo>().path, p);
    }
    let answered = Instant::now();
    let stats = s.agent.stats();
    assert!(stats.proxy.connections_parked >= 1, "{:?}", stats.proxy);
    let mut rest = Vec::new();
    let end = read_until_closed(&mut r, &mut rest)
        .unwrap_or_else(|e| panic!("an idle keep-alive connection was not closed ({e})"));
    // The head timeout runs from the last answer, which the agent finished before the
    // client read it: not closed before it (a tenth of it as margin for timers), and
    // not much after. A correctness bound; `closed after` is the measurement.
    let idle = answered.elapsed();
    eprintln!(
        "idle keep-alive connection closed {idle:?} after its last answer ({end:?}); head timeout {HEAD_TIMEOUT:?}"
    );
    assert!(
        idle >= HEAD_TIMEOUT - HEAD_TIMEOUT / 10 && idle < HEAD_TIMEOUT + Duration::from_secs(3),
        "closed {idle:?} after the last answer, head timeout {HEAD_TIMEOUT:?}"
    );
    // a head that never completes (slowloris)
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /api/slow HTTP/1.1\r\nHost: f.te").unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    read_until_closed(&mut c, &mut out).unwrap_or_else(|e| panic!("a partial head was kept open ({e})"));
    assert!(start.elapsed() < HEAD_TIMEOUT + Duration::from_secs(3), "a partial head is not kept open");
    assert!(out.starts_with(b"HTTP/1.1 408"), "slowloris gets 408: {:?}", String::from_utf8_lossy(&out));
    assert!(rest.is_empty(), "an idle keep-alive connection closes without an answer: {rest:?}");
    // a request in flight longer than the head timeout is not cut
    let r = s.send(Request::get("f.test", "/api/long").header("x-echo-sleep-ms", "1500"));
    assert_eq!(r.status, 200);
}

#[test]
fn expect_continue_head_trailers_and_a_malformed_answer() {
    use std::io::{BufRead, Write};
    let s = Setup::local("expect");
    // Expect: 100-continue: the client is told to go on before it sends the body
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"POST /api/e HTTP/1.1\r\nHost: f.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    let mut blank = String::new();
    r.read_line(&mut blank).unwrap();
    assert_eq!(blank, "\r\n");
    c.write_all(b"hello").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    let echo = resp.json::<Echo>();
    assert_eq!((resp.status, echo.body_len), (200, 5));
    assert!(!echo.headers.contains_key("expect"), "the proxy handled the expectation: {:?}", echo.headers);
    // HEAD: headers only, and the connection goes on
    c.write_all(&Request::get("f.test", "/api/h").method("HEAD").to_bytes()).unwrap();
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.headers["content-length"].parse::<usize>().unwrap() > 0, "{:?}", head.headers);
    c.write_all(&Request::get("f.test", "/api/after-head").to_bytes()).unwrap();
    let next = read_response(&mut r, false).unwrap();
    assert_eq!(next.json::<Echo>().path, "/v2/after-head", "no body was left behind the HEAD answer");
    // request trailers reach the pod
    c.write_all(b"POST /api/t HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n").unwrap();
    let t = read_response(&mut r, false).unwrap().json::<Echo>();
    assert_eq!((t.body_len, t.trailers.get("x-sum").map(String::as_str)), (5, Some("42")), "{t:?}");
    // response trailers reach a client that takes them
    let resp = s.send(Request::get("f.test", "/api/rt").header("TE", "trailers").header("x-echo-trailer", "x-sum=7"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.trailers.get("x-sum").map(String::as_str), Some("7"), "{resp:?}");
    // a malformed answer from the pod: 502
    assert_eq!(s.send(Request::get("f.test", "/api/m").header("x-echo-malformed", "1")).status, 502);
    let mut rest = Vec::new();
    drop(r);
    let _ = c.write_all(&Request::get("f.test", "/api/still").header("Connection", "close").to_bytes());
    let end =
        read_until_closed(&mut c, &mut rest).unwrap_or_else(|e| panic!("not closed after `Connection: close` ({e})"));
    assert_eq!(end, Closed::Eof, "{:?}", String::from_utf8_lossy(&rest));
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"), "the other connection is unaffected");
}

#[test]
fn request_ids_and_forwarded_headers_are_configurable() {
    let s = Setup::local_with("ids", &["--request-id", "--forwarded-headers", "off"]);
    let e: Echo = s.get("/api/id").json();
    let id = e.headers.get("x-request-id").expect("an X-Request-Id is added");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(s.get("/api/id").json::<Echo>().headers["x-request-id"], *id, "ids differ per request");
    let kept: Echo = s.send(Request::get("f.test", "/api/id").header("X-Request-Id", "abc")).json();
    assert_eq!(kept.headers["x-request-id"], "abc", "an existing id is kept");
    assert!(!e.headers.contains_key("x-forwarded-for") && !e.headers.contains_key("x-forwarded-host"));
}
