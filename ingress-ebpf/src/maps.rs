//! Every map of the programs. `#[map(name = ...)]` takes only a literal, so each name
//! is checked at compile time against the constant the agent loads it by.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{HashMap, PerCpuArray, PerCpuHashMap, SockHash};
use ingress_common::maps::{
    POD_LEG_AGENTS_MAP, POD_LEG_AGENTS_MAX_ENTRIES, POD_LEG_MAX_ENTRIES, POD_LEG_SOCKS_MAP, POD_LEG_STATS_MAP,
    SPLICE_MAX_ENTRIES, SPLICE_PEERS_MAP, SPLICE_SOCKS_MAP, SPLICE_STATS_MAP, SPLICE_USER_PASS_MAP, XDP_STATS_MAP,
    XDP_STATS_MAX_ENTRIES,
};
use ingress_common::pod_leg::PodLegStats;
use ingress_common::splice::{SpliceKey, SplicePeer, SpliceStats};
use ingress_common::stats::{StatsKey, StatsValue};

use aya_ebpf::maps::{Array, LruHashMap};
use ingress_common::l4::{L4_MAX_SERVICES, L4CtEntry, L4CtKey, L4Endpoint, L4Frontend, L4Service, L4Stats};
use ingress_common::maps::{
    L4_CT_MAP, L4_CT_MAX_ENTRIES, L4_ENDPOINTS_MAP, L4_ENDPOINTS_MAX_ENTRIES, L4_MAGLEV_MAP, L4_MAGLEV_MAX_ENTRIES,
    L4_SERVICES_MAP, L4_SERVICES_MAX_ENTRIES, L4_STATS_MAP,
};

#[map(name = "XDP_STATS")]
pub static XDP_STATS: PerCpuHashMap<StatsKey, StatsValue> = PerCpuHashMap::with_max_entries(XDP_STATS_MAX_ENTRIES, 0);

// The pod leg (`--pod-cgroup`): see `pod_leg.rs`.
#[map(name = "POD_LEG_SOCKS")]
pub static POD_LEG_SOCKS: SockHash<SpliceKey> = SockHash::with_max_entries(POD_LEG_MAX_ENTRIES, 0);

#[map(name = "POD_LEG_AGENTS")]
pub static POD_LEG_AGENTS: HashMap<u32, u32> = HashMap::with_max_entries(POD_LEG_AGENTS_MAX_ENTRIES, 0);

#[map(name = "POD_LEG_STATS")]
pub static POD_LEG_STATS: PerCpuArray<PodLegStats> = PerCpuArray::with_max_entries(1, 0);

const _: () = assert!(same(POD_LEG_SOCKS_MAP, "POD_LEG_SOCKS"));
const _: () = assert!(same(POD_LEG_AGENTS_MAP, "POD_LEG_AGENTS"));
const _: () = assert!(same(POD_LEG_STATS_MAP, "POD_LEG_STATS"));

#[map(name = "SPLICE_SOCKS")]
pub static SPLICE_SOCKS: SockHash<SpliceKey> = SockHash::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_PEERS")]
pub static SPLICE_PEERS: HashMap<SpliceKey, SplicePeer> = HashMap::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_USER_PASS")]
pub static SPLICE_USER_PASS: HashMap<SpliceKey, u32> = HashMap::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_STATS")]
pub static SPLICE_STATS: PerCpuArray<SpliceStats> = PerCpuArray::with_max_entries(1, 0);

const _: () = assert!(same(XDP_STATS_MAP, "XDP_STATS"));
const _: () = assert!(same(SPLICE_SOCKS_MAP, "SPLICE_SOCKS"));
const _: () = assert!(same(SPLICE_PEERS_MAP, "SPLICE_PEERS"));
const _: () = assert!(same(SPLICE_USER_PASS_MAP, "SPLICE_USER_PASS"));
const _: () = assert!(same(SPLICE_STATS_MAP, "SPLICE_STATS"));

// L4 forwarding (ingress_common::l4): services by frontend, Maglev rows, endpoints,
// conntrack, per-service counters.
#[map(name = "L4_SERVICES")]
pub static L4_SERVICES: HashMap<L4Frontend, L4Service> = HashMap::with_max_entries(L4_SERVICES_MAX_ENTRIES, 0);

