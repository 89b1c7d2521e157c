//! HTTPS in the k3d-shaped topology (root; namespaces `htls-*`): a client in the client
//! namespace speaks TLS to the VM's 8443 (XDP on the NIC), the agent terminates it with
//! the listener's certificate (a wildcard for `*.openchoreovm.localhost`, as the
//! OpenChoreo control plane's HTTPS listener has) and forwards plain HTTP to the pod.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::Echo;
use ingress_tests::client::Request;
use ingress_tests::netns::in_ns;
use ingress_tests::tls::{TestCa, TlsConn, secret_yaml};
use ingress_tests::topology::{CLIENT_IP, PodSpec, Topology, VM_IP, VM_NIC};

fn manifests(pod: SocketAddr, crt: &str, key: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gateway-default, namespace: openchoreo-control-plane}}
spec:
  gatewayClassName: kgateway
  listeners:
  - {{name: http, protocol: HTTP, port: 80}}
  - name: https
    protocol: HTTPS
    port: 443
    hostname: '*.openchoreovm.localhost'
    tls: {{mode: Terminate, certificateRefs: [{{kind: Secret, name: control-plane-tls}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: openchoreo-control-plane}}
spec:
  parentRefs: [{{name: gateway-default}}]
  hostnames: [api.openchoreovm.localhost]
  rules:
  - backendRefs: [{{name: api, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: openchoreo-control-plane}}
spec: {{ports: [{{name: http, port: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-0, namespace: openchoreo-control-plane, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{name: http, port: {}}}]
endpoints: [{{addresses: ['{}']}}]
{}"#,
        pod.port(),
        pod.ip(),
        secret_yaml("openchoreo-control-plane", "control-plane-tls", crt, key)
    )
}

#[test]
fn https_from_the_client_namespace_reaches_the_pod() {
    let test = "https_from_the_client_namespace_reaches_the_pod";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let spec = PodSpec { name: "openchoreo-api-0".into(), ip: [10, 42, 0, 21].into(), ports: vec![8080] };
    let pod = SocketAddr::from((spec.ip, 8080));
    let topo = Topology::create("htls", std::slice::from_ref(&spec));
    let ca = TestCa::new();
    let (crt, key) = ca.leaf(&["*.openchoreovm.localhost"]);
    let dir = std::env::temp_dir().join(format!("ingress-htls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cp.yaml"), manifests(pod, &crt, &key)).unwrap();
    let listens = [
        format!("{VM_IP}:8080=openchoreo-control-plane/gateway-default:80"),
        format!("{VM_IP}:8443=openchoreo-control-plane/gateway-default:443"),
    ];
    let agent = Agent::start(&ingress_bin(), &topo.vm_ns(), &dir, &listens, &["--interface", VM_NIC]);

    let addr: SocketAddr = format!("{VM_IP}:8443").parse().unwrap();
    let client = ca.client(&rustls::version::TLS13, &[b"http/1.1"]);
    let (n, r) = in_ns(&topo.client_ns(), move || {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to 8443");
        let (mut c, n) = TlsConn::handshake(tcp, client, "api.openchoreovm.localhost").expect("TLS handshake");
        let r = c.send(&Request::get("api.openchoreovm.localhost:8443", "/v1/orgs")).expect("response over TLS");
        (n, r)
    });
    assert_eq!(n.san, "*.openchoreovm.localhost", "the wildcard listener's certificate");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let e: Echo = r.json();
    assert_eq!((e.pod.as_str(), e.path.as_str()), ("openchoreo-api-0", "/v1/orgs"));
    assert_eq!(e.headers.get("x-forwarded-proto").map(String::as_str), Some("https"));
    assert_eq!(e.headers.get("x-forwarded-for").map(String::as_str), Some(CLIENT_IP));

    // the HTTP listener of the same Gateway keeps serving plain HTTP on 8080
    let plain: SocketAddr = format!("{VM_IP}:8080").parse().unwrap();
    let r = in_ns(&topo.client_ns(), move || {
        ingress_tests::client::send(plain, &Request::get("api.openchoreovm.localhost", "/"), Duration::from_secs(5))
    })
    .expect("plain request");
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<Echo>().headers.get("x-forwarded-proto").map(String::as_str), Some("http"));
    let stats = agent.stats();
    assert_eq!(stats.proxy.tls.handshakes, 1, "{:?}", stats.proxy.tls);
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
