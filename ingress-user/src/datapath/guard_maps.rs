//! The XDP guard's maps (aya): written at start and rewritten on a config reload from
//! the entries [`super::guard`] computes, and its counters read back for `/stats`,
//! `ingress stats` and `/metrics`.

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use ingress_common::guard::{
    GUARD_RULE, GuardConfig, GuardCounterKey, GuardNet4, GuardNet6, GuardPort, GuardReason, SlotDrops, SlotStats,
};
use ingress_common::maps::{
    GUARD_ALLOW4_MAP, GUARD_ALLOW6_MAP, GUARD_CONFIG_MAP, GUARD_COUNTERS_MAP, GUARD_DENY4_MAP, GUARD_DENY6_MAP,
    GUARD_PORTS_MAP, GUARD_PORTS_MAX_ENTRIES, GUARD_SLOT_DROPS_MAP, XDP_SLOT_STATS_MAP,
};
use ingress_common::stats::{OVERFLOW_PORT, StatsValue};

use super::EbpfError;
use super::guard::{GuardEntries, guard_counters};
use super::loader::take_map;
use super::slots::{SlotTable, assign_slots, drop_rows, fresh_slots, merge};
use crate::telemetry::GuardCounter;

pub struct GuardMaps {
    ports: Array<MapData, GuardPort>,
    deny4: LpmTrie<MapData, GuardNet4, u32>,
    deny6: LpmTrie<MapData, GuardNet6, u32>,
    allow4: LpmTrie<MapData, GuardNet4, u32>,
    allow6: LpmTrie<MapData, GuardNet6, u32>,
    config: Array<MapData, GuardConfig>,
    counters: PerCpuHashMap<MapData, GuardCounterKey, StatsValue>,
    /// The guarded ports' counter slots (see [`super::slots`]).
    slot_stats: PerCpuArray<MapData, SlotStats>,
    slot_drops: PerCpuArray<MapData, SlotDrops>,
    slots: SlotTable,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

impl GuardMaps {
    /// Takes the guard's maps out of the loaded object and creates the counters'
    /// overflow keys.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, EbpfError> {
        let mut maps = Self {
            ports: take_map(ebpf, GUARD_PORTS_MAP)?,
            deny4: take_map(ebpf, GUARD_DENY4_MAP)?,
            deny6: take_map(ebpf, GUARD_DENY6_MAP)?,
            allow4: take_map(ebpf, GUARD_ALLOW4_MAP)?,
            allow6: take_map(ebpf, GUARD_ALLOW6_MAP)?,
            config: take_map(ebpf, GUARD_CONFIG_MAP)?,
            counters: take_map(ebpf, GUARD_COUNTERS_MAP)?,
            slot_stats: take_map(ebpf, XDP_SLOT_STATS_MAP)?,
            slot_drops: take_map(ebpf, GUARD_SLOT_DROPS_MAP)?,
            slots: SlotTable::default(),
        };
        maps.recover_slots()?;
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| EbpfError::Cpus(e))?;
        for r in GuardReason::ALL {
            let key = GuardCounterKey { port: OVERFLOW_PORT, reason: r as u8, _pad: 0 };
            let zero = PerCpuValues::try_from(vec![StatsValue::default(); ncpu]).map_err(EbpfError::Cpus)?;
            maps.counters.insert(key, zero, 0).map_err(map_err(GUARD_COUNTERS_MAP))?;
        }
        Ok(maps)
    }

    /// The slots of a pinned `GUARD_PORTS` adopted from an earlier agent (none in a
    /// new map), so its ports keep their counters.
    fn recover_slots(&mut self) -> Result<(), EbpfError> {
        let mut found = std::collections::BTreeMap::new();
        for port in 0..GUARD_PORTS_MAX_ENTRIES {
            let p = self.ports.get(&port, 0).map_err(map_err(GUARD_PORTS_MAP))?;
            // a listen port without rules has flags 0 and still its slot; a port
            // switched off has slot 0
            if p.slot != 0 {
                found.insert(port as u16, p.slot);
            }
        }
        *self.slots.write().expect("slot table lock") = found;
        Ok(())
    }

    /// The port -> counter slot table, shared with the XDP counters' reader.
    pub fn slot_table(&self) -> SlotTable {
        self.slots.clone()
    }

    /// A second handle on `XDP_SLOT_STATS`, for the XDP counters' reader.
    pub fn slot_stats_reader(&self) -> Result<PerCpuArray<MapData, SlotStats>, EbpfError> {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        let fd = self.slot_stats.map().fd().as_fd().try_clone_to_owned().map_err(|e| EbpfError::Map {
            map: XDP_SLOT_STATS_MAP,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError { call: "dup", io_error: e }),
        })?;
        let data = MapData::from_fd(fd).map_err(map_err(XDP_SLOT_STATS_MAP))?;
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).map_err(map_err(XDP_SLOT_STATS_MAP))
    }

    /// Zeroes the cells of `slot` on every CPU (before a new port counts there).
    fn zero_slot(&mut self, slot: u16) -> Result<(), EbpfError> {
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| EbpfError::Cpus(e))?;
        let stats = PerCpuValues::try_from(vec![SlotStats::default(); ncpu]).map_err(EbpfError::Cpus)?;
        self.slot_stats.set(u32::from(slot), stats, 0).map_err(map_err(XDP_SLOT_STATS_MAP))?;
        let drops = PerCpuValues::try_from(vec![SlotDrops::default(); ncpu]).map_err(EbpfError::Cpus)?;
        self.slot_drops.set(u32::from(slot), drops, 0).map_err(map_err(GUARD_SLOT_DROPS_MAP))
    }

    /// Writes `e`: the rules and the SYN configuration first, the ports last, so a
    /// port's checks are switched on only once its lists are complete (an allow list
    /// switched on half-written would refuse sources it admits). Each port keeps its
    /// counter slot; a new one gets a zeroed free slot ([`super::slots`]).
    pub fn program(&mut self, e: &GuardEntries) -> Result<(), EbpfError> {
        for (len, net) in &e.deny4 {
            self.deny4.insert(&Key::new(*len, *net), GUARD_RULE, 0).map_err(map_err(GUARD_DENY4_MAP))?;
        }
        for (len, net) in &e.deny6 {
            self.deny6.insert(&Key::new(*len, *net), GUARD_RULE, 0).map_err(map_err(GUARD_DENY6_MAP))?;
        }
        for (len, net) in &e.allow4 {
            self.allow4.insert(&Key::new(*len, *net), GUARD_RULE, 0).map_err(map_err(GUARD_ALLOW4_MAP))?;
        }
        for (len, net) in &e.allow6 {
            self.allow6.insert(&Key::new(*len, *net), GUARD_RULE, 0).map_err(map_err(GUARD_ALLOW6_MAP))?;
        }
        self.config.set(0, e.config, 0).map_err(map_err(GUARD_CONFIG_MAP))?;
        let old = self.slots.read().expect("slot table lock").clone();
        // the ports of `e` and those still switched on from before keep their slots
        let mut keep: Vec<u16> = e.ports.keys().copied().collect();
        keep.extend(old.keys().copied());
        let slots = assign_slots(&old, keep);
        for slot in fresh_slots(&old, &slots) {
            self.zero_slot(slot)?;
        }
        *self.slots.write().expect("slot table lock") = slots.clone();
        for (port, flags) in &e.ports {
            let slot = slots.get(port).copied().unwrap_or(0);
            self.ports.set(u32::from(*port), GuardPort { flags: *flags, slot }, 0).map_err(map_err(GUARD_PORTS_MAP))?;
        }
        Ok(())
    }

    /// Replaces the running `old` entries with `new` (a config reload): `new` written
    /// first, then the ports `new` does not guard switched off, then the rules it lacks
    /// removed. A source may meet the union of both rule sets for that moment, never
    /// a port with half a list.
    pub fn replace(&mut self, old: &GuardEntries, new: &GuardEntries) -> Result<(), EbpfError> {
        self.program(new)?;
        let gone = super::guard::stale(old, new);
        for port in gone.ports.keys() {
            self.ports.set(u32::from(*port), GuardPort { flags: 0, slot: 0 }, 0).map_err(map_err(GUARD_PORTS_MAP))?;
        }
        // the switched-off ports' slots are free for the next update
        let mut slots = self.slots.write().expect("slot table lock");
        slots.retain(|port, _| new.ports.contains_key(port));
        let absent = |e: &aya::maps::MapError| matches!(e, aya::maps::MapError::KeyNotFound);
        for (len, net) in &gone.deny4 {
            self.deny4
                .remove(&Key::new(*len, *net))
                .or_else(|e| if absent(&e) { Ok(()) } else { Err(e) })
                .map_err(map_err(GUARD_DENY4_MAP))?;
        }
        for (len, net) in &gone.deny6 {
            self.deny6
                .remove(&Key::new(*len, *net))
                .or_else(|e| if absent(&e) { Ok(()) } else { Err(e) })
                .map_err(map_err(GUARD_DENY6_MAP))?;
        }
        for (len, net) in &gone.allow4 {
            self.allow4
                .remove(&Key::new(*len, *net))
                .or_else(|e| if absent(&e) { Ok(()) } else { Err(e) })
                .map_err(map_err(GUARD_ALLOW4_MAP))?;
        }
        for (len, net) in &gone.allow6 {
            self.allow6
                .remove(&Key::new(*len, *net))
                .or_else(|e| if absent(&e) { Ok(()) } else { Err(e) })
                .map_err(map_err(GUARD_ALLOW6_MAP))?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs: the hash's and the guarded ports' slots'.
    pub fn read(&self) -> Result<Vec<GuardCounter>, EbpfError> {
        let mut entries = Vec::new();
        for item in self.counters.iter() {
            let (k, per_cpu) = item.map_err(map_err(GUARD_COUNTERS_MAP))?;
            let (p, b) = per_cpu.iter().fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            entries.push((k, p, b));
        }
        let slots = self.slots.read().expect("slot table lock").clone();
        for (port, slot) in slots {
            let per_cpu = self.slot_drops.get(&u32::from(slot), 0).map_err(map_err(GUARD_SLOT_DROPS_MAP))?;
            entries.extend(drop_rows(port, &per_cpu));
        }
        Ok(guard_counters(merge(entries)))
    }
}
