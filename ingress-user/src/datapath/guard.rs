//! Pure translation of the guard's flags (`--deny`, `--allow`, `--syn-rate`,
//! `--syn-burst`) and the set of guarded ports into the entries of the guard's maps
//! (ingress-common/src/guard.rs), and of its counters into named rows. No aya here:
//! [`super::guard_maps`] writes and reads the maps.
//!
//! Semantics: deny wins over allow (a source in a port's deny list is dropped even
//! if the port's allow list also holds it); a port with an allow list admits only
//! sources in it, of either address family (an IPv4-only allow list refuses every
//! IPv6 source); both apply to TCP and UDP packets to the port. The SYN token bucket
//! is per source address (shared by all guarded ports) and charges only TCP SYNs
//! without ACK to the guarded ports (every L7 listen port and every L4 port).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ingress_common::guard::{
    GUARD_ALLOW, GUARD_DENY, GUARD_SYN, GuardConfig, GuardCounterKey, GuardNet4, GuardNet6, GuardReason, PORT_BITS,
    SYN_TOKEN,
};
use ingress_common::maps::GUARD_RULES_MAX_ENTRIES;

use crate::config::PortCidr;
use crate::telemetry::GuardCounter;

/// Largest `--syn-burst` (the bucket in units must fit a u64 with room to refill).
pub const MAX_SYN_BURST: u64 = 1_000_000_000;
/// Largest `--syn-rate`.
pub const MAX_SYN_RATE: u64 = 1_000_000_000;

/// The guard's flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardRules {
    pub deny: Vec<PortCidr>,
    pub allow: Vec<PortCidr>,
    /// SYNs per second per source (0: no SYN limit).
    pub syn_rate: u64,
    /// Bucket size in SYNs (0: no SYN limit).
    pub syn_burst: u64,
}

impl GuardRules {
    /// The rules from the command line; `--syn-burst` defaults to `--syn-rate`, and is
    /// refused without it.
    pub fn from_flags(
        deny: Vec<PortCidr>,
        allow: Vec<PortCidr>,
        syn_rate: u64,
        syn_burst: Option<u64>,
    ) -> Result<Self, GuardError> {
        let syn_burst = match syn_burst {
            Some(b) if b > 0 && syn_rate == 0 => return Err(GuardError::BurstWithoutRate(b)),
            Some(b) => b,
            None => syn_rate,
        };
        Ok(Self { deny, allow, syn_rate, syn_burst })
    }

    /// Whether any rule is set (the guard needs the eBPF dataplane then).
    pub fn any(&self) -> bool {
        !self.deny.is_empty() || !self.allow.is_empty() || self.syn_limited()
    }

    pub fn syn_limited(&self) -> bool {
        self.syn_rate > 0 && self.syn_burst > 0
    }
}

/// An LPM key as (prefix length in bits, data).
pub type Lpm4 = (u32, GuardNet4);
pub type Lpm6 = (u32, GuardNet6);

/// Everything the guard's maps hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardEntries {
    /// Port (host byte order) -> `GUARD_*` flags.
    pub ports: BTreeMap<u16, u16>,
    pub deny4: BTreeSet<Lpm4>,
    pub deny6: BTreeSet<Lpm6>,
    pub allow4: BTreeSet<Lpm4>,
    pub allow6: BTreeSet<Lpm6>,
    pub config: GuardConfig,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    #[error("--syn-burst {0} needs --syn-rate N (SYNs per second per source; 0 = off)")]
    BurstWithoutRate(u64),
    #[error("--syn-rate {0} is over the maximum of {MAX_SYN_RATE}")]
    Rate(u64),
    #[error("--syn-burst {0} is over the maximum of {MAX_SYN_BURST}")]
    Burst(u64),
    #[error("--{flag}: {count} rules of one address family, the map holds {GUARD_RULES_MAX_ENTRIES}")]
    TooManyRules { flag: &'static str, count: usize },
}

