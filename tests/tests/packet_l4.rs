//! Packet tier for the L4 data path: the tc programs `l4_nic` (DNAT on the NIC) and
//! `l4_reply` (reverse NAT on the bridge) on built packets through BPF_PROG_TEST_RUN
//! (root, no interfaces). Checksums are verified with the harness's own RFC 1071 code,
//! not the program's helpers. In a test run the packet has no real ingress device, so
//! the FIB lookup fails and a rewritten packet is handed to the stack (TC_ACT_OK,
//! counted as a FIB fallback): the NAT decision is what these tests check, the redirect
//! is checked by the netns tier.

use std::net::{Ipv4Addr, SocketAddrV4};

use ingress::datapath as ebpf;
use ingress::datapath::l4::{L4Model, L4ServiceModel};
use ingress::datapath::l4_maps::L4Maps;
use ingress_common::l4::{CT_CLOSED, CT_CLOSING, CT_DIR_ORIG, CT_DIR_REPLY, CT_ESTABLISHED, CT_SYN_SENT, L4CtEntry};
use ingress_common::maps::{L4_NIC_PROGRAM, L4_REPLY_PROGRAM};
use ingress_tests::packet::{ACK, PSH, Packet, SYN, arp_request, checksum, test_run};

const TC_ACT_UNSPEC: u32 = u32::MAX; // -1
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

const CLIENT: &str = "198.18.0.1";
const VM: &str = "198.18.0.2";
const API: &str = "172.18.0.2";
const API_PORT: u16 = 6443;
const EP1: &str = "10.42.0.11";
const EP2: &str = "10.42.0.12";

struct L4 {
    d: ebpf::Dataplane,
    maps: L4Maps,
    nic: i32,
    reply: i32,
}

fn model(sets: &[(u16, Vec<SocketAddrV4>)]) -> L4Model {
    L4Model {
        services: sets
            .iter()
            .enumerate()
            .map(|(i, (port, eps))| L4ServiceModel {
                id: i as u32,
                port: *port,
                label: format!("{port}"),
                endpoints: eps.clone(),
            })
            .collect(),
        problems: vec![],
    }
}

fn sa(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

/// 6550 -> the API server; 10082 -> two endpoints; on the VM address and (as the lead's
/// cgroup hooks add them) 127.0.0.1, which the NIC program must ignore.
fn two_services() -> L4Model {
    model(&[(6550, vec![sa(API, API_PORT)]), (10082, vec![sa(EP1, 5000), sa(EP2, 5000)])])
}

fn frontends() -> Vec<Ipv4Addr> {
    vec![VM.parse().unwrap(), Ipv4Addr::LOCALHOST]
}

fn setup(test: &str) -> Option<L4> {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return None;
    }
    let mut d = ebpf::load().unwrap_or_else(|e| panic!("{test}: {e}"));
    let nic = d.tc_program_fd(L4_NIC_PROGRAM).unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let reply = d.tc_program_fd(L4_REPLY_PROGRAM).unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let mut maps = L4Maps::take(&mut d.ebpf).expect("L4 maps");
    maps.sync(&two_services(), &frontends()).expect("program the maps");
    Some(L4 { d, maps, nic, reply })
}

fn run(fd: i32, pkt: &[u8]) -> (u32, Vec<u8>) {
    let r = test_run(fd, pkt, 1).expect("BPF_PROG_TEST_RUN");
    (r.retval, r.data_out)
}

/// Like [`run`], but `None` when BPF_PROG_TEST_RUN itself refuses the input (EINVAL:
/// the kernel builds no skb from some malformed frames, so no program sees them).
fn try_run(fd: i32, pkt: &[u8]) -> Option<(u32, Vec<u8>)> {
    match test_run(fd, pkt, 1) {
        Ok(r) => Some((r.retval, r.data_out)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        Err(e) => panic!("BPF_PROG_TEST_RUN: {e}"),
    }
}

/// The harness's view of an IPv4/TCP frame.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
}

