//! Netns tier, delayed binding (issue 14, item 4): the fault suite on the agent's kernel
//! binding (`--bind-in-kernel on`, tests/src/kbind.rs), each test on its own topology
//! (`kbt1-*`, `kbt2-*`, ...). Every transfer is checked byte for byte (downloads against
//! the seeded pattern, uploads by the hash the pod reports) and every case by the binding
//! counters, so each can fail:
//! - the SYN-ACK (at the client's ingress: the cookie's XDP_TX reply is seen only there),
//!   the handshake's pure ACK and the first data segment each dropped once per connection
//!   (tests/src/impair.rs, targeted NFQUEUE plans);
//! - the first data segment sent twice, right after it bound: the pod answers it once;
//! - FIN on the first segment (TCP_CORK, the request, shutdown(Write)) gets its whole
//!   answer; a RST as the first segment after the handshake leaves no harm;
//! - the pod removed between two requests of a bound connection (its veth deleted, its
//!   endpoint out of the EndpointSlice): the agent marks the flow (`CT_ENDPOINT_GONE`),
//!   `bind_first` hands its next segment to the VM's stack, and the client gets a RST at
//!   once, never a hang; the next connection goes to the pod that is left;
//! - client MTU 1280, 1500 and 9000 with the pod path at 1450: no segment above the path
//!   MSS reaches the pod (an NFQUEUE observer on the node's cni0);
//! - conntrack in the node namespace with kube-proxy's INVALID drop rule in FORWARD:
//!   with `nf_conntrack_tcp_loose=1` bound flows are picked up at their first segment;
//!   with 0 they would be INVALID, so the agent (which reads the sysctl on the
//!   endpoints' next hop) serves those hosts itself, and watches it: set to 1 and back
//!   to 0 under the running agent, the host is bound and unbound again.
//!
//! Every socket has a timeout, every loop a bound; traffic stays in the namespaces.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ingress_tests::client::{Request, read_response, read_until_closed};
use ingress_tests::impair::{Action, Hook, ImpairCounts, ImpairedLink, Kind, Plan, Scope, Target};
use ingress_tests::kbind::{
    BOUND_HOST, BOUND_POD, KIB, MIB, bind_view, bound_topology, bound_topology_with, connect, exchange, keepalive,
    require, wait_bound,
};
use ingress_tests::netns::{in_ns, ip};
use ingress_tests::pattern::first_difference;
use ingress_tests::topology::Topology;

/// Requests the bound host's pods answered so far.
fn pod_requests(topo: &Topology) -> usize {
    (0..topo.pods.len())
        .filter(|i| topo.pods[*i].0.name.starts_with(BOUND_POD))
        .map(|i| topo.backend(i).requests())
        .sum()
}

/// Runs `f` in the client namespace with `plan` on the client's eth0 (`hook`), and returns
/// what it returned and what the link did.
fn with_link<T: Send>(topo: &Topology, hook: Hook, plan: Plan, f: impl FnOnce() -> T + Send) -> (T, ImpairCounts) {
    let link = ImpairedLink::start_plan(&topo.client_ns(), "eth0", hook, 1, plan);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_ns(&topo.client_ns(), f)));
    let counts = link.stop();
    match out {
        Ok(v) => (v, counts),
        Err(e) => {
            eprintln!("the client link ({plan:?} on {hook:?}) did {counts:?}");
            std::panic::resume_unwind(e)
        }
    }
}

/// `n` keep-alive connections to the bound host, each a download and an upload of each
/// size (seeds from `seed`); every answer from one pod of the host.
fn bound_connections(seed: u64, n: u64, sizes: &[usize]) {
    for c in 0..n {
        let pods = keepalive(BOUND_HOST, seed + c, sizes);
        assert!(pods.iter().all(|p| p == &pods[0] && p.starts_with(BOUND_POD)), "connection {c}: {pods:?}");
    }
}

