//! Packet tier, the XDP guard: built packets through BPF_PROG_TEST_RUN (root, no
//! interfaces) with the guard's maps programmed as the agent does it (the pure
//! translation, then `GuardMaps::program`). Every PASS must leave the packet as it
//! was; drops are counted per (port, reason); what the parser cannot check passes and
//! is counted.

use std::collections::BTreeSet;
use std::time::Duration;

use ingress::datapath::guard::{GuardRules, translate};
use ingress::datapath::{self as ebpf};
use ingress::telemetry::{GuardCounter, XdpCounter};
use ingress_tests::packet::{ACK, ExtHeader, PSH, Packet, SYN, arp_request, test_run};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn cidrs(list: &[&str]) -> Vec<ingress::config::PortCidr> {
    list.iter().map(|s| s.parse().expect("PORT=CIDR")).collect()
}

/// A fresh copy of the program with the guard programmed, or None with a printed skip.
fn load(test: &str, rules: GuardRules, syn_ports: &[u16]) -> Option<ebpf::Dataplane> {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return None;
    }
    let mut d = ebpf::load().unwrap_or_else(|e| panic!("{test}: {e}"));
    let ports: BTreeSet<u16> = syn_ports.iter().copied().collect();
    let entries = translate(&rules, &ports).expect("translate");
    d.guard.program(&entries).expect("program the guard");
    Some(d)
}

/// Runs `pkt` `repeat` times; a PASS must leave it unmodified.
fn run_n(d: &ebpf::Dataplane, pkt: &[u8], repeat: u32) -> u32 {
    let fd = d.xdp_program_fd().expect("program fd");
    let r = test_run(fd, pkt, repeat).expect("BPF_PROG_TEST_RUN");
    assert!(r.retval == XDP_PASS || r.retval == XDP_DROP, "verdict {} outside {{PASS, DROP}}", r.retval);
    if r.retval == XDP_PASS {
        assert_eq!(r.data_out, pkt, "a passed packet leaves XDP untouched");
    }
    r.retval
}

fn run(d: &ebpf::Dataplane, pkt: &[u8]) -> u32 {
    run_n(d, pkt, 1)
}

fn guard(d: &ebpf::Dataplane) -> Vec<GuardCounter> {
    d.guard.read().expect("read GUARD_COUNTERS")
}

fn guard_count(d: &ebpf::Dataplane, port: u16, reason: &str) -> u64 {
    guard(d).iter().filter(|c| c.port == port && c.reason == reason).map(|c| c.packets).sum()
}

fn xdp(d: &ebpf::Dataplane) -> Vec<XdpCounter> {
    d.stats.read().expect("read XDP_STATS")
}

fn verdicts(d: &ebpf::Dataplane, port: u16, proto: &str, verdict: &str) -> u64 {
    xdp(d).iter().filter(|c| c.port == port && c.proto == proto && c.verdict == verdict).map(|c| c.packets).sum()
}