#[map(name = "L4_MAGLEV")]
pub static L4_MAGLEV: Array<u32> = Array::with_max_entries(L4_MAGLEV_MAX_ENTRIES, 0);

#[map(name = "L4_ENDPOINTS")]
pub static L4_ENDPOINTS: HashMap<u32, L4Endpoint> = HashMap::with_max_entries(L4_ENDPOINTS_MAX_ENTRIES, 0);

#[map(name = "L4_CT")]
pub static L4_CT: LruHashMap<L4CtKey, L4CtEntry> = LruHashMap::with_max_entries(L4_CT_MAX_ENTRIES, 0);

#[map(name = "L4_STATS")]
pub static L4_STATS: PerCpuArray<L4Stats> = PerCpuArray::with_max_entries(L4_MAX_SERVICES, 0);

const _: () = assert!(same(L4_SERVICES_MAP, "L4_SERVICES"));
const _: () = assert!(same(L4_MAGLEV_MAP, "L4_MAGLEV"));
const _: () = assert!(same(L4_ENDPOINTS_MAP, "L4_ENDPOINTS"));
const _: () = assert!(same(L4_CT_MAP, "L4_CT"));
const _: () = assert!(same(L4_STATS_MAP, "L4_STATS"));
// The XDP guard's maps (ingress-common/src/guard.rs has the keys and values).
use aya_ebpf::maps::LpmTrie;
use aya_ebpf::maps::lpm_trie::Key as LpmKey;
use ingress_common::guard::{GuardConfig, GuardCounterKey, GuardNet4, GuardNet6, GuardPort, SynBucket, SynSource};
use ingress_common::maps::{
    GUARD_ALLOW4_MAP, GUARD_ALLOW6_MAP, GUARD_CONFIG_MAP, GUARD_COUNTERS_MAP, GUARD_COUNTERS_MAX_ENTRIES,
    GUARD_DENY4_MAP, GUARD_DENY6_MAP, GUARD_PORTS_MAP, GUARD_PORTS_MAX_ENTRIES, GUARD_RULES_MAX_ENTRIES,
    SYN_BUCKETS_MAP, SYN_BUCKETS_MAX_ENTRIES,
};

#[map(name = "GUARD_PORTS")]
pub static GUARD_PORTS: Array<GuardPort> = Array::with_max_entries(GUARD_PORTS_MAX_ENTRIES, 0);

#[map(name = "GUARD_DENY4")]
pub static GUARD_DENY4: LpmTrie<GuardNet4, u32> = LpmTrie::with_max_entries(GUARD_RULES_MAX_ENTRIES, 0);

#[map(name = "GUARD_DENY6")]
pub static GUARD_DENY6: LpmTrie<GuardNet6, u32> = LpmTrie::with_max_entries(GUARD_RULES_MAX_ENTRIES, 0);

#[map(name = "GUARD_ALLOW4")]
pub static GUARD_ALLOW4: LpmTrie<GuardNet4, u32> = LpmTrie::with_max_entries(GUARD_RULES_MAX_ENTRIES, 0);

#[map(name = "GUARD_ALLOW6")]
pub static GUARD_ALLOW6: LpmTrie<GuardNet6, u32> = LpmTrie::with_max_entries(GUARD_RULES_MAX_ENTRIES, 0);

#[map(name = "GUARD_CONFIG")]
pub static GUARD_CONFIG: Array<GuardConfig> = Array::with_max_entries(1, 0);

#[map(name = "SYN_BUCKETS")]
pub static SYN_BUCKETS: LruHashMap<SynSource, SynBucket> = LruHashMap::with_max_entries(SYN_BUCKETS_MAX_ENTRIES, 0);

#[map(name = "GUARD_COUNTERS")]
pub static GUARD_COUNTERS: PerCpuHashMap<GuardCounterKey, StatsValue> =
    PerCpuHashMap::with_max_entries(GUARD_COUNTERS_MAX_ENTRIES, 0);

// Counter slots of the guarded ports (ingress_common::guard::GuardPort::slot).
#[map(name = "XDP_SLOT_STATS")]
pub static XDP_SLOT_STATS: PerCpuArray<ingress_common::guard::SlotStats> =
    PerCpuArray::with_max_entries(ingress_common::guard::GUARD_SLOTS, 0);