/// The entries for `rules`, with the SYN limit on every port of `syn_ports` (the L7
/// listen ports and the L4 ports). Every port of `syn_ports` has an entry in `ports`
/// (flags 0 without a SYN limit or lists), so it gets a counter slot.
pub fn translate(rules: &GuardRules, syn_ports: &BTreeSet<u16>) -> Result<GuardEntries, GuardError> {
    if rules.syn_rate > MAX_SYN_RATE {
        return Err(GuardError::Rate(rules.syn_rate));
    }
    if rules.syn_burst > MAX_SYN_BURST {
        return Err(GuardError::Burst(rules.syn_burst));
    }
    let mut e = GuardEntries::default();
    for r in &rules.deny {
        *e.ports.entry(r.port).or_default() |= GUARD_DENY;
        push(r, &mut e.deny4, &mut e.deny6);
    }
    for r in &rules.allow {
        *e.ports.entry(r.port).or_default() |= GUARD_ALLOW;
        push(r, &mut e.allow4, &mut e.allow6);
    }
    // every listen port has an entry, with flags 0 when nothing is checked there: the
    // entry gives it a counter slot, so its packets are counted without a hash lookup
    for p in syn_ports {
        e.ports.entry(*p).or_default();
    }
    if rules.syn_limited() {
        for p in syn_ports {
            *e.ports.entry(*p).or_default() |= GUARD_SYN;
        }
        let cap = rules.syn_burst * SYN_TOKEN;
        e.config = GuardConfig { rate: rules.syn_rate, cap, fill_ns: cap.div_ceil(rules.syn_rate) };
    }
    for (flag, count) in
        [("deny", e.deny4.len()), ("deny", e.deny6.len()), ("allow", e.allow4.len()), ("allow", e.allow6.len())]
    {
        if count > GUARD_RULES_MAX_ENTRIES as usize {
            return Err(GuardError::TooManyRules { flag, count });
        }
    }
    Ok(e)
}

/// The ports whose SYNs are charged: every L7 listen port and every L4 port.
pub fn guarded_ports(ports: impl IntoIterator<Item = u16>) -> BTreeSet<u16> {
    ports.into_iter().collect()
}

fn push(r: &PortCidr, v4: &mut BTreeSet<Lpm4>, v6: &mut BTreeSet<Lpm6>) {
    let port = r.port.to_be_bytes();
    let len = PORT_BITS + r.prefix as u32;
    match r.addr {
        IpAddr::V4(a) => {
            v4.insert((len, GuardNet4 { port, addr: a.octets() }));
        }
        IpAddr::V6(a) => {
            v6.insert((len, GuardNet6 { port, addr: a.octets() }));
        }
    }
}

/// One line for the log: what the guard enforces.
pub fn describe(rules: &GuardRules, e: &GuardEntries) -> String {
    let syn = if rules.syn_limited() {
        let ports: Vec<String> =
            e.ports.iter().filter(|(_, f)| *f & GUARD_SYN != 0).map(|(p, _)| p.to_string()).collect();
        format!("{} SYN/s per source, burst {}, on ports {}", rules.syn_rate, rules.syn_burst, ports.join(","))
    } else {
        "no SYN limit".into()
    };
    format!(
        "{} deny and {} allow rules on {} ports; {syn}",
        rules.deny.len(),
        rules.allow.len(),
        e.ports.values().filter(|f| *f & (GUARD_DENY | GUARD_ALLOW) != 0).count()
    )
}