#[test]
fn allowed_packets_pass_untouched_on_guarded_and_other_ports() {
    let rules = GuardRules {
        deny: cidrs(&["8080=10.9.0.0/16", "8080=2001:db8:bad::/48"]),
        allow: cidrs(&["9080=198.18.0.0/24", "9080=fd00::/8"]),
        syn_rate: 100,
        syn_burst: 200,
    };
    let Some(d) = load("allowed_packets_pass_untouched_on_guarded_and_other_ports", rules, &[8080, 9080]) else {
        return;
    };
    let pkts = [
        Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, SYN).build(),
        Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, ACK | PSH).payload(b"GET / HTTP/1.1\r\n\r\n").build(),
        Packet::tcp("198.18.0.1", 40001, "198.18.0.2", 9080, SYN).build(),
        Packet::udp("198.18.0.1", 5353, "198.18.0.2", 9080, b"allowed udp").build(),
        Packet::tcp("fd00::1", 40000, "fd00::2", 9080, SYN).build(),
        Packet::tcp("2001:db8:600d::1", 40000, "fd00::2", 8080, SYN).build(),
        // the denied network, to a port it is not denied on
        Packet::tcp("10.9.1.1", 40000, "198.18.0.2", 22, SYN).build(),
        Packet::tcp("198.18.0.1", 40002, "198.18.0.2", 8080, SYN).vlan(7).build(),
        Packet::tcp("198.18.0.1", 40003, "198.18.0.2", 8080, SYN).qinq(100, 7).build(),
        Packet::tcp("198.18.0.1", 40004, "198.18.0.2", 8080, SYN).ip_options(&[1, 1, 1, 1, 1, 1, 1, 0]).build(),
        Packet::tcp("fd00::1", 40001, "fd00::2", 9080, SYN)
            .ext(ExtHeader::HopByHop { units: 0 })
            .ext(ExtHeader::DestOpts { units: 3 })
            .build(),
        arp_request([198, 18, 0, 1], [198, 18, 0, 2]),
    ];
    for (i, p) in pkts.iter().enumerate() {
        assert_eq!(run(&d, p), XDP_PASS, "packet {i}");
    }
    assert!(guard(&d).iter().all(|c| c.verdict != "drop"), "nothing dropped: {:?}", guard(&d));
    assert_eq!(xdp(&d).iter().map(|c| c.packets).sum::<u64>(), pkts.len() as u64);
    assert_eq!(verdicts(&d, 8080, "tcp", "pass"), 6);
}

#[test]
fn sources_denied_by_cidr_are_dropped_v4_and_v6_and_deny_wins_over_allow() {
    let rules = GuardRules {
        deny: cidrs(&["8080=203.0.113.0/24", "8080=2001:db8::/32"]),
        allow: cidrs(&["8080=203.0.0.0/8", "8080=2001:db8::/16"]),
        ..Default::default()
    };
    let Some(d) = load("sources_denied_by_cidr_are_dropped_v4_and_v6_and_deny_wins_over_allow", rules, &[]) else {
        return;
    };
    let denied = [
        Packet::tcp("203.0.113.7", 40000, "198.18.0.2", 8080, SYN).build(),
        Packet::tcp("203.0.113.255", 40000, "198.18.0.2", 8080, ACK).build(),
        Packet::udp("203.0.113.1", 53, "198.18.0.2", 8080, b"udp too").build(),
        Packet::tcp("2001:db8::1", 40000, "fd00::2", 8080, SYN).build(),
        Packet::udp("2001:db8:ffff::1", 40000, "fd00::2", 8080, b"v6 udp").build(),
        // eight extension headers (the bound) are skipped: the TCP port is still found
        (0..8)
            .fold(Packet::tcp("2001:db8::9", 40000, "fd00::2", 8080, SYN), |p, _| {
                p.ext(ExtHeader::DestOpts { units: 0 })
            })
            .build(),
        // an IPv4 first fragment carries the ports and is checked
        Packet::tcp("203.0.113.8", 40000, "198.18.0.2", 8080, SYN).more_fragments().build(),
        // an IPv6 atomic fragment (offset 0) likewise
        Packet::tcp("2001:db8::2", 40000, "fd00::2", 8080, SYN)
            .ext(ExtHeader::Fragment { offset: 0, more: true })
            .build(),
    ];
    for (i, p) in denied.iter().enumerate() {
        assert_eq!(run(&d, p), XDP_DROP, "denied packet {i}");
    }
    assert_eq!(guard_count(&d, 8080, "denied"), denied.len() as u64);
    let passed = [
        // in the allow list, outside the deny list
        Packet::tcp("203.0.114.1", 40000, "198.18.0.2", 8080, SYN).build(),
        Packet::tcp("2001:db9::1", 40000, "fd00::2", 8080, SYN).build(),
        // a denied source to another port
        Packet::tcp("203.0.113.7", 40000, "198.18.0.2", 9080, SYN).build(),
        Packet::tcp("2001:db8::1", 40000, "fd00::2", 443, SYN).build(),
    ];
    for (i, p) in passed.iter().enumerate() {
        assert_eq!(run(&d, p), XDP_PASS, "passed packet {i}");
    }
    assert_eq!(guard_count(&d, 8080, "denied"), denied.len() as u64, "passes are not counted as drops");
    assert_eq!(verdicts(&d, 8080, "tcp", "drop"), 6);
    assert_eq!(verdicts(&d, 8080, "udp", "drop"), 2);
}