#[map(name = "GUARD_SLOT_DROPS")]
pub static GUARD_SLOT_DROPS: PerCpuArray<ingress_common::guard::SlotDrops> =
    PerCpuArray::with_max_entries(ingress_common::guard::GUARD_SLOTS, 0);

const _: () = assert!(same(ingress_common::maps::XDP_SLOT_STATS_MAP, "XDP_SLOT_STATS"));
const _: () = assert!(same(ingress_common::maps::GUARD_SLOT_DROPS_MAP, "GUARD_SLOT_DROPS"));

/// LPM key of the IPv4 tries.
pub type Net4Key = LpmKey<GuardNet4>;
/// LPM key of the IPv6 tries.
pub type Net6Key = LpmKey<GuardNet6>;

const _: () = assert!(same(GUARD_PORTS_MAP, "GUARD_PORTS"));
const _: () = assert!(same(GUARD_DENY4_MAP, "GUARD_DENY4"));
const _: () = assert!(same(GUARD_DENY6_MAP, "GUARD_DENY6"));
const _: () = assert!(same(GUARD_ALLOW4_MAP, "GUARD_ALLOW4"));
const _: () = assert!(same(GUARD_ALLOW6_MAP, "GUARD_ALLOW6"));
const _: () = assert!(same(GUARD_CONFIG_MAP, "GUARD_CONFIG"));
const _: () = assert!(same(SYN_BUCKETS_MAP, "SYN_BUCKETS"));
const _: () = assert!(same(GUARD_COUNTERS_MAP, "GUARD_COUNTERS"));

/// `a == b` for strings, in a const context (where `str::eq` is not available).
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// Local clients (ingress_common::local): what each rewritten socket dialled.
#[map(name = "L4_LOCAL")]
pub static L4_LOCAL: LruHashMap<u64, ingress_common::local::L4LocalDial> =
    LruHashMap::with_max_entries(ingress_common::maps::L4_LOCAL_MAX_ENTRIES, 0);
const _: () = assert!(same(ingress_common::maps::L4_LOCAL_MAP, "L4_LOCAL"));

// Delayed binding (ingress_common::bind): bindable hosts, their backends, the head
// scanner's verdicts and scratch space.
use ingress_common::bind::{BindBackend, BindScanResult, BindScratch, BindTarget};
use ingress_common::head::{BindHostKey, VERDICT_CODES};
use ingress_common::maps::{BIND_BACKENDS_MAX_ENTRIES, BIND_HOSTS_MAX_ENTRIES};

#[map(name = "BIND_HOSTS")]
pub static BIND_HOSTS: HashMap<BindHostKey, BindTarget> = HashMap::with_max_entries(BIND_HOSTS_MAX_ENTRIES, 0);

#[map(name = "BIND_BACKENDS")]
pub static BIND_BACKENDS: HashMap<u32, BindBackend> = HashMap::with_max_entries(BIND_BACKENDS_MAX_ENTRIES, 0);

#[map(name = "BIND_SCAN_COUNTS")]
pub static BIND_SCAN_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(VERDICT_CODES, 0);

#[map(name = "BIND_SCAN_LAST")]
pub static BIND_SCAN_LAST: Array<BindScanResult> = Array::with_max_entries(1, 0);

#[map(name = "BIND_SCAN_SCRATCH")]
pub static BIND_SCAN_SCRATCH: PerCpuArray<BindScratch> = PerCpuArray::with_max_entries(1, 0);

