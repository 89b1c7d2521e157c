//! Pure: the host routes the data path needs (pod CIDRs via their node), from
//! `--pod-route CIDR=VIA` flags or from Node objects, and the diff of that wanted set
//! against the routes installed in the kernel. [`super::routes`] does the netlink I/O.
//!
//! Ownership: a route the agent adds carries [`ROUTE_PROTOCOL`]; only such routes are
//! ever replaced or removed. A route that already exists identically under another
//! protocol (someone else added it) is left alone, and one to the same CIDR via another
//! gateway is reported as a conflict and not touched.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The route protocol (`ip route ... proto 207`) that marks the agent's routes.
/// Unassigned in iproute2's rt_protos (kernel 0-4, routing daemons 8-18, 42, 99,
/// 186-192); `ip route show proto 207` lists them.
pub const ROUTE_PROTOCOL: u8 = 207;

/// An IP prefix with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    fn max_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// `addr/len`, rejecting a length past the family's and host bits that are set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, String> {
        let max = Self::max_len(addr);
        if len > max {
            return Err(format!("prefix length {len} is longer than {max}"));
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(format!("{addr}/{len} has host bits set (the network is {masked}/{len})"));
        }
        Ok(Cidr { addr, len })
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len as u32) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - len as u32) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("`{s}` is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("`{a}` is not an IPv4 or IPv6 address"))?;
        let len: u8 = l.parse().map_err(|_| format!("`{l}` is not a prefix length"))?;
        Cidr::new(addr, len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A route to a pod CIDR via a gateway (the node that owns the CIDR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRoute {
    pub cidr: Cidr,
    pub via: IpAddr,
}

impl fmt::Display for PodRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.cidr, self.via)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid --pod-route `{value}`: {reason} (expected CIDR=VIA, e.g. 10.42.0.0/24=172.18.0.2)")]
pub struct PodRouteError {
    value: String,
    reason: String,
}

/// `--pod-route CIDR=VIA`.
impl FromStr for PodRoute {
    type Err = PodRouteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| PodRouteError { value: s.to_string(), reason };
        let (cidr, via) = s.split_once('=').ok_or_else(|| err("missing `=`".into()))?;
        let cidr: Cidr = cidr.trim().parse().map_err(|e: String| err(format!("CIDR: {e}")))?;
        let via: IpAddr = via.trim().parse().map_err(|_| err(format!("VIA `{via}` is not an IPv4 or IPv6 address")))?;
        if cidr.addr.is_ipv4() != via.is_ipv4() {
            return Err(err("CIDR and VIA are of different IP families".into()));
        }
        if via.is_unspecified() || via.is_multicast() {
            return Err(err(format!("VIA {via} is not a unicast address")));
        }
        Ok(PodRoute { cidr, via })
    }
}

/// What the route syncer needs of a Node object: `spec.podCIDRs` (or `spec.podCIDR`)
/// and its `InternalIP` addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub pod_cidrs: Vec<String>,
    pub internal_ips: Vec<String>,
}

/// The routes the Nodes ask for: each pod CIDR via the node's InternalIP of the same
/// family. A node whose InternalIP is one of this host's addresses (`local`) is skipped:
/// its pods are reached directly. Problems (unparsable values, no InternalIP of the
/// CIDR's family) are returned as messages naming the node; the rest still counts.
pub fn wanted_from_nodes(nodes: &[NodeFacts], local: &[IpAddr]) -> (Vec<PodRoute>, Vec<String>) {
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    for n in nodes {
        let ips: Vec<IpAddr> = n
            .internal_ips
            .iter()
            .filter_map(|s| match s.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(format!("node {}: InternalIP `{s}` is not an IP address", n.name));
                    None
                }
            })
            .collect();
        for c in &n.pod_cidrs {
            let cidr: Cidr = match c.parse() {
                Ok(cidr) => cidr,
                Err(e) => {
                    problems.push(format!("node {}: podCIDR `{c}`: {e}", n.name));
                    continue;
                }
            };
            match ips.iter().find(|ip| ip.is_ipv4() == cidr.addr.is_ipv4()) {
                Some(ip) if local.contains(ip) => {}
                Some(ip) => routes.push(PodRoute { cidr, via: *ip }),
                None => problems.push(format!(
                    "node {}: no InternalIP of the family of podCIDR {cidr}; no route to its pods",
                    n.name
                )),
            }
        }
    }
    routes.sort();
    routes.dedup();
    (routes, problems)
}

/// A route as found in the main routing table: destination, gateway (none for a
/// directly connected or device route), and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledRoute {
    pub cidr: Cidr,
    pub via: Option<IpAddr>,
    pub protocol: u8,
}

impl InstalledRoute {
    pub fn ours(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
    }
}

