//! Delayed binding driven by the agent, the pure parts: which frontends the SYN cookie
//! answers (every VM address x L7 listen port with at least one eligible host), the pod
//! path's MSS, the next cookie config on a key rotation, the order of map updates, and
//! which bound flows end when their endpoint leaves.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ingress_common::first_segment::BIND_CT_SERVICE;
use ingress_common::l4::{CT_DIR_ORIG, CT_DIR_REPLY, CT_ENDPOINT_GONE, L4CtEntry, L4CtKey};
use ingress_common::syncookie::SynCookieConfig;

use super::bind::BindEntries;

/// Our receive window shift and the SYN-ACK window (as Linux picks them for a 1 MiB+
/// receive buffer).
pub const RCV_WSCALE: u8 = 7;
pub const SYNACK_WINDOW: u16 = 64240;

/// The frontends the cookie answers: for each listen address whose port has an eligible
/// host, that address (when it is one of `nic_addrs`) or every NIC address (0.0.0.0).
/// IPv6 listen addresses get none (the cookie answers IPv4 only).
pub fn targets(
    listen: &[std::net::SocketAddr],
    entries: &BindEntries,
    nic_addrs: &[Ipv4Addr],
) -> BTreeSet<(Ipv4Addr, u16)> {
    let ports: BTreeSet<u16> = entries.hosts.iter().map(|(k, _)| k.port).collect();
    let mut out = BTreeSet::new();
    for a in listen {
        if !ports.contains(&a.port()) {
            continue;
        }
        match a.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => out.extend(nic_addrs.iter().map(|n| (*n, a.port()))),
            IpAddr::V4(v4) if nic_addrs.contains(&v4) => {
                out.insert((v4, a.port()));
            }
            _ => {}
        }
    }
    out
}

/// Every endpoint address of the entries (the pods whose namespaces get `pod_bind`).
pub fn endpoint_addrs(entries: &BindEntries) -> BTreeSet<Ipv4Addr> {
    entries
        .backends
        .iter()
        .flat_map(|(_, b)| b.endpoints[..(b.count as usize).min(b.endpoints.len())].iter())
        .map(|e| Ipv4Addr::from(e.addr.to_ne_bytes()))
        .collect()
}

/// The MSS the pod path carries: the smallest MTU on it minus 40 (IPv4 + TCP headers),
/// 1460 when no MTU is known, at least 536.
pub fn path_mss(mtus: &[u32]) -> u16 {
    match mtus.iter().min() {
        Some(m) => (m.saturating_sub(40)).clamp(536, 65495) as u16,
        None => 1460,
    }
}

/// The first config: `keys` in both slots (two fresh keys), slot 0 current.
pub fn initial_config(keys: [[u64; 2]; 2], path_mss: u16) -> SynCookieConfig {
    SynCookieConfig { keys, current: 0, path_mss, rcv_wscale: RCV_WSCALE, window: SYNACK_WINDOW, ..Default::default() }
}

/// The config at start: an earlier agent's (a pinned map) keeps its two keys and its
/// current slot, so the cookies it sent before the restart still validate; the rest is
/// this agent's. Nothing pinned, or never set (zero keys): [`initial_config`] of `fresh`.
pub fn start_config(pinned: Option<SynCookieConfig>, fresh: [[u64; 2]; 2], path_mss: u16) -> SynCookieConfig {
    match pinned {
        Some(c) if c.keys.iter().all(|k| *k != [0, 0]) => {
            let mss = if c.path_mss == 0 { path_mss } else { c.path_mss };
            SynCookieConfig { keys: c.keys, current: c.current & 1, ..initial_config(fresh, mss) }
        }
        _ => initial_config(fresh, path_mss),
    }
}

/// A rotation: `key` goes into the slot that is not current, which becomes current; the
/// old slot keeps validating the cookies made with it until the next rotation.
pub fn rotated(cfg: &SynCookieConfig, key: [u64; 2]) -> SynCookieConfig {
    let next = (cfg.current ^ 1) & 1;
    let mut c = *cfg;
    c.keys[next as usize] = key;
    c.current = next;
    c
}

/// What changes between two sets of entries, in the order that never lets a lookup find
/// a dangling id: backends put, hosts put, hosts removed, backends removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EntryDiff {
    pub put_backends: Vec<u32>,
    pub put_hosts: Vec<usize>,
    pub remove_hosts: Vec<ingress_common::head::BindHostKey>,
    pub remove_backends: Vec<u32>,
}

