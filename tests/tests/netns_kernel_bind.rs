//! Netns tier for delayed binding driven by the agent (`--bind-in-kernel on`, issue 14):
//! the agent on the standard topology (`hkb-*` namespaces, tests/src/topology.rs) with the
//! OpenChoreo fixtures attaches the kernel pieces itself (the cookie behind the XDP guard,
//! `bind_first` on the NIC, `l4_reply` on the k3d bridge, `pod_bind` in each eligible
//! pod's namespace) and fills their maps from the routes. A real client's keep-alive
//! connection to a bindable host is served by the pod through the kernel (downloads and
//! uploads from 1 KiB to 16 MiB, and a gibibyte each way, hashed both ends; the agent's proxy counts no request,
//! `BIND_FIRST_COUNTS` counts it bound), a host that is not eligible is served by the
//! agent as today (counted as a fallback), a mixed keep-alive workload of both, and
//! `ingress detach` and the agent's exit leave none of the programs attached. Every
//! socket has a timeout; traffic stays in the namespaces.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ingress_tests::agent::ingress_bin;
use ingress_tests::backend::Echo;
use ingress_tests::client::{Request, read_response};
use ingress_tests::fixtures::{openchoreo_expectations, openchoreo_pods};
use ingress_tests::kbind::{
    BOUND_HOST, BOUND_POD, IO_LIMIT, KIB, MIB, bind_view, binding_links, bound_topology, client_side_xdp, connect,
    download_streamed, exchange, get, keepalive, require, start_pinned, upload_streamed, wait_bound,
};
use ingress_tests::netns::in_ns;
use ingress_tests::pinned::{PinDir, run_in};
use ingress_tests::topology::{Topology, VM_IP, VM_NIC};

#[test]
fn the_agent_binds_eligible_hosts_to_their_pod_in_the_kernel_and_serves_the_others() {
    let test = "the_agent_binds_eligible_hosts_to_their_pod_in_the_kernel_and_serves_the_others";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("hkb");
    let v = wait_bound(&a);
    println!("kernel binding: {v:?}");
    assert!(v.attached.iter().any(|l| l.starts_with("pod_bind on ")), "{v:?}");
    assert!(v.attached.iter().any(|l| l == "l4_reply on br-k3d"), "{v:?}");
    let ns = topo.client_ns();

    // bound: one keep-alive connection, 1 KiB .. 16 MiB both ways, the proxy sees nothing
    let before = a.stats();
    let pods = in_ns(&ns, || keepalive(BOUND_HOST, 1, &[KIB, 64 * KIB, MIB, 16 * MIB]));
    assert!(pods.iter().all(|p| p == &pods[0]), "one bound connection, one pod: {pods:?}");
    assert!(pods[0].starts_with("react-starter-development"), "{pods:?}");
    let after = a.stats();
    let b = after.bind.clone().unwrap();
    assert_eq!(b.count("bound"), before.bind.as_ref().unwrap().count("bound") + 1, "{b:?}");
    assert_eq!(after.proxy.requests, before.proxy.requests, "the agent's proxy served none of the bound requests");

    // not eligible (several routes by path): served by the agent as today, a fallback
    let other = openchoreo_expectations()
        .into_iter()
        .find(|e| e.host == "development.openchoreovm-apis.localhost" && e.port == 9080 && e.status == 200)
        .expect("a fixture request to the split host");
    let host = format!("{}:9080", other.host);
    let (status, pod) = in_ns(&ns, || get(&host, other.path));
    assert_eq!(status, 200);
    assert!(pod.starts_with(other.pod_prefix.unwrap()), "{pod}");
    let s = a.stats();
    assert_eq!(s.bind.as_ref().unwrap().count("fallback"), b.count("fallback") + 1, "{:?}", s.bind);
    assert_eq!(s.proxy.requests, after.proxy.requests + 1, "the agent served the fallback request");

    // a mixed keep-alive workload: bound and agent connections interleaved, at once
    let before = a.stats();
    let ns2 = ns.clone();
    let threads: Vec<_> = (0..6u64)
        .map(|i| {
            let ns = ns2.clone();
            let host = host.clone();
            let path = other.path.to_string();
            std::thread::spawn(move || {
                in_ns(&ns, || {
                    if i % 2 == 0 {
                        keepalive(BOUND_HOST, 10 + i, &[KIB, 256 * KIB, KIB, 2 * MIB]).len()
                    } else {
                        (0..4).filter(|_| get(&host, &path).0 == 200).count()
                    }
                })
            })
        })
        .collect();
    let served: Vec<usize> = threads.into_iter().map(|t| t.join().expect("a client thread")).collect();
    assert_eq!(served, vec![4; 6], "every request of the mix answered");
    let s = a.stats();
    let (b0, b1) = (before.bind.as_ref().unwrap(), s.bind.as_ref().unwrap());
    assert_eq!(b1.count("bound"), b0.count("bound") + 3, "{b1:?}");
    assert_eq!(b1.count("fallback"), b0.count("fallback") + 12, "{b1:?}");
    assert_eq!(s.proxy.requests, before.proxy.requests + 12, "the proxy served the agent's connections only");

    // the counters in `ingress stats` and /metrics
    let table = a.stats_table();
    assert!(table.contains(&format!("bound {}", b1.count("bound"))), "{table}");
    assert!(
        table.contains("kernel binding: 1 hosts bound") || table.contains("hosts bound; cookie answers"),
        "{table}"
    );
    let (_, metrics) = a.admin_get("/metrics").expect("/metrics");
    let line = format!("ingress_bind_first_segments_total{{outcome=\"bound\"}} {}", b1.count("bound"));
    assert!(metrics.contains(&line), "{line} in /metrics:\n{metrics}");
    println!("{table}");

    a.stop();
    let start = Instant::now();
    while !binding_links().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // its pins were in the bpffs of its own mount namespace (`ip netns exec`), gone with it
    assert_eq!(binding_links(), Vec::<String>::new(), "nothing of the kernel binding is left after the agent");
}

