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

/// SOCKHASH of the pod leg (`--pod-cgroup`, [`crate::pod_leg`]): the agent's pooled
/// connections to pods and the pods' ends of them, keyed by [`crate::splice::SpliceKey`].
pub const POD_LEG_SOCKS_MAP: &str = "POD_LEG_SOCKS";
/// Pod-leg sockets at most (two per pooled connection).
pub const POD_LEG_MAX_ENTRIES: u32 = 65536;
/// Hash map: an IPv4 address (network byte order) the agent connects to pods from -> 1.
/// The sock_ops program puts a pod's socket in the map only when its peer is one of them.
pub const POD_LEG_AGENTS_MAP: &str = "POD_LEG_AGENTS";
pub const POD_LEG_AGENTS_MAX_ENTRIES: u32 = 64;
/// Per-CPU array with one [`crate::pod_leg::PodLegStats`].
pub const POD_LEG_STATS_MAP: &str = "POD_LEG_STATS";
/// The cgroup sock_ops program (the pods' cgroup) and the sk_msg program (the SOCKHASH).
pub const POD_LEG_OPS_PROGRAM: &str = "pod_leg_ops";
pub const POD_LEG_MSG_PROGRAM: &str = "pod_leg_msg";

/// Hash map: [`crate::l4::L4Frontend`] (address, port, protocol) -> [`crate::l4::L4Service`].
/// Written by the agent; read by the L4 tc program on the NIC and the cgroup hooks.
pub const L4_SERVICES_MAP: &str = "L4_SERVICES";
/// Frontends at most (each L4 port on each frontend address).
pub const L4_SERVICES_MAX_ENTRIES: u32 = 1024;
/// Array of `u32` endpoint ids, index `row * MAGLEV_M + slot` (see [`crate::l4`]).
pub const L4_MAGLEV_MAP: &str = "L4_MAGLEV";
pub const L4_MAGLEV_MAX_ENTRIES: u32 = crate::l4::L4_MAGLEV_ROWS * crate::l4::MAGLEV_M;
/// Hash map: endpoint id (`u32`) -> [`crate::l4::L4Endpoint`].
pub const L4_ENDPOINTS_MAP: &str = "L4_ENDPOINTS";
/// Endpoints at most: every service full, twice (old and new set during a change).
pub const L4_ENDPOINTS_MAX_ENTRIES: u32 = 2 * crate::l4::L4_MAX_SERVICES * crate::l4::MAX_ENDPOINTS_PER_SERVICE;
/// LRU hash map: [`crate::l4::L4CtKey`] -> [`crate::l4::L4CtEntry`], two entries per flow.
pub const L4_CT_MAP: &str = "L4_CT";
pub const L4_CT_MAX_ENTRIES: u32 = 131072;
/// Per-CPU array of [`crate::l4::L4Stats`], index: service id.
pub const L4_STATS_MAP: &str = "L4_STATS";
/// tc program on the NIC's ingress: DNAT to the endpoint, redirect into the k3d network.
pub const L4_NIC_PROGRAM: &str = "l4_nic";
/// tc program on the ingress of the interface replies come back on (the k3d bridge):
/// reverse NAT, redirect out the NIC.
pub const L4_REPLY_PROGRAM: &str = "l4_reply";

