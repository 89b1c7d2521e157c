//! Packet tier for delayed binding's head scanner: the tc program `bind_scan` (the
//! scanner of `ingress_common::head` in a `bpf_loop`) on built TCP segments through
//! BPF_PROG_TEST_RUN (root, no interfaces). For every head of the hand-written corpus,
//! cut at every byte, and for random heads of the seeded generator, the kernel's
//! verdict (code, host key, backend) must equal the host build's (`head::scan` and the
//! translation's map lookup), the packet must come back unchanged with TC_ACT_UNSPEC,
//! and the per-verdict counters must add up. Loading the program proves the verifier
//! accepts the scanner on this kernel; its verified instruction count is printed.

use std::path::Path;

use aya::maps::{Array, HashMap, PerCpuArray};
use ingress::datapath as ebpf;
use ingress::datapath::bind::corpus::{Rng, corpus, random_head};
use ingress::datapath::bind::{BindEntries, BindOptions, translate};
use ingress_common::bind::{BindScanResult, BindTarget};
use ingress_common::head::{self, BindHostKey, Fallback, SCAN_MAX, VERDICT_BIND, VERDICT_CODES, Verdict};
use ingress_common::maps::{BIND_HOSTS_MAP, BIND_SCAN_COUNTS_MAP, BIND_SCAN_LAST_MAP, BIND_SCAN_PROGRAM};
use ingress_tests::packet::{ACK, PSH, Packet, SYN, test_run};

const TC_ACT_UNSPEC: u32 = u32::MAX; // -1

struct Scan {
    d: ebpf::Dataplane,
    fd: i32,
    entries: BindEntries,
    runs: u32,
}

fn setup(test: &str) -> Option<Scan> {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return None;
    }
    // BIND_SCAN_OBJECT: an object file to load instead of the embedded one (trying a
    // change to the program without rebuilding the agent)
    let mut d = match std::env::var_os("BIND_SCAN_OBJECT") {
        Some(p) => ebpf::load_from(&std::fs::read(&p).expect("BIND_SCAN_OBJECT")),
        None => ebpf::load(),
    }
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let fd = d.tc_program_fd(BIND_SCAN_PROGRAM).unwrap_or_else(|e| panic!("{test}: verifier: {e:?}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/openchoreo");
    let res = ingress::sources::manifest::load_dir(&dir).expect("fixtures");
    let maps = [
        "0.0.0.0:8080=openchoreo-control-plane/gateway-default:80",
        "0.0.0.0:9080=openchoreo-data-plane/gateway-default:19080",
    ];
    let mappings: Vec<_> = maps.iter().map(|m| m.parse().unwrap()).collect();
    let table = ingress::routing::compile(&res, &mappings);
    let entries = translate(&table, &[8080, 9080], BindOptions::default());
    assert!(entries.hosts.len() >= 2, "the fixtures have bindable hosts: {:?}", entries.decisions);
    let mut hosts: HashMap<_, BindHostKey, BindTarget> =
        HashMap::try_from(d.ebpf.map_mut(BIND_HOSTS_MAP).expect("BIND_HOSTS")).expect("hash map");
    for (k, v) in &entries.hosts {
        hosts.insert(k, v, 0).expect("insert a bindable host");
    }
    Some(Scan { d, fd, entries, runs: 0 })
}

/// What the host build says for this segment to `port`: (code, backend, key).
fn expected(entries: &BindEntries, port: u16, payload: &[u8]) -> (u32, u32, BindHostKey) {
    if payload.is_empty() {
        return (Fallback::NoPayload as u32, 0, BindHostKey::EMPTY);
    }
    match head::scan(payload) {
        Verdict::Host(k) => {
            let key = BindHostKey { port, ..k };
            match entries.lookup(&key) {
                Some((id, _)) => (VERDICT_BIND as u32, id, key),
                None => (Fallback::NotBindable as u32, 0, key),
            }
        }
        Verdict::Fallback(f) => (f as u32, 0, BindHostKey::EMPTY),
    }
}

impl Scan {
    /// Runs one segment carrying `payload` to `port`; returns the program's verdict.
    fn run(&mut self, port: u16, payload: &[u8]) -> BindScanResult {
        let pkt = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", port, ACK | PSH).payload(payload).build();
        let r = test_run(self.fd, &pkt, 1).expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.retval, TC_ACT_UNSPEC, "the scanner only passes");
        assert_eq!(r.data_out, pkt, "the packet is not changed");
        self.runs += 1;
        let last: Array<_, BindScanResult> =
            Array::try_from(self.d.ebpf.map(BIND_SCAN_LAST_MAP).expect("BIND_SCAN_LAST")).expect("array");
        let got = last.get(&0, 0).expect("the last verdict");
        assert_eq!(got.runs, self.runs, "the program recorded this run");
        got
    }

    fn check(&mut self, port: u16, payload: &[u8]) -> u32 {
        let got = self.run(port, payload);
        let want = expected(&self.entries, port, payload);
        assert_eq!(
            (got.verdict, got.backend, got.key),
            want,
            "kernel vs host for {:?}",
            String::from_utf8_lossy(payload)
        );
        got.verdict
    }

    fn counts(&self) -> Vec<u64> {
        let c: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.d.ebpf.map(BIND_SCAN_COUNTS_MAP).expect("BIND_SCAN_COUNTS")).expect("array");
        (0..VERDICT_CODES).map(|i| c.get(&i, 0).expect("count").iter().sum()).collect()
    }
}

