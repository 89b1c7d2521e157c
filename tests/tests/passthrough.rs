//! TLS passthrough end to end on 127.0.0.1 (no privileges): the agent binary with a
//! Gateway whose listener is `protocol: TLS`, `tls.mode: Passthrough`, TLSRoutes by
//! SNI, and rustls TLS servers as pods (each with its own rcgen certificate). A
//! rustls client through the agent gets the pod's certificate and its answer; a
//! post-quantum-sized ClientHello written in pieces with pauses is still routed; no
//! SNI, an unknown SNI and a non-TLS client are closed before any pod sees a byte, and
//! counted; the per-source cap and --head-timeout apply.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::free_port;
use ingress_tests::proxy_setup::service;
use ingress_tests::tls::{ClientOpts, TlsPod, exchange, wait_for};

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: x
  listeners:
  - {name: pass, protocol: TLS, port: 8443, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: echo, namespace: apps}
spec:
  parentRefs: [{name: gw, sectionName: pass}]
  hostnames: [echo.tls.example]
  rules: [{backendRefs: [{name: pod-a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: wild, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: ['*.wild.example']
  rules: [{backendRefs: [{name: pod-b, port: 80}]}]
"#;

struct Passthrough {
    dir: PathBuf,
    agent: Agent,
    addr: SocketAddr,
    a: TlsPod,
    b: TlsPod,
}

impl Passthrough {
    fn start(tag: &str, extra: &[&str]) -> Self {
        let a = TlsPod::start_local("pod-a", &["echo.tls.example"]);
        let b = TlsPod::start_local("pod-b", &["*.wild.example"]);
        let dir = std::env::temp_dir().join(format!("ingress-passthrough-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let services = [service("pod-a", &[a.addr]), service("pod-b", &[b.addr])].concat();
        std::fs::write(dir.join("routes.yaml"), format!("{ROUTES}{services}")).unwrap();
        let port = free_port();
        let admin = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--manifests".to_string(), dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/gw:8443")], &args);
        Passthrough { dir, agent, addr: SocketAddr::from(([127, 0, 0, 1], port)), a, b }
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).expect("connect to the agent")
    }

    fn passthrough(&self) -> ingress::telemetry::passthrough::PassthroughCounters {
        self.agent.stats().passthrough
    }
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sni(name: &str) -> ClientOpts {
    ClientOpts { sni: Some(name.into()), ..Default::default() }
}

#[test]
fn routed_by_sni_the_client_gets_the_pods_certificate_and_answer() {
    let p = Passthrough::start("sni", &[]);
    let x = exchange(p.connect(), &p.a.cert, &sni("echo.tls.example")).expect("TLS through the agent to pod-a");
    assert_eq!(x.answer, "pod-a sni=echo.tls.example got=ping", "the pod terminated TLS itself");
    assert_eq!(x.cert, p.a.cert, "the certificate is pod-a's own");
    let x = exchange(p.connect(), &p.b.cert, &sni("deep.wild.example")).expect("TLS to pod-b by wildcard");
    assert_eq!(x.answer, "pod-b sni=deep.wild.example got=ping");
    assert_eq!(x.cert, p.b.cert);
    // pod-a's certificate does not verify for pod-b's names: the bytes are not ours to change
    assert!(exchange(p.connect(), &p.a.cert, &sni("x.wild.example")).is_err(), "pod-b's certificate is not pod-a's");
    assert_eq!((p.a.accepted(), p.b.accepted()), (1, 2));

    let c = p.passthrough();
    assert_eq!((c.userspace, c.kernel, c.no_sni, c.no_route), (3, 0, 0, 0), "userspace dataplane: copied: {c:?}");
    let (_, metrics) = p.agent.admin_get("/metrics").unwrap();
    assert!(metrics.contains("ingress_passthrough_connections_total{outcome=\"userspace\"} 3"), "{metrics}");
    let (_, routes) = p.agent.admin_get("/routes").unwrap();
    let v: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let hosts: Vec<&str> =
        v["listeners"][0]["passthrough"].as_array().unwrap().iter().map(|h| h["hostname"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["echo.tls.example", "*.wild.example"], "{routes}");
    let backend = &v["listeners"][0]["passthrough"][0]["backends"][0];
    assert_eq!(backend["endpoints"][0], p.a.addr.to_string(), "{routes}");
    let log = p.agent.log_text();
    assert!(log.contains("TLS passthrough: connections are copied to the pod in user space"), "{log}");
}

#[test]
fn a_post_quantum_sized_client_hello_in_pieces_is_still_routed() {
    let p = Passthrough::start("large", &[]);
    let opts = ClientOpts {
        sni: Some("echo.tls.example".into()),
        large_hello: true,
        pieces: Some((300, Duration::from_millis(60))),
    };
    let x = exchange(p.connect(), &p.a.cert, &opts).expect("a large ClientHello in pieces");
    assert!(x.hello_len > 1460, "the ClientHello spans segments: {} bytes", x.hello_len);
    assert_eq!(x.answer, "pod-a sni=echo.tls.example got=ping");
    assert_eq!(x.cert, p.a.cert);
    // the same in two-byte pieces: the record header itself arrives cut
    let opts = ClientOpts { pieces: Some((2, Duration::from_millis(1))), ..opts };
    assert_eq!(
        exchange(p.connect(), &p.a.cert, &opts).expect("in two-byte pieces").answer,
        "pod-a sni=echo.tls.example got=ping"
    );
    assert_eq!(p.passthrough().userspace, 2);
}

#[test]
fn no_sni_unknown_sni_and_plain_http_are_closed_before_any_pod_and_counted() {
    let p = Passthrough::start("closed", &[]);
    let none = ClientOpts::default();
    assert!(exchange(p.connect(), &p.a.cert, &none).is_err(), "no SNI: closed");
    assert!(exchange(p.connect(), &p.a.cert, &sni("nobody.example")).is_err(), "unknown SNI: closed");
    assert!(exchange(p.connect(), &p.b.cert, &sni("wild.example")).is_err(), "the wildcard needs a label before it");
    {
        use std::io::{Read, Write};
        let mut s = p.connect();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: echo.tls.example\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "plain HTTP gets nothing back: {:?}", String::from_utf8_lossy(&rest));
    }
    let c = p.passthrough();
    assert_eq!((c.no_sni, c.no_route, c.rejected, c.userspace, c.kernel), (1, 2, 1, 0, 0), "{c:?}");
    assert_eq!(c.connections, 4);
    assert_eq!((p.a.accepted(), p.b.accepted()), (0, 0), "no byte reached any pod");
    // and the agent still serves
    assert!(exchange(p.connect(), &p.a.cert, &sni("echo.tls.example")).is_ok());
}

#[test]
fn the_per_source_cap_and_the_head_timeout_apply() {
    let p = Passthrough::start("cap", &["--max-connections-per-source", "2", "--head-timeout", "1"]);
    let opts = sni("echo.tls.example");
    let held: Vec<_> = (0..2).map(|_| exchange(p.connect(), &p.a.cert, &opts).expect("under the cap")).collect();
    assert!(exchange(p.connect(), &p.a.cert, &opts).is_err(), "a third connection from 127.0.0.1 is refused");
    assert_eq!(p.a.accepted(), 2);
    drop(held);
    // the held pairs end once both sides closed; then there is room again
    wait_for("a connection admitted after the others closed", Duration::from_secs(5), || {
        exchange(p.connect(), &p.a.cert, &opts).is_ok()
    });
    // --head-timeout: a ClientHello never finished is closed after 1 s, unforwarded
    use std::io::{Read, Write};
    let before = p.passthrough().rejected;
    let mut s = p.connect();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0x16, 3, 1]).unwrap();
    let start = std::time::Instant::now();
    let n = s.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        start.elapsed() >= Duration::from_millis(900) && start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(p.passthrough().rejected, before + 1);
}

/// One address mapping a Gateway's HTTP and TLS passthrough listeners: the first byte
/// tells them apart (a TLS handshake record, or anything else: HTTP).
#[test]
fn http_and_passthrough_listeners_on_one_address() {
    use ingress_tests::backend::{Backend, Echo};
    use ingress_tests::client::{Request, send};
    let a = TlsPod::start_local("pod-a", &["echo.tls.example"]);
    let (echo, echo_port) = Backend::start_local("pod-http");
    let dir = std::env::temp_dir().join(format!("ingress-passthrough-mixed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mixed, namespace: apps}
spec:
  gatewayClassName: x
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: pass, protocol: TLS, port: 8443, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{name: mixed}]
  hostnames: [web.test]
  rules: [{backendRefs: [{name: pod-http, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: echo, namespace: apps}
spec:
  parentRefs: [{name: mixed}]
  hostnames: [echo.tls.example]
  rules: [{backendRefs: [{name: pod-a, port: 80}]}]
"#;
    let local = SocketAddr::from(([127, 0, 0, 1], echo_port));
    std::fs::write(
        dir.join("routes.yaml"),
        format!("{yaml}{}{}", service("pod-a", &[a.addr]), service("pod-http", &[local])),
    )
    .unwrap();
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--manifests".to_string(), dir.display().to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/mixed")], &args);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = send(addr, &Request::get("web.test", "/x"), Duration::from_secs(5)).expect("HTTP on the mixed address");
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<Echo>().pod, "pod-http");
    let x = exchange(TcpStream::connect(addr).unwrap(), &a.cert, &sni("echo.tls.example"))
        .expect("TLS on the mixed address");
    assert_eq!(x.answer, "pod-a sni=echo.tls.example got=ping");
    let c = agent.stats().passthrough;
    assert_eq!((c.userspace, c.rejected), (1, 0), "the HTTP connection is not a passthrough one: {c:?}");
    drop(agent);
    echo.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS passthrough listener and an HTTPS listener on one port (Gateway API: told
/// apart by hostname): the SNI of a TLSRoute is passed through to its pod unchanged,
/// the SNI of the HTTPS listener is terminated by the agent (the ClientHello it peeked
/// at replayed to rustls) and routed by its HTTPRoute, any other SNI is closed, and a
/// plain request is not served as HTTP (HTTPS holds the port).
#[test]
fn https_and_passthrough_listeners_on_one_port() {
    use ingress_tests::backend::{Backend, Echo};
    use ingress_tests::client::Request;
    use ingress_tests::tls::{TestCa, get, secret_yaml};
    let a = TlsPod::start_local("pod-a", &["echo.tls.example"]);
    let (echo, echo_port) = Backend::start_local("pod-web");
    let ca = TestCa::new();
    let (crt, key) = ca.leaf(&["web.tls.example"]);
    let dir = std::env::temp_dir().join(format!("ingress-passthrough-https-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: both, namespace: apps}
spec:
  gatewayClassName: x
  listeners:
  - {name: pass, protocol: TLS, port: 443, tls: {mode: Passthrough}}
  - {name: web, protocol: HTTPS, port: 443, hostname: web.tls.example, tls: {certificateRefs: [{name: web-cert}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{name: both, sectionName: web}]
  rules: [{backendRefs: [{name: pod-web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: echo, namespace: apps}
spec:
  parentRefs: [{name: both, sectionName: pass}]
  hostnames: [echo.tls.example]
  rules: [{backendRefs: [{name: pod-a, port: 80}]}]
"#;
    let local = SocketAddr::from(([127, 0, 0, 1], echo_port));
    let manifests = [
        yaml.to_string(),
        service("pod-a", &[a.addr]),
        service("pod-web", &[local]),
        secret_yaml("apps", "web-cert", &crt, &key),
    ];
    std::fs::write(dir.join("routes.yaml"), manifests.concat()).unwrap();
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--manifests".to_string(), dir.display().to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/both:443")], &args);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // the TLSRoute's name: passed through, the pod's own certificate
    let x = exchange(TcpStream::connect(addr).unwrap(), &a.cert, &sni("echo.tls.example")).expect("passed through");
    assert_eq!(x.answer, "pod-a sni=echo.tls.example got=ping");
    assert_eq!(x.cert, a.cert);
    // the HTTPS listener's name: terminated here with its certificate, then routed (twice: TLS 1.2 and 1.3)
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = ca.client(version, &[b"http/1.1"]);
        let (n, r) = get(addr, config, "web.tls.example", &Request::get("web.tls.example", "/x"));
        assert_eq!(n.san, "web.tls.example", "the HTTPS listener's certificate");
        assert_eq!(r.status, 200);
        let echoed = r.json::<Echo>();
        assert_eq!(echoed.pod, "pod-web");
        assert_eq!(echoed.headers.get("x-forwarded-proto").map(String::as_str), Some("https"));
    }
    // any other name: closed
    assert!(exchange(TcpStream::connect(addr).unwrap(), &a.cert, &sni("nobody.example")).is_err());
    {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: web.tls.example\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "plain HTTP on the HTTPS port: {:?}", String::from_utf8_lossy(&rest));
    }
    let c = agent.stats().passthrough;
    assert_eq!((c.userspace, c.no_route, c.rejected), (1, 1, 1), "{c:?}");
    assert_eq!(a.accepted(), 1, "only the TLSRoute's connection reached pod-a");
    let tls = agent.stats().proxy.tls;
    assert_eq!(tls.handshakes, 2, "the two terminated connections: {tls:?}");
    drop(agent);
    echo.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