#[test]
fn the_syn_ack_the_pure_ack_and_the_first_segment_each_dropped_once_cost_a_retransmission_not_a_byte() {
    let test = "the_syn_ack_the_pure_ack_and_the_first_segment_each_dropped_once_cost_a_retransmission_not_a_byte";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("kbt1");
    wait_bound(&a);
    const CONNS: u64 = 3;
    let runs = [
        ("SYN-ACK", Hook::Ingress, Kind::SynAck),
        ("pure ACK", Hook::Egress, Kind::PureAck),
        ("first data segment", Hook::Egress, Kind::Data),
    ];
    for (i, (name, hook, kind)) in runs.into_iter().enumerate() {
        let before = bind_view(&a);
        let proxied = a.stats().proxy.requests;
        let target = Target { kind, action: Action::Drop, scope: Scope::Connection };
        let started = Instant::now();
        let ((), link) =
            with_link(&topo, hook, Plan::Pick(target), || bound_connections(10 * i as u64, CONNS, &[KIB, 256 * KIB]));
        let after = bind_view(&a);
        println!(
            "{name} dropped once per connection: {:?} in {:?}; {:?}",
            link,
            started.elapsed(),
            after.first_segment
        );
        assert_eq!(link.dropped, CONNS, "{name}: one dropped per connection: {link:?}");
        assert_eq!(after.count("bound"), before.count("bound") + CONNS, "{name}: {after:?}");
        assert_eq!(after.count("fallback"), before.count("fallback"), "{name}: {after:?}");
        assert_eq!(a.stats().proxy.requests, proxied, "{name}: the agent's proxy served nothing");
        // the handshake's ACK reaches bind_first (dropped there) unless the link took it
        let acks = after.count("pure_ack") - before.count("pure_ack");
        if kind == Kind::PureAck {
            assert_eq!(acks, 0, "{name}: no pure ACK reached the VM: {after:?}");
        } else {
            assert!(acks >= CONNS, "{name}: every handshake's ACK reached the VM: {after:?}");
        }
    }
    a.stop();
}

#[test]
fn a_first_segment_sent_twice_right_after_it_bound_is_answered_once() {
    let test = "a_first_segment_sent_twice_right_after_it_bound_is_answered_once";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("kbt2");
    wait_bound(&a);
    const CONNS: u64 = 3;
    let sizes = [KIB, MIB];
    let (before, served) = (bind_view(&a), pod_requests(&topo));
    let target = Target { kind: Kind::Data, action: Action::Duplicate, scope: Scope::Connection };
    let ((), link) = with_link(&topo, Hook::Egress, Plan::Pick(target), || bound_connections(1, CONNS, &sizes));
    let after = bind_view(&a);
    println!("first segments duplicated: {link:?}; {:?}", after.first_segment);
    assert_eq!(link.duplicated, CONNS, "one copy per connection: {link:?}");
    assert_eq!(after.count("bound"), before.count("bound") + CONNS, "{after:?}");
    // each copy arrived after its original had bound the flow: forwarded as part of it
    assert!(after.count("conntrack_hit") >= before.count("conntrack_hit") + CONNS, "{after:?}");
    let requests = CONNS as usize * sizes.len() * 2;
    assert_eq!(pod_requests(&topo), served + requests, "each request reached a pod once");
    assert_eq!(a.stats().proxy.requests, 0, "the agent's proxy served nothing");
    a.stop();
}

/// `setsockopt(level, name, value)` on `s`, panicking with the errno.
fn setsockopt<T>(s: &TcpStream, level: libc::c_int, name: libc::c_int, value: T, what: &str) {
    // SAFETY: a valid socket and a value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{what}: {}", std::io::Error::last_os_error());
}

#[test]
fn fin_on_the_first_segment_gets_the_whole_answer_and_rst_as_the_first_segment_does_no_harm() {
    let test = "fin_on_the_first_segment_gets_the_whole_answer_and_rst_as_the_first_segment_does_no_harm";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("kbt3");
    wait_bound(&a);

    // FIN with the request: corked, written, shut down; the answer read to the close
    let before = bind_view(&a);
    let n = 256 * KIB;
    let (body, link) = with_link(&topo, Hook::Egress, Plan::Observe, || {
        let (w, mut r) = connect();
        setsockopt(&w, libc::IPPROTO_TCP, libc::TCP_CORK, 1 as libc::c_int, "TCP_CORK");
        let get = Request::get(BOUND_HOST, "/download")
            .header("x-echo-bytes", &n.to_string())
            .header("x-echo-pattern", "7")
            .header("connection", "close");
        (&w).write_all(&get.to_bytes()).unwrap();
        w.shutdown(Shutdown::Write).expect("shutdown(Write)");
        let resp = read_response(&mut r, false).expect("the answer to a request sent with FIN");
        let mut rest = Vec::new();
        read_until_closed(&mut r, &mut rest).expect("the pod closes after answering");
        assert!(rest.is_empty(), "nothing after the answer: {} bytes", rest.len());
        (resp.status, resp.body)
    });
    let after = bind_view(&a);
    println!("FIN on the first segment: {link:?}; {:?}", after.first_segment);
    assert_eq!(link.data_with_fin, 1, "the request left in one segment with FIN: {link:?}");
    assert_eq!((body.0, body.1.len()), (200, n));
    assert_eq!(first_difference(7, &body.1), None, "the answer differs");
    assert_eq!(after.count("bound"), before.count("bound") + 1, "{after:?}");

    // RST as the first segment after the handshake (SO_LINGER 0, then close)
    let before = bind_view(&a);
    let ((), link) = with_link(&topo, Hook::Egress, Plan::Observe, || {
        let (w, r) = connect();
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        setsockopt(&w, libc::SOL_SOCKET, libc::SO_LINGER, linger, "SO_LINGER");
        drop((w, r));
    });
    assert_eq!((link.resets, link.largest_payload), (1, 0), "a RST and no data left the client: {link:?}");
    let mid = bind_view(&a);
    assert_eq!(mid.count("bound"), before.count("bound"), "a RST binds nothing: {mid:?}");
    assert_eq!(mid.count("fallback"), before.count("fallback"), "nor reaches the agent's proxy: {mid:?}");
    // the next connection is bound and served
    in_ns(&topo.client_ns(), || bound_connections(20, 1, &[KIB, 64 * KIB]));
    let after = bind_view(&a);
    println!("after a RST as the first segment: {:?}", after.first_segment);
    assert_eq!(after.count("bound"), before.count("bound") + 1, "{after:?}");
    assert_eq!(a.stats().proxy.requests, 0, "the agent's proxy served nothing");
    a.stop();
}

