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

/// Array indexed by destination port (host byte order) of [`crate::guard::GuardPort`]:
/// what the XDP guard checks on that port (deny list, allow list, SYN rate); flags 0:
/// only counted. An array, not a hash: the verifier inlines its lookup (no helper call
/// on every packet), for 256 KiB.
pub const GUARD_PORTS_MAP: &str = "GUARD_PORTS";
/// One entry per port.
pub const GUARD_PORTS_MAX_ENTRIES: u32 = 65536;
/// LPM tries of the guard's rules, `Key<GuardNet4>` / `Key<GuardNet6>` -> 1: sources
/// denied per port, and the allow lists.
pub const GUARD_DENY4_MAP: &str = "GUARD_DENY4";
pub const GUARD_DENY6_MAP: &str = "GUARD_DENY6";
pub const GUARD_ALLOW4_MAP: &str = "GUARD_ALLOW4";
pub const GUARD_ALLOW6_MAP: &str = "GUARD_ALLOW6";
/// Rules per trie at most.
pub const GUARD_RULES_MAX_ENTRIES: u32 = 16384;
/// Array with one [`crate::guard::GuardConfig`] (the SYN token bucket).
pub const GUARD_CONFIG_MAP: &str = "GUARD_CONFIG";
/// LRU hash of the SYN token buckets: [`crate::guard::SynSource`] ->
/// [`crate::guard::SynBucket`]. The least recently seen sources make room; a source
/// that comes back starts with a full bucket.
pub const SYN_BUCKETS_MAP: &str = "SYN_BUCKETS";
pub const SYN_BUCKETS_MAX_ENTRIES: u32 = 65536;
/// Per-CPU hash of the guard's counters: [`crate::guard::GuardCounterKey`] ->
/// [`crate::stats::StatsValue`]: drops per (port, reason), and the packets it passed
/// unchecked (malformed, long IPv6 header chains, fragments).
pub const GUARD_COUNTERS_MAP: &str = "GUARD_COUNTERS";
/// Distinct (port, reason) keys; once full, [`crate::stats::OVERFLOW_PORT`] counts them.
pub const GUARD_COUNTERS_MAX_ENTRIES: u32 = 4096;