fn seen(p: &[u8]) -> Seen {
    let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    let port = |o: usize| u16::from_be_bytes([p[o], p[o + 1]]);
    Seen { src: SocketAddrV4::new(ip(26), port(34)), dst: SocketAddrV4::new(ip(30), port(36)), flags: p[47] }
}

/// Both checksums of an untagged IPv4 (no options) TCP frame verify.
fn checksums_ok(p: &[u8]) -> bool {
    if p.len() < 54 {
        return false;
    }
    let tot = u16::from_be_bytes([p[16], p[17]]) as usize;
    if p.len() < 14 + tot || tot < 40 {
        return false;
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p[26..34]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((tot - 20) as u16).to_be_bytes());
    pseudo.extend_from_slice(&p[34..14 + tot]);
    checksum(&p[14..34]) == 0 && checksum(&pseudo) == 0
}

fn orig_entry(maps: &L4Maps, client_port: u16, fe_port: u16) -> Option<L4CtEntry> {
    let c: Ipv4Addr = CLIENT.parse().unwrap();
    let v: Ipv4Addr = VM.parse().unwrap();
    maps.conntrack()
        .into_iter()
        .find(|(k, _)| {
            k.dir == CT_DIR_ORIG
                && k.src_addr == u32::from_ne_bytes(c.octets())
                && k.dst_addr == u32::from_ne_bytes(v.octets())
                && u16::from_be(k.src_port) == client_port
                && u16::from_be(k.dst_port) == fe_port
        })
        .map(|(_, v)| v)
}

fn forwarded(v: u32) -> bool {
    v == TC_ACT_OK || v == TC_ACT_REDIRECT
}

#[test]
fn dnat_rewrites_the_destination_with_valid_checksums() {
    let Some(t) = setup("dnat_rewrites_the_destination_with_valid_checksums") else {
        return;
    };
    let syn = Packet::tcp(CLIENT, 40000, VM, 6550, SYN).build();
    let (v, out) = run(t.nic, &syn);
    assert!(forwarded(v), "verdict {v}");
    assert_eq!(out.len(), syn.len());
    assert_eq!(seen(&out), Seen { src: sa(CLIENT, 40000), dst: sa(API, API_PORT), flags: SYN });
    assert!(checksums_ok(&out), "IP and TCP checksums verify after DNAT");
    assert_eq!(&out[..14], &syn[..14], "Ethernet header untouched when no redirect happened");
    // a data segment with payload too
    let stack = u64::from(v == TC_ACT_OK);
    let data = Packet::tcp(CLIENT, 40000, VM, 6550, ACK | PSH).payload(&[0xa5; 333]).build();
    let (v, out) = run(t.nic, &data);
    assert!(forwarded(v));
    let stack = stack + u64::from(v == TC_ACT_OK);
    assert_eq!(seen(&out).dst, sa(API, API_PORT));
    assert!(checksums_ok(&out));
    assert_eq!(&out[54..], &data[54..], "payload untouched");
    let s = t.maps.stats(0).unwrap();
    assert_eq!((s.flows, s.packets), (1, 2), "{s:?}");
    assert_eq!(s.bytes, (syn.len() - 14 + data.len() - 14) as u64);
    assert_eq!(s.fib_fallback, stack, "packets handed to the stack are counted");
    let e = orig_entry(&t.maps, 40000, 6550).expect("conntrack entry");
    assert_eq!(
        SocketAddrV4::new(Ipv4Addr::from(e.nat_addr.to_ne_bytes()), u16::from_be(e.nat_port)),
        sa(API, API_PORT)
    );
    assert_eq!(e.state, CT_ESTABLISHED, "SYN then ACK from the client");
    drop(t.d);
}

