//! The plan, table-driven: one route set, many request heads, the decision for each.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri};

use super::*;
use crate::routing::Table;
use crate::routing::tests::{GATEWAY, route, service, table};

const RULES: &str = "  parentRefs: [{name: gw}]
  hostnames: [p.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - {type: URLRewrite, urlRewrite: {hostname: internal.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-env, value: test}], remove: [x-secret]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-served-by, value: ingress}]}}
    backendRefs: [{name: s, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters: [{type: CORS, cors: {allowOrigins: ['https://ui.test'], allowMethods: [GET]}}]
    backendRefs: [{name: s, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /gone}}]
    backendRefs: [{name: missing, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /empty}}]
    backendRefs: [{name: empty, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: x.test, kind: Thing, name: t}}]
    backendRefs: [{name: s, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: t, port: 80}, percent: 50}}]
    backendRefs: [{name: s, port: 80}]
  - backendRefs: [{name: s, port: 80, weight: 1}, {name: t, port: 80, weight: 3}]
";

fn fixture() -> Table {
    let yaml = format!(
        "{GATEWAY}{}{}{}{}",
        service("infra", "s", &["10.42.0.5", "10.42.0.6"]),
        service("infra", "t", &["10.42.0.7"]),
        service("infra", "empty", &[]),
        route("infra", "r", RULES)
    );
    table(&yaml, "127.0.0.1:8080=infra/gw:81")
}

/// Fixed choices: `random` returns the given numbers in turn, endpoints the first one.
struct Fixed(Vec<u64>);

impl Choices for Fixed {
    fn random(&mut self) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.remove(0) }
    }
    fn endpoint(&mut self, b: &Backend) -> Option<SocketAddr> {
        match &b.target {
            BackendTarget::Endpoints(e) => e.first().copied(),
            BackendTarget::Invalid(_) => None,
        }
    }
}

const PEER: &str = "198.18.0.1:40000";
const ON: PlanOptions = PlanOptions { forwarded_headers: true, request_ids: false, scheme: "http" };

