//! HTTPS listeners end to end on 127.0.0.1 (no privileges): the agent binary with a
//! Gateway whose HTTPS listeners name `kubernetes.io/tls` Secrets in the manifests
//! directory, an echo pod on loopback, and a rustls client trusting the test CA.
//! HTTP/1.1 over TLS 1.2 and 1.3, SNI choosing the certificate, resumption, a
//! certificate change served to new connections while an open one keeps working, a bad
//! certificate refusing only its own listener (and shown in `ingress routes`), and the
//! plain request path's checks (head timeout 408, CL+TE 400) over TLS, and 421 for a
//! request whose host belongs to another listener than the connection's SNI.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::{Backend, Echo};
use ingress_tests::client::Request;
use ingress_tests::free_port;
use ingress_tests::tls::{TestCa, TlsConn, get, secret_yaml};
use rustls::version::{TLS12, TLS13};

const HTTP1: &[&[u8]] = &[b"http/1.1"];

/// The Gateway (three HTTPS listeners on 443: exact, wildcard, and one whose Secret's
/// key is not its certificate's) and a route for all three hosts to `main`.
fn gateway(backend: u16) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: x
  listeners:
  - {{name: a, protocol: HTTPS, port: 443, hostname: a.tls.test, tls: {{mode: Terminate, certificateRefs: [{{name: a-cert}}]}}}}
  - {{name: wild, protocol: HTTPS, port: 443, hostname: '*.wild.test', tls: {{certificateRefs: [{{kind: Secret, name: wild-cert}}]}}}}
  - {{name: bad, protocol: HTTPS, port: 443, hostname: bad.tls.test, tls: {{certificateRefs: [{{name: bad-cert}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: apps}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [a.tls.test, x.wild.test, bad.tls.test]
  rules:
  - backendRefs: [{{name: main, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: main, namespace: apps}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: main-0, namespace: apps, labels: {{kubernetes.io/service-name: main}}}}
addressType: IPv4
ports: [{{name: http, port: {backend}}}]
endpoints: [{{addresses: ['127.0.0.1']}}]
"#
    )
}

struct Https {
    dir: PathBuf,
    addr: SocketAddr,
    agent: Agent,
    ca: TestCa,
    _backend: Backend,
}

impl Https {
    fn start(tag: &str, extra: &[&str]) -> Self {
        let (backend, port) = Backend::start_local("pod-main");
        let ca = TestCa::new();
        let dir = std::env::temp_dir().join(format!("ingress-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gateway.yaml"), gateway(port)).unwrap();
        let (a_crt, a_key) = ca.leaf(&["a.tls.test"]);
        let (w_crt, w_key) = ca.leaf(&["*.wild.test"]);
        let (b_crt, _) = ca.leaf(&["bad.tls.test"]);
        let (_, other_key) = ca.leaf(&["other.test"]);
        let secrets = [
            secret_yaml("apps", "a-cert", &a_crt, &a_key),
            secret_yaml("apps", "wild-cert", &w_crt, &w_key),
            secret_yaml("apps", "bad-cert", &b_crt, &other_key),
        ];
        std::fs::write(dir.join("secrets.yaml"), secrets.concat()).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--manifests".to_string(), dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        // the HTTPS listener's port, mapped as on the VM (8443 -> 443)
        let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("{addr}=apps/gw:443")], &args);
        Https { dir, addr, agent, ca, _backend: backend }
    }

    fn tcp(&self) -> TcpStream {
        TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect")
    }

    fn routes_text(&self) -> String {
        let out = Command::new(ingress_bin())
            .args(["routes", "--admin", &self.agent.admin])
            .output()
            .expect("ingress routes");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn tls_stats(&self) -> ingress::telemetry::tls::TlsCounters {
        self.agent.stats().proxy.tls
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn http1_over_tls12_and_tls13_with_the_certificate_sni_selects() {
    let s = Https::start("versions", &[]);
    for (version, want) in [(&TLS12, rustls::ProtocolVersion::TLSv1_2), (&TLS13, rustls::ProtocolVersion::TLSv1_3)] {
        let client = s.ca.client(version, HTTP1);
        let (n, r) = get(s.addr, client.clone(), "a.tls.test", &Request::get("a.tls.test", "/hello"));
        assert_eq!(n.version, Some(want));
        assert_eq!(n.alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN http/1.1");
        assert_eq!(n.san, "a.tls.test", "the exact listener's certificate");
        assert_eq!(r.status, 200, "{r:?}");
        let e: Echo = r.json();
        assert_eq!((e.pod.as_str(), e.path.as_str()), ("pod-main", "/hello"));
        assert_eq!(e.headers.get("x-forwarded-proto").map(String::as_str), Some("https"));

        // a request for another listener's host on this connection: 421 (also for the
        // listener whose certificate is unusable: its routes stay out of reach)
        let (mut c, _) = TlsConn::handshake(s.tcp(), client.clone(), "a.tls.test").expect("handshake");
        assert_eq!(c.send(&Request::get("x.wild.test", "/")).unwrap().status, 421);
        assert_eq!(c.send(&Request::get("bad.tls.test", "/")).unwrap().status, 421);
        assert_eq!(c.send(&Request::get("a.tls.test:8443", "/")).unwrap().status, 200, "the port does not matter");

        // a name under the wildcard listener gets the wildcard certificate
        let (n, r) = get(s.addr, client.clone(), "x.wild.test", &Request::get("x.wild.test", "/w"));
        assert_eq!((n.san.as_str(), r.status), ("*.wild.test", 200));

        // no listener for the name: unrecognized_name
        let err = TlsConn::handshake(s.tcp(), client.clone(), "nobody.test").err().expect("refused");
        assert!(format!("{err:?}").contains("UnrecognisedName"), "{err:?}");
    }
    let c = s.tls_stats();
    assert!(c.handshakes >= 4 && c.unrecognized_name == 2, "{c:?}");
}

/// `/metrics` carries the TLS counters of `/stats` (handshakes, resumed, refusals by
/// reason), scraped after real handshakes.
#[test]
fn tls_counters_are_in_metrics() {
    let s = Https::start("metrics", &[]);
    let client = s.ca.client(&TLS13, HTTP1);
    for path in ["/1", "/2"] {
        let (_, r) = get(s.addr, client.clone(), "a.tls.test", &Request::get("a.tls.test", path));
        assert_eq!(r.status, 200);
    }
    assert!(TlsConn::handshake(s.tcp(), client.clone(), "nobody.test").is_err(), "unrecognized_name");
    assert!(TlsConn::handshake(s.tcp(), client.clone(), "bad.tls.test").is_err(), "invalid certificate");
    let c = s.tls_stats();
    assert_eq!((c.handshakes, c.resumed, c.unrecognized_name, c.invalid_certificate), (2, 1, 1, 1), "{c:?}");
    let (status, metrics) = s.agent.admin_get("/metrics").unwrap();
    assert_eq!(status, 200);
    for line in [
        "ingress_tls_handshakes_total 2",
        "ingress_tls_resumed_handshakes_total 1",
        r#"ingress_tls_handshake_failures_total{reason="unrecognized_name"} 1"#,
        r#"ingress_tls_handshake_failures_total{reason="invalid_certificate"} 1"#,
        r#"ingress_tls_handshake_failures_total{reason="failed"} 0"#,
        r#"ingress_tls_handshake_failures_total{reason="timed_out"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

/// An idle TLS keep-alive connection is parked like a plain one (hyper's buffers
/// dropped, the TLS session kept), then served again on the same session, two
/// pipelined requests in one TLS write included, and closed quietly at the idle timeout.
#[test]
fn an_idle_tls_connection_is_parked_and_served_again() {
    let s = Https::start("park", &["--head-timeout", "3"]);
    for version in [&TLS13, &TLS12] {
        let before = s.agent.stats().proxy.connections_parked;
        let (mut c, _) = TlsConn::handshake(s.tcp(), s.ca.client(version, HTTP1), "a.tls.test").unwrap();
        assert_eq!(c.send(&Request::get("a.tls.test", "/1")).unwrap().status, 200);
        // idle past half the head timeout (parked from then on), within it
        std::thread::sleep(Duration::from_millis(2200));
        let parked = s.agent.stats().proxy.connections_parked;
        assert!(parked > before, "{version:?}: the idle TLS connection was parked ({before} -> {parked})");
        let mut two = Request::get("a.tls.test", "/p1").to_bytes();
        two.extend(Request::get("a.tls.test", "/p2").to_bytes());
        c.stream.get_mut().write_all(&two).unwrap();
        c.stream.get_mut().flush().unwrap();
        for p in ["/p1", "/p2"] {
            let r = ingress_tests::client::read_response(&mut c.stream, false).unwrap();
            assert_eq!(r.json::<Echo>().path, p, "served again after parking");
        }
        // parked again, then the idle keep-alive timeout closes it without an answer
        let start = Instant::now();
        let rest = c.read_rest();
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        assert!(
            start.elapsed() >= Duration::from_millis(2500) && start.elapsed() < Duration::from_secs(6),
            "closed at the idle timeout: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn a_second_connection_resumes_its_session() {
    let s = Https::start("resume", &[]);
    for version in [&TLS13, &TLS12] {
        // one client config: its session cache (tickets for 1.3, ids or tickets for 1.2)
        let client = s.ca.client(version, HTTP1);
        let (first, r) = get(s.addr, client.clone(), "a.tls.test", &Request::get("a.tls.test", "/1"));
        assert_eq!(r.status, 200);
        assert!(!first.resumed, "the first connection is a full handshake");
        let (second, r) = get(s.addr, client.clone(), "a.tls.test", &Request::get("a.tls.test", "/2"));
        assert_eq!(r.status, 200);
        assert!(second.resumed, "{version:?}: the second connection resumes");
        // a fresh client cannot resume
        let (fresh, _) = get(s.addr, s.ca.client(version, HTTP1), "a.tls.test", &Request::get("a.tls.test", "/3"));
        assert!(!fresh.resumed);
    }
    assert_eq!(s.tls_stats().resumed, 2, "{:?}", s.tls_stats());
}

#[test]
fn a_certificate_change_reaches_new_connections_and_keeps_open_ones() {
    let s = Https::start("reload", &[]);
    // keep-alive connection opened before the change
    let (mut open, before) = TlsConn::handshake(s.tcp(), s.ca.client(&TLS13, HTTP1), "a.tls.test").expect("handshake");
    assert_eq!(open.send(&Request::get("a.tls.test", "/before")).unwrap().status, 200);

    // a new certificate for a.tls.test in the manifests directory
    let (crt, key) = s.ca.leaf(&["a.tls.test"]);
    let text = std::fs::read_to_string(s.dir.join("secrets.yaml")).unwrap();
    let first_doc_end = text[3..].find("---").map(|i| i + 3).unwrap();
    let new = secret_yaml("apps", "a-cert", &crt, &key) + &text[first_doc_end..];
    std::fs::write(s.dir.join("secrets.yaml"), new).unwrap();

    // new connections (fresh clients: a resumed session shows no certificate) get it
    let start = Instant::now();
    loop {
        let (n, r) = get(s.addr, s.ca.client(&TLS13, HTTP1), "a.tls.test", &Request::get("a.tls.test", "/new"));
        assert_eq!(r.status, 200);
        if n.cert != before.cert {
            assert_eq!(n.san, "a.tls.test");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the new certificate was not served within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // the connection opened before the change still serves requests
    let r = open.send(&Request::get("a.tls.test", "/after")).expect("the open connection survives");
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<Echo>().path, "/after");
}

#[test]
fn a_bad_certificate_refuses_only_its_listener_and_is_shown_in_routes() {
    let s = Https::start("bad", &[]);
    let client = s.ca.client(&TLS13, HTTP1);
    let err = TlsConn::handshake(s.tcp(), client.clone(), "bad.tls.test").err().expect("refused");
    assert!(format!("{err:?}").contains("HandshakeFailure"), "{err:?}");
    // never another listener's certificate for its name, and the others serve
    let (n, r) = get(s.addr, client.clone(), "a.tls.test", &Request::get("a.tls.test", "/"));
    assert_eq!((n.san.as_str(), r.status), ("a.tls.test", 200));
    let (_, r) = get(s.addr, client, "x.wild.test", &Request::get("x.wild.test", "/"));
    assert_eq!(r.status, 200);

    let text = s.routes_text();
    let line = text.lines().find(|l| l.contains("https bad:443")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("ResolvedRefs=False InvalidCertificateRef"), "{line}");
    assert!(line.contains("not the key of the certificate"), "{line}");
    assert!(text.lines().any(|l| l.contains("https a:443") && l.contains("certificate from apps/a-cert")), "{text}");
    assert_eq!(s.tls_stats().invalid_certificate, 1);

    // the agent keeps running with the bad listener: a later request still works
    let (_, r) = get(s.addr, s.ca.client(&TLS12, HTTP1), "a.tls.test", &Request::get("a.tls.test", "/later"));
    assert_eq!(r.status, 200);
}

#[test]
fn the_plain_request_checks_hold_over_tls() {
    let s = Https::start("checks", &["--head-timeout", "1"]);
    let client = s.ca.client(&TLS13, HTTP1);

    // Content-Length and Transfer-Encoding together: 400
    let (mut c, _) = TlsConn::handshake(s.tcp(), client.clone(), "a.tls.test").unwrap();
    // (to_bytes adds the Content-Length of the body)
    let mut req = Request::get("a.tls.test", "/x").method("POST").header("Transfer-Encoding", "chunked");
    req.body = b"0\r\n\r\n".to_vec();
    c.stream.get_mut().write_all(&req.to_bytes()).unwrap();
    let r = ingress_tests::client::read_response(&mut c.stream, false).unwrap();
    assert_eq!(r.status, 400, "{r:?}");

    // part of a head, then silence: 408 after --head-timeout
    let (mut c, _) = TlsConn::handshake(s.tcp(), client.clone(), "a.tls.test").unwrap();
    c.stream.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a.tls.test\r\n").unwrap();
    c.stream.get_mut().flush().unwrap();
    let start = Instant::now();
    let rest = String::from_utf8_lossy(&c.read_rest()).into_owned();
    assert!(rest.starts_with("HTTP/1.1 408"), "{rest:?}");
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());

    // a TCP connection that never sends a ClientHello is closed after --head-timeout
    let mut t = s.tcp();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut t, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(start.elapsed() < Duration::from_secs(4) && start.elapsed() >= Duration::from_millis(900));
    assert!(s.tls_stats().timed_out >= 1, "{:?}", s.tls_stats());

    // plain HTTP to a TLS port is not a ClientHello: closed, counted
    let mut t = s.tcp();
    t.write_all(&Request::get("a.tls.test", "/").to_bytes()).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut t, &mut out);
    assert!(!out.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&out));
}

/// HTTP/2 over TLS: a client offering `h2` gets it by ALPN, and its streams take the
/// same path as HTTP/1.1 over TLS (routed to the pod, `X-Forwarded-Proto: https`); a
/// stream whose `:authority` belongs to another HTTPS listener than the connection's
/// SNI gets 421, as over HTTP/1.1.
#[test]
fn h2_by_alpn_over_tls_is_routed_like_http1() {
    let h = Https::start("h2", &[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = h.ca.client(&TLS13, &[b"h2", b"http/1.1"]);
    let addr = h.addr;
    let (alpn, routed, misdirected) = rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(10), async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("a.tls.test").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("TLS handshake");
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let (client, conn) = h2::client::handshake(tls).await.expect("h2 over TLS");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let get = |authority: &str| {
                http::Request::builder().uri(format!("https://{authority}/over-h2")).body(()).unwrap()
            };
            let routed = ingress_tests::h2_backend::h2_send(&client, get("a.tls.test"), b"", None).await.expect("a");
            let other = ingress_tests::h2_backend::h2_send(&client, get("x.wild.test"), b"", None).await.expect("x");
            (alpn, routed, other)
        })
        .await
        .expect("answered in time")
    });
    let log = h.agent.log_text();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN chose h2");
    assert_eq!(routed.status, 200, "{log}");
    let echo: Echo = serde_json::from_slice(&routed.body).expect("the pod's echo");
    assert_eq!(echo.pod, "pod-main");
    assert_eq!(echo.path, "/over-h2");
    assert_eq!(echo.headers.get("x-forwarded-proto").map(String::as_str), Some("https"));
    assert_eq!(misdirected.status, 421, "another listener's host on this connection");
}
