//! Pure rules of the guarded ports' counter slots (no aya): which port gets which slot
//! of the per-CPU slot arrays (`XDP_SLOT_STATS`, `GUARD_SLOT_DROPS`; see
//! `ingress_common::guard::GuardPort::slot`), and the slot cells as the rows of the
//! hashes they stand in for, so `/stats`, `ingress stats` and `/metrics` show one set
//! of counters whichever map a packet was counted in.
//!
//! Slots are stable: a port keeps its slot across config reloads and agent restarts
//! (recovered from the pinned `GUARD_PORTS`), so its counters carry on; a slot freed by
//! a port that is no longer guarded is not given out again in the same update (the
//! program may still count into it until the old port is switched off), and is zeroed
//! before its next port uses it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use ingress_common::guard::{GUARD_SLOTS, GuardCounterKey, GuardReason, SlotDrops, SlotStats};
use ingress_common::proto;
use ingress_common::stats::{StatsKey, StatsValue, Verdict};

/// Port -> slot of the ports that have one, shared by the guard's writer and both
/// counter readers.
pub type SlotTable = Arc<RwLock<BTreeMap<u16, u16>>>;

/// The slots of `ports`: each port keeps its slot in `current`; a new port gets the
/// lowest slot in `1..GUARD_SLOTS` that no port of `current` holds (so no slot changes
/// hands within one update); ports past the last free slot get none (their packets are
/// counted in the hashes, as unguarded ports are).
pub fn assign_slots(current: &BTreeMap<u16, u16>, ports: impl IntoIterator<Item = u16>) -> BTreeMap<u16, u16> {
    let ports: BTreeSet<u16> = ports.into_iter().collect();
    let mut taken: BTreeSet<u16> = current.values().copied().collect();
    let mut out = BTreeMap::new();
    for p in &ports {
        if let Some(s) = current.get(p) {
            out.insert(*p, *s);
        }
    }
    let mut free = (1..GUARD_SLOTS as u16).filter(|s| !taken.contains(s)).collect::<Vec<_>>().into_iter();
    for p in ports {
        if out.contains_key(&p) {
            continue;
        }
        let Some(s) = free.next() else { break };
        taken.insert(s);
        out.insert(p, s);
    }
    out
}

/// The slots `new` gives out that `old` did not have in use: zero them before use.
pub fn fresh_slots(old: &BTreeMap<u16, u16>, new: &BTreeMap<u16, u16>) -> Vec<u16> {
    let used: BTreeSet<u16> = old.values().copied().collect();
    new.values().copied().filter(|s| !used.contains(s)).collect()
}

/// Sums per-CPU values.
pub fn sum(values: &[StatsValue]) -> (u64, u64) {
    values.iter().fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes))
}

/// The XDP_STATS rows of `port`'s slot cells (summed over CPUs).
pub fn stats_rows(port: u16, per_cpu: &[SlotStats]) -> Vec<(StatsKey, u64, u64)> {
    let key = |proto, v: Verdict| StatsKey { dst_port: port, proto, verdict: v as u8 };
    let cells: [(StatsKey, fn(&SlotStats) -> StatsValue); 4] = [
        (key(proto::TCP, Verdict::Pass), |s| s.tcp_pass),
        (key(proto::TCP, Verdict::Drop), |s| s.tcp_drop),
        (key(proto::UDP, Verdict::Pass), |s| s.udp_pass),
        (key(proto::UDP, Verdict::Drop), |s| s.udp_drop),
    ];
    cells
        .iter()
        .map(|(k, f)| {
            let (p, b) = sum(&per_cpu.iter().map(f).collect::<Vec<_>>());
            (*k, p, b)
        })
        .collect()
}

/// The GUARD_COUNTERS rows of `port`'s slot drop cells (summed over CPUs).
pub fn drop_rows(port: u16, per_cpu: &[SlotDrops]) -> Vec<(GuardCounterKey, u64, u64)> {
    let key = |r: GuardReason| GuardCounterKey { port, reason: r as u8, _pad: 0 };
    let cells: [(GuardCounterKey, fn(&SlotDrops) -> StatsValue); 3] = [
        (key(GuardReason::Denied), |s| s.denied),
        (key(GuardReason::NotAllowed), |s| s.not_allowed),
        (key(GuardReason::SynRate), |s| s.syn_rate),
    ];
    cells
        .iter()
        .map(|(k, f)| {
            let (p, b) = sum(&per_cpu.iter().map(f).collect::<Vec<_>>());
            (*k, p, b)
        })
        .collect()
}

