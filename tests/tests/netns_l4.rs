//! Netns tier for L4 forwarding (root): the k3d-shaped topology, the agent in the vm
//! namespace with `--l4`, TCP connections from the client namespace through the NIC
//! (tc DNAT, redirect into the bridge; replies reverse-NATed on the bridge and
//! redirected out the NIC). No iptables or nft rule anywhere. The servers are plain
//! TCP servers (`tests/src/tcp_echo.rs`): the server's name as a first line, then every
//! byte echoed back, so the client checks the bytes (hashed) and which endpoint served
//! the connection.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::netns::{in_ns, sysctl};
use ingress_tests::tcp_echo::{Server, exchange};
use ingress_tests::topology::{NODE_IP, PodSpec, Topology, VM_IP, VM_NIC};

fn manifests(tag: &str, endpoints: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ingress-l4-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gateway.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: l4}\nspec:\n  gatewayClassName: x\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n",
    )
    .unwrap();
    write_slice(&dir, endpoints);
    dir
}

/// Service l4/reg port 5000 (named tcp) and its EndpointSlice.
fn write_slice(dir: &std::path::Path, endpoints: &[&str]) {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("'{e}'")).collect();
    let y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reg, namespace: l4}}\nspec: {{ports: [{{name: tcp, port: 5000}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: reg-1, namespace: l4, labels: {{kubernetes.io/service-name: reg}}}}\naddressType: IPv4\nports: [{{name: tcp, port: 5000}}]\nendpoints: [{{addresses: [{}]}}]\n",
        eps.join(", ")
    );
    // Written whole then renamed, so the watcher never reads half a file.
    let tmp = dir.join(".svc.yaml.tmp");
    std::fs::write(&tmp, y).unwrap();
    std::fs::rename(&tmp, dir.join("svc.yaml")).unwrap();
}

fn pods(n: usize) -> Vec<PodSpec> {
    (0..n)
        .map(|i| PodSpec {
            name: format!("reg-{i}"),
            ip: format!("10.42.0.{}", 11 + i).parse().unwrap(),
            ports: vec![],
        })
        .collect()
}

fn l4_view(agent: &Agent) -> ingress::telemetry::l4::L4View {
    agent.stats().l4.expect("/stats has an l4 part")
}

fn start(topo: &Topology, dir: &std::path::Path) -> Agent {
    // Docker turns IPv4 forwarding on; so does the VM this stands for.
    sysctl(&topo.vm_ns(), "net/ipv4/ip_forward", "1");
    let args = ["--interface", VM_NIC, "--l4", "6550=172.18.0.2:6443", "--l4", "10082=l4/reg:5000"];
    Agent::start(&ingress_bin(), &topo.vm_ns(), dir, &[format!("{VM_IP}:8080=l4/gw:80")], &args)
}

