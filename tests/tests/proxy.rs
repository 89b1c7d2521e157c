//! The L7 proxy end to end: the agent binary with manifests in a temporary
//! directory. On 127.0.0.1 (no privileges) with echo backends on loopback ports:
//! filters (URLRewrite, header modifiers, CORS, RequestMirror, redirects), timeouts,
//! the error statuses, weights, limits, and hot reload keeping the last good table.
//! The `in_topology_*` tests (root; the netns tier) run the forwarding scenarios
//! again in the k3d-shaped topology: client namespace -> the VM's NIC with XDP ->
//! the agent -> pod IPs behind the node.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::{Backend, Echo};
use ingress_tests::client::{Request, Response, send};
use ingress_tests::netns::in_ns;
use ingress_tests::topology::{PodSpec, Topology, VM_IP, VM_NIC};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Service `name` (port 80, named http) with one EndpointSlice per endpoint.
fn service(name: &str, endpoints: &[SocketAddr]) -> String {
    let mut y = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
    );
    for (i, e) in endpoints.iter().enumerate() {
        y += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
            e.port(),
            e.ip()
        );
    }
    y
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
  - matches: [{path: {value: /retry}}]
    retry: {attempts: 2, codes: [503], backoff: 10ms}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /half}}]
    backendRefs: [{name: half, port: 80}]
  - matches: [{path: {value: /pair}}]
    backendRefs: [{name: pair, port: 80}]
  - matches: [{path: {value: /second}}]
    backendRefs: [{name: second, port: 80}]
  - matches: [{path: {value: /weights}}]
    backendRefs: [{name: main, port: 80, weight: 1}, {name: second, port: 80, weight: 1}, {name: shadow, port: 80, weight: 0}]
"#;

/// Where the agent listens, and the namespace clients connect from (None: this one).
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    ns: Option<String>,
}

impl Client {
    fn try_connect(&self) -> std::io::Result<TcpStream> {
        let addr = self.addr;
        match &self.ns {
            Some(ns) => in_ns(ns, move || TcpStream::connect(addr)),
            None => TcpStream::connect(addr),
        }
    }
    fn connect(&self) -> TcpStream {
        self.try_connect().expect("connect to the agent")
    }
    fn send(&self, req: &Request, timeout: Duration) -> std::io::Result<Response> {
        self.within(|| send(self.addr, req, timeout))
    }
    /// Runs `f` where clients connect from.
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.ns {
            Some(ns) => in_ns(ns, f),
            None => f(),
        }
    }
}

/// The three echo pods: main, shadow, second.
enum Pods {
    Local([Backend; 3]),
    Topology(Topology),
}

struct Setup {
    dir: PathBuf,
    client: Client,
    agent: Agent,
    pods: Pods,
}

const MAIN: usize = 0;
const SHADOW: usize = 1;

fn setup(tag: &str) -> Setup {
    setup_with(tag, &[])
}

/// Writes the manifests for pods at `main`, `shadow`, `second`; `refused` accepts no connection.
fn manifests(tag: &str, [main, shadow, second]: [SocketAddr; 3], refused: SocketAddr) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ingress-proxy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let services = [
        service("main", &[main]),
        service("shadow", &[shadow]),
        service("second", &[second]),
        service("noeps", &[]),
        service("half", &[refused, main]),
        service("pair", &[main, second]),
    ];
    std::fs::write(dir.join("services.yaml"), services.concat()).unwrap();
    std::fs::write(dir.join("routes.yaml"), ROUTES).unwrap();
    dir
}

fn setup_with(tag: &str, extra: &[&str]) -> Setup {
    let (main, pm) = Backend::start_local("pod-main");
    let (shadow, ps) = Backend::start_local("pod-shadow");
    let (second, p2) = Backend::start_local("pod-second");
    let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    // nothing listens on the refused port: connections are refused
    let dir = manifests(tag, [local(pm), local(ps), local(p2)], local(free_port()));
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--manifests".to_string(), dir.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/gw")], &args);
    Setup { dir, client: Client { addr: local(port), ns: None }, agent, pods: Pods::Local([main, shadow, second]) }
}

