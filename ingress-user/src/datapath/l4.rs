//! L4 forwarding, pure: the `--l4 PORT=TARGET` mappings, the model they resolve to
//! (each L4 port's endpoints), its translation into map entries
//! (`ingress_common::l4`), and the ordered diff that takes the maps from what is
//! programmed to what the model wants: endpoints first, then Maglev rows, then the
//! services that point at them, deletes last. [`super::l4_maps`] carries the
//! operations out; nothing here touches a map.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::sync::Arc;

use ingress_common::l4::{
    CT_DIR_ORIG, CT_DIR_REPLY, L4_MAX_SERVICES, L4CtEntry, L4CtKey, L4Endpoint, L4Frontend, L4Service, L4Stats,
    MAGLEV_M, MAX_ENDPOINTS_PER_SERVICE, ct_expired,
};
use ingress_common::proto;

use super::maglev;

/// Where an L4 port goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Target {
    /// A fixed address (`IP:PORT`), e.g. the node's API server.
    Fixed(SocketAddrV4),
    /// The ready endpoints of a Service port (`NAMESPACE/SERVICE:PORT`), resolved like
    /// an HTTPRoute backendRef.
    Service { namespace: String, name: String, port: i32 },
}

/// `--l4 PORT=TARGET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Mapping {
    pub port: u16,
    pub target: L4Target,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid --l4 `{value}`: {reason} (expected PORT=IP:PORT or PORT=NAMESPACE/SERVICE:PORT, e.g. 6550=172.18.0.2:6443)"
)]
pub struct L4MappingError {
    value: String,
    reason: String,
}

impl FromStr for L4Mapping {
    type Err = L4MappingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| L4MappingError { value: s.to_string(), reason: reason.to_string() };
        let (port, target) = s.split_once('=').ok_or_else(|| err("missing `=`"))?;
        let port: u16 = port.parse().map_err(|_| err("PORT is not a port number"))?;
        if port == 0 {
            return Err(err("PORT 0"));
        }
        if let Ok(addr) = target.parse::<SocketAddr>() {
            return match addr {
                SocketAddr::V4(a) if a.port() != 0 && !a.ip().is_unspecified() => {
                    Ok(Self { port, target: L4Target::Fixed(a) })
                }
                SocketAddr::V4(_) => Err(err("the target needs an address and a port other than 0")),
                SocketAddr::V6(_) => Err(err("IPv6 targets are not supported (IPv4 only)")),
            };
        }
        let (ns, rest) =
            target.split_once('/').ok_or_else(|| err("TARGET is neither IP:PORT nor NAMESPACE/SERVICE:PORT"))?;
        let (name, svc_port) = rest.rsplit_once(':').ok_or_else(|| err("missing `:PORT` after SERVICE"))?;
        let svc_port: u16 = svc_port.parse().map_err(|_| err("the Service PORT is not a port number"))?;
        if ns.is_empty() || name.is_empty() {
            return Err(err("empty NAMESPACE or SERVICE"));
        }
        Ok(Self {
            port,
            target: L4Target::Service { namespace: ns.into(), name: name.into(), port: i32::from(svc_port) },
        })
    }
}

impl std::fmt::Display for L4Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            L4Target::Fixed(a) => write!(f, "{}={a}", self.port),
            L4Target::Service { namespace, name, port } => write!(f, "{}={namespace}/{name}:{port}", self.port),
        }
    }
}

/// Checks the mappings together: at most [`L4_MAX_SERVICES`], each port once, none
/// also an L7 listen port.
pub fn check_mappings(mappings: &[L4Mapping], l7_ports: &[u16]) -> Result<(), String> {
    if mappings.len() > L4_MAX_SERVICES as usize {
        return Err(format!("at most {L4_MAX_SERVICES} --l4 ports are supported, {} given", mappings.len()));
    }
    let mut seen = BTreeSet::new();
    for m in mappings {
        if !seen.insert(m.port) {
            return Err(format!("--l4 port {} is given twice", m.port));
        }
        if l7_ports.contains(&m.port) {
            return Err(format!(
                "port {} is both an L4 port (--l4 {m}) and an L7 listen port (--listen): pick one",
                m.port
            ));
        }
    }
    Ok(())
}

