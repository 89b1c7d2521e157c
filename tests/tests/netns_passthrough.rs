//! TLS passthrough in the k3d-shaped topology (root): a rustls TLS server in a pod
//! namespace behind the node, the agent in the vm namespace (XDP on its NIC, the
//! sockmap program loaded), a rustls client in the client namespace. The connection is
//! routed by SNI and joined to the pod in the kernel; with `--dataplane userspace` the
//! same connection is copied in user space. Namespaces `hpas-*`.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::netns::in_ns;
use ingress_tests::proxy_setup::service;
use ingress_tests::tls::{ClientOpts, TlsPod, exchange};
use ingress_tests::topology::{PodSpec, Topology, VM_IP, VM_NIC};

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: x
  listeners:
  - {name: tls-passthrough, protocol: TLS, port: 8443, hostname: '*.openchoreoapis.localhost', tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: tls-service, namespace: apps}
spec:
  parentRefs: [{name: gw, sectionName: tls-passthrough}]
  hostnames: [tls-service.openchoreoapis.localhost]
  rules: [{backendRefs: [{name: tls-pod, port: 80}]}]
"#;

const HOST: &str = "tls-service.openchoreoapis.localhost";

#[test]
fn passthrough_from_the_client_namespace_to_a_pod_in_the_kernel_and_in_user_space() {
    let test = "passthrough_from_the_client_namespace_to_a_pod_in_the_kernel_and_in_user_space";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let spec = PodSpec { name: "tls-pod".into(), ip: [10, 42, 0, 21].into(), ports: vec![8080] };
    let topo = Topology::create("hpas-tls", &[spec.clone()]);
    let pod_addr = SocketAddr::from((spec.ip, 8443));
    let pod = TlsPod::start_in(&topo.pods[0].1, pod_addr, "tls-pod", &[HOST]);
    let dir = std::env::temp_dir().join(format!("ingress-hpas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("routes.yaml"), format!("{ROUTES}{}", service("tls-pod", &[pod_addr]))).unwrap();
    let listen = [format!("{VM_IP}:8443=apps/gw:8443")];
    let client = topo.client_ns();
    let agent_addr: SocketAddr = format!("{VM_IP}:8443").parse().unwrap();
    let connect = || in_ns(&client, || TcpStream::connect(agent_addr)).expect("connect from the client namespace");
    let opts = ClientOpts { sni: Some(HOST.into()), ..Default::default() };
    let large = ClientOpts { large_hello: true, pieces: Some((500, Duration::from_millis(30))), ..opts.clone() };

    for (dataplane, kernel) in [(&["--interface", VM_NIC][..], true), (&["--dataplane", "userspace"][..], false)] {
        let agent = Agent::start(&ingress_bin(), &topo.vm_ns(), &dir, &listen, dataplane);
        let before = pod.accepted();
        let x = exchange(connect(), &pod.cert, &opts)
            .unwrap_or_else(|e| panic!("{dataplane:?}: {e}\n{}", agent.log_text()));
        assert_eq!(x.answer, format!("tls-pod sni={HOST} got=ping"), "{dataplane:?}");
        assert_eq!(x.cert, pod.cert, "the pod's own certificate");
        let x = exchange(connect(), &pod.cert, &large).expect("a post-quantum-sized ClientHello in pieces");
        assert!(x.hello_len > 1460);
        assert_eq!(x.answer, format!("tls-pod sni={HOST} got=ping"));
        // no SNI and an unknown one: closed, nothing reaches the pod
        assert!(exchange(connect(), &pod.cert, &ClientOpts::default()).is_err());
        let other = ClientOpts { sni: Some("other.openchoreoapis.localhost".into()), ..Default::default() };
        assert!(exchange(connect(), &pod.cert, &other).is_err());
        assert_eq!(pod.accepted(), before + 2, "{dataplane:?}: only the routed connections reached the pod");
        let s = agent.stats();
        let c = &s.passthrough;
        let (joined, copied) = if kernel { (2, 0) } else { (0, 2) };
        assert_eq!((c.kernel, c.userspace, c.no_sni, c.no_route), (joined, copied, 1, 1), "{dataplane:?}: {c:?}");
        if kernel {
            assert!(s.splice.available, "the sockmap program is loaded");
            assert!(s.splice.kernel_redirected_bytes > 0, "the kernel moved the TLS bytes: {:?}", s.splice);
        }
        let log = agent.stop();
        let said = if kernel { "joined to the pod in the kernel (sockmap)" } else { "copied to the pod in user space" };
        assert!(log.contains(said), "{dataplane:?}: {log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
