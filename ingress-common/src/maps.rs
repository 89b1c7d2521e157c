//! Every map and program name the agent loads by, and every map's size: the kernel
//! side's `#[map(name = ...)]` and the loader both use these.

/// Per-CPU hash map of packet/byte counters, keyed by [`crate::stats::StatsKey`];
/// written by the XDP program on the VM NIC, read by the agent (`GET /stats`,
/// `ingress stats`).
pub const XDP_STATS_MAP: &str = "XDP_STATS";
/// Distinct (port, protocol, verdict) keys the stats map can hold. Once full, new keys
/// are not counted (the program still passes the packet) and
/// [`crate::stats::OVERFLOW_PORT`] counts them.
pub const XDP_STATS_MAX_ENTRIES: u32 = 4096;
/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "ingress_xdp";

/// SOCKHASH of the sockets joined for in-kernel splicing, keyed by
/// [`crate::splice::SpliceKey`].
pub const SPLICE_SOCKS_MAP: &str = "SPLICE_SOCKS";
/// Hash map: a spliced socket's key -> [`crate::splice::SplicePeer`] (its peer's key,
/// and the bytes moved from it to the peer).
pub const SPLICE_PEERS_MAP: &str = "SPLICE_PEERS";
/// Hash map: joined sockets whose bytes the agent takes over (it saw bytes reach user
/// space), written only by the agent: [`crate::splice::SpliceKey`] -> 1.
pub const SPLICE_USER_PASS_MAP: &str = "SPLICE_USER_PASS";
/// Per-CPU array with one [`crate::splice::SpliceStats`].
pub const SPLICE_STATS_MAP: &str = "SPLICE_STATS";
/// Spliced sockets at most (two per joined connection).
pub const SPLICE_MAX_ENTRIES: u32 = 65536;
/// Name of the sk_skb stream-verdict program.
pub const SPLICE_PROGRAM: &str = "splice_verdict";

/// Maps pinned under the agent's `--pin-path` (one file per map, named after the
/// map) so that they outlive the agent: a restarted agent adopts them (counters,
/// and later flows, carry on) once their definitions match the object's. Append the
/// name of every map whose state must survive a restart (L4 services, Maglev,
/// endpoints, conntrack, NAT, counters; guard LPM tries, SYN buckets, drop counters).
/// Never the splice maps: they hold sockets that die with the agent.
pub const PINNED_MAPS: &[&str] = &[XDP_STATS_MAP];

/// Every program the agent attaches (names as in the object; the kernel keeps the
/// first 15 bytes): `ingress detach --interface/--cgroup` removes the attachments of
/// these programs, and only of these. Append every tc / cgroup program.
pub const ATTACHED_PROGRAMS: &[&str] = &[XDP_PROGRAM];