/// Plans `method target` with `headers` (name, value); returns the plan and the
/// headers as they would be sent.
fn run(
    t: &Table,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    opts: PlanOptions,
    rnd: &[u64],
) -> (Planned, HeaderMap) {
    let mut h = HeaderMap::new();
    for (n, v) in headers {
        h.append(header::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let uri: Uri = target.parse().unwrap();
    let head = Head { method: &method, uri: &uri, headers: &mut h, peer: PEER.parse().unwrap() };
    let p = plan(&t.listeners[0], head, opts, &mut Fixed(rnd.to_vec()));
    (p, h)
}

fn local_of(p: &Planned) -> &Local {
    match &p.plan {
        Plan::Local(l) => l,
        Plan::Forward(f) => panic!("expected a local answer, got a forward to {}", f.uri),
    }
}

fn forward_of(p: &Planned) -> &Forward {
    match &p.plan {
        Plan::Forward(f) => f,
        Plan::Local(l) => panic!("expected a forward, got {} {:?}", l.status, l.body),
    }
}

#[test]
fn requests_answered_by_the_proxy_itself() {
    let t = fixture();
    let big = "x".repeat(MAX_HEAD);
    // (method, target, headers, status, body, close)
    let cases: &[(&str, &str, &[(&str, &str)], u16, &str, bool)] = &[
        ("GET", "/", &[], 400, "missing Host header\n", false),
        ("GET", "/", &[("host", "p.test"), ("host", "p.test")], 400, "more than one Host header\n", false),
        ("GET", "/", &[("host", "nothing.test")], 404, "no route\n", false),
        ("GET", "/gone", &[("host", "p.test")], 500, "invalid backend reference\n", false),
        ("GET", "/empty", &[("host", "p.test")], 503, "no ready endpoint\n", false),
        ("GET", "/ext", &[("host", "p.test")], 500, "route uses an unsupported filter\n", false),
        ("GET", "/", &[("host", "p.test"), ("x-big", &big)], 431, "request head too large\n", true),
    ];
    for (method, target, headers, status, body, close) in cases {
        let (p, _) = run(&t, method, target, headers, ON, &[]);
        let l = local_of(&p);
        assert_eq!((l.status.as_u16(), l.body, l.close), (*status, *body, *close), "{method} {target}");
    }
}

#[test]
fn a_redirect_is_answered_with_its_location() {
    let t = fixture();
    let (p, _) = run(&t, "GET", "/old/x?q=1", &[("host", "p.test:8080")], ON, &[]);
    let l = local_of(&p);
    assert_eq!(l.status, StatusCode::MOVED_PERMANENTLY);
    let loc = l.headers.iter().find(|(n, _)| n == header::LOCATION).map(|(_, v)| v.to_str().unwrap());
    assert_eq!(loc, Some("http://p.test:8080/new?q=1"));
    assert_eq!(&*p.route, "infra/r#1");
}

#[test]
fn a_cors_preflight_is_answered_and_an_actual_request_gets_its_headers() {
    let t = fixture();
    let pre = [("host", "p.test"), ("origin", "https://ui.test"), ("access-control-request-method", "GET")];
    let (p, _) = run(&t, "OPTIONS", "/cors", &pre, ON, &[]);
    let l = local_of(&p);
    assert_eq!(l.status, StatusCode::OK);
    assert!(l.headers.iter().any(|(n, v)| n == header::ACCESS_CONTROL_ALLOW_ORIGIN && v == "https://ui.test"), "{l:?}");
    let (p, _) = run(&t, "GET", "/cors", &[("host", "p.test"), ("origin", "https://ui.test")], ON, &[]);
    let f = forward_of(&p);
    assert!(f.response_headers.iter().any(|(n, _)| n == header::ACCESS_CONTROL_ALLOW_ORIGIN), "{f:?}");
}

#[test]
fn a_forward_carries_the_rewritten_head() {
    let t = fixture();
    let headers = [
        ("host", "p.test"),
        ("x-secret", "1"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("expect", "100-continue"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    let (p, h) = run(&t, "GET", "/api/items?page=2", &headers, ON, &[]);
    let f = forward_of(&p);
    assert_eq!((&*p.route, &*p.backend), ("infra/r#0", "infra/s:80"));
    assert_eq!(f.uri, "http://10.42.0.5:8080/v1/items?page=2");
    assert_eq!(f.path_and_query(), "/v1/items?page=2");
    assert_eq!(h.get(header::HOST).unwrap(), "internal.test", "URLRewrite hostname");
    assert_eq!(h.get("x-env").unwrap(), "test");
    assert!(!h.contains_key("x-secret") && !h.contains_key("x-hop") && !h.contains_key(header::CONNECTION));
    assert!(!h.contains_key(header::EXPECT), "hyper answers 100-continue itself");
    assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 198.18.0.1");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "p.test");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(f.response_modifiers.len(), 1);
    assert!(f.upgrade.is_none() && f.mirrors.is_empty());
}

#[test]
fn options_turn_forwarded_headers_and_request_ids_on_and_off() {
    let t = fixture();
    let off = PlanOptions { forwarded_headers: false, request_ids: true, scheme: "http" };
    let (_, h) = run(&t, "GET", "/", &[("host", "p.test")], off, &[0, 0xab, 0xcd]);
    assert!(!h.contains_key("x-forwarded-for"));
    assert_eq!(h.get("x-request-id").unwrap(), "00000000000000ab00000000000000cd");
    let (_, h) = run(&t, "GET", "/", &[("host", "p.test"), ("x-request-id", "mine")], off, &[]);
    assert_eq!(h.get("x-request-id").unwrap(), "mine", "an id the client sent is kept");
}

#[test]
fn a_request_over_tls_is_forwarded_with_proto_https() {
    let t = fixture();
    let tls = PlanOptions { scheme: "https", ..ON };
    let (_, h) = run(&t, "GET", "/", &[("host", "p.test"), ("x-forwarded-proto", "http")], tls, &[]);
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "https", "set by the ingress, not the client");
    let (_, h) = run(&t, "GET", "/", &[("host", "p.test")], ON, &[]);
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
}

#[test]
fn an_absolute_form_target_sets_host_and_is_sent_in_origin_form() {
    let t = fixture();
    let (p, h) = run(&t, "GET", "http://p.test/x", &[("host", "other.test")], ON, &[]);
    assert_eq!(forward_of(&p).uri, "http://10.42.0.5:8080/x", "routed by the target's host, not the Host field");
    assert_eq!(h.get(header::HOST).unwrap(), "p.test");
}

#[test]
fn weights_choose_the_backend_from_the_random_number() {
    let t = fixture();
    // weights s=1, t=3: r % 4 == 0 -> s, 1..=3 -> t
    for (r, backend) in [(0, "infra/s:80"), (1, "infra/t:80"), (3, "infra/t:80"), (4, "infra/s:80")] {
        let (p, _) = run(&t, "GET", "/", &[("host", "p.test")], ON, &[r]);
        assert_eq!(&*p.backend, backend, "random {r}");
    }
}

#[test]
fn an_upgrade_keeps_its_hop_by_hop_fields_for_the_upgrade_code() {
    let t = fixture();
    let headers = [("host", "p.test"), ("connection", "Upgrade"), ("upgrade", "websocket")];
    let (p, h) = run(&t, "GET", "/api/ws", &headers, ON, &[]);
    assert_eq!(forward_of(&p).upgrade.as_ref().unwrap(), "websocket");
    assert!(h.contains_key(header::UPGRADE), "stripped by the upgrade code, which sets the pair again");
}

#[test]
fn a_mirror_is_taken_when_sampled() {
    let t = fixture();
    // random numbers in turn: the backend (one backend), then the mirror's sample
    let (p, _) = run(&t, "POST", "/mirror", &[("host", "p.test")], ON, &[0, 0]);
    assert_eq!(forward_of(&p).mirrors.len(), 1);
    let (p, _) = run(&t, "POST", "/mirror", &[("host", "p.test")], ON, &[0, 99]);
    assert!(forward_of(&p).mirrors.is_empty(), "99 of 100 is past 50 percent");
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    h.insert(header::TE, HeaderValue::from_static("gzip"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-kept"));
    h.insert(header::TE, HeaderValue::from_static("gzip;q=0.5, trailers"));
    h.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.get(header::TE).unwrap(), "trailers", "the client takes trailers");
    assert_eq!(h.get(header::TRAILER).unwrap(), "x-sum", "Trailer is end to end");
}

// HTTP/2 (issue 12): hyper hands an h2 request over with `:scheme` and `:authority` in
// its target and usually no Host; the client's scheme comes from the connection.
#[test]
fn an_http2_request_is_routed_by_authority_and_tells_its_scheme() {
    let t = fixture();
    let tls = PlanOptions { scheme: "https", ..ON };
    let (p, h) = run(&t, "POST", "https://p.test/api/x?y=1", &[("te", "trailers")], tls, &[]);
    let f = forward_of(&p);
    assert_eq!(f.uri, "http://10.42.0.5:8080/v1/x?y=1", "routed by :authority, sent in origin-form");
    assert_eq!(h.get(header::HOST).unwrap(), "internal.test", "Host made from :authority, then rewritten");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "p.test");
    assert_eq!(h.get(header::TE).unwrap(), "trailers", "gRPC's TE: trailers reaches the pod");
    // a redirect without a scheme of its own keeps the client's
    let (p, _) = run(&t, "GET", "https://p.test:8443/old", &[], tls, &[]);
    let loc = local_of(&p).headers.iter().find(|(n, _)| n == header::LOCATION).map(|(_, v)| v.to_str().unwrap());
    assert_eq!(loc, Some("https://p.test:8443/new"));
    // no :authority (allowed in HTTP/2): the Host field routes
    let (p, h) = run(&t, "GET", "/", &[("host", "p.test")], ON, &[]);
    assert!(matches!(p.plan, Plan::Forward(_)));
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
}

#[test]
fn an_upgrade_to_h2c_is_not_offered_and_the_request_is_served_as_http_1_1() {
    let t = fixture();
    let h2c = [
        ("host", "p.test"),
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ];
    let (p, h) = run(&t, "GET", "/", &h2c, ON, &[]);
    assert!(forward_of(&p).upgrade.is_none(), "no tunnel to one pod");
    for n in ["upgrade", "connection", "http2-settings"] {
        assert!(!h.contains_key(n), "{n} removed");
    }
    // a WebSocket upgrade still is one
    let ws = [("host", "p.test"), ("connection", "Upgrade"), ("upgrade", "websocket")];
    let (p, _) = run(&t, "GET", "/", &ws, ON, &[]);
    assert_eq!(forward_of(&p).upgrade.as_ref().map(|v| v.to_str().unwrap()), Some("websocket"));
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    let addrs: [SocketAddr; 7] = [
        "0.0.0.0:0".parse().unwrap(),
        "10.42.0.5:8080".parse().unwrap(),
        "255.255.255.255:65535".parse().unwrap(),
        "1.20.100.9:9".parse().unwrap(),
        "192.168.1.10:80".parse().unwrap(),
        "[::1]:80".parse().unwrap(),
        "[fd00::5:1]:10080".parse().unwrap(),
    ];
    for a in addrs {
        let (mut ip, mut sa) = (String::new(), String::new());
        push_ip(&mut ip, a.ip());
        push_socket_addr(&mut sa, a);
        assert_eq!(ip, a.ip().to_string());
        assert_eq!(sa, a.to_string());
    }
}

#[test]
fn a_pods_keep_alive_answer_and_every_named_field_lose_only_their_hop_by_hop_fields() {
    let mut before = HeaderMap::new();
    before.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    before.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    // nginx's answer: Connection: keep-alive (and often Keep-Alive: timeout=N)
    let mut h = before.clone();
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h.insert(http::header::HeaderName::from_static("keep-alive"), HeaderValue::from_static("timeout=5"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h, before);
    // names in any case, spaces, empty list members, two Connection lines, an invalid
    // name among them
    let mut h = before.clone();
    h.append(header::CONNECTION, HeaderValue::from_static(" X-Private ,, Close"));
    h.append(header::CONNECTION, HeaderValue::from_static("x-other, bad name"));
    for n in ["x-private", "x-other", "close"] {
        h.insert(http::header::HeaderName::from_static(n), HeaderValue::from_static("1"));
    }
    h.insert(http::header::HeaderName::from_static("x-kept"), HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut h);
    let mut want = before.clone();
    want.insert(http::header::HeaderName::from_static("x-kept"), HeaderValue::from_static("1"));
    assert_eq!(h, want);
    // TE: only `trailers` survives, and only when it was asked for
    let mut h = before.clone();
    h.insert(header::TE, HeaderValue::from_static("gzip, trailers;q=1"));
    h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    strip_hop_by_hop(&mut h);
    let mut want = before.clone();
    want.insert(header::TE, HeaderValue::from_static("trailers"));
    assert_eq!(h, want);
    let mut h = before.clone();
    h.insert(header::TE, HeaderValue::from_static("gzip"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h, before);
}

#[test]
fn hop_by_hop_fields_are_removed_and_a_head_without_any_is_left_alone() {
    let mut plain = HeaderMap::new();
    plain.insert(header::HOST, HeaderValue::from_static("a.test"));
    plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let before = plain.clone();
    strip_hop_by_hop(&mut plain);
    assert_eq!(plain, before);
    for name in [
        "connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "keep-alive",
        "proxy-connection",
        "http2-settings",
    ] {
        let mut h = before.clone();
        h.insert(http::header::HeaderName::from_static(name), HeaderValue::from_static("x"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before, "{name} removed");
    }
    // and the fields Connection names
    let mut h = before.clone();
    h.insert(header::CONNECTION, HeaderValue::from_static("x-private, close"));
    h.insert(http::header::HeaderName::from_static("x-private"), HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h, before);
}

#[test]
fn the_remembered_source_text_follows_the_source() {
    // the per-thread text of the last source: alternating sources each get their own
    for ip in ["198.18.0.1", "2001:db8::7", "198.18.0.1", "10.1.2.3", "10.1.2.3"] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let mut h = HeaderMap::new();
        forwarded_headers(&mut h, SocketAddr::new(ip, 4242), None, "http");
        assert_eq!(h.get("x-forwarded-for").unwrap(), &*ip.to_string());
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }
}

#[test]
fn remembered_pod_authorities_follow_the_endpoint() {
    // more endpoints than are kept, revisited: each gets its own authority
    let eps: Vec<SocketAddr> = (0..12u16)
        .map(|i| if i % 3 == 0 { format!("[2001:db8::{i}]:80{i:02}") } else { format!("10.42.0.{i}:80{i:02}") })
        .map(|s| s.parse().unwrap())
        .collect();
    for ep in eps.iter().chain(eps.iter().rev()) {
        assert_eq!(pod_authority(*ep).as_str(), ep.to_string());
    }
}