#[test]
fn kernel_verdicts_equal_the_host_builds_on_the_corpus_cut_at_every_byte() {
    let Some(mut s) = setup("kernel_verdicts_equal_the_host_builds_on_the_corpus_cut_at_every_byte") else { return };
    let prog: &aya::programs::SchedClassifier =
        s.d.ebpf.program(BIND_SCAN_PROGRAM).expect("program").try_into().expect("classifier");
    let info = prog.info().expect("program info");
    println!(
        "MEASURED bind_scan: verifier accepted, {} instructions verified, {} translated bytes",
        info.verified_instruction_count().map_or("?".into(), |n| n.to_string()),
        info.size_translated().map_or("?".into(), |n| n.to_string()),
    );
    let mut hosts: Vec<String> = s.entries.decisions.iter().map(|d| d.hostname.clone()).collect();
    hosts.sort();
    hosts.dedup();
    hosts.retain(|h| !h.starts_with('*'));
    hosts.push("nowhere.test".into());
    let (mut binds, mut segments) = (0usize, 0usize);
    // one bound and one unbound host at every cut (the kernel runs are slow); every
    // host whole
    let bound = s.entries.decisions.iter().find(|d| d.decision.is_ok()).map(|d| (d.hostname.clone(), d.port)).unwrap();
    for (host, port) in [(bound.0.as_str(), bound.1), ("nowhere.test", 9080)] {
        for stream in corpus(host) {
            for cut in 0..=stream.len().min(SCAN_MAX + 8) {
                segments += 1;
                if s.check(port, &stream[..cut]) == VERDICT_BIND as u32 {
                    binds += 1;
                }
            }
        }
    }
    for host in &hosts {
        for port in [8080, 9080] {
            for stream in corpus(host) {
                segments += 1;
                if s.check(port, &stream) == VERDICT_BIND as u32 {
                    binds += 1;
                }
            }
        }
    }
    let counts = s.counts();
    assert_eq!(counts.iter().sum::<u64>(), s.runs as u64, "every run counted once: {counts:?}");
    assert_eq!(counts[VERDICT_BIND as usize], binds as u64);
    assert!(binds > 100, "{binds} binds of {segments} segments");
    for f in
        [Fallback::Incomplete, Fallback::NotBindable, Fallback::DuplicateHost, Fallback::ObsFold, Fallback::TooLong]
    {
        assert!(counts[f as usize] > 0, "{f:?} seen: {counts:?}");
    }
    println!("bind_scan corpus: {segments} segments, {binds} bound, counts {counts:?}");
}

#[test]
fn kernel_verdicts_equal_the_host_builds_on_random_heads() {
    let Some(mut s) = setup("kernel_verdicts_equal_the_host_builds_on_random_heads") else { return };
    let mut hosts: Vec<String> = s.entries.decisions.iter().map(|d| d.hostname.clone()).collect();
    hosts.retain(|h| !h.starts_with('*'));
    let mut r = Rng(0x0bad_5eed);
    let mut binds = 0;
    for i in 0..20_000 {
        let stream = random_head(&mut r, &hosts);
        let cut = if i % 2 == 0 { stream.len() } else { r.below(stream.len() + 1) };
        let port = if i % 3 == 0 { 8080 } else { 9080 };
        if s.check(port, &stream[..cut]) == VERDICT_BIND as u32 {
            binds += 1;
        }
    }
    assert!(binds > 300, "{binds} binds");
    // segments that are not IPv4 TCP with a payload: counted as no payload, untouched
    for pkt in [
        Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 9080, SYN).build(),
        Packet::udp("198.18.0.1", 40000, "198.18.0.2", 9080, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").build(),
        Packet::tcp("fd00::1", 40000, "fd00::2", 9080, ACK).payload(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").build(),
    ] {
        let r = test_run(s.fd, &pkt, 1).expect("BPF_PROG_TEST_RUN");
        assert_eq!((r.retval, &r.data_out), (TC_ACT_UNSPEC, &pkt));
        s.runs += 1;
    }
    let counts = s.counts();
    assert_eq!(counts.iter().sum::<u64>(), s.runs as u64);
    assert!(counts[Fallback::NoPayload as usize] >= 3, "{counts:?}");
}