#[test]
fn l4_ports_forward_to_a_fixed_target_and_a_two_endpoint_service() {
    let test = "l4_ports_forward_to_a_fixed_target_and_a_two_endpoint_service";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create_with("l4-svc", &pods(2), |_| false);
    let _api = Server::start(&topo.node_ns(), &format!("{NODE_IP}:6443"), "apiserver");
    let _p0 = Server::start(&topo.pods[0].1, "10.42.0.11:5000", "reg-0");
    let _p1 = Server::start(&topo.pods[1].1, "10.42.0.12:5000", "reg-1");
    let dir = manifests("svc", &["10.42.0.11", "10.42.0.12"]);
    let agent = start(&topo, &dir);

    // fixed target: 6550 -> the API server stand-in in the node namespace
    for i in 0..5 {
        assert_eq!(exchange(&topo.client_ns(), 6550, 200_000, i, Duration::ZERO), "apiserver");
    }
    // the Service: both endpoints used, each connection whole on one
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..40 {
        *by.entry(exchange(&topo.client_ns(), 10082, 20_000, 100 + i, Duration::ZERO)).or_default() += 1;
    }
    assert_eq!(by.len(), 2, "both endpoints used: {by:?}");
    assert!(by.values().all(|&n| n >= 5), "{by:?}");
    let v = l4_view(&agent);
    let tcx = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| {
            let mut it = r.trim().split(['.', '-']).map(|x| x.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .is_some_and(|v| v >= (6, 6));
    assert_eq!(v.tc_mode == "tcx", tcx, "TCX on kernels >= 6.6, legacy tc below: {v:?}");
    assert!(
        v.attached.iter().any(|a| a == "l4_nic on eth0") && v.attached.iter().any(|a| a == "l4_reply on br-k3d"),
        "{v:?}"
    );
    let api = &v.ports[0];
    assert_eq!((api.port, api.endpoints), (6550, 1));
    assert_eq!(api.flows, 5, "{api:?}");
    assert!(api.bytes > 5 * 200_000 && api.reply_bytes > 5 * 200_000, "{api:?}");
    let reg = &v.ports[1];
    assert_eq!((reg.port, reg.endpoints, reg.flows), (10082, 2, 40), "{reg:?}");
    assert_eq!(
        api.fib_fallback + reg.fib_fallback,
        0,
        "every packet redirected by the programs, none routed by the stack"
    );
    assert!(v.conntrack_entries >= 2 * 45, "two entries per flow: {v:?}");
    // /metrics has the families
    let (_, metrics) = agent.admin_get("/metrics").unwrap();
    assert!(metrics.contains("ingress_l4_flows_total{port=\"10082\"} 40"), "{metrics}");
    // a port that is not L4 on the same address is not touched: nothing listens there
    let refused = in_ns(&topo.client_ns(), || {
        TcpStream::connect_timeout(&format!("{VM_IP}:6551").parse().unwrap(), Duration::from_secs(3))
    });
    assert!(refused.is_err());
    let log = agent.stop();
    assert!(log.contains("L4 forwarding attached"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endpoint_changes_under_load_keep_established_flows_and_move_new_ones() {
    let test = "endpoint_changes_under_load_keep_established_flows_and_move_new_ones";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create_with("l4-chg", &pods(3), |_| false);
    let _api = Server::start(&topo.node_ns(), &format!("{NODE_IP}:6443"), "apiserver");
    let _servers: Vec<Server> = (0..3)
        .map(|i| Server::start(&topo.pods[i].1, &format!("10.42.0.{}:5000", 11 + i), &format!("reg-{i}")))
        .collect();
    let dir = manifests("chg", &["10.42.0.11", "10.42.0.12"]);
    let agent = start(&topo, &dir);
    let before = l4_view(&agent).programmed;
    // Long connections, open across the change: 40 pieces of 8 KiB, 50 ms apart (~2 s).
    let client = topo.client_ns();
    let long: Vec<_> = (0..8)
        .map(|i| {
            let c = client.clone();
            std::thread::spawn(move || exchange(&c, 10082, 40 * 8192, 500 + i, Duration::from_millis(50)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // reg-0 leaves, reg-2 arrives
    write_slice(&dir, &["10.42.0.12", "10.42.0.13"]);
    let t0 = Instant::now();
    while l4_view(&agent).programmed == before {
        assert!(t0.elapsed() < Duration::from_secs(10), "the agent did not reprogram the L4 maps");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut old_names = BTreeMap::<String, usize>::new();
    for t in long {
        // every byte of every long connection came back (exchange asserts it)
        *old_names.entry(t.join().expect("a long connection broke across the change")).or_default() += 1;
    }
    assert_eq!(old_names.values().sum::<usize>(), 8);
    let mut new_names = BTreeMap::<String, usize>::new();
    for i in 0..30 {
        *new_names.entry(exchange(&topo.client_ns(), 10082, 4096, 900 + i, Duration::ZERO)).or_default() += 1;
    }
    assert!(!new_names.contains_key("reg-0"), "new connections avoid the endpoint that left: {new_names:?}");
    assert!(new_names.contains_key("reg-2"), "new connections use the endpoint that arrived: {new_names:?}");
    let reg = &l4_view(&agent).ports[1];
    assert_eq!(reg.endpoints, 2);
    assert_eq!(reg.fib_fallback, 0, "{reg:?}");
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
    // which endpoints the long connections used is up to the hash; both sets printed
    eprintln!("long connections: {old_names:?}; new ones: {new_names:?}");
}

#[test]
fn an_l4_port_that_is_also_an_l7_port_is_refused_at_start() {
    let bin = ingress_bin();
    if !bin.is_file() {
        ingress_tests::skip("an_l4_port_that_is_also_an_l7_port_is_refused_at_start", "agent binary not built");
        return;
    }
    let dir = manifests("conflict", &["10.42.0.11"]);
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(["run", "--manifests"])
            .arg(&dir)
            .args(["--listen", "127.0.0.1:6550=l4/gw:80", "--admin", "127.0.0.1:0"])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&["--l4", "6550=172.18.0.2:6443", "--dataplane", "userspace"]);
    assert!(e.contains("port 6550 is both an L4 port") && e.contains("L7 listen port"), "{e}");
    let e = run(&["--l4", "6551=172.18.0.2:6443", "--dataplane", "userspace"]);
    assert!(e.contains("--l4 needs the ebpf dataplane"), "{e}");
    let e = run(&["--l4", "6551=ns/svc"]);
    assert!(e.contains("invalid --l4 `6551=ns/svc`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
