//! Packet tier for the edge SYN cookie (`syncookie_xdp`, delayed binding): the SYN
//! option matrix of docs/delayed-binding.md's test plan 5.1 through BPF_PROG_TEST_RUN.
//! Each answered SYN must come back as XDP_TX with a SYN-ACK whose checksums verify
//! with the harness's own RFC 1071 code, whose options are parsed here independently,
//! whose bytes equal the host build of the same shared code (ingress_common::syncookie),
//! and whose cookie validates on the host for the right ACK only. Unusual or malformed
//! SYNs, and SYNs to frontends not in the map, pass untouched.

use std::net::Ipv4Addr;

use ingress::datapath as ebpf;
use ingress::datapath::syncookie::SynCookieMaps;
use ingress_common::syncookie::{self, SynCookieConfig, Tuple};
use ingress_tests::packet::{checksum, test_run};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

const CLIENT: [u8; 4] = [198, 18, 0, 1];
const VM: [u8; 4] = [198, 18, 0, 2];
const PORT: u16 = 8080;
const CLIENT_ISN: u32 = 0x1234_5678;

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
    _d: ebpf::Dataplane,
    _maps: SynCookieMaps,
    fd: i32,
}

fn setup(test: &str) -> Option<T> {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return None;
    }
    let mut d = ebpf::load().unwrap_or_else(|e| panic!("{test}: {e}"));
    let fd = d.syncookie_program_fd().unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let mut maps = SynCookieMaps::take(&mut d.ebpf).expect("cookie maps");
    maps.set_config(&cfg()).expect("config");
    maps.add_target(Ipv4Addr::from(VM), PORT).expect("target");
    Some(T { _d: d, _maps: maps, fd })
}

/// A SYN frame: Ethernet, IPv4 (with `ip_opts`), TCP with `opts` (padded to 4), `payload`.
struct Syn {
    opts: Vec<u8>,
    flags: u8,
    ip_opts: Vec<u8>,
    payload: Vec<u8>,
    dport: u16,
    frag: u16,
    vlan: bool,
}

impl Syn {
    fn new(opts: &[u8]) -> Self {
        Syn { opts: opts.to_vec(), flags: SYN, ip_opts: vec![], payload: vec![], dport: PORT, frag: 0, vlan: false }
    }

    fn build(&self) -> Vec<u8> {
        let mut opts = self.opts.clone();
        while opts.len() % 4 != 0 {
            opts.push(0);
        }
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&40000u16.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&CLIENT_ISN.to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        tcp.push((((20 + opts.len()) / 4) as u8) << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&64240u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&opts);
        tcp.extend_from_slice(&self.payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&CLIENT);
        pseudo.extend_from_slice(&VM);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&tcp);
        let c = checksum(&pseudo);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        let hlen = 20 + self.ip_opts.len();
        let mut ip = vec![0x40 | (hlen / 4) as u8, 0];
        ip.extend_from_slice(&((hlen + tcp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, 6, 0, 0]);
        ip.extend_from_slice(&CLIENT);
        ip.extend_from_slice(&VM);
        ip.extend_from_slice(&self.ip_opts);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if self.vlan {
            f.extend_from_slice(&[0x81, 0x00, 0, 42]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        f
    }
}

/// The SYN-ACK's options as this test reads them (independent of the shared parser).
#[derive(Debug, Default, PartialEq)]
struct Seen {
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_perm: bool,
    ts: Option<(u32, u32)>,
}

fn seen_options(o: &[u8]) -> Seen {
    let mut s = Seen::default();
    let mut i = 0;
    while i < o.len() {
        match o[i] {
            0 => break,
            1 => i += 1,
            k => {
                let l = o[i + 1] as usize;
                let v = &o[i + 2..i + l];
                match k {
                    2 => s.mss = Some(u16::from_be_bytes([v[0], v[1]])),
                    3 => s.wscale = Some(v[0]),
                    4 => s.sack_perm = true,
                    8 => {
                        s.ts = Some((
                            u32::from_be_bytes(v[0..4].try_into().unwrap()),
                            u32::from_be_bytes(v[4..8].try_into().unwrap()),
                        ))
                    }
                    _ => panic!("unexpected option {k} in the SYN-ACK"),
                }
                i += l;
            }
        }
    }
    s
}

const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];
const LINUX: [u8; 20] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0, 0, 1, 3, 3, 7];