#[test]
fn a_port_with_an_allow_list_admits_only_its_cidrs() {
    let rules = GuardRules { allow: cidrs(&["6550=172.18.0.0/16", "6550=198.18.0.1"]), ..Default::default() };
    let Some(d) = load("a_port_with_an_allow_list_admits_only_its_cidrs", rules, &[]) else {
        return;
    };
    for p in [
        Packet::tcp("172.18.3.4", 40000, "198.18.0.2", 6550, SYN).build(),
        Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 6550, SYN).build(),
        Packet::tcp("10.0.0.1", 40000, "198.18.0.2", 6551, SYN).build(),
    ] {
        assert_eq!(run(&d, &p), XDP_PASS);
    }
    for p in [
        Packet::tcp("198.18.0.3", 40000, "198.18.0.2", 6550, SYN).build(),
        Packet::tcp("172.19.0.1", 40000, "198.18.0.2", 6550, ACK).build(),
        Packet::udp("10.0.0.1", 40000, "198.18.0.2", 6550, b"x").build(),
        // an IPv4-only allow list admits no IPv6 source
        Packet::tcp("fd00::1", 40000, "fd00::2", 6550, SYN).build(),
    ] {
        assert_eq!(run(&d, &p), XDP_DROP);
    }
    assert_eq!(guard_count(&d, 6550, "not-allowed"), 4);
    assert_eq!(guard_count(&d, 6550, "denied"), 0);
}

#[test]
fn syns_over_the_rate_are_dropped_burst_then_refill_and_established_traffic_is_not() {
    let rules = GuardRules { syn_rate: 10, syn_burst: 5, ..Default::default() };
    let Some(d) =
        load("syns_over_the_rate_are_dropped_burst_then_refill_and_established_traffic_is_not", rules, &[8080, 9080])
    else {
        return;
    };
    let syn = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, SYN).build();
    // the bucket starts full: 5 of 8 SYNs pass (refill in these microseconds: << 1 token)
    assert_eq!(run_n(&d, &syn, 8), XDP_DROP, "the 8th SYN is over the burst");
    assert_eq!(verdicts(&d, 8080, "tcp", "pass"), 5);
    assert_eq!(guard_count(&d, 8080, "syn-rate"), 3);
    // one bucket per source for all guarded ports: 9080 finds it empty too
    assert_eq!(run(&d, &Packet::tcp("198.18.0.1", 40001, "198.18.0.2", 9080, SYN).build()), XDP_DROP);
    // established traffic, SYN-ACKs, FIN and RST of the same source are never charged
    for flags in [ACK, ACK | PSH, SYN | ACK, FIN | ACK, RST, RST | ACK] {
        let p = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, flags).payload(b"data").build();
        assert_eq!(run_n(&d, &p, 50), XDP_PASS, "flags {flags:#x}");
    }
    // another source, IPv4 or IPv6, has its own full bucket; unguarded ports are not charged
    assert_eq!(run_n(&d, &Packet::tcp("198.18.0.3", 40000, "198.18.0.2", 8080, SYN).build(), 5), XDP_PASS);
    assert_eq!(run_n(&d, &Packet::tcp("fd00::1", 40000, "fd00::2", 8080, SYN).build(), 5), XDP_PASS);
    assert_eq!(run_n(&d, &Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 22, SYN).build(), 20), XDP_PASS);
    assert_eq!(run(&d, &Packet::udp("198.18.0.1", 40000, "198.18.0.2", 8080, b"udp").build()), XDP_PASS);
    let dropped = guard_count(&d, 8080, "syn-rate") + guard_count(&d, 9080, "syn-rate");
    assert_eq!(dropped, 4);
    // 10 tokens/s: drain the bucket again, wait 150 ms: at least 1.5 tokens came back,
    // and no more than the time between the two runs allows (this machine may be busy)
    let started = std::time::Instant::now();
    assert_eq!(run_n(&d, &syn, 10), XDP_DROP);
    std::thread::sleep(Duration::from_millis(150));
    let before = verdicts(&d, 8080, "tcp", "pass");
    run_n(&d, &syn, 6);
    let most = (started.elapsed().as_secs_f64() * 10.0 + 1.0).floor() as u64;
    let refilled = verdicts(&d, 8080, "tcp", "pass") - before;
    assert!(
        (1..=most.min(5)).contains(&refilled),
        "{refilled} SYNs passed ~150 ms after a drain at 10/s (at most {most})"
    );
    // after a second the bucket is full again, and holds no more than the burst
    std::thread::sleep(Duration::from_millis(1100));
    let before = verdicts(&d, 8080, "tcp", "pass");
    run_n(&d, &syn, 9);
    assert_eq!(verdicts(&d, 8080, "tcp", "pass") - before, 5, "a full bucket holds --syn-burst tokens");
}