/// The fixtures copied to a directory of the test's own (the EndpointSlices edited as
/// Kubernetes would when a pod goes); removed on drop.
struct Manifests(std::path::PathBuf);

impl Manifests {
    fn copy(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{tag}-manifests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("manifests dir");
        for e in std::fs::read_dir(ingress_tests::fixtures::openchoreo_dir()).expect("fixtures") {
            let p = e.expect("fixture entry").path();
            if p.is_file() {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).expect("copy a fixture");
            }
        }
        Self(dir)
    }

    /// Removes the endpoint with address `addr` from every EndpointSlice (its
    /// `- addresses: ["ADDR"]` item down to the next item or key at that indent).
    fn remove_endpoint(&self, addr: &str) {
        let item = format!("- addresses: [\"{addr}\"]");
        let mut edited = 0;
        for e in std::fs::read_dir(&self.0).expect("manifests") {
            let p = e.expect("entry").path();
            let text = std::fs::read_to_string(&p).expect("a manifest");
            if !text.contains(&item) {
                continue;
            }
            let mut out = Vec::new();
            let mut skipping = false;
            for line in text.lines() {
                if line == item {
                    skipping = true;
                    edited += 1;
                    continue;
                }
                if skipping && !line.starts_with("  ") {
                    skipping = false;
                }
                if !skipping {
                    out.push(line);
                }
            }
            // written whole then renamed: the agent never reads half a file
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, out.join("\n") + "\n").expect("write");
            std::fs::rename(&tmp, &p).expect("rename");
        }
        assert!(edited > 0, "no EndpointSlice has {addr}");
    }
}