#[test]
fn reverse_nat_restores_the_frontend_and_tracks_state() {
    let Some(t) = setup("reverse_nat_restores_the_frontend_and_tracks_state") else {
        return;
    };
    let (v, _) = run(t.nic, &Packet::tcp(CLIENT, 40001, VM, 6550, SYN).build());
    assert!(forwarded(v));
    assert_eq!(orig_entry(&t.maps, 40001, 6550).unwrap().state, CT_SYN_SENT);
    let synack = Packet::tcp(API, API_PORT, CLIENT, 40001, SYN | ACK).payload(b"hi").build();
    let (v, out) = run(t.reply, &synack);
    assert!(forwarded(v), "verdict {v}");
    assert_eq!(seen(&out), Seen { src: sa(VM, 6550), dst: sa(CLIENT, 40001), flags: SYN | ACK });
    assert!(checksums_ok(&out), "checksums verify after reverse NAT");
    assert_eq!(orig_entry(&t.maps, 40001, 6550).unwrap().state, CT_ESTABLISHED);
    let s = t.maps.stats(0).unwrap();
    assert_eq!((s.reply_packets, s.reply_bytes), (1, (synack.len() - 14) as u64));
    // a reply for a flow that is not tracked: untouched
    let stray = Packet::tcp(API, API_PORT, CLIENT, 40999, SYN | ACK).build();
    assert_eq!(run(t.reply, &stray), (TC_ACT_UNSPEC, stray.clone()));
    // a reply from the right port but another address: untouched
    let other = Packet::tcp(EP1, API_PORT, CLIENT, 40001, ACK).build();
    assert_eq!(run(t.reply, &other), (TC_ACT_UNSPEC, other.clone()));
}

#[test]
fn fin_and_rst_change_the_state_and_a_new_syn_after_rst_is_a_new_flow() {
    let Some(t) = setup("fin_and_rst_change_the_state_and_a_new_syn_after_rst_is_a_new_flow") else {
        return;
    };
    run(t.nic, &Packet::tcp(CLIENT, 40002, VM, 6550, SYN).build());
    run(t.reply, &Packet::tcp(API, API_PORT, CLIENT, 40002, SYN | ACK).build());
    assert_eq!(orig_entry(&t.maps, 40002, 6550).unwrap().state, CT_ESTABLISHED);
    let (v, out) = run(t.nic, &Packet::tcp(CLIENT, 40002, VM, 6550, FIN | ACK).build());
    assert!(forwarded(v));
    assert_eq!(seen(&out).dst, sa(API, API_PORT), "a FIN is still forwarded");
    assert_eq!(orig_entry(&t.maps, 40002, 6550).unwrap().state, CT_CLOSING);
    let (v, out) = run(t.reply, &Packet::tcp(API, API_PORT, CLIENT, 40002, RST).build());
    assert!(forwarded(v));
    assert_eq!(seen(&out).src, sa(VM, 6550), "an RST is reverse-NATed too");
    assert_eq!(orig_entry(&t.maps, 40002, 6550).unwrap().state, CT_CLOSED);
    let flows = t.maps.stats(0).unwrap().flows;
    // an ACK on the closed flow is still a hit (no new flow)...
    run(t.nic, &Packet::tcp(CLIENT, 40002, VM, 6550, ACK).build());
    assert_eq!(t.maps.stats(0).unwrap().flows, flows);
    // ...a bare SYN reusing the tuple opens a new one
    run(t.nic, &Packet::tcp(CLIENT, 40002, VM, 6550, SYN).build());
    assert_eq!(t.maps.stats(0).unwrap().flows, flows + 1);
    assert_eq!(orig_entry(&t.maps, 40002, 6550).unwrap().state, CT_SYN_SENT);
    // an RST as the first packet of a flow is forwarded, tracked as closed
    run(t.nic, &Packet::tcp(CLIENT, 40003, VM, 6550, RST).build());
    assert_eq!(orig_entry(&t.maps, 40003, 6550).unwrap().state, CT_CLOSED);
}

