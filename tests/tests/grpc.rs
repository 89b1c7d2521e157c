//! GRPCRoute through the agent on 127.0.0.1 (no privileges): the agent binary with the
//! proxy tests' manifests (`ingress_tests::proxy_setup`) and GRPCRoutes beside them.
//!
//! - over HTTP/1.1 (what the proxy serves on this branch): calls with `content-type:
//!   application/grpc` routed by service and method to the right echo pod; the
//!   proxy's own answers to gRPC calls as gRPC statuses (Trailers-Only: HTTP 200,
//!   `grpc-status`, `grpc-message`); a GRPCRoute on a hostname an older HTTPRoute has
//!   is not accepted; `ingress routes` shows the GRPCRoute.
//! - over h2c (HTTP/2 with prior knowledge, to an h2c gRPC backend whose Service port
//!   says `appProtocol: kubernetes.io/h2c`).

use std::net::SocketAddr;
use std::time::Duration;

use ingress_tests::RefusedPort;
use ingress_tests::backend::Echo;
use ingress_tests::client::{Request, Response};
use ingress_tests::proxy_setup::{MAIN, SECOND, Setup, service};

/// GRPCRoutes on `g.test` (to the pods `main` and `second`, a Service without ready
/// endpoints, a missing one and one whose endpoint refuses) and one on `f.test`, the
/// HTTPRoute's hostname.
fn grpc_manifests(dead: SocketAddr) -> String {
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [g.test]
  rules:
  - matches: [{method: {service: echo.Users, method: Get}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-routed, value: grpc}]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-grpc-route, value: 'yes'}]}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{method: {service: echo.Users}}]
    backendRefs: [{name: second, port: 80}]
  - matches: [{method: {type: RegularExpression, service: 'echo\.Orders', method: 'List.*'}}, {headers: [{name: x-tier, value: gold}]}]
    backendRefs: [{name: second, port: 80}]
  - matches: [{method: {service: echo.Empty}}]
    backendRefs: [{name: noeps, port: 80}]
  - matches: [{method: {service: echo.Missing}}]
    backendRefs: [{name: missing, port: 80}]
  - matches: [{method: {service: echo.Dead}}]
    backendRefs: [{name: dead, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: zz-shared, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [f.test]
  rules: [{backendRefs: [{name: second, port: 80}]}]
"#;
    format!("{routes}{}", service("dead", &[dead]))
}

/// A gRPC call over HTTP/1.1: POST `/service/method` with a gRPC content type and one
/// length-prefixed message (uncompressed, 3 bytes).
fn call(host: &str, service_method: &str) -> Request {
    let mut r = Request::get(host, &format!("/{service_method}"))
        .method("POST")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    r.body = vec![0, 0, 0, 0, 3, b'a', b'b', b'c'];
    r
}

fn content_type(mut r: Request, value: &str) -> Request {
    r.headers.retain(|(n, _)| n != "content-type");
    r.header("content-type", value)
}

fn grpc_status(r: &Response) -> (u16, Option<&str>, Option<&str>) {
    (r.status, r.headers.get("grpc-status").map(String::as_str), r.headers.get("grpc-message").map(String::as_str))
}

#[test]
fn grpc_calls_are_routed_by_service_and_method() {
    let dead = RefusedPort::new();
    let s = Setup::local_with_manifests("grpc-route", &grpc_manifests(dead.addr), &[]);
    let pod = |r: &Response| {
        assert_eq!(r.status, 200, "{r:?}");
        r.json::<Echo>().pod
    };
    // Exact service and method: main, with the rule's request and response header filters
    let (main_before, second_before) = (s.requests(MAIN), s.requests(SECOND));
    let r = s.send(call("g.test", "echo.Users/Get"));
    assert_eq!(pod(&r), "pod-main");
    let e: Echo = r.json();
    assert_eq!((e.method.as_str(), e.path.as_str()), ("POST", "/echo.Users/Get"));
    assert_eq!(e.headers.get("x-routed").map(String::as_str), Some("grpc"));
    assert_eq!(e.headers.get("content-type").map(String::as_str), Some("application/grpc"));
    assert_eq!(e.body_len, 8, "the gRPC message reaches the pod");
    assert_eq!(r.headers.get("x-grpc-route").map(String::as_str), Some("yes"));
    // the service's other methods: second
    assert_eq!(pod(&s.send(call("g.test", "echo.Users/Delete"))), "pod-second");
    // a regular expression on service and method, and a header-only match
    assert_eq!(pod(&s.send(call("g.test", "echo.Orders/ListAll"))), "pod-second");
    assert_eq!(pod(&s.send(call("g.test", "other.Svc/Any").header("x-tier", "gold"))), "pod-second");
    assert_eq!(s.requests(MAIN) - main_before, 1);
    assert_eq!(s.requests(SECOND) - second_before, 3);
    // gRPC's content subtypes are gRPC too
    let proto = content_type(call("g.test", "echo.Users/Get"), "application/grpc+proto");
    assert_eq!(pod(&s.send(proto)), "pod-main");

    // a request that is not a gRPC call does not match a GRPCRoute: a plain 404
    let mut get = Request::get("g.test", "/echo.Users/Get");
    get.body = vec![];
    let r = s.send(get);
    assert_eq!((r.status, r.headers.get("grpc-status")), (404, None));
    let json = content_type(call("g.test", "echo.Users/Get"), "application/json");
    assert_eq!(s.send(json).status, 404);
}

#[test]
fn the_proxys_own_answers_to_grpc_calls_are_grpc_statuses() {
    let dead = RefusedPort::new();
    let s = Setup::local_with_manifests("grpc-status", &grpc_manifests(dead.addr), &[]);
    // no matching route: UNIMPLEMENTED, Trailers-Only (HTTP 200, no body)
    let r = s.send(call("g.test", "echo.Nothing/Here"));
    assert_eq!(grpc_status(&r), (200, Some("12"), Some("no route")), "{r:?}");
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/grpc"));
    assert!(r.body.is_empty(), "Trailers-Only has no body: {r:?}");
    // no such host either
    assert_eq!(grpc_status(&s.send(call("nowhere.test", "a.B/C"))).1, Some("12"));
    // no ready endpoint, an unresolvable backendRef, an endpoint that refuses: UNAVAILABLE
    assert_eq!(grpc_status(&s.send(call("g.test", "echo.Empty/X"))), (200, Some("14"), Some("no ready endpoint")));
    assert_eq!(
        grpc_status(&s.send(call("g.test", "echo.Missing/X"))),
        (200, Some("14"), Some("invalid backend reference"))
    );
    assert_eq!(grpc_status(&s.send(call("g.test", "echo.Dead/X"))), (200, Some("14"), Some("backend unavailable")));
    // a timeout (the HTTPRoute's `/slow`, 300ms, reached by a gRPC call): DEADLINE_EXCEEDED
    let before = s.requests(MAIN);
    let slow = call("f.test", "slow").header("x-echo-sleep-ms", "1500");
    assert_eq!(grpc_status(&s.send(slow)), (200, Some("4"), Some("request timeout")));
    s.wait_requests(MAIN, before + 1, Duration::from_secs(5));
    // the same failures without a gRPC content type keep their HTTP statuses
    let mut plain = Request::get("g.test", "/echo.Nothing/Here").method("POST");
    plain.body = b"x".to_vec();
    let r = s.send(plain);
    assert_eq!((r.status, r.headers.get("grpc-status")), (404, None));
    assert_eq!(s.get("/empty").status, 503);
    // metrics count the answer's HTTP meaning (503: 5xx), not the 200 it is wrapped in,
    // under the GRPCRoute's name and rule
    let (status, metrics) = s.agent.admin_get("/metrics").expect("admin /metrics");
    assert_eq!(status, 200);
    let rule3 = |l: &&str| l.starts_with("ingress_requests_total") && l.contains("route=\"GRPCRoute apps/g#3\"");
    let lines: Vec<&str> = metrics.lines().filter(rule3).collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| l.contains("class=\"5xx\"")), "{metrics}");
}

