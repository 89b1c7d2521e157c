//! Keys and values of the L4 forwarding maps (the `L4_*` names in [`crate::maps`]):
//! services by frontend, Maglev tables, endpoints, connection tracking, counters.
//!
//! The lookup a program does for a new flow (the tc program on the NIC, or a cgroup
//! `connect4` hook for local clients):
//!
//! ```text
//! svc  = L4_SERVICES[L4Frontend { addr, port, proto }]          // miss: not ours
//! if svc.endpoints == 0: no endpoint (count it, pass)
//! slot = hash % MAGLEV_M                                         // e.g. flow_hash(..)
//! id   = L4_MAGLEV[svc.table * MAGLEV_M + slot]                  // 0: no endpoint
//! ep   = L4_ENDPOINTS[id]                                        // miss: no endpoint
//! ```
//!
//! Addresses and ports are in network byte order everywhere (as they sit in the packet
//! and in `bpf_sock_addr.user_ip4` / `user_port`): on the user side that is
//! `u32::from_ne_bytes(ip.octets())` and `port.to_be()`.
//!
//! Each service owns two Maglev table rows (`2 * id` and `2 * id + 1`): the agent
//! fills the row not in use, then points the service at it, so a program never sees a
//! half-written table.

use core::mem::size_of;

/// Maglev table size per service: a prime, 256x [`MAX_ENDPOINTS_PER_SERVICE`].
pub const MAGLEV_M: u32 = 8191;
/// Endpoints one L4 service may have (more are refused by the agent with an error).
pub const MAX_ENDPOINTS_PER_SERVICE: u32 = 32;
/// L4 services (one per L4 port) at most; service ids are `0..L4_MAX_SERVICES`.
pub const L4_MAX_SERVICES: u32 = 64;
/// Rows of the Maglev table map: two per service.
pub const L4_MAGLEV_ROWS: u32 = 2 * L4_MAX_SERVICES;

/// Key of [`crate::maps::L4_SERVICES_MAP`]: a frontend address, port and IP protocol
/// ([`crate::proto::TCP`]). `addr` and `port` in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct L4Frontend {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<L4Frontend>() == 8);

/// Value of [`crate::maps::L4_SERVICES_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct L4Service {
    /// Service id, `0..L4_MAX_SERVICES`: index of [`crate::maps::L4_STATS_MAP`].
    pub id: u32,
    /// Maglev row in use, `0..L4_MAGLEV_ROWS`: the table is
    /// `L4_MAGLEV[table * MAGLEV_M .. (table + 1) * MAGLEV_M]`.
    pub table: u32,
    /// Endpoints in the table; 0: the service has no ready endpoint.
    pub endpoints: u32,
    /// Reserved, 0.
    pub flags: u32,
}
const _: () = assert!(size_of::<L4Service>() == 16);

/// Value of [`crate::maps::L4_ENDPOINTS_MAP`] (key: endpoint id, a `u32` >= 1; 0 in a
/// Maglev slot means "no endpoint"). `addr` and `port` in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct L4Endpoint {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<L4Endpoint>() == 8);

/// [`L4CtKey::dir`]: the client's packets as they reach the NIC
/// (client -> frontend); the entry holds the endpoint and the flow's state.
pub const CT_DIR_ORIG: u8 = 0;
/// [`L4CtKey::dir`]: the endpoint's replies as they reach the bridge
/// (endpoint -> client); the entry holds the frontend to restore as source.
pub const CT_DIR_REPLY: u8 = 1;

/// Key of [`crate::maps::L4_CT_MAP`]: a TCP 5-tuple as seen in one direction.
/// Addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct L4CtKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    /// [`CT_DIR_ORIG`] or [`CT_DIR_REPLY`].
    pub dir: u8,
    pub _pad: u16,
}
const _: () = assert!(size_of::<L4CtKey>() == 16);

/// Value of [`crate::maps::L4_CT_MAP`]. An original-direction entry holds the endpoint
/// (`nat_*`: the new destination) and the flow's TCP state and last-seen time; a
/// reply-direction entry holds the frontend (`nat_*`: the source replies get back).
/// The endpoint's address is stored, not its id, so an established flow keeps its
/// endpoint after the endpoint leaves the service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct L4CtEntry {
    pub nat_addr: u32,
    pub nat_port: u16,
    /// One of the `CT_*` states (original-direction entries).
    pub state: u8,
    pub _pad0: u8,
    /// The service (its id) the flow belongs to, for the counters.
    pub service: u32,
    pub _pad1: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet either way.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<L4CtEntry>() == 24);

