//! Network-namespace tier, the XDP guard (root): the k3d-shaped topology with a second
//! client address, the agent in the vm namespace with XDP on its NIC and guard flags.
//! A bounded SYN flood from one source is rate-limited while a second source's
//! connections all succeed; a denied source is refused while others pass.

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::Echo;
use ingress_tests::client::{Request, Response, read_response};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::in_ns;
use ingress_tests::packet::{Packet, SYN};
use ingress_tests::topology::{CLIENT_IP, Topology, VM_IP, VM_NIC};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The second source in the client namespace.
const OTHER_IP: &str = "198.18.0.3";
const API_HOST: &str = "api.openchoreovm.localhost:8080";

/// One GET to the VM's `port` from source address `src` of the client namespace.
fn get_from(topo: &Topology, src: &str, port: u16, timeout: Duration) -> std::io::Result<Response> {
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    let dst: SocketAddr = format!("{VM_IP}:{port}").parse().unwrap();
    let req = Request::get(API_HOST, "/");
    in_ns(&topo.client_ns(), move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.bind(&src.into())?;
        s.connect_timeout(&dst.into(), timeout)?;
        let mut s: std::net::TcpStream = s.into();
        s.set_read_timeout(Some(timeout))?;
        s.write_all(&req.to_bytes())?;
        read_response(&mut BufReader::new(s), false)
    })
}

fn guard_drops(agent: &Agent, port: u16, reason: &str) -> u64 {
    agent.stats().guard.iter().filter(|c| c.port == port && c.reason == reason).map(|c| c.packets).sum()
}

/// Sends `count` TCP SYNs from `src` (distinct source ports) to the VM's `port` through
/// a raw socket in the client namespace, paced in bursts of 100 (the veth's ring holds
/// 256), within `limit`. Returns how many were sent.
fn syn_flood(topo: &Topology, src: &str, port: u16, count: u32, limit: Duration) -> u32 {
    let src = src.to_string();
    in_ns(&topo.client_ns(), move || {
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).expect("raw socket");
        let dst: SockAddr = format!("{VM_IP}:0").parse::<SocketAddr>().unwrap().into();
        let started = Instant::now();
        let mut sent = 0;
        while sent < count && started.elapsed() < limit {
            let sport = 10000 + (sent % 50000) as u16;
            // the IP packet without its Ethernet header (IP_HDRINCL is implied by IPPROTO_RAW)
            let frame = Packet::tcp(&src, sport, VM_IP, port, SYN).build();
            raw.send_to(&frame[14..], &dst).expect("send SYN");
            sent += 1;
            if sent % 100 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        sent
    })
}