/// The same manifests in the k3d-shaped topology: pods behind the node, the agent in
/// the vm namespace on 9080 with XDP on its NIC, clients in the client namespace.
/// None (with a printed reason) without root or the eBPF object.
fn setup_in_topology(test: &str, prefix: &str, extra: &[&str]) -> Option<Setup> {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return None;
    }
    let pod = |name: &str, last: u8| PodSpec { name: name.into(), ip: [10, 42, 0, last].into(), ports: vec![8080] };
    let specs = [pod("pod-main", 11), pod("pod-shadow", 12), pod("pod-second", 13)];
    let at = |p: &PodSpec, port: u16| SocketAddr::from((p.ip, port));
    let topo = Topology::create(prefix, &specs);
    // port 9 of the main pod: nothing listens, the pod answers with a reset
    let dir = manifests(prefix, [at(&specs[0], 8080), at(&specs[1], 8080), at(&specs[2], 8080)], at(&specs[0], 9));
    let mut flags = vec!["--interface", VM_NIC];
    flags.extend_from_slice(extra);
    let agent = Agent::start(&ingress_bin(), &topo.vm_ns(), &dir, &[format!("{VM_IP}:9080=apps/gw")], &flags);
    let client = Client { addr: format!("{VM_IP}:9080").parse().unwrap(), ns: Some(topo.client_ns()) };
    Some(Setup { dir, client, agent, pods: Pods::Topology(topo) })
}

impl Setup {
    fn send(&self, req: Request) -> Response {
        self.client.send(&req, Duration::from_secs(5)).expect("request")
    }
    fn get(&self, path: &str) -> Response {
        self.send(Request::get("f.test:8080", path))
    }
    fn connect(&self) -> TcpStream {
        self.client.connect()
    }
    /// Requests pod number `i` (MAIN, SHADOW, SECOND) has answered.
    fn requests(&self, i: usize) -> usize {
        match &self.pods {
            Pods::Local(b) => b[i].requests(),
            Pods::Topology(t) => t.backend(i).requests(),
        }
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

#[test]
fn websocket_upgrade_is_forwarded_and_joined() {
    use std::io::{BufReader, Read, Write};
    let s = setup("upgrade");
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /api/socket HTTP/1.1\r\nHost: f.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let head = ingress_tests::client::read_response(&mut r, true).unwrap();
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
fn one_keep_alive_connection_routes_every_request_on_its_own() {
    one_keep_alive_connection_routes_every_request_on_its_own_on(&setup("keepalive"));
}

#[test]
fn in_topology_one_keep_alive_connection_routes_every_request_on_its_own() {
    let test = "in_topology_one_keep_alive_connection_routes_every_request_on_its_own";
    if let Some(s) = setup_in_topology(test, "ingt-ka", &[]) {
        one_keep_alive_connection_routes_every_request_on_its_own_on(&s);
    }
}

fn one_keep_alive_connection_routes_every_request_on_its_own_on(s: &Setup) {
    use std::io::{BufReader, Write};
    let c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // rewrite on the 1st, 2nd and 3rd request; different backends in between;
    // the last three pipelined (sent before any answer is read) and answered in order
    let mut seen = Vec::new();
    for path in ["/api/a", "/api/b", "/second/x", "/api/c"] {
        w.write_all(&Request::get("f.test", path).to_bytes()).unwrap();
        let echo = ingress_tests::client::read_response(&mut r, false).unwrap().json::<Echo>();
        seen.push((echo.pod, echo.path));
    }
    let seen: Vec<(&str, &str)> = seen.iter().map(|(p, q)| (p.as_str(), q.as_str())).collect();
    assert_eq!(
        seen,
        [("pod-main", "/v2/a"), ("pod-main", "/v2/b"), ("pod-second", "/second/x"), ("pod-main", "/v2/c")]
    );
    for path in ["/api/1", "/api/2", "/api/3"] {
        w.write_all(&Request::get("f.test", path).to_bytes()).unwrap();
    }
    let pipelined: Vec<String> =
        (0..3).map(|_| ingress_tests::client::read_response(&mut r, false).unwrap().json::<Echo>().path).collect();
    assert_eq!(pipelined, ["/v2/1", "/v2/2", "/v2/3"]);
}

#[test]
fn bad_requests_get_4xx_and_the_connection_is_closed() {
    use std::io::{Read, Write};
    let s = setup("bad");
    let raw = |bytes: &[u8]| -> String {
        let mut c = s.connect();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        c.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
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
    let _ = c.read_to_end(&mut out);
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
    let mut s = setup("drain");
    let client = s.client.clone();
    let slow = std::thread::spawn(move || {
        client.send(&Request::get("f.test", "/api/slow").header("x-echo-sleep-ms", "1500"), Duration::from_secs(10))
    });
    std::thread::sleep(Duration::from_millis(300));
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
    use std::io::{Read, Write};
    let s = setup_with("cap", &["--max-connections-per-source", "2"]);
    let open = || s.connect();
    // two connections held open, each proven served
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = open();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&Request::get("f.test", "/api/held").to_bytes()).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        assert_eq!(ingress_tests::client::read_response(&mut r, false).unwrap().status, 200);
        held.push(c);
    }
    // a third is closed at once
    let mut third = open();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = third.write_all(&Request::get("f.test", "/api/third").to_bytes());
    let mut buf = Vec::new();
    let n = third.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the third connection from the same source gets no answer");
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
    use std::io::{Read, Write};
    let s = setup_with("idle", &["--head-timeout", "1"]);
    // idle after one answered request
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&Request::get("f.test", "/api/idle").to_bytes()).unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    assert_eq!(ingress_tests::client::read_response(&mut r, false).unwrap().status, 200);
    // idle past half the head timeout: parked without buffers, then served again,
    // two pipelined requests in one write included
    std::thread::sleep(Duration::from_millis(800));
    let mut two = Request::get("f.test", "/api/p1").to_bytes();
    two.extend(Request::get("f.test", "/api/p2").to_bytes());
    c.write_all(&two).unwrap();
    for p in ["/v2/p1", "/v2/p2"] {
        assert_eq!(ingress_tests::client::read_response(&mut r, false).unwrap().json::<Echo>().path, p);
    }
    let stats: ingress::telemetry::StatsView = serde_json::from_str(&s.agent.admin_get("/stats").unwrap().1).unwrap();
    assert!(stats.proxy.connections_parked >= 1, "{:?}", stats.proxy);
    let start = Instant::now();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(800) && idle < Duration::from_secs(4), "closed after {idle:?}");
    // a head that never completes (slowloris)
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /api/slow HTTP/1.1\r\nHost: f.te").unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    assert!(start.elapsed() < Duration::from_secs(4), "a partial head is not kept open");
    assert!(out.starts_with(b"HTTP/1.1 408"), "slowloris gets 408: {:?}", String::from_utf8_lossy(&out));
    assert!(rest.is_empty(), "an idle keep-alive connection closes without an answer: {rest:?}");
    // a request in flight longer than the head timeout is not cut
    let r = s.send(Request::get("f.test", "/api/long").header("x-echo-sleep-ms", "1500"));
    assert_eq!(r.status, 200);
}