/// Indexes into `new.backends`/`new.hosts` to write, and keys of `old` to remove.
pub fn diff(old: &BindEntries, new: &BindEntries) -> EntryDiff {
    let mut d = EntryDiff::default();
    for (id, b) in &new.backends {
        if old.backends.iter().find(|(o, _)| o == id).map(|(_, ob)| ob) != Some(b) {
            d.put_backends.push(*id);
        }
    }
    for (i, (k, t)) in new.hosts.iter().enumerate() {
        if old.hosts.iter().find(|(o, _)| o == k).map(|(_, ot)| ot) != Some(t) {
            d.put_hosts.push(i);
        }
    }
    d.remove_hosts =
        old.hosts.iter().filter(|(k, _)| !new.hosts.iter().any(|(n, _)| n == k)).map(|(k, _)| *k).collect();
    d.remove_backends =
        old.backends.iter().filter(|(id, _)| !new.backends.iter().any(|(n, _)| n == id)).map(|(id, _)| *id).collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingress_common::bind::{BindBackend, BindEndpoint, BindTarget};
    use ingress_common::head::BindHostKey;

    fn entries(port: u16, host: &[u8], backend: u32, pod: [u8; 4]) -> BindEntries {
        let mut b = BindBackend { count: 1, ..Default::default() };
        b.endpoints[0] = BindEndpoint { addr: u32::from_ne_bytes(pod), port: 8000, _pad: 0 };
        BindEntries {
            hosts: vec![(BindHostKey::new(port, host).unwrap(), BindTarget { backend, _pad: 0 })],
            backends: vec![(backend, b)],
            ..Default::default()
        }
    }

    #[test]
    fn targets_are_the_nic_addresses_of_ports_with_an_eligible_host() {
        let nic = [Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)];
        let e = entries(8080, b"a.example", 1, [10, 42, 0, 7]);
        let listen: Vec<std::net::SocketAddr> = vec!["0.0.0.0:8080".parse().unwrap(), "0.0.0.0:9080".parse().unwrap()];
        let t = targets(&listen, &e, &nic);
        assert_eq!(t, BTreeSet::from([(nic[0], 8080), (nic[1], 8080)]), "9080 has no eligible host");
        let one: Vec<std::net::SocketAddr> = vec!["198.18.0.3:8080".parse().unwrap()];
        assert_eq!(targets(&one, &e, &nic), BTreeSet::from([(nic[1], 8080)]));
        let other: Vec<std::net::SocketAddr> = vec!["10.0.0.1:8080".parse().unwrap(), "[::]:8080".parse().unwrap()];
        assert!(targets(&other, &e, &nic).is_empty(), "not a NIC address, IPv6");
        assert!(targets(&listen, &BindEntries::default(), &nic).is_empty());
        assert_eq!(endpoint_addrs(&e), BTreeSet::from([Ipv4Addr::new(10, 42, 0, 7)]));
    }

    #[test]
    fn path_mss_is_the_smallest_mtu_less_40() {
        assert_eq!(path_mss(&[1500, 1450]), 1410);
        assert_eq!(path_mss(&[9000]), 8960);
        assert_eq!(path_mss(&[]), 1460);
        assert_eq!(path_mss(&[68]), 536);
    }

    #[test]
    fn a_rotation_replaces_the_other_slot_and_makes_it_current() {
        let c = initial_config([[1, 2], [3, 4]], 1410);
        assert_eq!((c.current, c.path_mss, c.rcv_wscale, c.window), (0, 1410, 7, 64240));
        let r = rotated(&c, [5, 6]);
        assert_eq!((r.current, r.keys), (1, [[1, 2], [5, 6]]));
        let r2 = rotated(&r, [7, 8]);
        assert_eq!((r2.current, r2.keys), (0, [[7, 8], [5, 6]]), "the slot made current before keeps validating");
    }

    #[test]
    fn a_restarted_agent_keeps_the_pinned_cookie_keys_and_slot() {
        let fresh = [[9, 9], [8, 8]];
        let old = rotated(&initial_config([[1, 2], [3, 4]], 1410), [5, 6]);
        let c = start_config(Some(old), fresh, 1460);
        assert_eq!((c.keys, c.current, c.path_mss), ([[1, 2], [5, 6]], 1, 1410), "the old cookies validate");
        assert_eq!((c.rcv_wscale, c.window), (RCV_WSCALE, SYNACK_WINDOW));
        // nothing pinned yet, or a map never set: fresh keys
        assert_eq!(start_config(None, fresh, 1460), initial_config(fresh, 1460));
        let zero = SynCookieConfig::default();
        assert_eq!(start_config(Some(zero), fresh, 1460), initial_config(fresh, 1460));
        let half = SynCookieConfig { keys: [[1, 2], [0, 0]], ..zero };
        assert_eq!(start_config(Some(half), fresh, 1460).keys, fresh, "one key never set: not adopted");
        let no_mss = SynCookieConfig { path_mss: 0, ..old };
        assert_eq!(start_config(Some(no_mss), fresh, 1460).path_mss, 1460);
    }

    #[test]
    fn the_diff_puts_changes_and_removes_what_went() {
        let a = entries(8080, b"a.example", 1, [10, 42, 0, 7]);
        assert_eq!(diff(&a, &a), EntryDiff::default());
        let d = diff(&BindEntries::default(), &a);
        assert_eq!((d.put_backends, d.put_hosts), (vec![1], vec![0]));
        let b = entries(8080, b"a.example", 1, [10, 42, 0, 8]);
        let d = diff(&a, &b);
        assert_eq!((d.put_backends, d.put_hosts.len(), d.remove_hosts.len()), (vec![1], 0, 0), "a moved pod");
        let c = entries(8080, b"b.example", 2, [10, 42, 0, 8]);
        let d = diff(&a, &c);
        assert_eq!((d.put_backends, d.put_hosts), (vec![2], vec![0]));
        assert_eq!((d.remove_hosts, d.remove_backends), (vec![a.hosts[0].0], vec![1]));
    }
}

