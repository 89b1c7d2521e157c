//! Packet tier for delayed binding's first-segment program (`bind_first`, tc on the NIC)
//! through BPF_PROG_TEST_RUN, on segments built here after a real cookie: each test asks
//! `syncookie_xdp` (same object, same maps) for the SYN-ACK of a SYN and builds the
//! client's next segment from it. A first data segment whose head names a bindable host
//! is DNATed to the pod its backend's entry gives (checksums verified here by the
//! harness's RFC 1071 code, every other byte unchanged), the flow's conntrack entries
//! and the pod side's admitted flow are written as the host build computes them, and
//! its retransmission takes the same path; a valid pure ACK is dropped; segments whose
//! cookie does not validate, or with malformed options, pass untouched; heads the agent
//! must serve go to the listener lookup (none here: untouched, counted), with the host
//! build's scan verdict; a bound flow whose endpoint the agent marked gone passes to the
//! stack untouched (which answers it with a RST). Loading the program proves the
//! verifier accepts it.

use std::net::Ipv4Addr;

use aya::maps::HashMap;
use ingress::datapath as ebpf;
use ingress::datapath::syncookie::SynCookieMaps;
use ingress_common::bind::{BIND_MAX_ENDPOINTS, BindBackend, BindEndpoint, BindTarget};
use ingress_common::first_segment::{
    self, BIND_CT_SERVICE, FIRST_ASSIGN_FAILED, FIRST_BAD_OPTIONS, FIRST_BOUND, FIRST_COUNTS, FIRST_CT_HIT,
    FIRST_EARLY_DROPPED, FIRST_ENDPOINT_GONE, FIRST_FALLBACK, FIRST_NO_COOKIE, FIRST_NO_ENDPOINT, FIRST_NO_LISTENER,
    FIRST_PURE_ACK,
};
use ingress_common::head::{self, BindHostKey, Fallback, Verdict};
use ingress_common::l4::{CT_DIR_ORIG, CT_DIR_REPLY, L4CtEntry, L4CtKey};
use ingress_common::maps::{
    BIND_BACKENDS_MAP, BIND_FIRST_PROGRAM, BIND_HOSTS_MAP, L4_CT_MAP, POD_ADMITTED_MAP, SYNCOOKIE_PROGRAM,
};
use ingress_common::pod_bind::{PodAdmit, PodFlowKey};
use ingress_common::syncookie::{self, SynCookieConfig, Tuple};
use ingress_tests::packet::{checksum, test_run};

const XDP_TX: u32 = 3;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_REDIRECT: u32 = 7;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const CLIENT: [u8; 4] = [198, 18, 0, 1];
const VM: [u8; 4] = [198, 18, 0, 2];
const POD: [u8; 4] = [10, 42, 0, 7];
const POD_PORT: u16 = 8000;
const PORT: u16 = 8080;
const HOST: &str = "app.example";
const BACKEND: u32 = 1;
const EMPTY_HOST: &str = "empty.example";
const EMPTY_BACKEND: u32 = 2;
const CLIENT_ISN: u32 = 0x0bad_cafe;
const LINUX_SYN: [u8; 20] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0, 0, 1, 3, 3, 7];

fn cfg() -> SynCookieConfig {
    SynCookieConfig {
        keys: [[0x0102_0304_0506_0708, 0x1112_1314_1516_1718], [0x2122_2324_2526_2728, 0x3132_3334_3536_3738]],
        current: 0,
        path_mss: 1410,
        rcv_wscale: 7,
        window: 64240,
        ..Default::default()
    }
}

struct T {
    d: ebpf::Dataplane,
    _maps: SynCookieMaps,
    xdp: i32,
    fd: i32,
}