/// `10.42.0.0/24 via 172.18.0.2 proto 207` (as `ip route` writes it).
impl fmt::Display for InstalledRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        if let Some(v) = self.via {
            write!(f, " via {v}")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// What to do to reach the wanted set. `add` and `replace` before `delete`, so a
/// CIDR that moves keeps a route throughout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Not installed at all: add with our protocol.
    pub add: Vec<PodRoute>,
    /// Ours, to the same CIDR via another gateway: replace in place.
    pub replace: Vec<PodRoute>,
    /// Ours and no longer wanted.
    pub delete: Vec<InstalledRoute>,
    /// Already installed identically by someone else: left alone (never removed).
    pub foreign: Vec<PodRoute>,
    /// Someone else's route to the same CIDR via another gateway (or a device route):
    /// not touched; a message saying which.
    pub conflicts: Vec<String>,
}

impl RoutePlan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The diff of `wanted` against `installed` (the main table, both families).
pub fn plan(wanted: &[PodRoute], installed: &[InstalledRoute]) -> RoutePlan {
    let mut p = RoutePlan::default();
    let mut wanted: Vec<PodRoute> = wanted.to_vec();
    wanted.sort();
    wanted.dedup();
    // One route per CIDR: the lowest gateway wins, so the choice does not depend on order.
    let mut kept: std::collections::BTreeMap<Cidr, IpAddr> = std::collections::BTreeMap::new();
    wanted.retain(|w| match kept.get(&w.cidr) {
        None => {
            kept.insert(w.cidr, w.via);
            true
        }
        Some(via) => {
            p.conflicts.push(format!("{} is wanted via {via} and via {}; using {via}", w.cidr, w.via));
            false
        }
    });
    for w in &wanted {
        let same_cidr: Vec<&InstalledRoute> = installed.iter().filter(|i| i.cidr == w.cidr).collect();
        if same_cidr.iter().any(|i| i.ours() && i.via == Some(w.via)) {
            continue;
        }
        if same_cidr.iter().any(|i| !i.ours() && i.via == Some(w.via)) {
            p.foreign.push(*w);
            continue;
        }
        if let Some(other) = same_cidr.iter().find(|i| !i.ours()) {
            let via = other.via.map(|v| format!("via {v}")).unwrap_or_else(|| "on a device".into());
            p.conflicts.push(format!(
                "{} is already routed {via} (protocol {}, not ours); leaving it, so {w} is not installed",
                w.cidr, other.protocol
            ));
            continue;
        }
        if same_cidr.iter().any(|i| i.ours()) {
            p.replace.push(*w);
        } else {
            p.add.push(*w);
        }
    }
    for i in installed.iter().filter(|i| i.ours()) {
        if !wanted.iter().any(|w| w.cidr == i.cidr) {
            p.delete.push(*i);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> PodRoute {
        s.parse().unwrap()
    }
    fn installed(cidr: &str, via: Option<&str>, protocol: u8) -> InstalledRoute {
        InstalledRoute { cidr: cidr.parse().unwrap(), via: via.map(|v| v.parse().unwrap()), protocol }
    }

    #[test]
    fn pod_route_flag_parses_and_errors_name_what_is_wrong() {
        assert_eq!(r("10.42.0.0/24=172.18.0.2").to_string(), "10.42.0.0/24 via 172.18.0.2");
        assert_eq!(r("fd00:42::/64=fd00:18::2").to_string(), "fd00:42::/64 via fd00:18::2");
        let e = |s: &str| s.parse::<PodRoute>().unwrap_err().to_string();
        assert!(e("10.42.0.0/24").contains("missing `=`"), "{}", e("10.42.0.0/24"));
        assert!(e("10.42.0.0=1.2.3.4").contains("not ADDRESS/LENGTH"));
        assert!(e("10.42.0.0/33=1.2.3.4").contains("longer than 32"));
        assert!(e("10.42.0.1/24=1.2.3.4").contains("host bits set (the network is 10.42.0.0/24)"));
        assert!(e("10.42.0.0/24=node").contains("VIA `node`"));
        assert!(e("10.42.0.0/24=fd00::1").contains("different IP families"));
        assert!(e("10.42.0.0/24=0.0.0.0").contains("not a unicast address"));
        assert!(e("x").contains("expected CIDR=VIA"));
    }

    #[test]
    fn nodes_give_a_route_per_pod_cidr_via_the_internal_ip_of_its_family() {
        let nodes = [
            NodeFacts {
                name: "server-0".into(),
                pod_cidrs: vec!["10.42.0.0/24".into(), "fd00:42::/64".into()],
                internal_ips: vec!["172.18.0.2".into(), "fd00:18::2".into()],
            },
            NodeFacts {
                name: "agent-0".into(),
                pod_cidrs: vec!["10.42.1.0/24".into()],
                internal_ips: vec!["172.18.0.3".into()],
            },
        ];
        let (routes, problems) = wanted_from_nodes(&nodes, &[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(routes, [r("10.42.0.0/24=172.18.0.2"), r("10.42.1.0/24=172.18.0.3"), r("fd00:42::/64=fd00:18::2")]);
    }

    #[test]
    fn node_problems_are_named_and_a_local_node_is_skipped() {
        let nodes = [
            NodeFacts { name: "bad".into(), pod_cidrs: vec!["10.42.9.1/24".into()], internal_ips: vec!["nope".into()] },
            NodeFacts {
                name: "v6only".into(),
                pod_cidrs: vec!["10.42.2.0/24".into()],
                internal_ips: vec!["fd00::3".into()],
            },
            NodeFacts {
                name: "me".into(),
                pod_cidrs: vec!["10.42.3.0/24".into()],
                internal_ips: vec!["192.0.2.1".into()],
            },
            NodeFacts { name: "no-cidr".into(), pod_cidrs: vec![], internal_ips: vec!["172.18.0.9".into()] },
        ];
        let (routes, problems) = wanted_from_nodes(&nodes, &["192.0.2.1".parse().unwrap()]);
        assert!(routes.is_empty(), "{routes:?}");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("node bad: InternalIP `nope`"));
        assert!(problems[1].contains("node bad: podCIDR `10.42.9.1/24`") && problems[1].contains("host bits"));
        assert!(problems[2].contains("node v6only: no InternalIP of the family of podCIDR 10.42.2.0/24"));
    }

    #[test]
    fn plan_adds_missing_keeps_ours_and_deletes_only_ours() {
        let wanted = [r("10.42.0.0/24=172.18.0.2"), r("10.42.1.0/24=172.18.0.3")];
        let inst = [
            installed("10.42.0.0/24", Some("172.18.0.2"), ROUTE_PROTOCOL), // ours, same: nothing
            installed("10.42.7.0/24", Some("172.18.0.7"), ROUTE_PROTOCOL), // ours, stale: delete
            installed("10.99.0.0/16", Some("172.18.0.9"), 4),              // someone else's: never touched
            installed("172.18.0.0/16", None, 2),                           // kernel device route
        ];
        let p = plan(&wanted, &inst);
        assert_eq!(p.add, [r("10.42.1.0/24=172.18.0.3")]);
        assert!(p.replace.is_empty());
        assert_eq!(p.delete, [inst[1]]);
        assert!(p.foreign.is_empty() && p.conflicts.is_empty());
    }

    #[test]
    fn an_identical_foreign_route_is_left_alone_and_never_deleted() {
        let wanted = [r("10.42.0.0/24=172.18.0.2")];
        let inst = [installed("10.42.0.0/24", Some("172.18.0.2"), 4 /* static: `ip route add` */)];
        let p = plan(&wanted, &inst);
        assert!(p.add.is_empty() && p.replace.is_empty() && p.delete.is_empty(), "{p:?}");
        assert_eq!(p.foreign, wanted);
        // and when it is no longer wanted it still stays
        let p = plan(&[], &inst);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_moved_cidr_replaces_ours_but_a_foreign_route_elsewhere_is_a_conflict() {
        let inst = [installed("10.42.0.0/24", Some("172.18.0.2"), ROUTE_PROTOCOL)];
        let p = plan(&[r("10.42.0.0/24=172.18.0.5")], &inst);
        assert_eq!(p.replace, [r("10.42.0.0/24=172.18.0.5")]);
        assert!(p.add.is_empty() && p.delete.is_empty());

        let inst = [installed("10.42.0.0/24", None, 3)];
        let p = plan(&[r("10.42.0.0/24=172.18.0.5")], &inst);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.conflicts.len(), 1);
        assert!(p.conflicts[0].contains("already routed on a device (protocol 3, not ours)"), "{}", p.conflicts[0]);
    }

    #[test]
    fn installed_routes_print_as_ip_route_does() {
        assert_eq!(
            installed("10.42.0.0/24", Some("172.18.0.2"), 207).to_string(),
            "10.42.0.0/24 via 172.18.0.2 proto 207"
        );
        assert_eq!(installed("fd00::/64", None, 2).to_string(), "fd00::/64 proto 2");
    }

    #[test]
    fn one_cidr_wanted_via_two_gateways_keeps_one() {
        let p = plan(&[r("10.42.0.0/24=172.18.0.3"), r("10.42.0.0/24=172.18.0.2")], &[]);
        assert_eq!(p.add, [r("10.42.0.0/24=172.18.0.2")]);
        assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
    }
}
