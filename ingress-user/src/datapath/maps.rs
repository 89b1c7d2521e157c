//! Typed access to every map the agent reads or writes; what goes into them and in
//! which order is decided in [`super::translate`].

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, SockHash};
use ingress_common::maps::{SPLICE_PEERS_MAP, SPLICE_SOCKS_MAP, SPLICE_USER_PASS_MAP, XDP_STATS_MAP};
use ingress_common::proto;
use ingress_common::splice::{SpliceKey, SplicePeer, SpliceStats};
use ingress_common::stats::{OVERFLOW_PORT, StatsKey, StatsValue, Verdict};

use super::EbpfError;
use super::translate::{JoinOp, PartOp, join_ops, part_ops, xdp_counters};
use crate::telemetry::XdpCounter;

/// Typed access to [`XDP_STATS_MAP`], and to the guarded ports' share of it in
/// `XDP_SLOT_STATS` (see [`super::slots`]).
pub struct StatsMap(
    pub(super) PerCpuHashMap<MapData, StatsKey, StatsValue>,
    pub(super) PerCpuArray<MapData, ingress_common::guard::SlotStats>,
    pub(super) super::slots::SlotTable,
);

impl StatsMap {
    /// Counters summed over CPUs: the hash's and the guarded ports' slots'.
    pub fn read(&self) -> Result<Vec<XdpCounter>, EbpfError> {
        let mut entries = Vec::new();
        for item in self.0.iter() {
            let (k, per_cpu) = item.map_err(|source| EbpfError::Map { map: XDP_STATS_MAP, source })?;
            let (p, b) = per_cpu.iter().fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            entries.push((k, p, b));
        }
        let slots = self.2.read().expect("slot table lock").clone();
        for (port, slot) in slots {
            let per_cpu = self
                .1
                .get(&u32::from(slot), 0)
                .map_err(|source| EbpfError::Map { map: ingress_common::maps::XDP_SLOT_STATS_MAP, source })?;
            entries.extend(super::slots::stats_rows(port, &per_cpu));
        }
        Ok(xdp_counters(super::slots::merge(entries)))
    }

    /// Creates the overflow keys the program counts into once the map is full; keys
    /// already there (a pinned map adopted from an earlier agent) keep their counts.
    pub(super) fn reserve_overflow_keys(&mut self) -> Result<(), EbpfError> {
        /// BPF_NOEXIST (linux/bpf.h): insert only if absent.
        const NOEXIST: u64 = 1;
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| EbpfError::Cpus(e))?;
        for p in [proto::NONE, proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6] {
            // the guard's drops too, so a full map loses no drop
            for verdict in [Verdict::Pass, Verdict::Drop] {
                let key = StatsKey { dst_port: OVERFLOW_PORT, proto: p, verdict: verdict as u8 };
                let zero = PerCpuValues::try_from(vec![StatsValue::default(); ncpu]).map_err(EbpfError::Cpus)?;
                match self.0.insert(key, zero, NOEXIST) {
                    Ok(()) => {}
                    Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(source) => return Err(EbpfError::Map { map: XDP_STATS_MAP, source }),
                }
            }
        }
        Ok(())
    }
}

/// The splicing maps: joined sockets, their peers, the sockets the agent took over,
/// counters.
pub struct Splicer {
    pub(super) socks: SockHash<MapData, SpliceKey>,
    pub(super) peers: aya::maps::HashMap<MapData, SpliceKey, SplicePeer>,
    pub(super) user_pass: aya::maps::HashMap<MapData, SpliceKey, u32>,
    pub(super) stats: PerCpuArray<MapData, SpliceStats>,
}

impl Splicer {
    /// Joins two sockets: from now on the kernel moves what arrives on one out of
    /// the other, in the order of [`join_ops`]; a segment that arrives while its peer
    /// is not in the SOCKHASH yet turns that direction over to the agent (see
    /// `ingress-ebpf/src/splice.rs`). On a failure the join is undone.
    pub fn join(
        &mut self,
        a: (SpliceKey, std::os::fd::RawFd),
        b: (SpliceKey, std::os::fd::RawFd),
    ) -> Result<(), EbpfError> {
        let fds = [a.1, b.1];
        let keys = [a.0, b.0];
        for op in join_ops(keys) {
            let done = match op {
                JoinOp::Peer(k, p) => {
                    self.peers.insert(k, p, 0).map_err(|source| EbpfError::Map { map: SPLICE_PEERS_MAP, source })
                }
                JoinOp::Socket(i) => self
                    .socks
                    .insert(keys[i], fds[i], 0)
                    .map_err(|source| EbpfError::Map { map: SPLICE_SOCKS_MAP, source }),
            };
            if let Err(e) = done {
                self.part(a.0, b.0);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Bytes the kernel has moved from joined socket `from` to its peer.
    pub fn redirected_from(&self, from: &SpliceKey) -> u64 {
        self.peers.get(from, 0).map(|p| p.redirected_bytes).unwrap_or(0)
    }

    /// From now on the bytes of joined socket `key` go to the agent, not to the peer.
    pub fn take_over(&mut self, key: SpliceKey) -> Result<(), EbpfError> {
        self.user_pass.insert(key, 1, 0).map_err(|source| EbpfError::Map { map: SPLICE_USER_PASS_MAP, source })
    }

    /// Undoes [`Splicer::join`], in the order of [`part_ops`]; entries that are not
    /// there (a join that failed half way) are skipped.
    pub fn part(&mut self, a: SpliceKey, b: SpliceKey) {
        for op in part_ops([a, b]) {
            let _ = match op {
                PartOp::Socket(k) => self.socks.remove(&k),
                PartOp::Peer(k) => self.peers.remove(&k),
                PartOp::Takeover(k) => self.user_pass.remove(&k),
            };
        }
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> SpliceStats {
        let mut total = SpliceStats::default();
        if let Ok(per_cpu) = self.stats.get(&0, 0) {
            for s in per_cpu.iter() {
                total.redirected_bytes += s.redirected_bytes;
                total.redirected_skbs += s.redirected_skbs;
                total.unmatched_skbs += s.unmatched_skbs;
                total.trimmed_bytes += s.trimmed_bytes;
                total.passed_skbs += s.passed_skbs;
                total.layout_mismatches += s.layout_mismatches;
            }
        }
        total
    }
}