#[test]
fn a_grpcroute_on_an_httproutes_hostname_is_not_accepted_and_routes_shows_it() {
    let dead = RefusedPort::new();
    let s = Setup::local_with_manifests("grpc-shared", &grpc_manifests(dead.addr), &[]);
    // apps/r (HTTPRoute, f.test) and apps/zz-shared (GRPCRoute, f.test): same age, so
    // "{namespace}/{name}" decides and the HTTPRoute keeps f.test, gRPC calls included
    let r = s.send(call("f.test", "api/x"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<Echo>().path, "/v2/x", "the HTTPRoute's URLRewrite: its rule served the call");
    let (status, body) = s.agent.admin_get("/routes").expect("admin /routes");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let report = |name: &str| {
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {body}"))
    };
    let shared = report("GRPCRoute apps/zz-shared");
    let accepted = &shared["parents"][0]["conditions"][0];
    assert_eq!((accepted["type"].as_str(), accepted["status"].as_bool()), (Some("Accepted"), Some(false)), "{shared}");
    assert_eq!(accepted["reason"], "NotAllowedByListeners");
    assert!(accepted["message"].as_str().unwrap().contains("older apps/r"), "{shared}");
    let g = report("GRPCRoute apps/g");
    assert_eq!(g["attached"][0], "apps/gw/http", "{g}");
    // the rules with their method matches, under the route's kind and name (in
    // precedence order: `echo\.Orders`, 12 service characters, before `echo.Users`)
    let rules: Vec<&serde_json::Value> = v["listeners"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["hostname"] == "g.test")
        .flat_map(|h| h["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules[0]["route"], "GRPCRoute apps/g");
    assert_eq!(rules[0]["rule"], 2, "{rules:?}");
    let rule0 = rules.iter().find(|r| r["rule"] == 0).expect("rule 0");
    assert_eq!(rule0["match"]["grpc"], serde_json::json!({"type": "Exact", "service": "echo.Users", "method": "Get"}));
    // and `ingress routes` prints them
    let out = std::process::Command::new(ingress_tests::agent::ingress_bin())
        .args(["routes", "--admin", s.agent.admin.as_str()])
        .output()
        .expect("ingress routes");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("gRPC Exact echo.Users/Get  (GRPCRoute apps/g rule 0)"), "{text}");
    assert!(text.contains("route GRPCRoute apps/zz-shared: parentRef apps/gw: not accepted"), "{text}");
}

/// gRPC over h2c end to end: an h2c client (prior knowledge) -> the agent -> an h2c
/// gRPC backend (`appProtocol: kubernetes.io/h2c`). Needs the proxy's HTTP/2.
#[test]
fn grpc_over_h2c_end_to_end() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (a, b) = rt.block_on(async { (h2c_backend::start("grpc-a").await, h2c_backend::start("grpc-b").await) });
    let h2c_service = |name: &str, at: SocketAddr| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec: {{ports: [{{name: grpc, port: 50051, appProtocol: kubernetes.io/h2c}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-0, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: grpc, port: {}, appProtocol: kubernetes.io/h2c}}]\nendpoints: [{{addresses: ['{}']}}]\n",
            at.port(),
            at.ip()
        )
    };
    let manifests = format!(
        "{}{}{}",
        h2c_service("grpc-a", a),
        h2c_service("grpc-b", b),
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: h2, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [h2.test]
  rules:
  - matches: [{method: {service: echo.A}}]
    backendRefs: [{name: grpc-a, port: 50051}]
  - matches: [{method: {service: echo.B}}]
    backendRefs: [{name: grpc-b, port: 50051}]
"#
    );
    let s = Setup::local_with_manifests("grpc-h2c", &manifests, &[]);
    let addr = s.client.addr;
    rt.block_on(async move {
        for (path, want) in [("/echo.A/Say", "grpc-a"), ("/echo.B/Say", "grpc-b")] {
            let (status, message, body) = h2c_backend::unary(addr, "h2.test", path, b"hello").await;
            assert_eq!(status.as_deref(), Some("0"), "{path}: {message:?}");
            assert_eq!(body, format!("{want}:hello").into_bytes(), "{path}");
        }
        let (status, message, _) = h2c_backend::unary(addr, "h2.test", "/echo.C/Say", b"x").await;
        assert_eq!((status.as_deref(), message.as_deref()), (Some("12"), Some("no route")));
    });
}