#[test]
fn maglev_spreads_flows_and_conntrack_keeps_them_across_endpoint_changes() {
    let Some(mut t) = setup("maglev_spreads_flows_and_conntrack_keeps_them_across_endpoint_changes") else {
        return;
    };
    let mut first = std::collections::BTreeMap::new();
    for port in 41000..41400u16 {
        let (v, out) = run(t.nic, &Packet::tcp(CLIENT, port, VM, 10082, SYN).build());
        assert!(forwarded(v));
        first.insert(port, seen(&out).dst);
    }
    let on1 = first.values().filter(|d| **d == sa(EP1, 5000)).count();
    let on2 = first.values().filter(|d| **d == sa(EP2, 5000)).count();
    assert_eq!(on1 + on2, 400, "every flow went to one of the two endpoints");
    assert!(on1 > 120 && on2 > 120, "both endpoints used: {on1} / {on2}");
    // conntrack hit: every later packet of a flow goes where its SYN went
    for (port, dst) in &first {
        let (_, out) = run(t.nic, &Packet::tcp(CLIENT, *port, VM, 10082, ACK | PSH).payload(b"x").build());
        assert_eq!(seen(&out).dst, *dst, "flow from port {port} moved");
    }
    // EP1 leaves, EP3 arrives
    let changed = model(&[(6550, vec![sa(API, API_PORT)]), (10082, vec![sa(EP2, 5000), sa("10.42.0.13", 5000)])]);
    t.maps.sync(&changed, &frontends()).unwrap();
    for (port, dst) in &first {
        let (_, out) = run(t.nic, &Packet::tcp(CLIENT, *port, VM, 10082, ACK).build());
        assert_eq!(seen(&out).dst, *dst, "an established flow keeps its endpoint after it left");
    }
    let mut new_on = std::collections::BTreeMap::<SocketAddrV4, usize>::new();
    for port in 42000..42200u16 {
        let (_, out) = run(t.nic, &Packet::tcp(CLIENT, port, VM, 10082, SYN).build());
        *new_on.entry(seen(&out).dst).or_default() += 1;
    }
    assert!(!new_on.contains_key(&sa(EP1, 5000)), "new flows avoid the endpoint that left: {new_on:?}");
    assert_eq!(new_on.len(), 2, "{new_on:?}");
    // replies of an old flow to the endpoint that left are still reverse-NATed
    let (port, _) = first.iter().find(|(_, d)| **d == sa(EP1, 5000)).unwrap();
    let (v, out) = run(t.reply, &Packet::tcp(EP1, 5000, CLIENT, *port, ACK).build());
    assert!(forwarded(v));
    assert_eq!(seen(&out).src, sa(VM, 10082));
}