/// Another IPv4 source in 10.0.0.0/8 whose SYN bucket slot (SYN_SLOTS) is that of `a`
/// (only built into packets for BPF_PROG_TEST_RUN: nothing is sent).
fn colliding_source(a: std::net::Ipv4Addr) -> std::net::Ipv4Addr {
    use ingress_common::guard::{syn_slot, syn_words};
    let slot = |ip: std::net::Ipv4Addr| syn_slot(syn_words(ip.to_ipv6_mapped().octets()));
    (1..1u32 << 24)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 | i))
        .find(|&b| b != a && slot(b) == slot(a))
        .expect("a colliding source in 10.0.0.0/8")
}

#[test]
fn ipv4_sources_sharing_a_bucket_slot_keep_their_own_buckets() {
    // buckets live in an array slot picked by a hash of the source, tagged with the
    // source; a second source hashing to a taken slot goes to the LRU hash
    let rules = GuardRules { syn_rate: 10, syn_burst: 5, ..Default::default() };
    let Some(d) = load("ipv4_sources_sharing_a_bucket_slot_keep_their_own_buckets", rules, &[8080]) else {
        return;
    };
    let a: std::net::Ipv4Addr = "198.18.0.1".parse().unwrap();
    let b = colliding_source(a);
    let syn_a = Packet::tcp(&a.to_string(), 40000, "198.18.0.2", 8080, SYN).build();
    let syn_b = Packet::tcp(&b.to_string(), 40000, "198.18.0.2", 8080, SYN).build();
    assert_eq!(run_n(&d, &syn_a, 8), XDP_DROP, "a's 8th SYN is over its burst");
    assert_eq!(verdicts(&d, 8080, "tcp", "pass"), 5);
    // b starts with a full bucket of its own, though a holds the slot
    assert_eq!(run_n(&d, &syn_b, 5), XDP_PASS, "{b} shares {a}'s slot, not its bucket");
    assert_eq!(run(&d, &syn_b), XDP_DROP, "{b}'s 6th SYN is over its burst");
    assert_eq!(run(&d, &syn_a), XDP_DROP, "{a} is still over its burst");
    assert_eq!(verdicts(&d, 8080, "tcp", "pass"), 10);
    assert_eq!(guard_count(&d, 8080, "syn-rate"), 5);
}

