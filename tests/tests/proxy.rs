//! The L7 proxy end to end on 127.0.0.1 (no privileges): the agent binary with
//! manifests in a temporary directory, echo backends on loopback ports. Filters
//! (URLRewrite, header modifiers, CORS, RequestMirror, redirects), timeouts, the
//! error statuses, weights, and hot reload keeping the last good table.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::{Backend, Echo};
use ingress_tests::client::{Request, Response, send};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn service(name: &str, port: Option<u16>) -> String {
    let eps = match port {
        Some(p) => format!("ports: [{{name: http, port: {p}}}]\nendpoints: [{{addresses: ['127.0.0.1']}}]"),
        None => "ports: [{name: http, port: 1}]\nendpoints: []".to_string(),
    };
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\n{eps}\n"
    )
}

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: x
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [f.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-env, value: test}], remove: [x-drop]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-resp, value: 'yes'}]}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /cors}}]
    filters: [{type: CORS, cors: {allowOrigins: ['https://ui.test'], allowMethods: [GET, POST], maxAge: 60}}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]
  - matches: [{path: {value: /to-https}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: x}}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: missing, port: 80}]
  - matches: [{path: {value: /empty}}]
    backendRefs: [{name: noeps, port: 80}]
  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /weights}}]
    backendRefs: [{name: main, port: 80, weight: 1}, {name: second, port: 80, weight: 1}, {name: shadow, port: 80, weight: 0}]
"#;

struct Setup {
    dir: PathBuf,
    port: u16,
    agent: Agent,
    main: Backend,
    shadow: Backend,
    second: Backend,
}

fn setup(tag: &str) -> Setup {
    let (main, pm) = Backend::start_local("pod-main");
    let (shadow, ps) = Backend::start_local("pod-shadow");
    let (second, p2) = Backend::start_local("pod-second");
    let dir = std::env::temp_dir().join(format!("ingress-proxy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let services =
        [service("main", Some(pm)), service("shadow", Some(ps)), service("second", Some(p2)), service("noeps", None)];
    std::fs::write(dir.join("services.yaml"), services.concat()).unwrap();
    std::fs::write(dir.join("routes.yaml"), ROUTES).unwrap();
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--manifests".to_string(), dir.display().to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/gw")], &args);
    Setup { dir, port, agent, main, shadow, second }
}

impl Setup {
    fn send(&self, req: Request) -> Response {
        send(format!("127.0.0.1:{}", self.port).parse().unwrap(), &req, Duration::from_secs(5)).expect("request")
    }
    fn get(&self, path: &str) -> Response {
        self.send(Request::get("f.test:8080", path))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn filters_statuses_and_weights_through_the_proxy() {
    let s = setup("filters");
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
    let before = s.main.requests();
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
    assert_eq!(s.main.requests(), before, "a preflight does not reach the backend");
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
    let shadow_before = s.shadow.requests();
    let mut req = Request::get("f.test", "/mirror").method("POST");
    req.body = b"payload".to_vec();
    let r = s.send(req);
    assert_eq!(r.json::<Echo>().pod, "pod-main");
    assert_eq!(r.json::<Echo>().body_len, 7);
    let start = Instant::now();
    while s.shadow.requests() == shadow_before {
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
    let r = s.send(Request::get("f.test", "/slow").header("x-echo-sleep-ms", "1500"));
    assert_eq!(r.status, 504, "request timeout 300ms");
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

    // Weights: 1/1/0 -> main and second, never shadow
    let shadow_before = s.shadow.requests();
    let pods: Vec<String> = (0..40).map(|_| s.get("/weights").json::<Echo>().pod).collect();
    assert!(pods.iter().any(|p| p == "pod-main") && pods.iter().any(|p| p == "pod-second"), "{pods:?}");
    assert!(!pods.iter().any(|p| p == "pod-shadow"));
    assert_eq!(s.shadow.requests(), shadow_before);
    let _ = &s.second;
}

#[test]
fn a_bad_manifest_keeps_the_last_good_table_and_shows_in_readyz() {
    let s = setup("reload");
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