/// One L4 port with the endpoints it forwards to now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4ServiceModel {
    /// Index of the mapping: the service id in the maps and counters.
    pub id: u32,
    pub port: u16,
    /// The `--l4` value, for logs and `/stats`.
    pub label: String,
    /// Sorted, deduplicated, IPv4 only, at most [`MAX_ENDPOINTS_PER_SERVICE`].
    pub endpoints: Vec<SocketAddrV4>,
}

/// What the mappings resolve to with the current resources, and why some endpoints
/// (or whole targets) are missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L4Model {
    pub services: Vec<L4ServiceModel>,
    pub problems: Vec<String>,
}

/// Resolves every mapping. `resolve_service(namespace, name, port)` gives the ready
/// endpoints of a Service port (the route source's resolver, see
/// [`crate::routing::resolve_service_endpoints`]).
pub fn resolve(
    mappings: &[L4Mapping],
    mut resolve_service: impl FnMut(&str, &str, i32) -> Result<Vec<SocketAddr>, String>,
) -> L4Model {
    let mut model = L4Model::default();
    for (i, m) in mappings.iter().enumerate() {
        let mut eps: Vec<SocketAddrV4> = match &m.target {
            L4Target::Fixed(a) => vec![*a],
            L4Target::Service { namespace, name, port } => match resolve_service(namespace, name, *port) {
                Ok(v) => {
                    let v4: Vec<SocketAddrV4> = v
                        .iter()
                        .filter_map(|a| match a {
                            SocketAddr::V4(a) => Some(*a),
                            SocketAddr::V6(_) => None,
                        })
                        .collect();
                    if v4.len() < v.len() {
                        model.problems.push(format!("--l4 {m}: IPv6 endpoints skipped (IPv4 only)"));
                    }
                    v4
                }
                Err(e) => {
                    model.problems.push(format!("--l4 {m}: {e}"));
                    Vec::new()
                }
            },
        };
        eps.sort();
        eps.dedup();
        if eps.len() > MAX_ENDPOINTS_PER_SERVICE as usize {
            model.problems.push(format!(
                "--l4 {m}: {} endpoints, only the first {MAX_ENDPOINTS_PER_SERVICE} are used",
                eps.len()
            ));
            eps.truncate(MAX_ENDPOINTS_PER_SERVICE as usize);
        }
        if eps.is_empty() {
            model.problems.push(format!("--l4 {m}: no ready endpoint; connections to port {} are refused", m.port));
        }
        model.services.push(L4ServiceModel { id: i as u32, port: m.port, label: m.to_string(), endpoints: eps });
    }
    model
}

/// One map update. Tables are shared (`Arc`) so a plan is cheap to clone and compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Op {
    PutEndpoint(u32, L4Endpoint),
    /// Writes `slots` (endpoint ids, [`MAGLEV_M`] of them) into Maglev row `row`.
    PutTable {
        row: u32,
        slots: Arc<Vec<u32>>,
    },
    PutService(L4Frontend, L4Service),
    DeleteService(L4Frontend),
    DeleteEndpoint(u32),
}

/// What is in the maps (as far as the agent wrote them): the input of the next diff.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    pub services: BTreeMap<L4Frontend, L4Service>,
    /// Endpoint ids by address; ids are stable while an address stays in use.
    pub endpoints: BTreeMap<SocketAddrV4, u32>,
    /// Per service id: the row in use and the endpoints it was filled with.
    pub rows: BTreeMap<u32, (u32, Vec<SocketAddrV4>)>,
    pub next_id: u32,
}

pub fn frontend(addr: Ipv4Addr, port: u16) -> L4Frontend {
    L4Frontend { addr: u32::from_ne_bytes(addr.octets()), port: port.to_be(), proto: proto::TCP, _pad: 0 }
}

pub fn endpoint(a: SocketAddrV4) -> L4Endpoint {
    L4Endpoint { addr: u32::from_ne_bytes(a.ip().octets()), port: a.port().to_be(), _pad: 0 }
}