#[test]
fn packets_not_ours_and_malformed_ones_pass_untouched() {
    let Some(t) = setup("packets_not_ours_and_malformed_ones_pass_untouched") else {
        return;
    };
    let good = Packet::tcp(CLIENT, 40010, VM, 6550, SYN).build();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("other port", Packet::tcp(CLIENT, 40010, VM, 6551, SYN).build()),
        ("other address", Packet::tcp(CLIENT, 40010, "198.18.0.3", 6550, SYN).build()),
        ("loopback frontend on the wire", Packet::tcp(CLIENT, 40010, "127.0.0.1", 6550, SYN).build()),
        ("loopback source", Packet::tcp("127.0.0.5", 40010, VM, 6550, SYN).build()),
        ("0/8 source", Packet::tcp("0.1.2.3", 40010, VM, 6550, SYN).build()),
        ("UDP", Packet::udp(CLIENT, 40010, VM, 6550, b"udp").build()),
        ("IPv6", Packet::tcp("fd00::1", 40010, "fd00::2", 6550, SYN).build()),
        ("VLAN", Packet::tcp(CLIENT, 40010, VM, 6550, SYN).vlan(5).build()),
        ("ARP", arp_request([198, 18, 0, 1], [198, 18, 0, 2])),
        ("non-first fragment", Packet::tcp(CLIENT, 40010, VM, 6550, ACK).fragment(10).build()),
        ("truncated IP", good[..14 + 12].to_vec()),
        ("truncated TCP", good[..14 + 20 + 10].to_vec()),
        ("Ethernet only", good[..14].to_vec()),
    ];
    let mut more_fragments = good.clone();
    more_fragments[14 + 6] |= 0x20;
    cases.push(("first fragment (MF)", more_fragments));
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    cases.push(("IHL 4", bad_ihl));
    let mut long_ihl = good.clone();
    long_ihl[14] = 0x4f;
    cases.push(("IHL beyond the packet", long_ihl));
    let mut long_tot = good.clone();
    long_tot[16..18].copy_from_slice(&200u16.to_be_bytes());
    cases.push(("total length beyond the packet", long_tot));
    let mut v6_in_v4 = good.clone();
    v6_in_v4[14] = 0x65;
    cases.push(("IP version 6 in an IPv4 frame", v6_in_v4));
    let mut short_doff = good.clone();
    short_doff[14 + 20 + 12] = 0x40;
    cases.push(("TCP data offset 4", short_doff));
    let mut refused = vec![];
    for (what, p) in &cases {
        for (prog, fd) in [("nic", t.nic), ("reply", t.reply)] {
            match try_run(fd, p) {
                Some(r) => assert_eq!(r, (TC_ACT_UNSPEC, p.clone()), "{prog}: {what}"),
                None => refused.push(format!("{prog}: {what}")),
            }
        }
    }
    eprintln!("inputs BPF_PROG_TEST_RUN refused to build an skb from: {refused:?}");
    assert!(refused.len() <= 6, "most malformed cases reach the programs: {refused:?}");
    let s = t.maps.stats(0).unwrap();
    assert_eq!((s.flows, s.packets), (0, 0), "nothing counted: {s:?}");
    assert!(t.maps.conntrack().is_empty(), "nothing tracked");
}

#[test]
fn a_port_without_endpoints_passes_and_counts() {
    let Some(mut t) = setup("a_port_without_endpoints_passes_and_counts") else {
        return;
    };
    t.maps.sync(&model(&[(6550, vec![])]), &frontends()).unwrap();
    let p = Packet::tcp(CLIENT, 40020, VM, 6550, SYN).build();
    assert_eq!(run(t.nic, &p), (TC_ACT_UNSPEC, p.clone()));
    assert_eq!(t.maps.stats(0).unwrap().no_endpoint, 1);
}

/// Random and mutated packets: frames built toward the frontends (so many reach the
/// NAT code) with bytes flipped, cut or extended, and pure noise.
fn fuzz_packet(rng: &mut fastrand::Rng, to_nic: bool) -> Vec<u8> {
    let flags = [SYN, ACK, ACK | PSH, FIN | ACK, RST, SYN | ACK, 0xff, 0][rng.usize(..8)];
    let sport = if rng.bool() { 40000 + rng.u16(..64) } else { rng.u16(..) };
    let mut p = if to_nic {
        let dport = [6550, 10082, 6551, rng.u16(..)][rng.usize(..4)];
        let dst = [VM, VM, "127.0.0.1", "198.18.0.9"][rng.usize(..4)];
        Packet::tcp(CLIENT, sport, dst, dport, flags).payload(&vec![rng.u8(..); rng.usize(..200)]).build()
    } else {
        let (src, port) = [(API, API_PORT), (EP1, 5000), (EP2, 5000), ("10.42.0.99", 1)][rng.usize(..4)];
        Packet::tcp(src, port, CLIENT, sport, flags).payload(&vec![rng.u8(..); rng.usize(..200)]).build()
    };
    match rng.u8(..6) {
        0 => {}
        1 => {
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..p.len());
                p[i] ^= 1 << rng.u8(..8);
            }
        }
        2 => {
            let i = rng.usize(14..p.len().max(15));
            p.truncate(i.max(14));
        }
        3 => {
            let i = rng.usize(14..34);
            p[i] = rng.u8(..);
        }
        4 => p.extend((0..rng.usize(1..64)).map(|_| rng.u8(..))),
        _ => {
            p = (0..rng.usize(14..300)).map(|_| rng.u8(..)).collect();
            if rng.bool() {
                p[12] = 0x08;
                p[13] = 0x00;
            }
        }
    }
    p
}