fn setup(test: &str) -> Option<T> {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return None;
    }
    // BIND_FIRST_OBJECT: an object file to load instead of the embedded one
    let mut d = match std::env::var_os("BIND_FIRST_OBJECT") {
        Some(p) => ebpf::load_from(&std::fs::read(&p).expect("BIND_FIRST_OBJECT")),
        None => ebpf::load(),
    }
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let xdp = d.syncookie_program_fd().unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let fd = d.bind_first_program_fd().unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let insns = d.verified_insns(BIND_FIRST_PROGRAM).expect("verified_insns");
    println!("{BIND_FIRST_PROGRAM}: verifier processed {insns} instructions");
    println!(
        "{SYNCOOKIE_PROGRAM}: verifier processed {} instructions",
        d.verified_insns(SYNCOOKIE_PROGRAM).expect("verified_insns")
    );
    let mut maps = SynCookieMaps::take(&mut d.ebpf).expect("cookie maps");
    maps.set_config(&cfg()).expect("config");
    maps.add_target(Ipv4Addr::from(VM), PORT).expect("target");
    {
        let mut hosts: HashMap<_, BindHostKey, BindTarget> =
            HashMap::try_from(d.ebpf.map_mut(BIND_HOSTS_MAP).expect("BIND_HOSTS")).expect("hash");
        for (h, b) in [(HOST, BACKEND), (EMPTY_HOST, EMPTY_BACKEND)] {
            hosts.insert(BindHostKey::new(PORT, h.as_bytes()).unwrap(), BindTarget { backend: b, _pad: 0 }, 0).unwrap();
        }
    }
    {
        let mut backends: HashMap<_, u32, BindBackend> =
            HashMap::try_from(d.ebpf.map_mut(BIND_BACKENDS_MAP).expect("BIND_BACKENDS")).expect("hash");
        let mut b = BindBackend { count: 1, ..Default::default() };
        b.endpoints[0] = BindEndpoint { addr: u32::from_ne_bytes(POD), port: POD_PORT, _pad: 0 };
        assert!(BIND_MAX_ENDPOINTS > 1);
        backends.insert(BACKEND, b, 0).unwrap();
        backends.insert(EMPTY_BACKEND, BindBackend::default(), 0).unwrap();
    }
    Some(T { d, _maps: maps, xdp, fd })
}