/// Counter entries (summed over CPUs) as sorted rows, zeroes left out.
pub fn guard_counters(entries: impl IntoIterator<Item = (GuardCounterKey, u64, u64)>) -> Vec<GuardCounter> {
    let mut rows: Vec<(GuardCounterKey, GuardCounter)> = entries
        .into_iter()
        .filter(|(_, packets, _)| *packets > 0)
        .map(|(k, packets, bytes)| {
            let (reason, verdict) = match GuardReason::from_u8(k.reason) {
                Some(r) => (r.name().to_string(), if r.is_drop() { "drop" } else { "pass" }),
                None => (format!("reason-{}", k.reason), "unknown"),
            };
            (k, GuardCounter { port: k.port, reason, verdict: verdict.into(), packets, bytes })
        })
        .collect();
    rows.sort_by_key(|(k, _)| *k);
    rows.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> PortCidr {
        s.parse().unwrap()
    }

    fn ports(p: &[u16]) -> BTreeSet<u16> {
        p.iter().copied().collect()
    }

    #[test]
    fn cidrs_become_lpm_keys_of_port_then_prefix() {
        let rules = GuardRules {
            deny: vec![rule("8080=10.1.2.3/8"), rule("8080=fd00::1/64"), rule("9080=198.18.0.3")],
            allow: vec![rule("6550=172.18.0.0/16")],
            ..Default::default()
        };
        let e = translate(&rules, &ports(&[8080, 9080])).unwrap();
        assert_eq!(
            e.deny4,
            [
                (16 + 8, GuardNet4 { port: [0x1f, 0x90], addr: [10, 0, 0, 0] }),
                (16 + 32, GuardNet4 { port: 9080u16.to_be_bytes(), addr: [198, 18, 0, 3] })
            ]
            .into()
        );
        let v6: Vec<_> = e.deny6.iter().collect();
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].0, 16 + 64);
        assert_eq!(v6[0].1.port, 8080u16.to_be_bytes());
        assert_eq!(&v6[0].1.addr[..2], &[0xfd, 0]);
        assert!(v6[0].1.addr[2..].iter().all(|b| *b == 0), "host bits cleared");
        assert_eq!(e.allow4, [(16 + 16, GuardNet4 { port: 6550u16.to_be_bytes(), addr: [172, 18, 0, 0] })].into());
        assert!(e.allow6.is_empty());
        // no SYN limit set: only the ports with rules, and a zero config
        assert_eq!(e.ports, [(6550, GUARD_ALLOW), (8080, GUARD_DENY), (9080, GUARD_DENY)].into());
        assert_eq!(e.config, GuardConfig::default());
    }

    #[test]
    fn a_port_with_both_lists_gets_both_flags_and_duplicates_collapse() {
        let rules = GuardRules {
            deny: vec![rule("8080=10.0.0.5"), rule("8080=10.0.0.5/32")],
            allow: vec![rule("8080=10.0.0.0/24"), rule("8080=10.0.0.9/24")],
            ..Default::default()
        };
        let e = translate(&rules, &ports(&[])).unwrap();
        assert_eq!(e.ports, [(8080, GUARD_DENY | GUARD_ALLOW)].into());
        assert_eq!(e.deny4.len(), 1);
        assert_eq!(e.allow4.len(), 1, "10.0.0.9/24 is 10.0.0.0/24");
    }

    #[test]
    fn the_syn_limit_goes_on_every_guarded_port_in_fixed_point() {
        let rules =
            GuardRules { syn_rate: 100, syn_burst: 200, deny: vec![rule("53=10.0.0.0/8")], ..Default::default() };
        let e = translate(&rules, &ports(&[8080, 9080, 6550])).unwrap();
        assert_eq!(e.ports, [(53, GUARD_DENY), (6550, GUARD_SYN), (8080, GUARD_SYN), (9080, GUARD_SYN)].into());
        assert_eq!(e.config.rate, 100);
        assert_eq!(e.config.cap, 200 * SYN_TOKEN);
        // an empty bucket of 200 tokens at 100/s fills in 2 s
        assert_eq!(e.config.fill_ns, 2_000_000_000);
        // a rate that does not divide evenly rounds the fill time up
        let e = translate(&GuardRules { syn_rate: 3, syn_burst: 1, ..Default::default() }, &ports(&[1])).unwrap();
        assert_eq!(e.config.fill_ns, 333_333_334);
        assert!(e.config.fill_ns * e.config.rate >= e.config.cap);
    }

    #[test]
    fn zero_rate_or_burst_turns_the_syn_limit_off() {
        for (rate, burst) in [(0, 100), (100, 0), (0, 0)] {
            let rules = GuardRules { syn_rate: rate, syn_burst: burst, ..Default::default() };
            let e = translate(&rules, &ports(&[8080])).unwrap();
            // the listen port keeps an entry for its counter slot, with nothing checked
            assert_eq!(e.ports, [(8080, 0)].into(), "{rate}/{burst}: {:?}", e.ports);
            assert_eq!(e.config, GuardConfig::default());
            assert!(!rules.any());
        }
    }

    #[test]
    fn burst_defaults_to_the_rate_and_needs_one() {
        let r = GuardRules::from_flags(vec![], vec![], 50, None).unwrap();
        assert_eq!((r.syn_rate, r.syn_burst), (50, 50));
        let r = GuardRules::from_flags(vec![], vec![], 50, Some(0)).unwrap();
        assert!(!r.syn_limited(), "an explicit 0 burst turns the limit off");
        let r = GuardRules::from_flags(vec![], vec![], 0, None).unwrap();
        assert!(!r.any());
        let e = GuardRules::from_flags(vec![], vec![], 0, Some(10)).unwrap_err();
        assert!(e.to_string().contains("--syn-burst 10 needs --syn-rate"), "{e}");
        let r = GuardRules::from_flags(vec![rule("1=::/0")], vec![], 0, None).unwrap();
        assert!(r.any());
    }

    #[test]
    fn limits_are_checked() {
        let r = GuardRules { syn_rate: MAX_SYN_RATE + 1, syn_burst: 1, ..Default::default() };
        assert_eq!(translate(&r, &ports(&[])), Err(GuardError::Rate(MAX_SYN_RATE + 1)));
        let r = GuardRules { syn_rate: 1, syn_burst: MAX_SYN_BURST + 1, ..Default::default() };
        assert!(translate(&r, &ports(&[])).unwrap_err().to_string().contains("--syn-burst"));
        // the largest values do not overflow the fixed-point arithmetic of the program
        let r = GuardRules { syn_rate: MAX_SYN_RATE, syn_burst: MAX_SYN_BURST, ..Default::default() };
        let c = translate(&r, &ports(&[1])).unwrap().config;
        assert!(c.cap.checked_add(c.fill_ns.checked_mul(c.rate).unwrap()).is_some());
    }

    #[test]
    fn counters_are_named_with_their_verdict() {
        let k = |port, r: GuardReason| GuardCounterKey { port, reason: r as u8, _pad: 0 };
        let rows = guard_counters([
            (k(8080, GuardReason::SynRate), 7, 420),
            (k(8080, GuardReason::Denied), 2, 120),
            (k(0, GuardReason::Malformed), 1, 30),
            (k(9080, GuardReason::NotAllowed), 0, 0),
        ]);
        let got: Vec<_> = rows.iter().map(|c| (c.port, c.reason.as_str(), c.verdict.as_str(), c.packets)).collect();
        assert_eq!(
            got,
            [(0, "malformed", "pass", 1), (8080, "denied", "drop", 2), (8080, "syn-rate", "drop", 7)],
            "sorted by port then reason, zeroes left out"
        );
    }

    #[test]
    fn describe_names_rules_and_syn_ports() {
        let rules =
            GuardRules { syn_rate: 50, syn_burst: 100, deny: vec![rule("8080=10.0.0.0/8")], ..Default::default() };
        let e = translate(&rules, &ports(&[8080, 9080])).unwrap();
        assert_eq!(
            describe(&rules, &e),
            "1 deny and 0 allow rules on 1 ports; 50 SYN/s per source, burst 100, on ports 8080,9080"
        );
    }
}