/// LRU hash map: socket cookie (`u64`) -> [`crate::local::L4LocalDial`], the frontend a
/// local client dialled, written by the cgroup connect hooks and read by the
/// getpeername hooks. LRU: entries of closed sockets are evicted as new ones come.
pub const L4_LOCAL_MAP: &str = "L4_LOCAL";
pub const L4_LOCAL_MAX_ENTRIES: u32 = 65536;
/// Names of the cgroup sock_addr programs for local clients, with their attach points.
pub const L4_CONNECT4_PROGRAM: &str = "l4_connect4";
pub const L4_CONNECT6_PROGRAM: &str = "l4_connect6";
pub const L4_GETPEERNAME4_PROGRAM: &str = "l4_getpeername4";
pub const L4_GETPEERNAME6_PROGRAM: &str = "l4_getpeername6";
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
/// Array of [`crate::guard::SynSlot`] in front of [`SYN_BUCKETS_MAP`]: the bucket of a
/// source (IPv4 or IPv6) lives in the slot its address hashes to (tagged with the
/// address) while the slot is free for it, else in the LRU hash. An array lookup the
/// verifier inlines, where the LRU hash costs a chain of calls.
pub const SYN_SLOTS_MAP: &str = "SYN_SLOTS";
/// Slots of [`SYN_SLOTS_MAP`]: a power of two (the index is the top bits of a hash).
pub const SYN_SLOTS_ENTRIES: u32 = 1 << SYN_SLOTS_BITS;
pub const SYN_SLOTS_BITS: u32 = 16;
/// Per-CPU array with one [`crate::guard::SynClock`]: the coarse clock read at the
/// last jiffy this CPU saw, so that a SYN reads the clock with no helper call while
/// the jiffy lasts. Not pinned (a cache).
pub const SYN_CLOCK_MAP: &str = "SYN_CLOCK";
/// Per-CPU hash of the guard's counters: [`crate::guard::GuardCounterKey`] ->
/// [`crate::stats::StatsValue`]: drops per (port, reason), and the packets it passed
/// unchecked (malformed, long IPv6 header chains, fragments).
pub const GUARD_COUNTERS_MAP: &str = "GUARD_COUNTERS";
/// Distinct (port, reason) keys; once full, [`crate::stats::OVERFLOW_PORT`] counts them.
pub const GUARD_COUNTERS_MAX_ENTRIES: u32 = 4096;
/// Per-CPU array of [`crate::guard::SlotStats`] indexed by a guarded port's counter
/// slot ([`crate::guard::GuardPort::slot`]): that port's share of the XDP counters.
pub const XDP_SLOT_STATS_MAP: &str = "XDP_SLOT_STATS";
/// Per-CPU array of [`crate::guard::SlotDrops`] indexed by counter slot: that port's
/// share of the guard's drop counters.
pub const GUARD_SLOT_DROPS_MAP: &str = "GUARD_SLOT_DROPS";

/// Maps pinned under the agent's `--pin-path` (one file per map, named after the
/// map) so that they outlive the agent: a restarted agent adopts them (counters,
/// and later flows, carry on) once their definitions match the object's. Append the
/// name of every map whose state must survive a restart. Never the splice maps: they
/// hold sockets that die with the agent.
pub const PINNED_MAPS: &[&str] = &[
    XDP_STATS_MAP,
    // L4 forwarding: services, Maglev rows, endpoints, flows, counters
    L4_SERVICES_MAP,
    L4_MAGLEV_MAP,
    L4_ENDPOINTS_MAP,
    L4_CT_MAP,
    L4_STATS_MAP,
    // what each local client's socket dialled (getpeername after a restart)
    L4_LOCAL_MAP,
    // the guard: rules, SYN buckets, drop counters
    GUARD_PORTS_MAP,
    GUARD_DENY4_MAP,
    GUARD_DENY6_MAP,
    GUARD_ALLOW4_MAP,
    GUARD_ALLOW6_MAP,
    GUARD_CONFIG_MAP,
    SYN_BUCKETS_MAP,
    GUARD_COUNTERS_MAP,
    // the SYN buckets' slots in front of SYN_BUCKETS
    SYN_SLOTS_MAP,
    // the guarded ports' counter slots (GUARD_PORTS says which port has which)
    XDP_SLOT_STATS_MAP,
    GUARD_SLOT_DROPS_MAP,
    // delayed binding: the cookie keys, so a restarted agent validates the cookies sent
    // before (bound flows themselves live in L4_CT)
    SYNCOOKIE_CONFIG_MAP,
];

/// Every program the agent attaches (names as in the object; the kernel keeps the
/// first 15 bytes): `ingress detach --interface/--cgroup` removes the attachments of
/// these programs, and only of these. Append every tc / cgroup program.
pub const ATTACHED_PROGRAMS: &[&str] = &[
    XDP_PROGRAM,
    L4_NIC_PROGRAM,
    L4_REPLY_PROGRAM,
    L4_CONNECT4_PROGRAM,
    L4_CONNECT6_PROGRAM,
    L4_GETPEERNAME4_PROGRAM,
    L4_GETPEERNAME6_PROGRAM,
    // delayed binding (--bind-in-kernel on): on the NIC's ingress
    BIND_FIRST_PROGRAM,
];