pub fn endpoint_addr(e: &L4Endpoint) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(e.addr.to_ne_bytes()), u16::from_be(e.port))
}

pub fn frontend_addr(f: &L4Frontend) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(f.addr.to_ne_bytes()), u16::from_be(f.port))
}

/// The Maglev row (endpoint ids per slot) of a sorted endpoint set.
pub fn maglev_row(endpoints: &[SocketAddrV4], ids: &BTreeMap<SocketAddrV4, u32>) -> Vec<u32> {
    let names: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
    maglev::populate(&names, MAGLEV_M).into_iter().map(|i| ids[&endpoints[i as usize]]).collect()
}

/// The operations that take the maps from `prev` to `model` served on every address
/// of `frontends`, and what the maps hold afterwards. Order: new endpoints, then the
/// rows of services whose set changed (the row not in use, so the one in use stays
/// whole), then the services (a single update switches a frontend to its new row), then
/// services that went away, then endpoints no longer in any row. Flows already tracked
/// keep their endpoint: conntrack holds its address.
pub fn plan(prev: &Programmed, model: &L4Model, frontends: &[Ipv4Addr]) -> (Vec<L4Op>, Programmed) {
    let mut next = Programmed { next_id: prev.next_id.max(1), ..Default::default() };
    let mut ops = Vec::new();
    // Endpoints: keep ids of addresses still used, give new ones fresh ids.
    let wanted: BTreeSet<SocketAddrV4> = model.services.iter().flat_map(|s| s.endpoints.iter().copied()).collect();
    for a in &wanted {
        let id = match prev.endpoints.get(a) {
            Some(id) => *id,
            None => {
                let used: BTreeSet<u32> = prev.endpoints.values().chain(next.endpoints.values()).copied().collect();
                let mut id = next.next_id;
                while id == 0 || used.contains(&id) {
                    id = id.wrapping_add(1);
                }
                next.next_id = id.wrapping_add(1);
                ops.push(L4Op::PutEndpoint(id, endpoint(*a)));
                id
            }
        };
        next.endpoints.insert(*a, id);
    }
    // Rows.
    let mut service_values = BTreeMap::new();
    for s in &model.services {
        let row = match prev.rows.get(&s.id) {
            Some((row, eps)) if *eps == s.endpoints => *row,
            Some((row, _)) => {
                // The other row of this service.
                let other = if *row == 2 * s.id { 2 * s.id + 1 } else { 2 * s.id };
                if !s.endpoints.is_empty() {
                    ops.push(L4Op::PutTable { row: other, slots: Arc::new(maglev_row(&s.endpoints, &next.endpoints)) });
                }
                other
            }
            None => {
                if !s.endpoints.is_empty() {
                    ops.push(L4Op::PutTable {
                        row: 2 * s.id,
                        slots: Arc::new(maglev_row(&s.endpoints, &next.endpoints)),
                    });
                }
                2 * s.id
            }
        };
        next.rows.insert(s.id, (row, s.endpoints.clone()));
        service_values
            .insert(s.port, L4Service { id: s.id, table: row, endpoints: s.endpoints.len() as u32, flags: 0 });
    }
    // Services on every frontend address.
    for s in &model.services {
        for addr in frontends {
            let fe = frontend(*addr, s.port);
            let v = service_values[&s.port];
            if prev.services.get(&fe) != Some(&v) {
                ops.push(L4Op::PutService(fe, v));
            }
            next.services.insert(fe, v);
        }
    }
    for fe in prev.services.keys() {
        if !next.services.contains_key(fe) {
            ops.push(L4Op::DeleteService(*fe));
        }
    }
    for (a, id) in &prev.endpoints {
        if !next.endpoints.contains_key(a) {
            ops.push(L4Op::DeleteEndpoint(*id));
        }
    }
    (ops, next)
}

