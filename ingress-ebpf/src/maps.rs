//! Every map of the programs. `#[map(name = ...)]` takes only a literal, so each name
//! is checked at compile time against the constant the agent loads it by.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{HashMap, PerCpuArray, PerCpuHashMap, SockHash};
use ingress_common::maps::{
    SPLICE_MAX_ENTRIES, SPLICE_PEERS_MAP, SPLICE_SOCKS_MAP, SPLICE_STATS_MAP, SPLICE_USER_PASS_MAP, XDP_STATS_MAP,
    XDP_STATS_MAX_ENTRIES,
};
use ingress_common::splice::{SpliceKey, SplicePeer, SpliceStats};
use ingress_common::stats::{StatsKey, StatsValue};

#[map(name = "XDP_STATS")]
pub static XDP_STATS: PerCpuHashMap<StatsKey, StatsValue> = PerCpuHashMap::with_max_entries(XDP_STATS_MAX_ENTRIES, 0);

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
