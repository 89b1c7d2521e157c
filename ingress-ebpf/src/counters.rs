//! The programs' counters: per-(port, protocol, verdict) packets and bytes of the XDP
//! program, and what the splice verdict did with each segment.

use aya_ebpf::programs::XdpContext;
use ingress_common::stats::{OVERFLOW_PORT, StatsKey, StatsValue};

use ingress_common::guard::{GuardCounterKey, GuardReason};
use ingress_common::proto;

use crate::maps::{GUARD_COUNTERS, GUARD_SLOT_DROPS, SPLICE_STATS, XDP_SLOT_STATS, XDP_STATS};

/// Counts the packet in `ctx` under `key` in [`XDP_STATS`].
#[inline(always)]
pub fn count_packet(ctx: &XdpContext, key: StatsKey) {
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(v) = XDP_STATS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*v).packets += 1;
            (*v).bytes += len;
        }
        return;
    }
    let first = StatsValue { packets: 1, bytes: len };
    if XDP_STATS.insert(&key, &first, 0).is_err() {
        // Map full: account under the overflow key of this protocol, which the agent
        // creates at load time (so it exists even when the map fills up); protocols
        // without one (the agent reserves the common ones) under that of proto 0.
        let over = StatsKey { dst_port: OVERFLOW_PORT, proto: key.proto, verdict: key.verdict };
        let any = StatsKey { dst_port: OVERFLOW_PORT, proto: proto::NONE, verdict: key.verdict };
        if let Some(v) = XDP_STATS.get_ptr_mut(&over).or_else(|| XDP_STATS.get_ptr_mut(&any)) {
            // SAFETY: as above.
            unsafe {
                (*v).packets += 1;
                (*v).bytes += len;
            }
        }
    }
}

/// What the splice verdict did with a segment, as counted in [`SPLICE_STATS`].
pub enum SpliceEvent {
    Unmatched,
    Redirected(u64),
    Trimmed(u64),
    Passed,
    LayoutMismatch,
}

#[inline(always)]
pub fn count_splice(ev: SpliceEvent) {
    if let Some(s) = SPLICE_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        let s = unsafe { &mut *s };
        match ev {
            SpliceEvent::Unmatched => s.unmatched_skbs += 1,
            SpliceEvent::Redirected(bytes) => {
                s.redirected_bytes += bytes;
                s.redirected_skbs += 1;
            }
            SpliceEvent::Trimmed(bytes) => s.trimmed_bytes += bytes,
            SpliceEvent::Passed => s.passed_skbs += 1,
            SpliceEvent::LayoutMismatch => s.layout_mismatches += 1,
        }
    }
}

/// Counts a new connection of a local client to L4 service `service` (a cgroup hook
/// rewrote its connect): a flow of the service like one through the NIC.
#[inline(always)]
pub fn count_local_flow(service: u32) {
    if let Some(s) = crate::maps::L4_STATS.get_ptr_mut(service) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { (*s).flows += 1 };
    }
}

/// Counts the packet in `ctx` in [`GUARD_COUNTERS`] under (`port`, `reason`); once the
/// map is full, under the reason's overflow key (created by the agent at load time).
#[inline(always)]
pub fn count_guard(ctx: &XdpContext, port: u16, reason: GuardReason) {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let key = GuardCounterKey { port, reason: reason as u8, _pad: 0 };
    if let Some(v) = GUARD_COUNTERS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*v).packets += 1;
            (*v).bytes += len;
        }
        return;
    }
    let first = StatsValue { packets: 1, bytes: len };
    if GUARD_COUNTERS.insert(&key, &first, 0).is_err() {
        let over = GuardCounterKey { port: OVERFLOW_PORT, reason: reason as u8, _pad: 0 };
        if let Some(v) = GUARD_COUNTERS.get_ptr_mut(&over) {
            // SAFETY: as above.
            unsafe {
                (*v).packets += 1;
                (*v).bytes += len;
            }
        }
    }
}

/// Counts a TCP/UDP packet to a guarded port in its counter `slot`: the verdict in
/// [`XDP_SLOT_STATS`], a drop's reason in [`GUARD_SLOT_DROPS`]. False (nothing
/// counted) when the slot is out of range or the protocol has no cells: the caller
/// counts the packet in the hashes then.
#[inline(always)]
pub fn count_slot(ctx: &XdpContext, slot: u16, ip_proto: u8, drop: Option<GuardReason>) -> bool {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let tcp = ip_proto == proto::TCP;
    if !tcp && ip_proto != proto::UDP {
        return false;
    }
    let Some(s) = XDP_SLOT_STATS.get_ptr_mut(slot as u32) else {
        return false;
    };
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    let s = unsafe { &mut *s };
    let cell = match (tcp, drop.is_some()) {
        (true, false) => &mut s.tcp_pass,
        (true, true) => &mut s.tcp_drop,
        (false, false) => &mut s.udp_pass,
        (false, true) => &mut s.udp_drop,
    };
    cell.packets += 1;
    cell.bytes += len;
    if let Some(reason) = drop
        && let Some(d) = GUARD_SLOT_DROPS.get_ptr_mut(slot as u32)
    {
        // SAFETY: as above.
        let d = unsafe { &mut *d };
        let cell = match reason {
            GuardReason::Denied => &mut d.denied,
            GuardReason::NotAllowed => &mut d.not_allowed,
            _ => &mut d.syn_rate,
        };
        cell.packets += 1;
        cell.bytes += len;
    }
    true
}