/// Runs `syn`, expects a SYN-ACK, checks it every way; returns what it advertised.
fn answered(t: &T, syn: &Syn, want: Seen, ecn: bool) -> Seen {
    let pkt = syn.build();
    let r = test_run(t.fd, &pkt, 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.retval, XDP_TX, "answered with XDP_TX: {:02x?}", syn.opts);
    let p = r.data_out;
    assert_eq!(p.len(), 74, "Ethernet + IPv4 + 40-byte TCP header");
    assert_eq!((&p[0..6], &p[6..12]), (&pkt[6..12], &pkt[0..6]), "MACs swapped");
    // checksums by the harness's RFC 1071
    assert_eq!(checksum(&p[14..34]), 0, "IPv4 header checksum");
    let mut pseudo = p[26..34].to_vec();
    pseudo.extend_from_slice(&[0, 6, 0, 40]);
    pseudo.extend_from_slice(&p[34..74]);
    assert_eq!(checksum(&pseudo), 0, "TCP checksum");
    assert_eq!((&p[26..30], &p[30..34]), (&VM[..], &CLIENT[..]), "addresses swapped");
    assert_eq!(u16::from_be_bytes([p[34], p[35]]), PORT);
    assert_eq!(u16::from_be_bytes([p[36], p[37]]), 40000);
    let isn = u32::from_be_bytes(p[38..42].try_into().unwrap());
    assert_eq!(u32::from_be_bytes(p[42..46].try_into().unwrap()), CLIENT_ISN + 1, "ack = client ISN + 1");
    assert_eq!(p[47], SYN | ACK | if ecn { ECE } else { 0 }, "flags");
    assert_eq!(u16::from_be_bytes([p[48], p[49]]), 64240, "non-zero window");
    let s = seen_options(&p[54..74]);
    assert_eq!(s.mss, want.mss, "MSS");
    assert_eq!(s.wscale, want.wscale, "window scale");
    assert_eq!(s.sack_perm, want.sack_perm, "SACK permitted");
    assert_eq!(s.ts.map(|(_, ecr)| ecr), want.ts.map(|(_, ecr)| ecr), "TSecr echoes the client's TSval");
    // the same bytes as the host build of the shared code (TSval's random high bits taken)
    let tuple = Tuple { saddr: u32::from_be_bytes(CLIENT), daddr: u32::from_be_bytes(VM), sport: 40000, dport: PORT };
    let mut ob = [0u8; syncookie::OPT_BUF];
    ob[..syn.opts.len()].copy_from_slice(&syn.opts);
    let o = syncookie::parse_syn_options(&ob, syn.opts.len()).expect("host parses it too");
    let random = s.ts.map_or(0, |(val, _)| val);
    let c = syncookie::make(&cfg(), &tuple, CLIENT_ISN, &o, ecn, random);
    assert_eq!(c.isn, isn, "the host computes the same cookie");
    let mut host = [0u8; syncookie::SYNACK_LEN];
    syncookie::synack(&cfg(), &tuple, CLIENT_ISN, &o, &c, ecn, &mut host);
    assert_eq!(&p[14..74], &host[..], "byte for byte the host's SYN-ACK");
    // the client's ACK validates; one with another seq does not
    let tsecr = s.ts.map(|(val, _)| val);
    let d = syncookie::check(&cfg(), &tuple, CLIENT_ISN + 1, isn.wrapping_add(1), tsecr).expect("ACK validates");
    assert_eq!((d.sack, d.ecn, d.tstamp), (o.sack_perm, ecn, o.timestamp.is_some()));
    assert_eq!(syncookie::check(&cfg(), &tuple, CLIENT_ISN + 2, isn.wrapping_add(1), tsecr), None);
    s
}

fn passed(fd: i32, syn: &Syn, why: &str) {
    let pkt = syn.build();
    let r = test_run(fd, &pkt, 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.retval, XDP_PASS, "{why}: passed");
    assert_eq!(r.data_out, pkt, "{why}: untouched");
}

