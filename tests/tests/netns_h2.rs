//! Network-namespace tier (root): HTTP/2 in the k3d-shaped topology (namespaces
//! `hh2-*`). An h2c gRPC call (prior knowledge, gRPC framing by hand on the h2 crate)
//! from the client namespace through the VM's NIC (XDP attached) to the agent, routed
//! by a GRPCRoute (service `echo.Echo`), and on to a gRPC pod behind the node over h2c
//! (`appProtocol: kubernetes.io/h2c`); a call to a service no rule names gets the
//! proxy's own gRPC answer, `grpc-status: 12`, and never reaches the pod.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::h2_backend::{H2Backend, grpc_frame, grpc_messages, h2_client, h2_send};
use ingress_tests::netns::in_ns;
use ingress_tests::topology::{PodSpec, Topology, VM_IP, VM_NIC};

const POD_IP: [u8; 4] = [10, 42, 0, 31];
const POD_PORT: u16 = 9000;

fn manifests() -> String {
    let ip = std::net::Ipv4Addr::from(POD_IP);
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: x
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: grpc, namespace: apps}}
spec: {{ports: [{{name: grpc, port: 80, targetPort: {POD_PORT}, appProtocol: kubernetes.io/h2c}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: grpc-0, namespace: apps, labels: {{kubernetes.io/service-name: grpc}}}}
addressType: IPv4
ports: [{{name: grpc, port: {POD_PORT}}}]
endpoints: [{{addresses: ['{ip}']}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc, namespace: apps}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.test]
  rules:
  - matches: [{{method: {{service: echo.Echo}}}}]
    backendRefs: [{{name: grpc, port: 80}}]
"
    )
}

fn call(method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://grpc.test:9080/echo.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[test]
fn an_h2c_grpc_call_from_the_client_namespace_reaches_a_grpc_pod() {
    let test = "netns_h2_grpc_to_a_pod";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let pod = PodSpec { name: "grpc-pod".into(), ip: POD_IP.into(), ports: vec![] };
    let topo = Topology::create_with("hh2", &[pod], |_| false);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pod_ns = topo.pods[0].1.clone();
    let listener = in_ns(&pod_ns, || std::net::TcpListener::bind(("0.0.0.0", POD_PORT)).expect("bind in the pod"));
    let backend = H2Backend::serve(rt.handle(), "grpc-pod", listener);

    let dir = std::env::temp_dir().join(format!("ingress-netns-h2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("grpc.yaml"), manifests()).unwrap();
    let agent =
        Agent::start(&ingress_bin(), &topo.vm_ns(), &dir, &[format!("{VM_IP}:9080=apps/gw")], &["--interface", VM_NIC]);

    // the connection is made in the client namespace, then driven by the runtime
    let addr: SocketAddr = format!("{VM_IP}:9080").parse().unwrap();
    let stream = in_ns(&topo.client_ns(), move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the VM")
    });
    stream.set_nonblocking(true).unwrap();
    let (unary, streamed, unrouted) = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let client = h2_client(tokio::net::TcpStream::from_std(stream).unwrap()).await.expect("h2 handshake");
            let unary = h2_send(&client, call("Unary"), &grpc_frame(b"hello"), None).await.expect("unary");
            let streamed = h2_send(&client, call("ServerStream"), &grpc_frame(b"3"), None).await.expect("stream");
            let mut other = call("Unary");
            *other.uri_mut() = "http://grpc.test:9080/other.Service/Unary".parse().unwrap();
            let unrouted = h2_send(&client, other, &grpc_frame(b"x"), None).await.expect("unrouted call");
            (unary, streamed, unrouted)
        })
        .await
        .expect("answered in time")
    });
    let log = agent.stop();

    assert_eq!(unary.status, 200, "{log}");
    assert_eq!(unary.headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/grpc"[..]));
    let msgs = grpc_messages(&unary.body).expect("gRPC framing");
    assert_eq!(msgs, [b"grpc-pod grpc.test:9080|hello".to_vec()], "{:?}", String::from_utf8_lossy(&unary.body));
    let trailers = unary.trailers.expect("gRPC trailers end to end");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    let msgs: Vec<Bytes> = grpc_messages(&streamed.body).expect("framing").into_iter().map(Bytes::from).collect();
    assert_eq!(msgs, ["msg-0", "msg-1", "msg-2"].map(|m| Bytes::from_static(m.as_bytes())));
    assert_eq!(streamed.trailers.and_then(|t| t.get("grpc-status").cloned()).unwrap(), "0");
    // the proxy's own answer, as gRPC expects: Trailers-Only, UNIMPLEMENTED
    assert_eq!(unrouted.status, 200, "{log}");
    let code = unrouted.headers.get("grpc-status").or(unrouted.trailers.as_ref().and_then(|t| t.get("grpc-status")));
    assert_eq!(code.map(|v| v.as_bytes()), Some(&b"12"[..]), "no GRPCRoute rule names other.Service");
    assert_eq!(backend.requests(), 2, "the two routed calls reached the pod, the unrouted one did not");
    drop(backend);
    drop(topo);
}