/// Conntrack entries to delete at `now_ns`: expired original-direction entries with
/// their reply entries, and reply entries whose flow is gone.
pub fn sweep(entries: &[(L4CtKey, L4CtEntry)], now_ns: u64) -> Vec<L4CtKey> {
    let by_key: BTreeMap<L4CtKey, &L4CtEntry> = entries.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = Vec::new();
    for (k, v) in entries {
        if k.dir == CT_DIR_ORIG {
            if ct_expired(v, now_ns) {
                out.push(*k);
            }
        } else if k.dir == CT_DIR_REPLY {
            let orig = orig_of_reply(k, v);
            match by_key.get(&orig) {
                Some(o) if !ct_expired(o, now_ns) && o.nat_addr == k.src_addr && o.nat_port == k.src_port => {}
                _ => out.push(*k),
            }
        }
    }
    out
}

/// The original-direction key of the flow a reply entry belongs to.
pub fn orig_of_reply(k: &L4CtKey, v: &L4CtEntry) -> L4CtKey {
    L4CtKey {
        src_addr: k.dst_addr,
        dst_addr: v.nat_addr,
        src_port: k.dst_port,
        dst_port: v.nat_port,
        proto: k.proto,
        dir: CT_DIR_ORIG,
        _pad: 0,
    }
}

/// Conntrack occupancy: live flows (original-direction entries not expired) and all
/// entries.
pub fn occupancy(entries: &[(L4CtKey, L4CtEntry)], now_ns: u64) -> (u64, u64) {
    let live = entries.iter().filter(|(k, v)| k.dir == CT_DIR_ORIG && !ct_expired(v, now_ns)).count();
    (live as u64, entries.len() as u64)
}

/// Sums one service's per-CPU counters.
pub fn sum_stats<'a>(per_cpu: impl IntoIterator<Item = &'a L4Stats>) -> L4Stats {
    let mut t = L4Stats::default();
    for s in per_cpu {
        t.flows += s.flows;
        t.packets += s.packets;
        t.bytes += s.bytes;
        t.reply_packets += s.reply_packets;
        t.reply_bytes += s.reply_bytes;
        t.no_endpoint += s.no_endpoint;
        t.fib_fallback += s.fib_fallback;
        t.ct_errors += s.ct_errors;
    }
    t
}

/// One IPv4 route of `/proc/net/route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route4 {
    pub iface: String,
    pub dest: Ipv4Addr,
    /// The next hop (0.0.0.0: on the link).
    pub gateway: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub metric: u32,
}

/// Parses `/proc/net/route` (addresses in hex, host byte order of the kernel = little
/// endian on the machines we run on, as `u32::from_str_radix` + `to_le_bytes`).
pub fn parse_proc_routes(text: &str) -> Vec<Route4> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.to_le_bytes()));
        let (Some(dest), Some(gateway), Some(mask), Ok(flags), Ok(metric)) =
            (hex(f[1]), hex(f[2]), hex(f[7]), u32::from_str_radix(f[3], 16), f[6].parse::<u32>())
        else {
            continue;
        };
        // RTF_UP
        if flags & 1 == 0 {
            continue;
        }
        out.push(Route4 { iface: f[0].to_string(), dest, gateway, mask, metric });
    }
    out
}

/// The interface of the longest-prefix (then lowest-metric) route to `addr`.
pub fn route_iface(routes: &[Route4], addr: Ipv4Addr) -> Option<String> {
    best_route(routes, addr).map(|r| r.iface.clone())
}

/// The next hop of the route `addr` takes (longest prefix, then lowest metric); None
/// when there is no route or it is on the link.
pub fn route_gateway(routes: &[Route4], addr: Ipv4Addr) -> Option<Ipv4Addr> {
    best_route(routes, addr).map(|r| r.gateway).filter(|g| !g.is_unspecified())
}

fn best_route(routes: &[Route4], addr: Ipv4Addr) -> Option<&Route4> {
    routes
        .iter()
        .filter(|r| u32::from(addr) & u32::from(r.mask) == u32::from(r.dest) & u32::from(r.mask))
        .max_by_key(|r| (u32::from(r.mask).count_ones(), std::cmp::Reverse(r.metric)))
}

#[cfg(test)]
mod tests;
