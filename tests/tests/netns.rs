//! Network-namespace tier (root): the k3d-shaped topology, the agent in the vm
//! namespace with XDP on its NIC, requests from the client namespace.

use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::Echo;
use ingress_tests::client::{Request, send};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_expectations, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::{exists, in_ns};
use ingress_tests::topology::{CLIENT_IP, PodSpec, Topology, VM_IP, VM_NIC};

/// The agent in the topology's vm namespace with the OpenChoreo fixtures and `dataplane` flags.
fn start_agent(topo: &Topology, dataplane: &[&str]) -> Agent {
    Agent::start(&ingress_bin(), &topo.vm_ns(), &openchoreo_dir(), &openchoreo_listens(VM_IP), dataplane)
}

fn get(topo: &Topology, port: u16, host: &str, path: &str) -> ingress_tests::client::Response {
    let addr = format!("{VM_IP}:{port}").parse().unwrap();
    let req = Request::get(host, path);
    in_ns(&topo.client_ns(), move || send(addr, &req, Duration::from_secs(5)))
        .expect("request from the client namespace")
}

fn xdp_packets(agent: &Agent, port: u16) -> u64 {
    let (status, body) = agent.admin_get("/stats").expect("admin /stats");
    assert_eq!(status, 200);
    let stats: ingress::telemetry::StatsView = serde_json::from_str(&body).expect("stats json");
    stats.xdp_counters.iter().filter(|c| c.port == port && c.proto == "tcp").map(|c| c.packets).sum()
}

#[test]
fn api_host_through_the_xdp_nic_reaches_the_api_pod() {
    let test = "api_host_through_the_xdp_nic_reaches_the_api_pod";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("ingt-api", &openchoreo_pods());
    let agent = start_agent(&topo, &["--interface", VM_NIC]);
    let before = xdp_packets(&agent, 8080);
    let r = get(&topo, 8080, "api.openchoreovm.localhost:8080", "/");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let echo: Echo = r.json();
    assert!(echo.pod.starts_with("openchoreo-api-"), "answered by {}", echo.pod);
    assert_eq!((echo.port, echo.path.as_str()), (8080, "/"));
    assert_eq!(echo.host, "api.openchoreovm.localhost:8080", "Host is forwarded unchanged");
    assert_eq!(echo.headers.get("x-forwarded-for").map(String::as_str), Some(CLIENT_IP));
    let after = xdp_packets(&agent, 8080);
    assert!(after >= before + 3, "XDP counted the connection's packets to 8080: {before} -> {after}");
    let (_, routes) = agent.admin_get("/routes").expect("admin /routes");
    assert!(routes.contains("api.openchoreovm.localhost"), "{routes}");
    let log = agent.stop();
    assert!(log.contains("XDP program attached"), "{log}");
    assert!(log.contains("TCP SYN to port 8080"), "aya-log records reach the agent's log:\n{log}");
}

#[test]
fn every_openchoreo_hostname_reaches_its_pod_in_both_dataplanes() {
    let test = "every_openchoreo_hostname_reaches_its_pod_in_both_dataplanes";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("ingt-all", &openchoreo_pods());
    for dataplane in [&["--interface", VM_NIC][..], &["--dataplane", "userspace"][..]] {
        let agent = start_agent(&topo, dataplane);
        for exp in openchoreo_expectations() {
            let r = get(&topo, exp.port, &format!("{}:{}", exp.host, exp.port), exp.path);
            let what = format!("{dataplane:?} http://{}:{}{}", exp.host, exp.port, exp.path);
            assert_eq!(r.status, exp.status, "{what}: {}", String::from_utf8_lossy(&r.body));
            if let Some(prefix) = exp.pod_prefix {
                let echo: Echo = r.json();
                assert!(echo.pod.starts_with(prefix), "{what}: answered by {}", echo.pod);
                assert_eq!(Some(echo.path.as_str()), exp.pod_path, "{what}: path at the pod");
            }
        }
        let (_, stats) = agent.admin_get("/stats").unwrap();
        let stats: ingress::telemetry::StatsView = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats.proxy.requests, openchoreo_expectations().len() as u64);
        assert_eq!(stats.xdp.is_some(), dataplane[0] == "--interface");
        agent.stop();
    }
}