#[test]
fn the_syn_option_matrix_gets_the_golden_synack() {
    let Some(t) = setup("the_syn_option_matrix_gets_the_golden_synack") else { return };
    let m = |mss| Seen { mss: Some(mss), ..Default::default() };
    // none: the RFC default MSS 536
    answered(&t, &Syn::new(&[]), m(536), false);
    // MSS only: min(client, path 1410)
    answered(&t, &Syn::new(&MSS_1460), m(1410), false);
    answered(&t, &Syn::new(&[2, 4, 0x04, 0x00]), m(1024), false);
    // all (a Linux SYN): MSS, SACK, TS, wscale
    let all = Seen { mss: Some(1410), wscale: Some(7), sack_perm: true, ts: Some((0, 12345)) };
    answered(&t, &Syn::new(&LINUX), all, false);
    // wscale 0 / 7 / 14 / 15 (> 14 is used as 14): ours (7) is advertised each time
    for w in [0u8, 7, 14, 15] {
        let s = answered(&t, &Syn::new(&[2, 4, 0x05, 0xb4, 1, 3, 3, w]), Seen { wscale: Some(7), ..m(1410) }, false);
        assert_eq!(s.wscale, Some(7));
    }
    // SACK only, TS only
    answered(&t, &Syn::new(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]), Seen { sack_perm: true, ..m(1410) }, false);
    answered(&t, &Syn::new(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0]), Seen { ts: Some((0, 9)), ..m(536) }, false);
    // ECE + CWR: ECN setup, answered with ECE
    let mut ecn = Syn::new(&MSS_1460);
    ecn.flags = SYN | ECE | CWR;
    answered(&t, &ecn, m(1410), true);
    // NOP and EOL padding
    answered(&t, &Syn::new(&[1, 1, 1, 2, 4, 0x05, 0xb4, 0, 0, 0, 0, 0]), m(1410), false);
    // a 60-byte SYN shrinks to the 74-byte SYN-ACK, a 54-byte one grows
    answered(&t, &Syn::new(&[1; 40]), m(536), false);
}

#[test]
fn unusual_and_malformed_syns_pass_untouched() {
    let Some(t) = setup("unusual_and_malformed_syns_pass_untouched") else { return };
    passed(t.fd, &Syn::new(&[2, 3, 5]), "MSS length 3");
    passed(t.fd, &Syn::new(&[2, 4, 5, 0xb4, 2, 4, 5, 0xb4]), "duplicate MSS");
    passed(t.fd, &Syn::new(&[8, 0, 0, 0]), "TS length 0");
    passed(t.fd, &Syn::new(&[1, 1, 1, 8]), "TS without its length byte");
    passed(t.fd, &Syn::new(&[2, 4, 0, 0]), "MSS 0");
    passed(t.fd, &Syn::new(&[30, 4, 0x10, 0x81]), "MPTCP");
    passed(t.fd, &Syn::new(&[34, 2, 1, 1]), "TFO cookie request");
    passed(t.fd, &Syn::new(&[19, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), "TCP MD5");
    let mut s = Syn::new(&MSS_1460);
    s.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    passed(t.fd, &s, "data on the SYN (TFO)");
    let mut s = Syn::new(&MSS_1460);
    s.ip_opts = vec![1, 1, 1, 0];
    passed(t.fd, &s, "IP options");
    let mut s = Syn::new(&MSS_1460);
    s.frag = 0x2000;
    passed(t.fd, &s, "a first fragment (MF)");
    let mut s = Syn::new(&MSS_1460);
    s.vlan = true;
    passed(t.fd, &s, "VLAN tagged");
    for (flags, why) in [(SYN | ACK, "SYN-ACK"), (RST, "RST"), (ACK, "ACK"), (SYN | 0x01, "SYN+FIN")] {
        let mut s = Syn::new(&MSS_1460);
        s.flags = flags;
        passed(t.fd, &s, why);
    }
    let mut s = Syn::new(&MSS_1460);
    s.dport = 9080;
    passed(t.fd, &s, "a port not in the map");
}

#[test]
fn an_empty_target_map_or_unset_config_answers_nothing_and_the_key_slot_is_used() {
    let test = "an_empty_target_map_or_unset_config_answers_nothing_and_the_key_slot_is_used";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let mut d = ebpf::load().unwrap_or_else(|e| panic!("{test}: {e}"));
    let fd = d.syncookie_program_fd().unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let insns = d.verified_insns(ingress_common::maps::SYNCOOKIE_PROGRAM).expect("verified_insns");
    println!("syncookie_xdp: verifier processed {insns} instructions");
    let mut maps = SynCookieMaps::take(&mut d.ebpf).expect("maps");
    // the default: no target, no config
    passed(fd, &Syn::new(&LINUX), "nothing in the maps (the agent's default)");
    maps.add_target(Ipv4Addr::from(VM), PORT).unwrap();
    passed(fd, &Syn::new(&LINUX), "a target but no config (path MSS 0)");
    let mut c = cfg();
    c.current = 1;
    maps.set_config(&c).unwrap();
    assert_eq!(maps.config().unwrap(), c);
    let r = test_run(fd, &Syn::new(&MSS_1460).build(), 1).unwrap();
    assert_eq!(r.retval, XDP_TX);
    let isn = u32::from_be_bytes(r.data_out[38..42].try_into().unwrap());
    assert_eq!(isn >> 31, 1, "made with key slot 1");
}