/// What a reload from `old` to `new` entries must take out of the maps after writing
/// `new`: the rules `new` lacks, and the ports `new` does not guard (their flags 0).
pub fn stale(old: &GuardEntries, new: &GuardEntries) -> GuardEntries {
    GuardEntries {
        ports: old.ports.keys().filter(|p| !new.ports.contains_key(p)).map(|p| (*p, 0)).collect(),
        deny4: old.deny4.difference(&new.deny4).copied().collect(),
        deny6: old.deny6.difference(&new.deny6).copied().collect(),
        allow4: old.allow4.difference(&new.allow4).copied().collect(),
        allow6: old.allow6.difference(&new.allow6).copied().collect(),
        config: new.config,
    }
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    fn entries(deny: &[&str], allow: &[&str], syn_rate: u64, ports: &[u16]) -> GuardEntries {
        let p = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect();
        let rules = GuardRules::from_flags(p(deny), p(allow), syn_rate, None).unwrap();
        translate(&rules, &guarded_ports(ports.iter().copied())).unwrap()
    }

    #[test]
    fn stale_entries_are_what_the_new_rules_lack() {
        let old = entries(&["8080=10.0.0.0/8", "8080=fd00::/8"], &["9080=192.0.2.0/24"], 0, &[8080, 9080]);
        let new = entries(&["8080=10.0.0.0/8"], &[], 5, &[8080]);
        let s = stale(&old, &new);
        assert!(s.deny4.is_empty(), "kept rule stays");
        assert_eq!(s.deny6.len(), 1);
        assert_eq!(s.allow4.len(), 1);
        assert_eq!(s.ports, BTreeMap::from([(9080, 0)]), "9080 is no longer guarded");
        assert!(stale(&new, &new) == GuardEntries { config: new.config, ..Default::default() });
    }
}
