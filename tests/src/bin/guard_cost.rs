//! `cargo xtask bench`'s guard-cost line: the XDP program with the guard programmed
//! (deny and allow lists, the SYN limit) run by BPF_PROG_TEST_RUN with 1,000,000
//! repeats on a SYN (charged to its source's token bucket, so past the burst it is
//! dropped: the full path) and on an established connection's ACK with data; prints
//! the kernel's mean ns per packet (median of 5 runs) against the target of
//! 100 ns. A report, not a test: root, the eBPF object embedded.

use std::collections::BTreeSet;

use ingress::datapath::guard::{GuardRules, translate};
use ingress_tests::packet::{ACK, PSH, Packet, SYN, test_run};

const REPEAT: u32 = 1_000_000;
const TARGET_NS: u32 = 100;

fn main() -> anyhow::Result<()> {
    let mut d = ingress::datapath::load()?;
    // rules of a plausible size: 64 denied networks on each L7 port, an allow list
    let mut deny: Vec<String> = (0..64).map(|i| format!("8080=203.0.{i}.0/24")).collect();
    deny.extend((0..64).map(|i| format!("9080=2001:db8:{i:x}::/48")));
    let rules = GuardRules {
        deny: deny.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
        allow: vec!["6550=172.18.0.0/16".parse()?],
        syn_rate: 100,
        syn_burst: 200,
    };
    let ports: BTreeSet<u16> = [8080, 9080, 6550].into();
    d.guard.program(&translate(&rules, &ports)?)?;
    let fd = d.xdp_program_fd()?;
    let cases = [
        ("SYN (token bucket charged)", Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, SYN).build()),
        (
            "established ACK, 64 B of data",
            Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, ACK | PSH).payload(&[0x61; 64]).build(),
        ),
        ("IPv6 ACK (deny trie looked up)", Packet::tcp("fd00::1", 40000, "fd00::2", 9080, ACK).build()),
    ];
    // what the same program costs on a port without rules (parsing and XDP_STATS only),
    // to tell the guard's share from the machine's speed
    let base = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 22, ACK).build();
    let median = |pkt: &[u8]| -> anyhow::Result<u32> {
        let mut runs: Vec<u32> =
            (0..5).map(|_| test_run(fd, pkt, REPEAT).map(|r| r.duration_ns)).collect::<Result<_, _>>()?;
        runs.sort();
        Ok(runs[2])
    };
    let base_ns = median(&base)?;
    let mut worst = 0;
    let mut parts = vec![];
    for (what, pkt) in &cases {
        let ns = median(pkt)?;
        worst = worst.max(ns);
        parts.push(format!("{what} {ns} ns (guard's share +{} ns)", ns.saturating_sub(base_ns)));
    }
    println!(
        "guard cost (BPF_PROG_TEST_RUN, {REPEAT} repeats, median of 5, per packet): {}; baseline: an ACK to a port without rules {base_ns} ns (parsing + XDP_STATS). Target < {TARGET_NS} ns per packet: {}",
        parts.join("; "),
        if worst < TARGET_NS { "met" } else { "MISSED" }
    );
    Ok(())
}