const _: () = assert!(same(ingress_common::maps::BIND_HOSTS_MAP, "BIND_HOSTS"));
const _: () = assert!(same(ingress_common::maps::BIND_BACKENDS_MAP, "BIND_BACKENDS"));
const _: () = assert!(same(ingress_common::maps::BIND_SCAN_COUNTS_MAP, "BIND_SCAN_COUNTS"));
const _: () = assert!(same(ingress_common::maps::BIND_SCAN_LAST_MAP, "BIND_SCAN_LAST"));
const _: () = assert!(same(ingress_common::maps::BIND_SCAN_SCRATCH_MAP, "BIND_SCAN_SCRATCH"));
// Delayed binding: the edge's SYN cookie (ingress_common::syncookie).
#[map(name = "SYNCOOKIE_CONFIG")]
pub static SYNCOOKIE_CONFIG: Array<ingress_common::syncookie::SynCookieConfig> = Array::with_max_entries(1, 0);
#[map(name = "SYNCOOKIE_TARGETS")]
pub static SYNCOOKIE_TARGETS: HashMap<ingress_common::syncookie::SynCookieTarget, u32> =
    HashMap::with_max_entries(ingress_common::maps::SYNCOOKIE_TARGETS_MAX_ENTRIES, 0);
const _: () = assert!(same(ingress_common::maps::SYNCOOKIE_CONFIG_MAP, "SYNCOOKIE_CONFIG"));
const _: () = assert!(same(ingress_common::maps::SYNCOOKIE_TARGETS_MAP, "SYNCOOKIE_TARGETS"));
#[map(name = "SYNCOOKIE_SCRATCH")]
pub static SYNCOOKIE_SCRATCH: PerCpuArray<ingress_common::syncookie::SynParse> = PerCpuArray::with_max_entries(1, 0);
const _: () = assert!(same(ingress_common::maps::SYNCOOKIE_SCRATCH_MAP, "SYNCOOKIE_SCRATCH"));

// Delayed binding, pod side (ingress_common::pod_bind): the connections the edge admitted.
#[map(name = "POD_ADMITTED")]
pub static POD_ADMITTED: LruHashMap<ingress_common::pod_bind::PodFlowKey, ingress_common::pod_bind::PodAdmit> =
    LruHashMap::with_max_entries(ingress_common::maps::POD_ADMITTED_MAX_ENTRIES, 0);
const _: () = assert!(same(ingress_common::maps::POD_ADMITTED_MAP, "POD_ADMITTED"));

// Delayed binding, the edge's first-segment program (ingress_common::first_segment).
#[map(name = "BIND_FIRST_SCRATCH")]
pub static BIND_FIRST_SCRATCH: PerCpuArray<ingress_common::first_segment::FirstScratch> =
    PerCpuArray::with_max_entries(1, 0);
#[map(name = "BIND_FIRST_COUNTS")]
pub static BIND_FIRST_COUNTS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(ingress_common::first_segment::FIRST_COUNTS, 0);
#[map(name = "BIND_FIRST_LAST")]
pub static BIND_FIRST_LAST: Array<ingress_common::first_segment::FirstResult> = Array::with_max_entries(1, 0);
const _: () = assert!(same(ingress_common::maps::BIND_FIRST_SCRATCH_MAP, "BIND_FIRST_SCRATCH"));
const _: () = assert!(same(ingress_common::maps::BIND_FIRST_COUNTS_MAP, "BIND_FIRST_COUNTS"));
const _: () = assert!(same(ingress_common::maps::BIND_FIRST_LAST_MAP, "BIND_FIRST_LAST"));

// The SYN guard's fast path (ingress_common::guard): buckets in an array in front of
// SYN_BUCKETS, and the per-CPU clock cache.
#[map(name = "SYN_SLOTS")]
pub static SYN_SLOTS: Array<ingress_common::guard::SynSlot> =
    Array::with_max_entries(ingress_common::maps::SYN_SLOTS_ENTRIES, 0);
#[map(name = "SYN_CLOCK")]
pub static SYN_CLOCK: PerCpuArray<ingress_common::guard::SynClock> = PerCpuArray::with_max_entries(1, 0);
const _: () = assert!(same(ingress_common::maps::SYN_SLOTS_MAP, "SYN_SLOTS"));
const _: () = assert!(same(ingress_common::maps::SYN_CLOCK_MAP, "SYN_CLOCK"));

// Delayed binding driven by the agent: the guard's tail call into the SYN cookie.
#[map(name = "BIND_SYN_PROGS")]
pub static BIND_SYN_PROGS: aya_ebpf::maps::ProgramArray = aya_ebpf::maps::ProgramArray::with_max_entries(1, 0);
const _: () = assert!(same(ingress_common::maps::BIND_SYN_PROGS_MAP, "BIND_SYN_PROGS"));