/// `entries` without the hosts whose backend has an endpoint outside `covered` (no
/// `pod_bind` in its namespace: the pod's kernel would answer the bound segment with a
/// RST), and without the backends no host uses then; each dropped host's decision says
/// why.
pub fn keep_covered(entries: BindEntries, covered: &BTreeSet<Ipv4Addr>) -> BindEntries {
    drop_hosts(
        entries,
        |a| !covered.contains(&a),
        "an endpoint is in no network namespace on this machine the agent could attach pod_bind to",
    )
}

/// `entries` without the hosts whose backend has an endpoint in `strict`: routed through
/// a namespace whose conntrack does not pick flows up mid-stream
/// (`net.netfilter.nf_conntrack_tcp_loose=0`), where a bound flow's first segment, the
/// first packet of the flow it sees, is INVALID (and dropped by kube-proxy's rule). The
/// agent serves those hosts instead; each dropped host's decision says why.
pub fn keep_loose(entries: BindEntries, strict: &BTreeSet<Ipv4Addr>) -> BindEntries {
    drop_hosts(
        entries,
        |a| strict.contains(&a),
        "an endpoint is routed through a namespace whose conntrack is strict (nf_conntrack_tcp_loose=0): a bound \
         flow's first segment would be INVALID there",
    )
}

/// `entries` without the hosts whose backend has an endpoint `bad` picks, nor the
/// backends no host uses then; their decisions give `why`.
fn drop_hosts(mut entries: BindEntries, bad: impl Fn(Ipv4Addr) -> bool, why: &str) -> BindEntries {
    let bad: BTreeSet<u32> = entries
        .backends
        .iter()
        .filter(|(_, b)| {
            b.endpoints[..(b.count as usize).min(b.endpoints.len())]
                .iter()
                .any(|e| bad(Ipv4Addr::from(e.addr.to_ne_bytes())))
        })
        .map(|(id, _)| *id)
        .collect();
    if bad.is_empty() {
        return entries;
    }
    entries.hosts.retain(|(_, t)| !bad.contains(&t.backend));
    entries.backends.retain(|(id, _)| !bad.contains(id));
    for d in entries.decisions.iter_mut() {
        if let Ok(id) = d.decision
            && bad.contains(&id)
        {
            d.decision = Err(why.into());
        }
    }
    entries
}

#[cfg(test)]
mod covered_tests {
    use super::*;
    use ingress_common::bind::{BindBackend, BindEndpoint, BindTarget};
    use ingress_common::head::BindHostKey;

    #[test]
    fn hosts_with_an_endpoint_without_pod_bind_are_not_bound() {
        let mut b = BindBackend { count: 2, ..Default::default() };
        b.endpoints[0] = BindEndpoint { addr: u32::from_ne_bytes([10, 42, 0, 7]), port: 8000, _pad: 0 };
        b.endpoints[1] = BindEndpoint { addr: u32::from_ne_bytes([10, 42, 0, 8]), port: 8000, _pad: 0 };
        let e = BindEntries {
            hosts: vec![(BindHostKey::new(8080, b"a.example").unwrap(), BindTarget { backend: 1, _pad: 0 })],
            backends: vec![(1, b)],
            decisions: vec![super::super::bind::HostDecision {
                listener: 0,
                port: 8080,
                hostname: "a.example".into(),
                decision: Ok(1),
            }],
            ..Default::default()
        };
        let both = BTreeSet::from([Ipv4Addr::new(10, 42, 0, 7), Ipv4Addr::new(10, 42, 0, 8)]);
        assert_eq!(keep_covered(e.clone(), &both), e);
        let k = keep_covered(e.clone(), &BTreeSet::from([Ipv4Addr::new(10, 42, 0, 7)]));
        assert!(k.hosts.is_empty() && k.backends.is_empty());
        assert!(k.decisions[0].decision.as_ref().unwrap_err().contains("pod_bind"));
        // behind a strict conntrack
        assert_eq!(keep_loose(e.clone(), &BTreeSet::new()), e);
        let k = keep_loose(e.clone(), &BTreeSet::from([Ipv4Addr::new(10, 42, 0, 8)]));
        assert!(k.hosts.is_empty() && k.backends.is_empty());
        assert!(k.decisions[0].decision.as_ref().unwrap_err().contains("nf_conntrack_tcp_loose=0"));
        assert_eq!(keep_loose(e.clone(), &BTreeSet::from([Ipv4Addr::new(10, 42, 0, 9)])), e, "not an endpoint");
    }
}