#[test]
fn a_source_taking_a_freed_slot_keeps_the_bucket_it_had() {
    // 1 SYN/s, burst 1: a bucket is full again 1 s after its last SYN, and a slot whose
    // bucket is full is free for another source
    let rules = GuardRules { syn_rate: 1, syn_burst: 1, ..Default::default() };
    let Some(d) = load("a_source_taking_a_freed_slot_keeps_the_bucket_it_had", rules, &[8080]) else {
        return;
    };
    let a: std::net::Ipv4Addr = "198.18.0.1".parse().unwrap();
    let b = colliding_source(a);
    let syn_a = Packet::tcp(&a.to_string(), 40000, "198.18.0.2", 8080, SYN).build();
    let syn_b = Packet::tcp(&b.to_string(), 40000, "198.18.0.2", 8080, SYN).build();
    let started = std::time::Instant::now();
    assert_eq!(run(&d, &syn_a), XDP_PASS, "{a} takes the slot");
    std::thread::sleep(Duration::from_millis(500));
    // b's bucket is in the LRU hash: one SYN, then empty
    assert_eq!(run(&d, &syn_b), XDP_PASS);
    let b_drained = std::time::Instant::now();
    assert_eq!(run(&d, &syn_b), XDP_DROP);
    std::thread::sleep(Duration::from_millis(600));
    // a's bucket is full again (>= 1 s), so b takes the slot, bringing its bucket
    // (0.6 s of refill: no token); a fresh bucket would have let this SYN through
    assert!(started.elapsed() >= Duration::from_millis(1050), "slept less than asked");
    let b_idle = b_drained.elapsed();
    assert_eq!(run(&d, &syn_b), XDP_DROP, "{b} kept its empty bucket moving into the slot");
    assert!(b_idle < Duration::from_millis(950), "the machine stalled {b_idle:?}: the test cannot tell");
    // a, now without the slot, starts afresh in the LRU hash (its bucket was full)
    assert_eq!(run(&d, &syn_a), XDP_PASS, "{a}'s full bucket");
    assert_eq!(run(&d, &syn_a), XDP_DROP);
    assert_eq!(guard_count(&d, 8080, "syn-rate"), 3);
}

#[test]
fn malformed_and_unparsable_packets_pass_untouched_and_are_counted() {
    // every packet below comes from a denied source to the denied port: only the parser
    // failing (or a non-first fragment) lets them through unchecked
    let rules = GuardRules { deny: cidrs(&["8080=0.0.0.0/0", "8080=::/0"]), ..Default::default() };
    let Some(d) = load("malformed_and_unparsable_packets_pass_untouched_and_are_counted", rules, &[]) else {
        return;
    };
    let v4 = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, SYN).build();
    let v6 = Packet::tcp("fd00::1", 40000, "fd00::2", 8080, SYN).build();
    let udp = Packet::udp("198.18.0.1", 40000, "198.18.0.2", 8080, b"").build();
    assert_eq!(run(&d, &v4), XDP_DROP, "the intact packets are denied");
    assert_eq!(run(&d, &v6), XDP_DROP);
    let set = |mut p: Vec<u8>, at: usize, b: u8| {
        p[at] = b;
        p
    };
    let total = |mut p: Vec<u8>, len: u16| {
        p[16..18].copy_from_slice(&len.to_be_bytes());
        p
    };
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        // (a frame shorter than 14 bytes never reaches XDP: BPF_PROG_TEST_RUN refuses it too)
        ("Ethernet header only", v4[..14].to_vec()),
        (
            "VLAN tag without its ethertype",
            Packet::tcp("198.18.0.1", 1, "198.18.0.2", 8080, SYN).vlan(3).build()[..16].to_vec(),
        ),
        ("truncated IPv4 header", v4[..14 + 12].to_vec()),
        ("IPv4 cut inside TCP", v4[..14 + 20 + 10].to_vec()),
        ("IHL 4", set(v4.clone(), 14, 0x44)),
        ("IHL 0", set(v4.clone(), 14, 0x40)),
        ("IHL 15 past the packet", set(v4.clone(), 14, 0x4f)),
        ("IPv4 version 6", set(v4.clone(), 14, 0x65)),
        ("total length past the frame", total(v4.clone(), 41)),
        ("total length under the header", total(v4.clone(), 19)),
        ("TCP data offset 4", set(v4.clone(), 14 + 20 + 12, 0x40)),
        ("TCP data offset 15 without options", set(v4.clone(), 14 + 20 + 12, 0xf0)),
        ("truncated UDP", udp[..14 + 20 + 6].to_vec()),
        ("truncated IPv6 header", v6[..14 + 30].to_vec()),
        ("IPv6 payload length past the frame", set(v6.clone(), 18, 0x10)),
        ("IPv6 version 4", set(v6.clone(), 14, 0x40)),
        ("IPv6 cut inside TCP", {
            let mut p = v6[..14 + 40 + 12].to_vec();
            p[18..20].copy_from_slice(&12u16.to_be_bytes());
            p
        }),
        ("IPv6 extension header cut short", {
            let p = Packet::tcp("fd00::1", 1, "fd00::2", 8080, SYN).ext(ExtHeader::Routing { units: 3 }).build();
            let mut p = p[..14 + 40 + 16].to_vec();
            p[18..20].copy_from_slice(&16u16.to_be_bytes());
            p
        }),
        ("IPv6 extension header longer than the packet", {
            let p = Packet::tcp("fd00::1", 1, "fd00::2", 8080, SYN).ext(ExtHeader::DestOpts { units: 0 }).build();
            set(p, 14 + 40 + 1, 200)
        }),
    ];
    for (what, p) in &malformed {
        assert_eq!(run(&d, p), XDP_PASS, "{what}");
    }
    assert_eq!(guard_count(&d, 0, "malformed"), malformed.len() as u64, "{:?}", guard(&d));
    // a chain longer than the bound (8) is not followed
    let long = (0..9).fold(Packet::tcp("fd00::1", 40000, "fd00::2", 8080, SYN), |p, i| {
        p.ext(if i % 2 == 0 { ExtHeader::DestOpts { units: 0 } } else { ExtHeader::Routing { units: 0 } })
    });
    assert_eq!(run(&d, &long.build()), XDP_PASS, "9 extension headers");
    let ah_chain =
        (0..12).fold(Packet::udp("fd00::1", 1, "fd00::2", 8080, b""), |p, _| p.ext(ExtHeader::Auth { len: 1 }));
    assert_eq!(run(&d, &ah_chain.build()), XDP_PASS, "12 AH headers");
    assert_eq!(guard_count(&d, 0, "ext-headers"), 2);
    // non-first fragments carry no ports: passed, counted (their first fragment is checked)
    let frags = [
        Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, ACK).fragment(185).build(),
        Packet::udp("198.18.0.1", 40000, "198.18.0.2", 8080, b"tail").fragment(1).more_fragments().build(),
        Packet::tcp("fd00::1", 40000, "fd00::2", 8080, ACK)
            .ext(ExtHeader::Fragment { offset: 100, more: false })
            .build(),
        Packet::udp("fd00::1", 40000, "fd00::2", 8080, b"")
            .ext(ExtHeader::HopByHop { units: 0 })
            .ext(ExtHeader::Fragment { offset: 1, more: true })
            .build(),
    ];
    for p in &frags {
        assert_eq!(run(&d, p), XDP_PASS);
    }
    assert_eq!(guard_count(&d, 0, "fragment"), frags.len() as u64);
    assert_eq!(guard_count(&d, 8080, "denied"), 2, "only the two intact packets were dropped");
    let runs = 2 + malformed.len() as u64 + 2 + frags.len() as u64;
    assert_eq!(xdp(&d).iter().map(|c| c.packets).sum::<u64>(), runs, "every packet counted once");
}