#[test]
fn expect_continue_head_trailers_and_a_malformed_answer() {
    use std::io::{BufRead, Read, Write};
    let s = setup("expect");
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
    let resp = ingress_tests::client::read_response(&mut r, false).unwrap();
    let echo = resp.json::<Echo>();
    assert_eq!((resp.status, echo.body_len), (200, 5));
    assert!(!echo.headers.contains_key("expect"), "the proxy handled the expectation: {:?}", echo.headers);
    // HEAD: headers only, and the connection goes on
    c.write_all(&Request::get("f.test", "/api/h").method("HEAD").to_bytes()).unwrap();
    let head = ingress_tests::client::read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.headers["content-length"].parse::<usize>().unwrap() > 0, "{:?}", head.headers);
    c.write_all(&Request::get("f.test", "/api/after-head").to_bytes()).unwrap();
    let next = ingress_tests::client::read_response(&mut r, false).unwrap();
    assert_eq!(next.json::<Echo>().path, "/v2/after-head", "no body was left behind the HEAD answer");
    // request trailers reach the pod
    c.write_all(b"POST /api/t HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n").unwrap();
    let t = ingress_tests::client::read_response(&mut r, false).unwrap().json::<Echo>();
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
    let _ = c.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"), "the other connection is unaffected");
}

/// Reads one response and counts its body without keeping it: (status, body bytes).
fn read_counting(r: &mut impl std::io::BufRead) -> (u16, u64) {
    use std::io::Read;
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).unwrap();
        head.extend_from_slice(&line);
        if line == b"\r\n" || line.is_empty() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut total = 0u64;
    if text.contains("transfer-encoding: chunked") {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let n = u64::from_str_radix(line.trim(), 16).unwrap();
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end).unwrap();
                break;
            }
            total += std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink()).unwrap();
            let mut crlf = String::new();
            r.read_line(&mut crlf).unwrap();
        }
    } else {
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        total = std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink()).unwrap();
    }
    (status, total)
}

#[test]
fn a_gibibyte_streams_both_ways_with_bounded_agent_memory() {
    a_gibibyte_streams_both_ways_with_bounded_agent_memory_on(&setup("stream"));
}

#[test]
fn in_topology_a_gibibyte_streams_both_ways_with_bounded_agent_memory() {
    let test = "in_topology_a_gibibyte_streams_both_ways_with_bounded_agent_memory";
    if let Some(s) = setup_in_topology(test, "ingt-gib", &[]) {
        a_gibibyte_streams_both_ways_with_bounded_agent_memory_on(&s);
    }
}