/// The correctness suite, first part: the client link and the pod side impaired
/// (NFQUEUE harness of tests/src/impair.rs, as `impaired.rs` uses it: this kernel has no
/// netem) with each preset (25 % reordered by 2 +- 1 ms, 3 % loss, 1 % duplicates, all
/// three), both directions. Lost, reordered or duplicated SYNs, SYN-ACKs, pure ACKs and
/// first segments happen along the way: every bound connection still carries its bytes
/// exactly (downloads and uploads hashed) to one pod, and the agent's connections too.
#[test]
fn bound_connections_stay_byte_exact_under_loss_reordering_and_duplication() {
    use ingress_tests::impair::{ImpairedLink, Impairment};
    let test = "bound_connections_stay_byte_exact_under_loss_reordering_and_duplication";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("hkb2");
    wait_bound(&a);
    let other = openchoreo_expectations()
        .into_iter()
        .find(|e| e.host == "development.openchoreovm-apis.localhost" && e.port == 9080 && e.status == 200)
        .expect("a fixture request to the split host");
    let host = format!("{}:9080", other.host);
    let ns = topo.client_ns();
    for (i, (name, imp)) in Impairment::presets(41).into_iter().enumerate() {
        let before = bind_view(&a);
        let up = ImpairedLink::start(&topo.client_ns(), "eth0", 1, imp);
        let down = ImpairedLink::start(&topo.node_ns(), "eth0", 2, Impairment { seed: imp.seed + 1, ..imp });
        let pods = in_ns(&ns, || {
            let mut pods = keepalive(BOUND_HOST, 100 + i as u64, &[KIB, MIB, 4 * MIB]);
            for c in 0..8 {
                pods.extend(keepalive(BOUND_HOST, 200 + 10 * i as u64 + c, &[KIB]));
            }
            pods
        });
        let agent_served = in_ns(&ns, || (0..4).filter(|_| get(&host, other.path).0 == 200).count());
        let (up, down) = (up.stop(), down.stop());
        println!("{name}: client link {up:?}, pod side {down:?}");
        assert!(pods.iter().all(|p| p.starts_with("react-starter-development")), "{name}: {pods:?}");
        assert_eq!(agent_served, 4, "{name}: the agent's connections");
        let after = bind_view(&a);
        assert_eq!(after.count("bound"), before.count("bound") + 9, "{name}: {after:?}");
        assert!(up.seen > 0 && down.seen > 0, "{name}: the links saw the traffic");
    }
    println!("first segments: {:?}", bind_view(&a).first_segment);
    a.stop();
}