impl Drop for Manifests {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_pod_removed_under_a_bound_connection_gives_the_client_a_rst_within_seconds() {
    let test = "a_pod_removed_under_a_bound_connection_gives_the_client_a_rst_within_seconds";
    if !require(test) {
        return;
    }
    let manifests = Manifests::copy("kbt4");
    let (topo, _peer, a) = bound_topology_with("kbt4", &manifests.0, true, |_| {});
    wait_bound(&a);
    let (mut w, mut r) = in_ns(&topo.client_ns(), connect);
    let pods = exchange(&mut w, &mut r, BOUND_HOST, 1, &[KIB, 64 * KIB]);
    let i = topo.pods.iter().position(|(p, _)| p.name == pods[0]).expect("the pod that answered");
    let pod_ip = topo.pods[i].0.ip.to_string();
    // the pod goes: its veth (and with it its eth0) deleted, its endpoint out of the slice
    let before = bind_view(&a);
    ip(&["-n", &topo.node_ns(), "link", "del", &format!("veth{i}")]);
    manifests.remove_endpoint(&pod_ip);
    // synced without it: pod_bind left the pod's namespace (the view and the sync, which
    // marks the flows, hold the same lock)
    let start = Instant::now();
    let in_view = format!("[{pod_ip}]");
    loop {
        let v = bind_view(&a);
        if v.syncs > before.syncs && !v.attached.iter().any(|l| l.contains(&in_view)) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the agent did not sync the removed endpoint: {v:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // the next request on the bound connection: a RST within seconds, not a hang
    w.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let start = Instant::now();
    let get = Request::get(BOUND_HOST, "/download").header("x-echo-bytes", "100").header("x-echo-pattern", "3");
    let sent = w.write_all(&get.to_bytes());
    let mut buf = [0u8; 512];
    let read = r.read(&mut buf);
    let took = start.elapsed();
    let after = bind_view(&a);
    println!("after the pod went: write {sent:?}, read {read:?} after {took:?}; {:?}", after.first_segment);
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the client got {other:?} after {took:?}, not a RST, for a connection to a removed pod"),
    }
    assert!(took < Duration::from_secs(5), "the RST came after {took:?}");
    assert_eq!(after.count("endpoint_gone"), before.count("endpoint_gone") + 1, "{after:?}");
    // a new connection to the host is bound to the pod that is left
    let left = in_ns(&topo.client_ns(), || keepalive(BOUND_HOST, 5, &[KIB, 64 * KIB]));
    assert!(left.iter().all(|p| p.starts_with(BOUND_POD) && p != &pods[0]), "{left:?} (gone: {})", pods[0]);
    assert_eq!(bind_view(&a).count("bound"), before.count("bound") + 1);
    a.stop();
}

/// Sets the MTU of the client link (both ends).
fn set_client_mtu(topo: &Topology, mtu: u32) {
    let mtu = mtu.to_string();
    ip(&["-n", &topo.client_ns(), "link", "set", "eth0", "mtu", &mtu]);
    ip(&["-n", &topo.vm_ns(), "link", "set", "eth0", "mtu", &mtu]);
}

#[test]
fn client_mtus_1280_1500_9000_over_a_1450_pod_path_send_no_segment_above_the_path_mss() {
    let test = "client_mtus_1280_1500_9000_over_a_1450_pod_path_send_no_segment_above_the_path_mss";
    if !require(test) {
        return;
    }
    let manifests = ingress_tests::fixtures::openchoreo_dir();
    let (topo, _peer, a) = bound_topology_with("kbt5", &manifests, false, |t| t.set_pod_mtu(1450));
    let v = wait_bound(&a);
    assert_eq!(v.path_mss, 1410, "the pod path's MSS: {v:?}");
    for (i, mtu) in [1280u32, 1500, 9000].into_iter().enumerate() {
        set_client_mtu(&topo, mtu);
        let before = bind_view(&a);
        let toward_pods = ImpairedLink::start_plan(&topo.node_ns(), "cni0", Hook::Egress, 2, Plan::Observe);
        let pods = in_ns(&topo.client_ns(), || keepalive(BOUND_HOST, 30 + i as u64, &[KIB, 4 * MIB]));
        let pod_side = toward_pods.stop();
        let after = bind_view(&a);
        println!("client MTU {mtu}: toward the pods {pod_side:?}");
        assert!(pods.iter().all(|p| p == &pods[0] && p.starts_with(BOUND_POD)), "{pods:?}");
        assert_eq!(after.count("bound"), before.count("bound") + 1, "MTU {mtu}: {after:?}");
        let limit = (u64::from(v.path_mss)).min(u64::from(mtu) - 40);
        assert!(
            pod_side.largest_payload <= limit,
            "MTU {mtu}: a {}-byte segment reached a pod",
            pod_side.largest_payload
        );
        // the uploads filled segments (so the bound above was tested)
        assert!(pod_side.largest_payload > limit - 100, "MTU {mtu}: {pod_side:?}");
    }
    a.stop();
}

/// `iptables ARGS` in namespace `ns`.
fn iptables(ns: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w"])
        .args(args)
        .output()
        .expect("running iptables (Debian package iptables)");
    assert!(out.status.success(), "iptables {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets the INVALID drop rule of FORWARD dropped so far.
fn invalid_drops(ns: &str) -> u64 {
    let out = iptables(ns, &["-L", "FORWARD", "-v", "-x", "-n"]);
    out.lines()
        .find(|l| l.contains("ctstate INVALID") && l.contains("DROP"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no INVALID rule in FORWARD:\n{out}"))
}

/// The node's FORWARD chain gets kube-proxy's INVALID drop rule (the node routes eth0 <->
/// cni0, so bound flows cross it) and `nf_conntrack_tcp_loose` is set to `loose`, before
/// the agent starts (it reads the sysctl when it finds the endpoints).
fn node_conntrack(loose: &'static str) -> impl FnOnce(&Topology) {
    move |t| {
        iptables(&t.node_ns(), &["-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
        ingress_tests::netns::sysctl(&t.node_ns(), "net/netfilter/nf_conntrack_tcp_loose", loose);
    }
}

#[test]
fn bound_connections_pass_the_nodes_conntrack_with_loose_pickup_and_an_invalid_drop_rule() {
    let test = "bound_connections_pass_the_nodes_conntrack_with_loose_pickup_and_an_invalid_drop_rule";
    if !require(test) {
        return;
    }
    let dir = ingress_tests::fixtures::openchoreo_dir();
    let (topo, _peer, a) = bound_topology_with("kbt6", &dir, true, node_conntrack("1"));
    wait_bound(&a);
    let node = topo.node_ns();
    let (before, drops) = (bind_view(&a), invalid_drops(&node));
    // the node's conntrack sees each flow first at its first data segment: picked up
    in_ns(&topo.client_ns(), || bound_connections(40, 3, &[KIB, MIB]));
    let after = bind_view(&a);
    println!("loose=1: INVALID drops {}; {:?}", invalid_drops(&node) - drops, after.first_segment);
    assert_eq!(after.count("bound"), before.count("bound") + 3, "{after:?}");
    assert_eq!(invalid_drops(&node), drops, "nothing of the bound flows was INVALID at the node");
    assert_eq!(a.stats().proxy.requests, 0, "the agent's proxy served nothing");
    a.stop();
}

/// With `nf_conntrack_tcp_loose=0` the node's conntrack refuses to pick a flow up from a
/// segment without SYN (INVALID), so a bound flow's first segment and its retransmissions
/// would all be dropped by the INVALID rule: the agent sees the sysctl on the endpoints'
/// next hop and serves those hosts itself (a fallback, decided before the handshake).
#[test]
fn behind_a_strict_conntrack_on_the_node_hosts_are_served_by_the_agent_not_bound() {
    let test = "behind_a_strict_conntrack_on_the_node_hosts_are_served_by_the_agent_not_bound";
    if !require(test) {
        return;
    }
    let dir = ingress_tests::fixtures::openchoreo_dir();
    let (topo, _peer, a) = bound_topology_with("kbt7", &dir, true, node_conntrack("0"));
    let start = Instant::now();
    let v = loop {
        let v = bind_view(&a);
        if v.syncs > 0 && v.attached.len() >= 3 {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the agent did not sync: {v:?}\n{}", a.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v.hosts, 0, "no host bound behind a strict conntrack: {v:?}");
    let (_, routes) = a.admin_get("/routes").expect("/routes");
    assert!(routes.contains("nf_conntrack_tcp_loose=0"), "the decision says why:\n{routes}");
    let node = topo.node_ns();
    let drops = invalid_drops(&node);
    let pods = in_ns(&topo.client_ns(), || keepalive(BOUND_HOST, 50, &[KIB, MIB]));
    assert!(pods.iter().all(|p| p.starts_with(BOUND_POD)), "{pods:?}");
    let after = bind_view(&a);
    println!("loose=0: INVALID drops {}; {:?}", invalid_drops(&node) - drops, after.first_segment);
    assert_eq!(after.count("bound"), 0, "{after:?}");
    // the agent's proxy took the connection (and may join it to the pod's after the
    // first request: the host is splice-safe, so it counts at least that one)
    assert!(a.stats().proxy.requests >= 1, "the agent served the host: {:?}", a.stats().proxy);
    assert_eq!(invalid_drops(&node), drops, "the agent's connections to the pod are tracked from their SYN");

    // the sysctl is watched: loose again, the host is bound; strict again, it is not
    let node_loose = |v: &str| ingress_tests::netns::sysctl(&node, "net/netfilter/nf_conntrack_tcp_loose", v);
    let wait_hosts = |bound: bool| {
        let start = Instant::now();
        loop {
            let v = bind_view(&a);
            if (v.hosts > 0) == bound {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "hosts bound={bound} not seen: {v:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    node_loose("1");
    println!("loose=1 under the agent: bound after {:?}", wait_hosts(true));
    let before = bind_view(&a);
    in_ns(&topo.client_ns(), || bound_connections(51, 2, &[KIB, MIB]));
    assert_eq!(bind_view(&a).count("bound"), before.count("bound") + 2, "bound once loose");
    node_loose("0");
    println!("loose=0 under the agent: unbound after {:?}", wait_hosts(false));
    let before = (bind_view(&a).count("bound"), a.stats().proxy.requests);
    let pods = in_ns(&topo.client_ns(), || keepalive(BOUND_HOST, 52, &[KIB]));
    assert!(pods.iter().all(|p| p.starts_with(BOUND_POD)), "{pods:?}");
    assert_eq!(bind_view(&a).count("bound"), before.0, "not bound once strict again");
    assert!(a.stats().proxy.requests > before.1, "the agent served it");
    a.stop();
}