fn a_gibibyte_streams_both_ways_with_bounded_agent_memory_on(s: &Setup) {
    use std::io::{BufReader, Write};
    const GIB: u64 = 1 << 30;
    let c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // chunked upload of 1 GiB in 1 MiB chunks
    w.write_all(b"POST /api/upload HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..(GIB >> 20) {
        write!(w, "{:x}\r\n", chunk.len()).unwrap();
        w.write_all(&chunk).unwrap();
        w.write_all(b"\r\n").unwrap();
    }
    w.write_all(b"0\r\n\r\n").unwrap();
    let resp = ingress_tests::client::read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json::<Echo>().body_len as u64, GIB, "the whole chunked upload reached the pod");
    // 1 GiB chunked download, then 1 GiB with Content-Length, same connection
    for chunked in [true, false] {
        let mut req = Request::get("f.test", "/api/download").header("x-echo-bytes", &GIB.to_string());
        if chunked {
            req = req.header("x-echo-chunked", "1");
        }
        w.write_all(&req.to_bytes()).unwrap();
        assert_eq!(read_counting(&mut r), (200, GIB), "download chunked={chunked}");
    }
    let rss = s.agent.peak_rss_kib().expect("agent RSS");
    assert!(rss < 64 * 1024, "agent peak RSS {rss} KiB while 3 GiB streamed through it");
}

#[test]
fn a_pod_dying_mid_response_fails_only_that_request() {
    a_pod_dying_mid_response_fails_only_that_request_on(&setup("die"));
}

#[test]
fn in_topology_a_pod_dying_mid_response_fails_only_that_request() {
    let test = "in_topology_a_pod_dying_mid_response_fails_only_that_request";
    if let Some(s) = setup_in_topology(test, "ingt-die", &[]) {
        a_pod_dying_mid_response_fails_only_that_request_on(&s);
    }
}

fn a_pod_dying_mid_response_fails_only_that_request_on(s: &Setup) {
    use std::io::{BufReader, Read, Write};
    let c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = c.try_clone().unwrap();
    w.write_all(
        &Request::get("f.test", "/api/big")
            .header("x-echo-bytes", "10000000")
            .header("x-echo-die-after", "1000000")
            .to_bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    let _ = BufReader::new(c).read_to_end(&mut got);
    assert!(got.len() < 10_000_000, "the client sees the response cut short ({} bytes), not a complete one", got.len());
    // everything else is unaffected
    for _ in 0..5 {
        assert_eq!(s.get("/api/ok").status, 200);
    }
}

#[test]
fn an_endpoint_removed_under_load_fails_no_request() {
    an_endpoint_removed_under_load_fails_no_request_on(&setup("remove"));
}

#[test]
fn in_topology_an_endpoint_removed_under_load_fails_no_request() {
    let test = "in_topology_an_endpoint_removed_under_load_fails_no_request";
    if let Some(s) = setup_in_topology(test, "ingt-rm", &[]) {
        an_endpoint_removed_under_load_fails_no_request_on(&s);
    }
}

fn an_endpoint_removed_under_load_fails_no_request_on(s: &Setup) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let client = s.client.clone();
            std::thread::spawn(move || {
                client.within(|| {
                    let (mut ok, mut failed, mut pods) = (0u32, 0u32, std::collections::BTreeSet::new());
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                        match send(client.addr, &Request::get("f.test", "/pair"), Duration::from_secs(3)) {
                            Ok(r) if r.status == 200 => {
                                ok += 1;
                                pods.insert(r.json::<Echo>().pod);
                            }
                            _ => failed += 1,
                        }
                    }
                    (ok, failed, pods)
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // drop the second endpoint of "pair" while the load runs
    let services = std::fs::read_to_string(s.dir.join("services.yaml")).unwrap();
    let mut docs: Vec<&str> = services.split("---\n").collect();
    let before = docs.len();
    docs.retain(|d| !d.contains("name: pair-1,"));
    assert_eq!(docs.len(), before - 1, "the second slice of pair was found");
    std::fs::write(s.dir.join("services.yaml"), docs.join("---\n")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    let mut pods = std::collections::BTreeSet::new();
    for w in workers {
        let (o, f, p) = w.join().unwrap();
        ok += o;
        failed += f;
        pods.extend(p);
    }
    assert_eq!(failed, 0, "{ok} ok, {failed} failed");
    assert!(pods.contains("pod-second"), "the second endpoint served before its removal: {pods:?}");
    // after the reload only the first endpoint serves
    for _ in 0..6 {
        assert_eq!(s.get("/pair").json::<Echo>().pod, "pod-main");
    }
}

#[test]
fn request_ids_and_forwarded_headers_are_configurable() {
    let s = setup_with("ids", &["--request-id", "--forwarded-headers", "off"]);
    let e: Echo = s.get("/api/id").json();
    let id = e.headers.get("x-request-id").expect("an X-Request-Id is added");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(s.get("/api/id").json::<Echo>().headers["x-request-id"], *id, "ids differ per request");
    let kept: Echo = s.send(Request::get("f.test", "/api/id").header("X-Request-Id", "abc")).json();
    assert_eq!(kept.headers["x-request-id"], "abc", "an existing id is kept");
    assert!(!e.headers.contains_key("x-forwarded-for") && !e.headers.contains_key("x-forwarded-host"));
}