fn fuzz(t: &L4, fd: i32, to_nic: bool, seed: u64, count: usize) -> (u64, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut rewritten, mut untouched, mut refused) = (0u64, 0u64, 0usize);
    // `count` packets that reach the program (inputs the kernel refuses are extra).
    let mut i = 0usize;
    while (rewritten + untouched) < count as u64 {
        i += 1;
        assert!(refused < count / 20, "{refused} inputs refused by BPF_PROG_TEST_RUN");
        let p = fuzz_packet(&mut rng, to_nic);
        let Some((v, out)) = try_run(fd, &p) else {
            refused += 1;
            continue;
        };
        match v {
            TC_ACT_UNSPEC => {
                assert_eq!(out, p, "packet {i}: not ours must be untouched");
                untouched += 1;
            }
            TC_ACT_OK | TC_ACT_REDIRECT => {
                assert_eq!(out.len(), p.len(), "packet {i}: length kept");
                // Only addresses, ports and the two checksums may change.
                let tot_ok = p.len() >= 54;
                assert!(tot_ok, "packet {i}: a rewritten packet holds IPv4 + TCP");
                for (j, (a, b)) in p.iter().zip(&out).enumerate() {
                    let allowed = matches!(j, 24..=25 | 26..=33) || (j >= 34 && (j < 38 || (50..52).contains(&j)));
                    let allowed = allowed || (p[14] & 0x0f != 5 && j >= 34);
                    assert!(a == b || allowed, "packet {i}: byte {j} changed");
                }
                if checksums_ok(&p) {
                    assert!(checksums_ok(&out), "packet {i}: valid checksums stay valid");
                }
                rewritten += 1;
            }
            TC_ACT_SHOT => panic!("packet {i}: dropped, which these programs never need on a test run"),
            v => panic!("packet {i}: verdict {v} outside the allowed set"),
        }
    }
    let _ = &t.d;
    eprintln!("{count} packets: {rewritten} rewritten, {untouched} untouched, {refused} refused by BPF_PROG_TEST_RUN");
    (rewritten, untouched)
}

#[test]
fn a_hundred_thousand_random_and_mutated_packets_through_each_program() {
    let Some(t) = setup("a_hundred_thousand_random_and_mutated_packets_through_each_program") else {
        return;
    };
    const N: usize = 100_000;
    let (nic_rewritten, nic_untouched) = fuzz(&t, t.nic, true, 0x5eed_0001, N);
    let counted: u64 = (0..2).map(|id| t.maps.stats(id).unwrap().packets).sum();
    assert_eq!(counted, nic_rewritten, "every rewritten packet counted once, nothing else");
    let flows: u64 = (0..2).map(|id| t.maps.stats(id).unwrap().flows).sum();
    assert!(flows >= 1 && flows <= nic_rewritten, "flows {flows} of {nic_rewritten} packets");
    assert!(nic_rewritten > 10_000 && nic_untouched > 10_000, "{nic_rewritten} / {nic_untouched}");
    // replies: the flows opened above are tracked, so some replies match
    let (rep_rewritten, rep_untouched) = fuzz(&t, t.reply, false, 0x5eed_0002, N);
    let replies: u64 = (0..2).map(|id| t.maps.stats(id).unwrap().reply_packets).sum();
    assert_eq!(replies, rep_rewritten, "every reverse-NATed packet counted once");
    assert!(rep_rewritten > 0 && rep_untouched > 0, "{rep_rewritten} / {rep_untouched}");
    let (live, entries) =
        ingress::datapath::l4::occupancy(&t.maps.conntrack(), ingress::datapath::l4_maps::monotonic_ns());
    assert!(live >= 1 && entries >= live, "{live} live / {entries}");
    assert!(t.maps.conntrack().iter().all(|(k, _)| k.dir == CT_DIR_ORIG || k.dir == CT_DIR_REPLY));
}
