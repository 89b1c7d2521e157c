//! Packet tier: the XDP program on built packets through BPF_PROG_TEST_RUN (root, no
//! interfaces). Each case checks the verdict and the (port, protocol, verdict) counter.

use ingress::datapath as ebpf;
use ingress::telemetry::XdpCounter;
use ingress_tests::packet::{ACK, PSH, Packet, SYN, arp_request, test_run};

const XDP_PASS: u32 = 2;

fn counters(d: &ebpf::Dataplane) -> Vec<XdpCounter> {
    d.stats.read().expect("read XDP_STATS")
}

fn counter(d: &ebpf::Dataplane, port: u16, proto: &str) -> Option<(u64, u64)> {
    counters(d)
        .into_iter()
        .find(|c| c.port == port && c.proto == proto && c.verdict == "pass")
        .map(|c| (c.packets, c.bytes))
}

/// Loads a fresh copy of the program (fresh maps), or None with a printed skip.
fn load(test: &str) -> Option<ebpf::Dataplane> {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return None;
    }
    Some(ebpf::load().unwrap_or_else(|e| panic!("{test}: {e}")))
}

fn run(d: &ebpf::Dataplane, pkt: &[u8], repeat: u32) -> u32 {
    let fd = d.xdp_program_fd().expect("program fd");
    let r = test_run(fd, pkt, repeat).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.data_out, pkt, "XDP must not modify the packet");
    r.retval
}

#[test]
fn tcp_syn_to_8080_passes_and_is_counted() {
    let Some(d) = load("tcp_syn_to_8080_passes_and_is_counted") else {
        return;
    };
    let pkt = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, SYN).build();
    assert_eq!(run(&d, &pkt, 1), XDP_PASS);
    assert_eq!(counter(&d, 8080, "tcp"), Some((1, pkt.len() as u64)));
    let data =
        Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, ACK | PSH).payload(b"GET / HTTP/1.1\r\n\r\n").build();
    assert_eq!(run(&d, &data, 10), XDP_PASS);
    assert_eq!(counter(&d, 8080, "tcp"), Some((11, pkt.len() as u64 + 10 * data.len() as u64)));
    assert_eq!(counter(&d, 9080, "tcp"), None, "no other port counted");
}

#[test]
fn udp_ipv6_and_vlan_are_counted_by_port() {
    let Some(d) = load("udp_ipv6_and_vlan_are_counted_by_port") else {
        return;
    };
    let udp = Packet::udp("198.18.0.1", 5353, "198.18.0.2", 53, b"query").build();
    let v6 = Packet::tcp("fd00::1", 40000, "fd00::2", 9080, SYN).build();
    let vlan = Packet::tcp("198.18.0.1", 40001, "198.18.0.2", 8080, SYN).vlan(7).build();
    for p in [&udp, &v6, &vlan] {
        assert_eq!(run(&d, p, 1), XDP_PASS);
    }
    assert_eq!(counter(&d, 53, "udp"), Some((1, udp.len() as u64)));
    assert_eq!(counter(&d, 9080, "tcp"), Some((1, v6.len() as u64)));
    assert_eq!(counter(&d, 8080, "tcp"), Some((1, vlan.len() as u64)));
}

#[test]
fn non_ip_truncated_and_fragments_pass_without_a_port() {
    let Some(d) = load("non_ip_truncated_and_fragments_pass_without_a_port") else {
        return;
    };
    let arp = arp_request([198, 18, 0, 1], [198, 18, 0, 2]);
    assert_eq!(run(&d, &arp, 1), XDP_PASS);
    assert_eq!(counter(&d, 0, "non-ip"), Some((1, arp.len() as u64)));
    // an IPv4 TCP packet cut inside the TCP header: not understood, still passed
    let full = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, SYN).build();
    let cut = &full[..14 + 20 + 2];
    assert_eq!(run(&d, cut, 1), XDP_PASS);
    assert_eq!(counter(&d, 0, "non-ip"), Some((2, (arp.len() + cut.len()) as u64)));
    // a non-first fragment carries no ports
    let frag = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, ACK).fragment(100).build();
    assert_eq!(run(&d, &frag, 1), XDP_PASS);
    assert_eq!(counter(&d, 0, "tcp"), Some((1, frag.len() as u64)));
    assert_eq!(counter(&d, 8080, "tcp"), None);
}