/// An Ethernet + IPv4 + TCP frame from the client with `seq`, `ack`, `flags`, options
/// (padded to 4) and payload; checksums by the harness.
fn segment(sport: u16, seq: u32, ack: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut opts = opts.to_vec();
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&PORT.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push((((20 + opts.len()) / 4) as u8) << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&502u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(&opts);
    tcp.extend_from_slice(payload);
    let c = checksum(&pseudo(&CLIENT, &VM, &tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&CLIENT);
    ip.extend_from_slice(&VM);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

fn pseudo(src: &[u8], dst: &[u8], tcp: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&[0, 6]);
    p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    p.extend_from_slice(tcp);
    p
}

/// The SYN of `sport` (Linux's options, TSval 12345) answered by syncookie_xdp:
/// (cookie ISN, our TSval).
fn handshake(t: &T, sport: u16) -> (u32, u32) {
    let syn = segment(sport, CLIENT_ISN, 0, SYN, &LINUX_SYN, &[]);
    let r = test_run(t.xdp, &syn, 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.retval, XDP_TX, "the SYN is answered");
    let p = r.data_out;
    let isn = u32::from_be_bytes(p[38..42].try_into().unwrap());
    // options at 54: MSS (4), SACK_PERM (2), TS (10): TSval at 62
    assert_eq!(&p[58..62], &[4, 2, 8, 10], "SACK permitted and timestamps in the SYN-ACK");
    let tsval = u32::from_be_bytes(p[62..66].try_into().unwrap());
    (isn, tsval)
}

/// Linux's ACK options: NOP NOP TS(TSval, TSecr).
fn ts_opts(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

fn get_head(host: &str) -> Vec<u8> {
    format!("GET /x HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n").into_bytes()
}

fn counts(t: &T) -> Vec<u64> {
    let c = t.d.bind_first_counts().expect("counts");
    assert_eq!(c.len(), FIRST_COUNTS as usize);
    c
}

fn tuple(sport: u16) -> Tuple {
    Tuple { saddr: u32::from_be_bytes(CLIENT), daddr: u32::from_be_bytes(VM), sport, dport: PORT }
}

/// Checks that `out` is `inp` DNATed to the pod: addresses/ports, both checksums by the
/// harness, every other byte as it was.
fn assert_dnat(inp: &[u8], out: &[u8]) {
    assert_eq!(out.len(), inp.len());
    assert_eq!(&out[30..34], &POD, "destination: the pod");
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), POD_PORT, "destination port: the pod's");
    assert_eq!(checksum(&out[14..34]), 0, "IPv4 checksum");
    assert_eq!(checksum(&pseudo(&out[26..30], &out[30..34], &out[34..])), 0, "TCP checksum");
    let mut masked_in = inp.to_vec();
    let mut masked_out = out.to_vec();
    for b in [&mut masked_in, &mut masked_out] {
        for i in [24, 25, 30, 31, 32, 33, 36, 37, 50, 51] {
            b[i] = 0;
        }
    }
    assert_eq!(masked_in, masked_out, "nothing else changed");
}

#[test]
fn a_first_segment_for_a_bindable_host_is_bound_to_its_pod_and_its_retransmission_too() {
    let Some(t) = setup("a_first_segment_for_a_bindable_host_is_bound_to_its_pod_and_its_retransmission_too") else {
        return;
    };
    let sport = 41000;
    let (isn, our_ts) = handshake(&t, sport);
    let head = get_head(HOST);
    let seg = segment(sport, CLIENT_ISN + 1, isn.wrapping_add(1), ACK | PSH, &ts_opts(12346, our_ts), &head);
    let before = counts(&t);
    let r = test_run(t.fd, &seg, 1).expect("BPF_PROG_TEST_RUN");
    assert!(r.retval == TC_ACT_OK || r.retval == TC_ACT_REDIRECT, "forwarded (FIB: stack or redirect): {}", r.retval);
    assert_dnat(&seg, &r.data_out);
    let last = t.d.bind_first_last().unwrap();
    assert_eq!((last.outcome, last.pod_addr, last.pod_port), (FIRST_BOUND, u32::from_ne_bytes(POD), POD_PORT));
    assert_eq!(counts(&t)[FIRST_BOUND as usize], before[FIRST_BOUND as usize] + 1);
    // the entries, as the host build computes them
    let d = syncookie::check(&cfg(), &tuple(sport), CLIENT_ISN + 1, isn.wrapping_add(1), Some(our_ts)).unwrap();
    let admitted: HashMap<_, PodFlowKey, PodAdmit> =
        HashMap::try_from(t.d.ebpf.map(POD_ADMITTED_MAP).unwrap()).unwrap();
    let key = PodFlowKey {
        saddr: u32::from_ne_bytes(CLIENT),
        daddr: u32::from_ne_bytes(POD),
        sport: sport.to_be(),
        dport: POD_PORT.to_be(),
    };
    let a = admitted.get(&key, 0).expect("the pod side's entry");
    assert_eq!(a, first_segment::admit(&d, CLIENT_ISN, cfg().rcv_wscale));
    assert_eq!((a.mss, a.snd_wscale, a.rcv_wscale, a.sack_ok, a.tstamp_ok), (1460, 7, 7, 1, 1));
    let ct: HashMap<_, L4CtKey, L4CtEntry> = HashMap::try_from(t.d.ebpf.map(L4_CT_MAP).unwrap()).unwrap();
    let orig = L4CtKey {
        src_addr: u32::from_ne_bytes(CLIENT),
        dst_addr: u32::from_ne_bytes(VM),
        src_port: sport.to_be(),
        dst_port: PORT.to_be(),
        proto: 6,
        dir: CT_DIR_ORIG,
        _pad: 0,
    };
    let e = ct.get(&orig, 0).expect("the flow's entry");
    assert_eq!((e.nat_addr, e.nat_port, e.service), (u32::from_ne_bytes(POD), POD_PORT.to_be(), BIND_CT_SERVICE));
    let back = L4CtKey {
        src_addr: u32::from_ne_bytes(POD),
        dst_addr: u32::from_ne_bytes(CLIENT),
        src_port: POD_PORT.to_be(),
        dst_port: sport.to_be(),
        proto: 6,
        dir: CT_DIR_REPLY,
        _pad: 0,
    };
    let b = ct.get(&back, 0).expect("the reply entry");
    assert_eq!((b.nat_addr, b.nat_port), (u32::from_ne_bytes(VM), PORT.to_be()), "replies get the frontend back");
    // the retransmitted first segment, and a later pure ACK: the bound path (no new decision)
    let runs = last.runs;
    for s in [seg.clone(), segment(sport, CLIENT_ISN + 1 + head.len() as u32, isn.wrapping_add(1000), ACK, &[], &[])] {
        let hits = counts(&t)[FIRST_CT_HIT as usize];
        let r = test_run(t.fd, &s, 1).unwrap();
        assert!(r.retval == TC_ACT_OK || r.retval == TC_ACT_REDIRECT, "{}", r.retval);
        assert_dnat(&s, &r.data_out);
        assert_eq!(counts(&t)[FIRST_CT_HIT as usize], hits + 1);
    }
    assert_eq!(t.d.bind_first_last().unwrap().runs, runs, "no new decision");
}

#[test]
fn a_bound_flow_whose_endpoint_left_passes_to_the_stack_untouched() {
    let Some(mut t) = setup("a_bound_flow_whose_endpoint_left_passes_to_the_stack_untouched") else {
        return;
    };
    let sport = 41100;
    let (isn, our_ts) = handshake(&t, sport);
    let head = get_head(HOST);
    let seg = segment(sport, CLIENT_ISN + 1, isn.wrapping_add(1), ACK | PSH, &ts_opts(12346, our_ts), &head);
    let r = test_run(t.fd, &seg, 1).expect("BPF_PROG_TEST_RUN");
    assert_dnat(&seg, &r.data_out);
    // the pod leaves: the agent's marking, on the map's entries
    {
        let mut ct: HashMap<_, L4CtKey, L4CtEntry> = HashMap::try_from(t.d.ebpf.map_mut(L4_CT_MAP).unwrap()).unwrap();
        let entries: Vec<_> = ct.iter().map(|e| e.unwrap()).collect();
        let gone = [Ipv4Addr::from(POD)].into();
        let (mark, remove) = ingress::datapath::bind_plan::gone_flows(entries, &gone);
        assert_eq!((mark.len(), remove.len()), (1, 1), "the flow's two entries");
        for (k, e) in &mark {
            ct.insert(k, e, 0).unwrap();
        }
        for k in &remove {
            ct.remove(k).unwrap();
        }
    }
    let next = segment(sport, CLIENT_ISN + 1 + head.len() as u32, isn.wrapping_add(1), ACK | PSH, &[], &head);
    for s in [next, seg] {
        let before = counts(&t);
        let r = test_run(t.fd, &s, 1).unwrap();
        assert_eq!(r.retval, TC_ACT_OK, "to the stack");
        assert_eq!(r.data_out, s, "untouched: the stack sees the frontend's tuple and answers a RST");
        let after = counts(&t);
        assert_eq!(after[FIRST_ENDPOINT_GONE as usize], before[FIRST_ENDPOINT_GONE as usize] + 1);
        assert_eq!(after[FIRST_CT_HIT as usize], before[FIRST_CT_HIT as usize], "not forwarded");
    }
}

/// A namespace of this test's own (the listener lookup sees its sockets only), removed on drop.
struct Ns(&'static str);

impl Ns {
    fn new(name: &'static str) -> Self {
        ingress_tests::netns::ip_quiet(&["netns", "del", name]);
        ingress_tests::netns::ip(&["netns", "add", name]);
        ingress_tests::netns::in_ns(name, || ingress_tests::netns::ip(&["link", "set", "lo", "up"]));
        Ns(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        ingress_tests::netns::ip_quiet(&["netns", "del", self.0]);
    }
}

#[test]
fn a_pure_ack_is_dropped_and_what_the_cookie_does_not_prove_passes_untouched() {
    let Some(t) = setup("a_pure_ack_is_dropped_and_what_the_cookie_does_not_prove_passes_untouched") else {
        return;
    };
    let ns = Ns::new("hbd-pkt2");
    let sport = 42000;
    let (isn, our_ts) = handshake(&t, sport);
    let ack = isn.wrapping_add(1);
    // the handshake's pure ACK: dropped, nothing written
    let c0 = counts(&t);
    let pure = segment(sport, CLIENT_ISN + 1, ack, ACK, &ts_opts(12346, our_ts), &[]);
    assert_eq!(test_run(t.fd, &pure, 1).unwrap().retval, TC_ACT_SHOT);
    assert_eq!(counts(&t)[FIRST_PURE_ACK as usize], c0[FIRST_PURE_ACK as usize] + 1);
    let head = get_head(HOST);
    // in a namespace without a listener (the stack would have nobody to give them to)
    let untouched = |seg: Vec<u8>, why: &str| {
        let r = ingress_tests::netns::in_ns(ns.0, || test_run(t.fd, &seg, 1).unwrap());
        assert_eq!(r.retval, TC_ACT_UNSPEC, "{why}: passed");
        assert_eq!(r.data_out, seg, "{why}: untouched");
    };
    let c1 = counts(&t);
    untouched(
        segment(sport, CLIENT_ISN + 1, ack.wrapping_add(1 << 8), ACK | PSH, &ts_opts(1, our_ts), &head),
        "wrong ack",
    );
    untouched(segment(sport, CLIENT_ISN + 2, ack, ACK | PSH, &ts_opts(1, our_ts), &head), "a later segment");
    untouched(segment(sport, CLIENT_ISN + 1, ack, ACK | PSH, &ts_opts(1, our_ts ^ 1), &head), "wrong TSecr");
    untouched(segment(sport + 1, CLIENT_ISN + 1, ack, ACK | PSH, &ts_opts(1, our_ts), &head), "another port");
    let c2 = counts(&t);
    assert_eq!(c2[FIRST_NO_COOKIE as usize], c1[FIRST_NO_COOKIE as usize] + 4);
    untouched(
        segment(sport, CLIENT_ISN + 1, ack, ACK | PSH, &[1, 1, 8, 9, 0, 0, 0, 1, 0, 0, 0, 2], &head),
        "bad TS length",
    );
    untouched(segment(sport, CLIENT_ISN + 1, ack, ACK | PSH, &[5, 30, 0, 0], &head), "option past the header");
    assert_eq!(counts(&t)[FIRST_BAD_OPTIONS as usize], c2[FIRST_BAD_OPTIONS as usize] + 2);
    // not for this program at all
    untouched(segment(sport, CLIENT_ISN + 1, ack, RST, &[], &[]), "RST");
    untouched(segment(sport, CLIENT_ISN, 0, SYN, &LINUX_SYN, &[]), "SYN");
    let mut other = segment(sport, CLIENT_ISN + 1, ack, ACK | PSH, &ts_opts(1, our_ts), &head);
    other[36..38].copy_from_slice(&9080u16.to_be_bytes()); // checksum now wrong: never read
    untouched(other, "a port that is not a cookie frontend");
    // with the frontend's listener: a segment that is not the first one (reordered
    // before it) is dropped, not left to the listener's RST
    let listener = ingress_tests::netns::in_ns(ns.0, || std::net::TcpListener::bind(("0.0.0.0", PORT)).unwrap());
    let c3 = counts(&t);
    let early = segment(sport, CLIENT_ISN + 1 + 1448, ack, ACK | PSH, &ts_opts(2, our_ts), &[b'x'; 100]);
    let r = ingress_tests::netns::in_ns(ns.0, || test_run(t.fd, &early, 1).unwrap());
    assert_eq!(r.retval, TC_ACT_SHOT, "a second segment before the first: dropped");
    assert_eq!(counts(&t)[FIRST_EARLY_DROPPED as usize], c3[FIRST_EARLY_DROPPED as usize] + 1);
    drop(listener);
    // nothing of these made state
    let ct: HashMap<_, L4CtKey, L4CtEntry> = HashMap::try_from(t.d.ebpf.map(L4_CT_MAP).unwrap()).unwrap();
    assert!(
        ct.keys()
            .filter_map(Result::ok)
            .all(|k| u16::from_be(k.src_port) != sport && u16::from_be(k.dst_port) != sport)
    );
}

#[test]
fn heads_the_agent_must_serve_go_to_its_listener_with_the_host_builds_verdict() {
    let Some(t) = setup("heads_the_agent_must_serve_go_to_its_listener_with_the_host_builds_verdict") else {
        return;
    };
    let ns = Ns::new("hbd-pkt");
    // no listener in this namespace on the frontend: looked up, not found, passed untouched
    let cases: Vec<(Vec<u8>, u8)> = vec![
        (get_head("other.example"), ACK | PSH),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), ACK | PSH),
        (b"GET / HTTP/1.1\r\nHost: app.exa".to_vec(), ACK | PSH),
        (b"GET http://app.example/ HTTP/1.1\r\nHost: app.example\r\n\r\n".to_vec(), ACK | PSH),
        (b"GET / HTTP/1.1\r\nHost: app.example\r\nHost: app.example\r\n\r\n".to_vec(), ACK | PSH),
        (get_head(EMPTY_HOST), ACK | PSH),
        (vec![], ACK | FIN),
    ];
    for (i, (payload, flags)) in cases.iter().enumerate() {
        let sport = 43000 + i as u16;
        let (isn, our_ts) = handshake(&t, sport);
        let seg = segment(sport, CLIENT_ISN + 1, isn.wrapping_add(1), *flags, &ts_opts(7, our_ts), payload);
        let c = counts(&t);
        let r = ingress_tests::netns::in_ns(ns.0, || test_run(t.fd, &seg, 1).unwrap());
        let what = String::from_utf8_lossy(payload);
        assert_eq!(r.retval, TC_ACT_OK, "{what}: to the stack");
        assert_eq!(r.data_out, seg, "{what}: untouched");
        let last = t.d.bind_first_last().unwrap();
        assert_eq!(last.outcome, FIRST_NO_LISTENER, "{what}");
        let want = if payload.is_empty() {
            0xff
        } else {
            match head::scan(payload) {
                Verdict::Host(k) if k.host() == EMPTY_HOST.as_bytes() => 0, // binds, but no endpoint
                Verdict::Host(_) => Fallback::NotBindable as u32,
                Verdict::Fallback(f) => f as u32,
            }
        };
        assert_eq!(last.scan, want, "{what}: the host build's verdict");
        let no_ep = u64::from(what.contains(EMPTY_HOST) && what.starts_with("GET /x"));
        assert_eq!(counts(&t)[FIRST_NO_ENDPOINT as usize], c[FIRST_NO_ENDPOINT as usize] + no_ep, "{what}");
    }
    // with the agent's listener on the frontend's port: the lookup finds it and the
    // kernel function is called with the cookie's attributes (BPF_PROG_TEST_RUN is not
    // tc ingress, so the kernel refuses to assign there: -EINVAL; the netns tier sees
    // the socket made)
    let listener = ingress_tests::netns::in_ns(ns.0, || std::net::TcpListener::bind(("0.0.0.0", PORT)).unwrap());
    let sport = 44000;
    let (isn, our_ts) = handshake(&t, sport);
    let seg =
        segment(sport, CLIENT_ISN + 1, isn.wrapping_add(1), ACK | PSH, &ts_opts(7, our_ts), &get_head("x.example"));
    let r = ingress_tests::netns::in_ns(ns.0, || test_run(t.fd, &seg, 1).unwrap());
    assert_eq!((r.retval, &r.data_out), (TC_ACT_OK, &seg), "to the stack, untouched");
    let last = t.d.bind_first_last().unwrap();
    println!("with a listener: outcome {} kfunc returned {}", last.outcome, last.assign_ret);
    assert!(
        last.outcome == FIRST_FALLBACK || (last.outcome == FIRST_ASSIGN_FAILED && last.assign_ret < 0),
        "the listener was found and the kernel function called: {last:?}"
    );
    drop(listener);
}