/// Adds up rows with the same key (a port counted in a hash before it had a slot, and
/// in the slot since).
pub fn merge<K: Ord + Copy>(rows: impl IntoIterator<Item = (K, u64, u64)>) -> Vec<(K, u64, u64)> {
    let mut m: BTreeMap<K, (u64, u64)> = BTreeMap::new();
    for (k, p, b) in rows {
        let e = m.entry(k).or_default();
        e.0 += p;
        e.1 += b;
    }
    m.into_iter().map(|(k, (p, b))| (k, p, b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ports_get_the_lowest_free_slots_and_old_ports_keep_theirs() {
        let a = assign_slots(&BTreeMap::new(), [9080, 8080, 6550]);
        assert_eq!(a, [(6550, 1), (8080, 2), (9080, 3)].into());
        // 8080 leaves, 443 arrives: 443 does not take 8080's slot in the same update
        let b = assign_slots(&a, [6550, 9080, 443]);
        assert_eq!(b, [(443, 4), (6550, 1), (9080, 3)].into());
        assert_eq!(fresh_slots(&a, &b), vec![4]);
        // the next update may reuse slot 2, which is then fresh
        let c = assign_slots(&b, [6550, 9080, 443, 22]);
        assert_eq!(c.get(&22), Some(&2));
        assert_eq!(fresh_slots(&b, &c), vec![2]);
        assert!(fresh_slots(&c, &c).is_empty());
    }

    #[test]
    fn ports_past_the_last_slot_get_none() {
        let many: Vec<u16> = (1000..1000 + GUARD_SLOTS as u16 + 5).collect();
        let s = assign_slots(&BTreeMap::new(), many.clone());
        assert_eq!(s.len(), GUARD_SLOTS as usize - 1, "slot 0 means none");
        assert!(s.values().all(|v| *v >= 1 && (*v as u32) < GUARD_SLOTS));
        let distinct: BTreeSet<_> = s.values().collect();
        assert_eq!(distinct.len(), s.len());
        assert!(!s.contains_key(many.last().unwrap()));
    }

    #[test]
    fn slot_cells_become_the_rows_of_the_hashes_and_merge_with_them() {
        let v = |packets, bytes| StatsValue { packets, bytes };
        let cpu0 = SlotStats { tcp_pass: v(2, 120), tcp_drop: v(1, 60), ..Default::default() };
        let cpu1 = SlotStats { tcp_pass: v(3, 180), udp_pass: v(1, 50), ..Default::default() };
        let rows = stats_rows(8080, &[cpu0, cpu1]);
        let find = |proto, verdict: Verdict| {
            rows.iter().find(|(k, _, _)| k.proto == proto && k.verdict == verdict as u8 && k.dst_port == 8080).unwrap()
        };
        assert_eq!((find(proto::TCP, Verdict::Pass).1, find(proto::TCP, Verdict::Pass).2), (5, 300));
        assert_eq!(find(proto::TCP, Verdict::Drop).1, 1);
        assert_eq!(find(proto::UDP, Verdict::Pass).1, 1);
        assert_eq!(find(proto::UDP, Verdict::Drop).1, 0);
        let hash = (StatsKey { dst_port: 8080, proto: proto::TCP, verdict: Verdict::Pass as u8 }, 10, 1000);
        let merged = merge(rows.into_iter().chain([hash]));
        let tcp_pass = merged.iter().find(|(k, _, _)| k.proto == proto::TCP && k.verdict == Verdict::Pass as u8);
        assert_eq!(tcp_pass.map(|(_, p, b)| (*p, *b)), Some((15, 1300)));
        assert_eq!(merged.len(), 4);

        let d = SlotDrops { denied: v(4, 240), syn_rate: v(7, 420), ..Default::default() };
        let rows = drop_rows(6550, &[d, d]);
        let by = |r: GuardReason| rows.iter().find(|(k, _, _)| k.reason == r as u8 && k.port == 6550).unwrap().1;
        assert_eq!((by(GuardReason::Denied), by(GuardReason::NotAllowed), by(GuardReason::SynRate)), (8, 0, 14));
    }
}