/// Agent restart with bound connections open (item 4), on pinned state: a keep-alive
/// connection bound before the agent is killed carries byte-exact transfers while no agent
/// runs and after the next one adopted the pins; a connection whose handshake the killed
/// agent's cookie answered (connected, no byte sent yet) is bound by the next agent with
/// the keys it kept. Then `ingress detach --pin-path` removes every binding link by its
/// pin, while the agent still runs.
#[test]
fn bound_connections_keep_working_across_an_agent_restart_and_detach_removes_every_pin() {
    let test = "bound_connections_keep_working_across_an_agent_restart_and_detach_removes_every_pin";
    if !require(test) {
        return;
    }
    let topo = Topology::create("hkb3", &openchoreo_pods());
    ingress_tests::netns::sysctl(&topo.vm_ns(), "net/ipv4/ip_forward", "1");
    let _peer = client_side_xdp(&topo.client_ns());
    let pins = PinDir::new("hkb3");
    let mut first = start_pinned(&topo, &pins);
    wait_bound(&first);
    let names = pins.names();
    for want in ["link@tcx-bind_first@eth0", "link@tcx-bind_reply@br-k3d", "SYNCOOKIE_CONFIG", "L4_CT"] {
        assert!(names.iter().any(|n| n == want), "{want} pinned: {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("link@tcx-pod_bind@netns-")), "{names:?}");

    let ns = topo.client_ns();
    let (mut w, mut r) = in_ns(&ns, connect);
    let pods = exchange(&mut w, &mut r, BOUND_HOST, 1, &[KIB, MIB]);
    assert_eq!(bind_view(&first).count("bound"), 1, "{:?}", bind_view(&first));
    // connected through the cookie, not a byte sent: the pure ACK went nowhere
    let (mut w2, mut r2) = in_ns(&ns, connect);
    first.kill();
    // no agent: the pinned links and L4_CT carry the bound connection
    let down = exchange(&mut w, &mut r, BOUND_HOST, 2, &[KIB, 4 * MIB]);
    let second = start_pinned(&topo, &pins);
    let v = wait_bound(&second);
    let log = second.log_text();
    assert!(log.contains("no gap"), "bind_first adopted its pinned link: {log}");
    assert!(log.contains("kept_keys=true"), "the cookie keys were kept: {log}");
    let after = exchange(&mut w, &mut r, BOUND_HOST, 3, &[KIB, MIB]);
    let handshaken = exchange(&mut w2, &mut r2, BOUND_HOST, 4, &[64 * KIB]);
    let fresh = in_ns(&ns, || keepalive(BOUND_HOST, 5, &[KIB]));
    let all: Vec<&String> = pods.iter().chain(&down).chain(&after).collect();
    assert!(all.iter().all(|p| *p == &pods[0]), "one connection, one pod throughout: {all:?}");
    assert!(handshaken[0].starts_with("react-starter-development"), "{handshaken:?}");
    assert!(fresh[0].starts_with("react-starter-development"), "{fresh:?}");
    let b = bind_view(&second);
    assert_eq!(b.count("bound"), 2, "the handshaken and the fresh connection bound by the second agent: {b:?}");
    assert_eq!(second.stats().proxy.requests, 0, "the agent's proxy served none of it");
    println!("after the restart: {v:?}");
    drop((w, r, w2, r2));

    // detach by the pins, while the agent runs: nothing of binding stays attached
    let ran = run_in(
        &topo.vm_ns(),
        &ingress_bin(),
        &["detach", "--pin-path", &pins.arg(), "--interface", VM_NIC],
        Duration::from_secs(20),
    );
    assert_eq!(ran.code, Some(0), "detach: {}{}", ran.stdout, ran.stderr);
    for want in ["tcx-bind_first link on eth0", "tcx-bind_reply link on br-k3d", "tcx-pod_bind link on netns-"] {
        assert!(ran.stdout.contains(want), "{want}: {}", ran.stdout);
    }
    assert!(pins.names().is_empty(), "no pin left: {:?}", pins.names());
    assert_eq!(binding_links(), Vec::<String>::new(), "detach left binding links: {}", ran.stdout);
    second.stop();
}

/// A client reusing its source port right after a bound connection ended: the edge
/// answered the new SYN in XDP, so `bind_first` first sees the new connection at its ACK
/// while the old flow's conntrack entry (closed by a RST here) still holds the tuple.
/// The new connection's cookie ACK must bind afresh, not follow the old entry to the pod
/// without the pod side's admission (which the pod answered with a RST).
#[test]
fn a_new_connection_on_the_tuple_of_a_closed_bound_flow_is_bound_afresh() {
    use socket2::Socket;
    let test = "a_new_connection_on_the_tuple_of_a_closed_bound_flow_is_bound_afresh";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("hkb4");
    wait_bound(&a);
    let before = bind_view(&a);
    let pods: Vec<String> = in_ns(&topo.client_ns(), || {
        (0..3)
            .map(|i| {
                let s = from_port(40123, IO_LIMIT, i);
                let mut w = s.try_clone().unwrap();
                w.write_all(&Request::get(BOUND_HOST, "/").to_bytes()).unwrap();
                let resp = read_response(&mut BufReader::new(s.try_clone().unwrap()), false)
                    .unwrap_or_else(|e| panic!("connection {i} from the same port: {e}; {:?}", bind_view(&a)));
                assert_eq!(resp.status, 200, "connection {i}");
                // close with a RST: no TIME_WAIT on either side, the tuple is free at once
                Socket::from(s).set_linger(Some(Duration::ZERO)).unwrap();
                resp.json::<Echo>().pod
            })
            .collect()
    });
    assert!(pods.iter().all(|p| p.starts_with("react-starter-development")), "{pods:?}");
    let after = bind_view(&a);
    assert_eq!(after.count("bound"), before.count("bound") + 3, "each connection bound: {after:?}");
    assert_eq!(a.stats().proxy.requests, 0, "the agent's proxy served none of them");
    a.stop();
}

/// A tuple the pod still holds in TIME_WAIT: the pod closes first (`Connection: close`),
/// the client reuses its source port at once. The pod never sees the new connection's
/// SYN (the edge answered it), so a bound first segment would meet the TIME_WAIT socket
/// and hang; `bind_first` hands a new connection on the tuple of a flow that closed with a
/// FIN to the agent instead, and marks the entry `CT_AGENT` so its later segments reach
/// the agent's socket. The third reuses the tuple of the agent's connection, which the VM
/// holds in TIME_WAIT: `syncookie_xdp` passes such a SYN to the stack (only it can recycle
/// the TIME_WAIT). Each connection is answered in time; the first is bound, the reused
/// ones served by the agent.
#[test]
fn a_reused_tuple_the_pod_holds_in_time_wait_is_served_by_the_agent_not_hung() {
    let test = "a_reused_tuple_the_pod_holds_in_time_wait_is_served_by_the_agent_not_hung";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("hkb5");
    wait_bound(&a);
    let before = bind_view(&a);
    let pods = in_ns(&topo.client_ns(), || closes_from_one_port(&a, BOUND_HOST, "/", 40127, 3));
    assert!(pods.iter().all(|p| p.starts_with("react-starter-development")), "{pods:?}");
    let after = bind_view(&a);
    assert_eq!(after.count("bound"), before.count("bound") + 1, "only the first bound: {after:?}");
    // the second: its cookie ACK handed to the agent (the edge's entry says FIN-closed);
    // the third: its SYN passed to the stack when the agent's socket from the second is
    // in TIME_WAIT on the VM (no first-segment outcome then), else its cookie ACK handed
    // to the agent like the second (the entry is CT_AGENT): who closed first decides
    let fallbacks = after.count("fallback") - before.count("fallback");
    assert!((1..=2).contains(&fallbacks), "the reused ones to the agent, not bound: {after:?}");
    assert_eq!(a.stats().proxy.requests, 2, "the agent's proxy served the reused tuples");
    a.stop();
}

/// `n` connections one after another from the client's source port `port`, each with one
/// `Connection: close` request to `host` answered within 5 s; the pods that answered.
fn closes_from_one_port(a: &ingress_tests::agent::Agent, host: &str, path: &str, port: u16, n: usize) -> Vec<String> {
    let limit = Duration::from_secs(5);
    (0..n)
        .map(|i| {
            let s = from_port(port, limit, i);
            let mut w = s.try_clone().unwrap();
            w.write_all(&Request::get(host, path).header("connection", "close").to_bytes()).unwrap();
            let start = Instant::now();
            let resp = read_response(&mut BufReader::new(s.try_clone().unwrap()), false).unwrap_or_else(|e| {
                panic!("connection {i} from the same port, after {:?}: {e}; {:?}", start.elapsed(), bind_view(a))
            });
            assert_eq!(resp.status, 200, "connection {i}");
            // the other side closed first; our close completes it (it keeps TIME_WAIT)
            drop((w, s));
            std::thread::sleep(Duration::from_millis(100));
            resp.json::<Echo>().pod
        })
        .collect()
}

/// The same for a host the agent serves (not eligible): the agent closes first, so the
/// VM holds the tuple in TIME_WAIT and `syncookie_xdp` passes each reused SYN to the
/// stack, which answers the handshake itself. The ACK of that handshake has no cookie and
/// no bound flow, and it must reach the stack's request socket (`bpf_sk_lookup_tcp`
/// names the listener for one: it was dropped as if early, and the connection hung).
#[test]
fn a_reused_port_to_a_host_the_agent_serves_completes_the_stacks_own_handshake() {
    let test = "a_reused_port_to_a_host_the_agent_serves_completes_the_stacks_own_handshake";
    if !require(test) {
        return;
    }
    let (topo, _peer, a) = bound_topology("hkb6");
    wait_bound(&a);
    let other = openchoreo_expectations()
        .into_iter()
        .find(|e| e.host == "development.openchoreovm-apis.localhost" && e.port == 9080 && e.status == 200)
        .expect("a fixture request to the split host");
    let host = format!("{}:9080", other.host);
    let before = bind_view(&a);
    let pods = in_ns(&topo.client_ns(), || closes_from_one_port(&a, &host, other.path, 40131, 3));
    assert!(pods.iter().all(|p| p.starts_with(other.pod_prefix.unwrap())), "{pods:?}");
    let after = bind_view(&a);
    assert_eq!(after.count("early_dropped"), before.count("early_dropped"), "no handshake ACK dropped: {after:?}");
    assert_eq!(after.count("bound"), before.count("bound"), "{after:?}");
    assert_eq!(a.stats().proxy.requests, 3, "the agent served all three");
    a.stop();
}

/// Connection number `i` from the client's fixed source port `port` (SO_REUSEADDR) to the
/// VM's 9080, with `limit` for the connect and each read.
fn from_port(port: u16, limit: Duration, i: usize) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let from: std::net::SocketAddr = format!("{}:{port}", ingress_tests::topology::CLIENT_IP).parse().unwrap();
    let to: std::net::SocketAddr = format!("{VM_IP}:9080").parse().unwrap();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&from.into()).unwrap();
    s.connect_timeout(&to.into(), limit).unwrap_or_else(|e| panic!("connection {i}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(limit)).unwrap();
    s
}

/// The upper size: one bound keep-alive connection carries a gibibyte down and a
/// gibibyte up, compared with the pattern as it arrives (download) and hashed at both
/// ends (upload), with small requests before and after on the same connection (its
/// framing still in step), all through the kernel: the proxy serves none of it.
#[test]
fn a_bound_keepalive_connection_carries_a_gibibyte_each_way_byte_exact() {
    let test = "a_bound_keepalive_connection_carries_a_gibibyte_each_way_byte_exact";
    if !require(test) {
        return;
    }
    const GIB: u64 = 1 << 30;
    let (topo, _peer, a) = bound_topology("hkg");
    wait_bound(&a);
    let before = a.stats();
    let start = Instant::now();
    let pods = in_ns(&topo.client_ns(), || {
        let (mut w, mut r) = connect();
        let mut pods = exchange(&mut w, &mut r, BOUND_HOST, 40, &[KIB]);
        download_streamed(&mut w, &mut r, BOUND_HOST, 41, GIB);
        pods.push(upload_streamed(&mut w, &mut r, BOUND_HOST, 42, GIB));
        pods.extend(exchange(&mut w, &mut r, BOUND_HOST, 43, &[KIB, 64 * KIB]));
        pods
    });
    println!("2 GiB on one bound connection in {:?}", start.elapsed());
    assert!(pods.iter().all(|p| p == &pods[0] && p.starts_with(BOUND_POD)), "one bound pod: {pods:?}");
    let after = a.stats();
    let (b0, b1) = (before.bind.as_ref().unwrap(), after.bind.as_ref().unwrap());
    assert_eq!(b1.count("bound"), b0.count("bound") + 1, "{b1:?}");
    assert_eq!(after.proxy.requests, before.proxy.requests, "the proxy served none of it");
    a.stop();
}