/// A minimal gRPC server and client on the h2 crate (no protoc: the messages are raw
/// bytes in gRPC's length-prefixed framing).
mod h2c_backend {
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::{BufMut, Bytes, BytesMut};
    use http::{HeaderMap, HeaderValue, Request, Response};
    use tokio::net::{TcpListener, TcpStream};

    fn frame(msg: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(5 + msg.len());
        b.put_u8(0);
        b.put_u32(msg.len() as u32);
        b.put_slice(msg);
        b.freeze()
    }

    fn unframe(b: &[u8]) -> Vec<u8> {
        if b.len() < 5 { vec![] } else { b[5..].to_vec() }
    }

    /// Answers every call with `name:` + the request message and grpc-status 0.
    pub async fn start(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else { return };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            let mut body = req.into_body();
                            let mut got = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                got.extend_from_slice(&chunk);
                            }
                            let resp = Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            let Ok(mut send) = respond.send_response(resp, false) else { return };
                            let mut out = format!("{name}:").into_bytes();
                            out.extend(unframe(&got));
                            let _ = send.send_data(frame(&out), false);
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", HeaderValue::from_static("0"));
                            let _ = send.send_trailers(trailers);
                        });
                    }
                });
            }
        });
        addr
    }

    /// One unary call over h2c with prior knowledge: (grpc-status, grpc-message, reply
    /// message), from the trailers or, for Trailers-Only, the headers.
    pub async fn unary(
        addr: SocketAddr,
        authority: &str,
        path: &str,
        msg: &[u8],
    ) -> (Option<String>, Option<String>, Vec<u8>) {
        let work = async {
            let sock = TcpStream::connect(addr).await.unwrap();
            let (client, conn) = h2::client::handshake(sock).await.expect("h2c handshake with the agent");
            tokio::spawn(conn);
            let mut client = client.ready().await.unwrap();
            let req = Request::builder()
                .method("POST")
                .uri(format!("http://{authority}{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (resp, mut send) = client.send_request(req, false).unwrap();
            send.send_data(frame(msg), true).unwrap();
            let resp = resp.await.unwrap();
            let text = |h: &HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (head, mut body) = resp.into_parts();
            if let Some(s) = text(&head.headers, "grpc-status") {
                return (Some(s), text(&head.headers, "grpc-message"), vec![]);
            }
            let mut got = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await.ok().flatten().unwrap_or_default();
            (text(&trailers, "grpc-status"), text(&trailers, "grpc-message"), unframe(&got))
        };
        tokio::time::timeout(Duration::from_secs(10), work).await.expect("the call finished in 10s")
    }
}