/// A random packet: mostly well-formed packets of every kind mutated a little (bytes
/// flipped, cut short, lengths and header fields set to edge values), some random bytes.
fn random_packet(rng: &mut fastrand::Rng) -> Vec<u8> {
    let srcs4 = ["198.18.0.1", "203.0.113.9", "10.9.4.4", "172.18.0.5"];
    let srcs6 = ["fd00::1", "2001:db8::5", "2001:db8:bad::1"];
    let ports = [8080, 9080, 6550, 22, 53, rng.u16(..)];
    if rng.u8(..10) == 0 {
        let n = rng.usize(..200);
        return (0..n).map(|_| rng.u8(..)).collect();
    }
    let port = ports[rng.usize(..ports.len())];
    let flags = [SYN, ACK, SYN | ACK, ACK | PSH, RST, rng.u8(..)][rng.usize(..6)];
    let v6 = rng.bool();
    let src = if v6 { srcs6[rng.usize(..srcs6.len())] } else { srcs4[rng.usize(..srcs4.len())] };
    let dst = if v6 { "fd00::2" } else { "198.18.0.2" };
    let payload: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
    let mut p = if rng.bool() {
        Packet::tcp(src, rng.u16(..), dst, port, flags).payload(&payload)
    } else {
        Packet::udp(src, rng.u16(..), dst, port, &payload)
    };
    match rng.u8(..6) {
        0 => p = p.vlan(rng.u16(..4096)),
        1 => p = p.qinq(rng.u16(..4096), rng.u16(..4096)),
        _ => {}
    }
    if v6 {
        for _ in 0..rng.usize(..11) {
            p = p.ext(match rng.u8(..5) {
                0 => ExtHeader::HopByHop { units: rng.u8(..3) },
                1 => ExtHeader::Routing { units: rng.u8(..3) },
                2 => ExtHeader::DestOpts { units: rng.u8(..3) },
                3 => ExtHeader::Fragment { offset: if rng.bool() { 0 } else { rng.u16(..8192) }, more: rng.bool() },
                _ => ExtHeader::Auth { len: rng.u8(1..4) },
            });
        }
    } else {
        if rng.u8(..4) == 0 {
            p = p.ip_options(&vec![1; rng.usize(1..40)]);
        }
        if rng.u8(..4) == 0 {
            p = p.fragment(if rng.bool() { 0 } else { rng.u16(..8192) });
        }
        if rng.bool() {
            p = p.more_fragments();
        }
    }
    let l3 = p.l3_offset();
    let mut b = p.build();
    for _ in 0..rng.usize(..4) {
        match rng.u8(..6) {
            0 if !b.is_empty() => {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            1 => b.truncate(rng.usize(..=b.len())),
            2 if b.len() > l3 => b[l3] = rng.u8(..), // version / IHL
            3 if b.len() > l3 + 5 => {
                // IPv4 total length or IPv6 payload length
                let at = if v6 { l3 + 4 } else { l3 + 2 };
                let v = [0u16, 1, 19, 20, 40, 0xffff, rng.u16(..)][rng.usize(..7)];
                b[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            4 => b.extend((0..rng.usize(..16)).map(|_| rng.u8(..))),
            _ if b.len() > 13 => b[12] = [0x81, 0x88, 0x86, 0x08][rng.usize(..4)], // ethertype
            _ => {}
        }
    }
    b
}

#[test]
fn a_hundred_thousand_random_and_mutated_packets_keep_verdicts_packets_and_counters_consistent() {
    let rules = GuardRules {
        deny: cidrs(&["8080=203.0.113.0/24", "9080=2001:db8::/32", "53=10.9.0.0/16"]),
        allow: cidrs(&["6550=172.18.0.0/16", "6550=fd00::/8"]),
        syn_rate: 1,
        syn_burst: 5,
    };
    let test = "a_hundred_thousand_random_and_mutated_packets_keep_verdicts_packets_and_counters_consistent";
    let Some(d) = load(test, rules, &[8080, 9080]) else {
        return;
    };
    const N: u64 = 100_000;
    let mut rng = fastrand::Rng::with_seed(0x6775_6172_64);
    let (mut passed, mut dropped) = (0u64, 0u64);
    for _ in 0..N {
        let mut p = random_packet(&mut rng);
        // BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet header
        p.resize(p.len().max(14), 0);
        match run(&d, &p) {
            XDP_PASS => passed += 1,
            _ => dropped += 1,
        }
    }
    let x = xdp(&d);
    assert_eq!(x.iter().map(|c| c.packets).sum::<u64>(), N, "every packet counted once in XDP_STATS");
    assert_eq!(x.iter().filter(|c| c.verdict == "drop").map(|c| c.packets).sum::<u64>(), dropped);
    assert_eq!(x.iter().filter(|c| c.verdict == "pass").map(|c| c.packets).sum::<u64>(), passed);
    let g = guard(&d);
    assert_eq!(g.iter().filter(|c| c.verdict == "drop").map(|c| c.packets).sum::<u64>(), dropped, "{g:?}");
    assert!(g.iter().filter(|c| c.verdict == "drop").all(|c| [8080, 9080, 53, 6550].contains(&c.port)), "{g:?}");
    // the mix reaches every decision
    for reason in ["denied", "not-allowed", "syn-rate", "malformed", "ext-headers", "fragment"] {
        assert!(g.iter().any(|c| c.reason == reason && c.packets > 0), "no {reason} in {g:?}");
    }
    println!("{N} packets: {passed} passed, {dropped} dropped; guard counters {g:?}");
}
