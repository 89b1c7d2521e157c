//! The guard's decisions, shared helpers of the XDP program: the per-port deny and
//! allow lists (LPM tries keyed by port + source prefix) and the per-source SYN token
//! bucket. Deny wins over allow: a source in a port's deny list is dropped even when
//! the port's allow list also holds it.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use ingress_common::guard::{
    GUARD_ALLOW, GUARD_DENY, GUARD_SYN, GuardNet4, GuardNet6, GuardPort, GuardReason, PORT_BITS, SYN_TOKEN, SynBucket,
    SynSource,
};
use ingress_common::proto;

use crate::maps::{
    GUARD_ALLOW4, GUARD_ALLOW6, GUARD_CONFIG, GUARD_DENY4, GUARD_DENY6, GUARD_PORTS, Net4Key, Net6Key, SYN_BUCKETS,
};
use crate::parse::{Ip, TCP_ACK, TCP_SYN};

/// Whether the source of `ip` is in a trie (deny or allow) for `port`.
#[inline(always)]
fn listed(ip: &Ip, port: u16, deny: bool) -> bool {
    let port = port.to_be_bytes();
    if ip.v6 {
        let key = Net6Key::new(PORT_BITS + 128, GuardNet6 { port, addr: ip.src_bytes() });
        let trie = if deny { &GUARD_DENY6 } else { &GUARD_ALLOW6 };
        trie.get(&key).is_some()
    } else {
        let addr = ip.src4();
        let key = Net4Key::new(PORT_BITS + 32, GuardNet4 { port, addr });
        let trie = if deny { &GUARD_DENY4 } else { &GUARD_ALLOW4 };
        trie.get(&key).is_some()
    }
}

/// What the guard does on `port` (flags 0 and no slot when the array has nothing).
#[inline(always)]
pub fn port(port: u16) -> GuardPort {
    match GUARD_PORTS.get(port as u32) {
        Some(p) => *p,
        None => GuardPort { flags: 0, slot: 0 },
    }
}

/// The guard's verdict for an IP packet with ports to `dst_port`, whose
/// [`GuardPort::flags`] are `flags`: `Some(reason)` to drop it.
#[inline(always)]
pub fn check(ip: &Ip, dst_port: u16, tcp_flags: u8, flags: u16) -> Option<GuardReason> {
    if flags == 0 || (ip.proto != proto::TCP && ip.proto != proto::UDP) {
        return None;
    }
    if flags & GUARD_DENY != 0 && listed(ip, dst_port, true) {
        return Some(GuardReason::Denied);
    }
    if flags & GUARD_ALLOW != 0 && !listed(ip, dst_port, false) {
        return Some(GuardReason::NotAllowed);
    }
    if flags & GUARD_SYN != 0
        && ip.proto == proto::TCP
        && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        && !take_syn_token(ip.src_bytes())
    {
        return Some(GuardReason::SynRate);
    }
    None
}

/// Charges one SYN to `src`'s token bucket: true if a token was there. The bucket
/// starts full (`cap`), refills `rate` units per nanosecond up to `cap`, and a SYN
/// costs [`SYN_TOKEN`] units. Two CPUs updating one source's bucket at once may both
/// take the same token (no lock): the limit is approximate by at most one SYN per CPU.
#[inline(always)]
fn take_syn_token(src: [u8; 16]) -> bool {
    let Some(cfg) = GUARD_CONFIG.get(0) else {
        return true;
    };
    if cfg.rate == 0 || cfg.cap < SYN_TOKEN {
        return true;
    }
    // SAFETY: no preconditions. The coarse clock (CLOCK_MONOTONIC_COARSE, 5.11+: every
    // kernel the agent supports) is a plain read of the timekeeper, about a tenth of
    // bpf_ktime_get_ns's clocksource read; its tick resolution (1-10 ms) only makes
    // the refill come in steps, the rate over a second is the same.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let key = SynSource { addr: src };
    let Some(b) = SYN_BUCKETS.get_ptr_mut(&key) else {
        // first SYN of this source: a full bucket, less this SYN
        let fresh = SynBucket { tokens: cfg.cap - SYN_TOKEN, last_ns: now };
        let _ = SYN_BUCKETS.insert(&key, &fresh, 0);
        return true;
    };
    // SAFETY: a map value pointer from a successful lookup; see the race note above.
    let b = unsafe { &mut *b };
    let elapsed = now.saturating_sub(b.last_ns);
    let tokens = if elapsed >= cfg.fill_ns {
        cfg.cap
    } else {
        // elapsed < fill_ns, so elapsed * rate <= cap + rate: no overflow
        let t = b.tokens + elapsed * cfg.rate;
        if t > cfg.cap { cfg.cap } else { t }
    };
    b.last_ns = now;
    if tokens >= SYN_TOKEN {
        b.tokens = tokens - SYN_TOKEN;
        true
    } else {
        b.tokens = tokens;
        false
    }
}