#[test]
fn a_syn_flood_from_one_source_is_rate_limited_while_another_source_connects() {
    let test = "a_syn_flood_from_one_source_is_rate_limited_while_another_source_connects";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("grd-syn", &openchoreo_pods());
    topo.add_client_address(OTHER_IP);
    let agent = Agent::start(
        &ingress_bin(),
        &topo.vm_ns(),
        &openchoreo_dir(),
        &openchoreo_listens(VM_IP),
        &["--interface", VM_NIC, "--syn-rate", "100", "--syn-burst", "200"],
    );
    // both sources reach the API pod before (and the flood's first SYNs find the VM's
    // address resolved, not queued behind ARP)
    for src in [CLIENT_IP, OTHER_IP] {
        let r = get_from(&topo, src, 8080, Duration::from_secs(5)).expect("before the flood");
        assert_eq!(r.status, 200, "{src} before the flood");
    }
    const FLOOD: u32 = 20_000;
    let (sent, answers) = std::thread::scope(|s| {
        let flood = s.spawn(|| syn_flood(&topo, CLIENT_IP, 8080, FLOOD, Duration::from_secs(20)));
        // meanwhile the other source's connections, one after another
        let mut answers = vec![];
        while !flood.is_finished() || answers.len() < 20 {
            answers.push(get_from(&topo, OTHER_IP, 8080, Duration::from_secs(5)));
            // well within the other source's own bucket (200, +100/s)
            if answers.len() >= 100 {
                break;
            }
        }
        (flood.join().expect("flood thread"), answers)
    });
    assert_eq!(sent, FLOOD, "the flood was sent in time");
    for (i, a) in answers.iter().enumerate() {
        let r = a.as_ref().unwrap_or_else(|e| panic!("connection {i} of the other source failed: {e}"));
        assert_eq!(r.status, 200, "connection {i}: {}", String::from_utf8_lossy(&r.body));
        let echo: Echo = r.json();
        assert!(echo.pod.starts_with("openchoreo-api-"), "answered by {}", echo.pod);
    }
    // at most the burst and the refill of the flood's few seconds passed
    let dropped = guard_drops(&agent, 8080, "syn-rate");
    assert!(
        dropped >= 18_000 && dropped <= FLOOD as u64,
        "{dropped} of {FLOOD} flood SYNs dropped: {:?}",
        agent.stats().guard
    );
    let (_, metrics) = agent.admin_get("/metrics").expect("/metrics");
    let line = r#"ingress_guard_drops_total{port="8080",reason="syn-rate"} "#;
    let in_metrics: Option<u64> =
        metrics.lines().find_map(|l| l.strip_prefix(line)).and_then(|v| v.trim().parse().ok());
    assert_eq!(in_metrics, Some(dropped), "/metrics:\n{metrics}");
    let table = agent.stats_table();
    assert!(table.contains("guard:") && table.contains("syn-rate"), "{table}");
    println!(
        "{} connections of {OTHER_IP} during the flood; {dropped} SYNs of {CLIENT_IP} dropped\n{table}",
        answers.len()
    );
    let log = agent.stop();
    assert!(log.contains("XDP guard: 0 deny and 0 allow rules"), "{log}");
}

#[test]
fn a_denied_source_is_refused_while_others_pass() {
    let test = "a_denied_source_is_refused_while_others_pass";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("grd-deny", &openchoreo_pods());
    topo.add_client_address(OTHER_IP);
    let agent = Agent::start(
        &ingress_bin(),
        &topo.vm_ns(),
        &openchoreo_dir(),
        &openchoreo_listens(VM_IP),
        &["--interface", VM_NIC, "--deny", &format!("8080={OTHER_IP}/32"), "--allow", "9080=198.18.0.0/30"],
    );
    for _ in 0..5 {
        let r = get_from(&topo, CLIENT_IP, 8080, Duration::from_secs(5)).expect("allowed source on 8080");
        assert_eq!(r.status, 200);
    }
    // its SYNs are dropped in XDP: no answer at all, the connect times out
    let refused = get_from(&topo, OTHER_IP, 8080, Duration::from_millis(1500));
    assert!(refused.is_err(), "the denied source got an answer: {:?}", refused.map(|r| r.status));
    assert!(guard_drops(&agent, 8080, "denied") >= 1, "{:?}", agent.stats().guard);
    // 9080 admits 198.18.0.0/30, which holds both sources; 198.18.0.1 is not denied there
    for src in [CLIENT_IP, OTHER_IP] {
        let r = get_from(&topo, src, 9080, Duration::from_secs(5));
        assert!(r.is_ok(), "{src} on 9080: {:?}", r.err());
    }
    assert_eq!(guard_drops(&agent, 9080, "not-allowed"), 0);
    agent.stop();

    // the guard needs the eBPF dataplane: a clear error, no silent ignoring
    let out = std::process::Command::new(ingress_bin())
        .args(["run", "--manifests"])
        .arg(openchoreo_dir())
        .args(["--listen", "127.0.0.1:1=openchoreo-control-plane/gateway-default:80"])
        .args(["--dataplane", "userspace", "--deny", "8080=10.0.0.0/8"])
        .output()
        .expect("run the agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("need the ebpf dataplane"), "{err}");
    let out = std::process::Command::new(ingress_bin())
        .args(["run", "--listen", "127.0.0.1:1=a/b", "--deny", "8080=10.0.0.0/33"])
        .output()
        .expect("run the agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--deny") && err.contains("8080=10.0.0.0/33") && err.contains("/33"), "{err}");
}