#[test]
fn topology_is_idempotent_and_leaves_nothing() {
    if !ingress_tests::require_root("topology_is_idempotent_and_leaves_nothing") {
        return;
    }
    let pods = vec![PodSpec { name: "p".into(), ip: "10.42.0.9".parse().unwrap(), ports: vec![8080] }];
    // An interrupted run: namespaces left behind (its backend stopped and joined).
    Topology::create("ingt-idem", &pods).abandon();
    assert!(exists("ingt-idem-vm"));
    let topo = Topology::create("ingt-idem", &pods);
    // The pod answers straight from the vm namespace through the node's routing.
    let r = in_ns(&topo.vm_ns(), || {
        send("10.42.0.9:8080".parse().unwrap(), &Request::get("x", "/direct"), Duration::from_secs(5))
    })
    .expect("vm -> pod");
    assert_eq!(r.json::<Echo>().path, "/direct");
    drop(topo);
    for ns in ["ingt-idem-client", "ingt-idem-vm", "ingt-idem-node", "ingt-idem-p0"] {
        assert!(!exists(ns), "{ns} left behind");
    }
}

/// A WebSocket-style upgrade to the echo pod through the VM's 9080; `n` bytes each way.
fn upgrade_echo(topo: &Topology, n: usize) {
    use std::io::{BufReader, Read, Write};
    in_ns(&topo.client_ns(), || {
        let mut c = std::net::TcpStream::connect((VM_IP, 9080)).expect("connect to the VM");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(
            b"GET /echo-websocket-service/ws HTTP/1.1\r\nHost: development.openchoreovm-apis.localhost:9080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let head = ingress_tests::client::read_response(&mut r, true).unwrap();
        assert_eq!(head.status, 101);
        assert!(head.headers["x-pod"].starts_with("echo-websocket-service-"), "{:?}", head.headers);
        let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut c = c.try_clone().unwrap();
            let payload = payload.clone();
            std::thread::spawn(move || c.write_all(&payload).unwrap())
        };
        let mut back = vec![0u8; n];
        r.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == payload, "echoed bytes differ");
    });
}

#[test]
fn websocket_through_the_ingress_is_spliced_in_the_kernel() {
    let test = "websocket_through_the_ingress_is_spliced_in_the_kernel";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("ingt-ws", &openchoreo_pods());
    // the kernel join itself (by default bulk like this stays on a pipe: netns_splice_choice.rs)
    let agent = start_agent(&topo, &["--interface", VM_NIC, "--join-mode", "kernel"]);
    const N: usize = 4 << 20;
    upgrade_echo(&topo, N);
    let s = agent.stats();
    assert!(s.splice.available, "sockmap splicing loaded: {:?}\n{}", s.splice, agent.log_text());
    assert_eq!(s.splice.joined_total, 1);
    assert_eq!(s.splice.copied_in_userspace, 0);
    assert!(
        s.splice.kernel_redirected_bytes >= 2 * N as u64,
        "both directions went through the kernel path: {:?}",
        s.splice
    );
    // the joined pair is parted when the client closes
    let start = std::time::Instant::now();
    while agent.stats().splice.joined_active != 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "joined connection not parted");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.stop();

    // userspace dataplane: same bytes, copied by the agent
    let agent = start_agent(&topo, &["--dataplane", "userspace"]);
    upgrade_echo(&topo, 1 << 20);
    let s = agent.stats();
    assert!(!s.splice.available);
    assert_eq!((s.splice.joined_total, s.splice.copied_in_userspace), (1, 1));
    assert_eq!(s.splice.kernel_redirected_bytes, 0);
    agent.stop();
}

