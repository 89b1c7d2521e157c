//! Connection tracking of the L4 data path: flows in [`L4_CT`] (two entries each, see
//! `ingress_common::l4`), TCP state followed from the flags seen either way, expired
//! entries treated as misses, and the per-service counters.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use ingress_common::l4::{
    CT_CLOSED, CT_CLOSING, CT_DIR_ORIG, CT_DIR_REPLY, CT_ESTABLISHED, CT_SYN_SENT, L4CtEntry, L4CtKey, L4Stats,
    ct_expired,
};
use ingress_common::proto;

use crate::maps::{L4_CT, L4_STATS};
use crate::nat::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Tcp4};

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: no arguments. CLOCK_MONOTONIC_COARSE (5.11+, every kernel the agent
    // supports): the clock the agent sweeps with at tick resolution, a timekeeper read
    // instead of a clocksource read; flow timeouts are seconds.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The original-direction key of a packet arriving on the NIC.
#[inline(always)]
pub fn orig_key(p: &Tcp4) -> L4CtKey {
    L4CtKey {
        src_addr: p.saddr,
        dst_addr: p.daddr,
        src_port: p.sport,
        dst_port: p.dport,
        proto: proto::TCP,
        dir: CT_DIR_ORIG,
        _pad: 0,
    }
}

/// The reply-direction key of a packet arriving from an endpoint.
#[inline(always)]
pub fn reply_key(p: &Tcp4) -> L4CtKey {
    L4CtKey { dir: CT_DIR_REPLY, ..orig_key(p) }
}

/// State of a flow created by a packet with `flags`.
#[inline(always)]
pub fn initial_state(flags: u8) -> u8 {
    if flags & TCP_RST != 0 {
        CT_CLOSED
    } else if flags & TCP_FIN != 0 {
        CT_CLOSING
    } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        CT_SYN_SENT
    } else {
        CT_ESTABLISHED
    }
}

/// The state after a packet with `flags` (either direction) on a flow in `state`.
#[inline(always)]
pub fn next_state(state: u8, flags: u8) -> u8 {
    if flags & TCP_RST != 0 {
        CT_CLOSED
    } else if flags & TCP_FIN != 0 {
        if state == CT_CLOSED { CT_CLOSED } else { CT_CLOSING }
    } else if state == CT_SYN_SENT && flags & TCP_ACK != 0 {
        CT_ESTABLISHED
    } else {
        state
    }
}

/// The live original-direction entry of the flow, or `None` on a miss: no entry, an
/// expired one, or a new connection (a bare SYN) reusing the 5-tuple of a closed flow.
#[inline(always)]
pub fn lookup_orig(key: &L4CtKey, flags: u8, now: u64) -> Option<*mut L4CtEntry> {
    let e = L4_CT.get_ptr_mut(key)?;
    // SAFETY: a valid map value pointer.
    let entry = unsafe { &*e };
    if ct_expired(entry, now) {
        return None;
    }
    let bare_syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if bare_syn && (entry.state == CT_CLOSING || entry.state == CT_CLOSED) {
        return None;
    }
    Some(e)
}

/// Updates a live entry for a packet with `flags`.
#[inline(always)]
pub fn touch(e: *mut L4CtEntry, flags: u8, now: u64) {
    // SAFETY: a valid map value pointer; concurrent updates from other CPUs only race
    // on the state and time, and either value is fine.
    unsafe {
        (*e).state = next_state((*e).state, flags);
        (*e).last_seen_ns = now;
    }
}

/// What a counter update is about.
pub enum L4Event {
    NewFlow,
    Forwarded(u64),
    Reply(u64),
    NoEndpoint,
    FibFallback,
    CtError,
}

#[inline(always)]
pub fn count(service: u32, ev: L4Event) {
    let Some(s) = L4_STATS.get_ptr_mut(service) else {
        return;
    };
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    let s: &mut L4Stats = unsafe { &mut *s };
    match ev {
        L4Event::NewFlow => s.flows += 1,
        L4Event::Forwarded(b) => {
            s.packets += 1;
            s.bytes += b;
        }
        L4Event::Reply(b) => {
            s.reply_packets += 1;
            s.reply_bytes += b;
        }
        L4Event::NoEndpoint => s.no_endpoint += 1,
        L4Event::FibFallback => s.fib_fallback += 1,
        L4Event::CtError => s.ct_errors += 1,
    }
}