// Delayed binding (ingress_common::bind, ingress_common::head). Not attached by the
// agent yet and not pinned: the head scanner program only counts its verdicts.
/// Hash map: [`crate::head::BindHostKey`] (listen port, host) -> [`crate::bind::BindTarget`].
pub const BIND_HOSTS_MAP: &str = "BIND_HOSTS";
pub const BIND_HOSTS_MAX_ENTRIES: u32 = 4096;
/// Hash map: backend id (`u32`) -> [`crate::bind::BindBackend`].
pub const BIND_BACKENDS_MAP: &str = "BIND_BACKENDS";
pub const BIND_BACKENDS_MAX_ENTRIES: u32 = 4096;
/// Per-CPU array of `u64`, index: verdict code (0 bind, else [`crate::head::Fallback`]).
pub const BIND_SCAN_COUNTS_MAP: &str = "BIND_SCAN_COUNTS";
/// Array of one [`crate::bind::BindScanResult`]: the last segment's verdict.
pub const BIND_SCAN_LAST_MAP: &str = "BIND_SCAN_LAST";
/// Per-CPU array of one [`crate::bind::BindScratch`].
pub const BIND_SCAN_SCRATCH_MAP: &str = "BIND_SCAN_SCRATCH";
/// tc classifier that scans a TCP segment's payload with the head scanner.
pub const BIND_SCAN_PROGRAM: &str = "bind_scan";
/// tc program that proves a kfunc call loads on this kernel (`bpf_dynptr_from_skb`);
/// run by the packet tier, never attached.
pub const KFUNC_PROBE_PROGRAM: &str = "kfunc_probe";
/// The kernel functions it calls, and the first Linux release with all of them.
pub const KFUNC_PROBE_NEEDS: &[&str] = &["bpf_dynptr_from_skb"];
pub const KFUNC_PROBE_SINCE: &str = "6.4";

/// Delayed binding: array with one [`crate::syncookie::SynCookieConfig`] (cookie keys,
/// current slot, path MSS, receive window shift, SYN-ACK window), written by the agent.
pub const SYNCOOKIE_CONFIG_MAP: &str = "SYNCOOKIE_CONFIG";
/// Hash: [`crate::syncookie::SynCookieTarget`] (frontend address, port) -> 1: the only
/// destinations whose SYNs the cookie program answers. Empty by default.
pub const SYNCOOKIE_TARGETS_MAP: &str = "SYNCOOKIE_TARGETS";
pub const SYNCOOKIE_TARGETS_MAX_ENTRIES: u32 = 256;
/// XDP program answering SYNs with the cookie (not attached by the agent yet).
pub const SYNCOOKIE_PROGRAM: &str = "syncookie_xdp";
/// Per-CPU array of one [`crate::syncookie::SynParse`]: the SYN's option walk, which
/// the cookie program runs in `bpf_loop` (5.17) from this map value.
pub const SYNCOOKIE_SCRATCH_MAP: &str = "SYNCOOKIE_SCRATCH";

/// Delayed binding, pod side: LRU hash [`crate::pod_bind::PodFlowKey`] ->
/// [`crate::pod_bind::PodAdmit`], the connections the edge admitted (filled by nothing yet).
pub const POD_ADMITTED_MAP: &str = "POD_ADMITTED";
pub const POD_ADMITTED_MAX_ENTRIES: u32 = 65536;
/// tc program for a pod's network namespace: the first data segment of an admitted
/// connection becomes the pod's socket (`bpf_sk_assign_tcp_reqsk`); not attached.
pub const POD_BIND_PROGRAM: &str = "pod_bind";
/// The kernel functions it calls, and the first Linux release with them.
pub const POD_BIND_NEEDS: &[&str] = &["bpf_sk_assign_tcp_reqsk"];
pub const POD_BIND_SINCE: &str = "6.11";

/// Delayed binding, the edge's first-segment tc program on the NIC (after the cookie
/// SYN-ACK): validates the cookie, scans the head, binds to a pod or hands the segment to
/// the agent's listener (`bpf_sk_assign_tcp_reqsk`); not attached by the agent.
pub const BIND_FIRST_PROGRAM: &str = "bind_first";
/// The kernel functions it calls, and the first Linux release with them.
pub const BIND_FIRST_NEEDS: &[&str] = &["bpf_sk_assign_tcp_reqsk"];
pub const BIND_FIRST_SINCE: &str = "6.11";
/// Per-CPU array of one [`crate::first_segment::FirstScratch`] (option walk + head scan).
pub const BIND_FIRST_SCRATCH_MAP: &str = "BIND_FIRST_SCRATCH";
/// Per-CPU array of `u64`, index: a `first_segment::FIRST_*` outcome.
pub const BIND_FIRST_COUNTS_MAP: &str = "BIND_FIRST_COUNTS";
/// Array of one [`crate::first_segment::FirstResult`]: the last decided segment.
pub const BIND_FIRST_LAST_MAP: &str = "BIND_FIRST_LAST";

// Delayed binding driven by the agent (`--bind-in-kernel on`, issue 14).
/// Program array of one slot: the XDP guard tail-calls slot 0 (the cookie program
/// `syncookie_xdp`) for a TCP SYN it passes. Empty unless binding is on: the tail call
/// then fails and the guard passes the SYN as before.
pub const BIND_SYN_PROGS_MAP: &str = "BIND_SYN_PROGS";
/// The slot of `syncookie_xdp` in it.
pub const BIND_SYN_SLOT: u32 = 0;