#[test]
fn splice_safe_hosts_are_joined_to_the_pod_in_the_kernel() {
    use std::io::{BufReader, Write};
    let test = "splice_safe_hosts_are_joined_to_the_pod_in_the_kernel";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("ingt-spl", &openchoreo_pods());
    // default: forwarded headers on, so nothing is spliced, and /routes says why
    let agent = start_agent(&topo, &["--interface", VM_NIC]);
    let (_, routes) = agent.admin_get("/routes").unwrap();
    assert!(routes.contains("--forwarded-headers off"), "{routes}");
    agent.stop();

    // the kernel join itself, for every connection (auto: netns_splice_choice.rs)
    let agent = start_agent(&topo, &["--interface", VM_NIC, "--forwarded-headers", "off", "--join-mode", "kernel"]);
    let host = "react-starter-development.openchoreovm-apis.localhost:9080";
    let (pods, forwarded) = in_ns(&topo.client_ns(), || {
        let c = std::net::TcpStream::connect((VM_IP, 9080)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        let mut pods = Vec::new();
        let mut forwarded = false;
        for path in ["/a", "/b", "/c"] {
            w.write_all(&Request::get(host, path).to_bytes()).unwrap();
            let resp = ingress_tests::client::read_response(&mut r, false).unwrap();
            let echo: Echo = resp.json();
            assert_eq!(echo.path, path);
            forwarded |= echo.headers.contains_key("x-forwarded-for");
            pods.push(echo.pod);
        }
        (pods, forwarded)
    });
    assert!(pods.iter().all(|p| p == &pods[0]), "one spliced connection, one pod: {pods:?}");
    assert!(!forwarded);
    let s = agent.stats();
    assert_eq!(s.splice.joined_total, 1, "{:?}", s.splice);
    assert!(s.splice.kernel_redirected_bytes > 0, "{:?}", s.splice);
    // a host with filters still goes through the proxy (rewritten path)
    let r = get(&topo, 9080, "development.openchoreovm-apis.localhost:9080", "/greeter-service/greeter/greet");
    assert_eq!(r.json::<Echo>().path, "/greeter/greet");
    assert_eq!(agent.stats().splice.joined_total, 1);
    let (_, routes) = agent.admin_get("/routes").unwrap();
    let v: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let react = v["listeners"][1]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "react-starter-development.openchoreovm-apis.localhost")
        .unwrap();
    assert_eq!(react["splice"]["safe"], true, "{react}");
    // The pod answers and closes at once: the FIN must not overtake the answer's bytes
    // still queued in the kernel (a new spliced connection per request; the client does
    // not say `Connection: close`, which would keep it out of the splice).
    const BODY: usize = 512 * 1024;
    let before = agent.stats().splice.joined_total;
    for i in 0..20 {
        let req =
            Request::get(host, "/close").header("x-echo-bytes", &BODY.to_string()).header("x-echo-then-close", "1");
        let addr = format!("{VM_IP}:9080").parse().unwrap();
        let r = in_ns(&topo.client_ns(), move || send(addr, &req, Duration::from_secs(10))).expect("spliced request");
        assert_eq!((r.status, r.body.len()), (200, BODY), "request {i}: the whole answer arrives before the close");
    }
    let s = agent.stats();
    assert_eq!(s.splice.joined_total, before + 20, "{:?}", s.splice);
    agent.stop();
}

#[test]
fn generic_mode_xdp_is_reported_with_the_reason() {
    let test = "generic_mode_xdp_is_reported_with_the_reason";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("ingt-gen", &openchoreo_pods());
    // a jumbo client link: the veth refuses driver-mode XDP
    ingress_tests::netns::ip(&["-n", &topo.client_ns(), "link", "set", "eth0", "mtu", "9000"]);
    ingress_tests::netns::ip(&["-n", &topo.vm_ns(), "link", "set", VM_NIC, "mtu", "9000"]);
    let agent = start_agent(&topo, &["--interface", VM_NIC]);
    let s = agent.stats();
    let xdp = s.xdp.clone().expect("XDP attached");
    assert_eq!(xdp.mode, "generic", "{xdp:?}");
    let why = xdp.why_generic.clone().expect("a reason for generic mode");
    assert!(why.contains("MTU 9000") && why.contains("veth"), "{why}");
    assert!(ingress::telemetry::format_table(&s).contains("generic (skb) mode"), "ingress stats says so");
    let (_, routes) = agent.admin_get("/routes").unwrap();
    let v: ingress::admin::RoutesView = serde_json::from_str(&routes).unwrap();
    let text = ingress::admin::format_routes(&v);
    assert!(text.contains("XDP on eth0: generic mode") && text.contains("MTU 9000"), "ingress routes says so:\n{text}");
    // still serves
    let r = get(&topo, 8080, "api.openchoreovm.localhost:8080", "/");
    assert_eq!(r.status, 200);
    agent.stop();
}