/// The bound flows (conntrack entries `bind_first` wrote: service `BIND_CT_SERVICE`) of
/// the endpoints in `gone`: their original-direction entries as they are to be written
/// (state `CT_ENDPOINT_GONE`, so their next segment gets a RST from the VM's stack), and
/// their reply entries, to remove. The L4 path's flows are not touched (they keep their
/// endpoint after it leaves the service, by design), nor flows already marked.
pub fn gone_flows(
    entries: impl IntoIterator<Item = (L4CtKey, L4CtEntry)>,
    gone: &BTreeSet<Ipv4Addr>,
) -> (Vec<(L4CtKey, L4CtEntry)>, Vec<L4CtKey>) {
    let (mut mark, mut remove) = (Vec::new(), Vec::new());
    let addr = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
    for (k, e) in entries {
        if e.service != BIND_CT_SERVICE {
            continue;
        }
        if k.dir == CT_DIR_ORIG && gone.contains(&addr(e.nat_addr)) && e.state != CT_ENDPOINT_GONE {
            mark.push((k, L4CtEntry { state: CT_ENDPOINT_GONE, ..e }));
        } else if k.dir == CT_DIR_REPLY && gone.contains(&addr(k.src_addr)) {
            remove.push(k);
        }
    }
    (mark, remove)
}

#[cfg(test)]
mod gone_tests {
    use super::*;
    use ingress_common::l4::CT_ESTABLISHED;

    fn a(s: &str) -> u32 {
        u32::from_ne_bytes(s.parse::<Ipv4Addr>().unwrap().octets())
    }

    /// The two entries bind_first writes for client:sport -> frontend, bound to `pod`.
    fn flow(sport: u16, pod: &str, service: u32) -> [(L4CtKey, L4CtEntry); 2] {
        let e = L4CtEntry {
            nat_addr: a(pod),
            nat_port: 8080u16.to_be(),
            state: CT_ESTABLISHED,
            service,
            last_seen_ns: 5,
            ..Default::default()
        };
        let orig = L4CtKey {
            src_addr: a("198.18.0.1"),
            dst_addr: a("198.18.0.2"),
            src_port: sport.to_be(),
            dst_port: 9080u16.to_be(),
            proto: 6,
            dir: CT_DIR_ORIG,
            _pad: 0,
        };
        let back = L4CtKey {
            src_addr: a(pod),
            dst_addr: a("198.18.0.1"),
            src_port: 8080u16.to_be(),
            dst_port: sport.to_be(),
            proto: 6,
            dir: CT_DIR_REPLY,
            _pad: 0,
        };
        [(orig, e), (back, L4CtEntry { nat_addr: a("198.18.0.2"), nat_port: 9080u16.to_be(), ..e })]
    }

    #[test]
    fn only_bound_flows_of_endpoints_that_left_are_marked_and_their_replies_removed() {
        let gone: BTreeSet<Ipv4Addr> = ["10.42.0.47".parse().unwrap()].into();
        let [o1, r1] = flow(1000, "10.42.0.47", BIND_CT_SERVICE);
        let [o2, r2] = flow(1001, "10.42.0.48", BIND_CT_SERVICE);
        // an L4 service's flow to the same address keeps its endpoint
        let [o3, r3] = flow(1002, "10.42.0.47", 3);
        let mut already = flow(1003, "10.42.0.47", BIND_CT_SERVICE);
        already[0].1.state = CT_ENDPOINT_GONE;
        let all = [o1, r1, o2, r2, o3, r3, already[0], already[1]];
        let (mark, remove) = gone_flows(all, &gone);
        assert_eq!(mark, vec![(o1.0, L4CtEntry { state: CT_ENDPOINT_GONE, ..o1.1 })]);
        assert_eq!(remove, vec![r1.0, already[1].0]);
        // nothing gone: nothing to do
        let (mark, remove) = gone_flows(all, &BTreeSet::new());
        assert!(mark.is_empty() && remove.is_empty());
    }
}