/// TCP states of a tracked flow.
pub const CT_SYN_SENT: u8 = 1;
pub const CT_ESTABLISHED: u8 = 2;
/// A FIN was seen (either way).
pub const CT_CLOSING: u8 = 3;
/// An RST was seen.
pub const CT_CLOSED: u8 = 4;
/// A bound flow (delayed binding) whose endpoint left: the agent sets it when the pod's
/// address is gone from the routes, and `bind_first` then passes the flow's segments
/// to the VM's stack un-NATed, which answers them with a RST (no socket has the tuple),
/// instead of forwarding them to an address nobody answers. Kept as long as an
/// established flow (its last packet is what ages it), so the client's next segment,
/// however late, still gets its RST.
pub const CT_ENDPOINT_GONE: u8 = 5;
/// Delayed binding: a tuple whose bound flow closed with a FIN and whose new connection
/// `bind_first` handed to the agent (the pod may still hold the tuple in TIME_WAIT). The
/// connection's segments pass to the VM's stack (the agent's socket), and a further new
/// connection on the tuple goes to the agent too, until the entry ages out like a closing
/// one (after the pod's TIME_WAIT).
pub const CT_AGENT: u8 = 6;

const SEC: u64 = 1_000_000_000;
/// Idle time after which a flow in `SYN_SENT` is forgotten.
pub const CT_TIMEOUT_SYN_NS: u64 = 60 * SEC;
/// Idle time after which an established flow is forgotten (6 hours).
pub const CT_TIMEOUT_ESTABLISHED_NS: u64 = 6 * 3600 * SEC;
/// Idle time after the first FIN: longer than the TIME_WAIT a closed flow may leave on
/// either side (a socket's, 60 s plus up to ~4 s of timer-wheel slack; a node
/// conntrack's, 120 s by default), so that a new connection on the tuple of a bound
/// flow closed with a FIN still finds this entry (`bind_first` hands it to the agent).
pub const CT_TIMEOUT_CLOSING_NS: u64 = 130 * SEC;
/// Idle time after an RST.
pub const CT_TIMEOUT_CLOSED_NS: u64 = 10 * SEC;

/// How long a flow in `state` may be idle before it counts as a miss.
#[inline(always)]
pub const fn ct_timeout_ns(state: u8) -> u64 {
    match state {
        CT_SYN_SENT => CT_TIMEOUT_SYN_NS,
        CT_ESTABLISHED | CT_ENDPOINT_GONE => CT_TIMEOUT_ESTABLISHED_NS,
        CT_CLOSING | CT_AGENT => CT_TIMEOUT_CLOSING_NS,
        _ => CT_TIMEOUT_CLOSED_NS,
    }
}

/// Whether an original-direction entry last seen at `last_seen_ns` is expired at `now_ns`.
#[inline(always)]
pub const fn ct_expired(e: &L4CtEntry, now_ns: u64) -> bool {
    // Another CPU may have stamped the entry after this one read the clock.
    now_ns > e.last_seen_ns && now_ns - e.last_seen_ns > ct_timeout_ns(e.state)
}

/// The flow hash that picks a Maglev slot for a packet flow (arguments as in the
/// packet, network byte order). Both sides use it: the program to choose, the tests
/// and the agent to predict.
#[inline(always)]
pub const fn flow_hash(src_addr: u32, dst_addr: u32, src_port: u16, dst_port: u16) -> u32 {
    // murmur3's 32-bit finaliser over a mix of the tuple: cheap and well spread.
    let mut h =
        src_addr ^ dst_addr.rotate_left(16) ^ ((src_port as u32) << 16 | dst_port as u32).wrapping_mul(0x9e37_79b1);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Per-service counters, one [`L4Stats`] per CPU at index `service id` of
/// [`crate::maps::L4_STATS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L4Stats {
    /// New flows (conntrack entries created).
    pub flows: u64,
    /// Client -> endpoint packets and bytes forwarded (IP length).
    pub packets: u64,
    pub bytes: u64,
    /// Endpoint -> client packets and bytes reverse-NATed.
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// Packets to the service passed untouched because it had no endpoint.
    pub no_endpoint: u64,
    /// Packets NATed but handed to the kernel stack because the FIB lookup failed.
    pub fib_fallback: u64,
    /// Conntrack inserts that failed.
    pub ct_errors: u64,
}
const _: () = assert!(size_of::<L4Stats>() == 64);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are repr(C), Copy, and have no implicit padding (size checks above).
    unsafe impl aya::Pod for super::L4Frontend {}
    unsafe impl aya::Pod for super::L4Service {}
    unsafe impl aya::Pod for super::L4Endpoint {}
    unsafe impl aya::Pod for super::L4CtKey {}
    unsafe impl aya::Pod for super::L4CtEntry {}
    unsafe impl aya::Pod for super::L4Stats {}
}
