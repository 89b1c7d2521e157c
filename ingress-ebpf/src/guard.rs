//! The guard's decisions, shared helpers of the XDP program: the per-port deny and
//! allow lists (LPM tries keyed by port + source prefix) and the per-source SYN token
//! bucket. Deny wins over allow: a source in a port's deny list is dropped even when
//! the port's allow list also holds it.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use ingress_common::guard::{
    GUARD_ALLOW, GUARD_DENY, GUARD_SYN, GuardConfig, GuardNet4, GuardNet6, GuardPort, GuardReason, PORT_BITS,
    SYN_TOKEN, SynBucket, SynSource, syn_slot,
};
use ingress_common::proto;

use crate::maps::{
    GUARD_ALLOW4, GUARD_ALLOW6, GUARD_CONFIG, GUARD_DENY4, GUARD_DENY6, GUARD_PORTS, Net4Key, Net6Key, SYN_BUCKETS,
    SYN_CLOCK, SYN_SLOTS,
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
        && !take_syn_token(ip)
    {
        return Some(GuardReason::SynRate);
    }
    None
}

/// Charges one SYN to its source's token bucket: true if a token was there. The bucket
/// starts full (`cap`), refills `rate` units per nanosecond up to `cap`, and a SYN
/// costs [`SYN_TOKEN`] units. A source's bucket is in its [`SYN_SLOTS`] slot when it
/// holds the slot (an inlined array lookup), else in [`SYN_BUCKETS`] (the LRU hash, a
/// chain of calls). Two CPUs updating
/// one source's bucket at once may both take the same token (no lock): the limit is
/// approximate by at most one SYN per CPU.
#[inline(always)]
fn take_syn_token(ip: &Ip) -> bool {
    let Some(cfg) = GUARD_CONFIG.get(0) else {
        return true;
    };
    if cfg.rate == 0 || cfg.cap < SYN_TOKEN {
        return true;
    }
    let now = coarse_now();
    let key = SynSource { addr: ip.src_bytes() };
    if let Some(s) = SYN_SLOTS.get_ptr_mut(syn_slot(ip.src)) {
        // SAFETY: a map value pointer from a successful lookup; see the race note above.
        let s = unsafe { &mut *s };
        if s.used != 0 && s.addr == ip.src {
            return charge(&mut s.bucket, now, cfg);
        }
        // A free slot, or one whose source's bucket is full again (exactly what a
        // source without a bucket has): this source takes it, with the bucket it has
        // in the LRU hash if it has one (a copy: an entry left there is older, so it
        // reads as full when the source comes back to the hash).
        if s.used == 0 || now.saturating_sub(s.bucket.last_ns) >= cfg.fill_ns {
            // SAFETY: read-only copy of the value.
            let bucket = match unsafe { SYN_BUCKETS.get(&key) } {
                Some(b) => *b,
                None => SynBucket { tokens: cfg.cap, last_ns: now },
            };
            s.addr = ip.src;
            s.used = 1;
            s.bucket = bucket;
            return charge(&mut s.bucket, now, cfg);
        }
    }
    let Some(b) = SYN_BUCKETS.get_ptr_mut(&key) else {
        // first SYN of this source: a full bucket, less this SYN
        let fresh = SynBucket { tokens: cfg.cap - SYN_TOKEN, last_ns: now };
        let _ = SYN_BUCKETS.insert(&key, &fresh, 0);
        return true;
    };
    // SAFETY: a map value pointer from a successful lookup; see the race note above.
    charge(unsafe { &mut *b }, now, cfg)
}

/// Refills bucket `b` for the time since its last SYN and takes one token from it:
/// true if there was one.
#[inline(always)]
fn charge(b: &mut SynBucket, now: u64, cfg: &GuardConfig) -> bool {
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

/// CLOCK_MONOTONIC_COARSE (`bpf_ktime_get_coarse_ns`, 5.11+: every kernel the agent
/// supports) without a helper call while the jiffy lasts: `bpf_jiffies64` (5.5+) is
/// inlined by the verifier into a load of `jiffies`, and this CPU's [`SYN_CLOCK`]
/// holds the clock read at that jiffy. The coarse clock moves only at a tick, with
/// jiffies; read in the instant between the two updates it is one tick behind for that
/// jiffy, which only delays a refill by a tick (it never goes backwards: the next
/// jiffy reads the clock again).
#[inline(always)]
fn coarse_now() -> u64 {
    // SAFETY: no preconditions (both helpers take no arguments).
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(c) = SYN_CLOCK.get_ptr_mut(0) else {
        // SAFETY: as above.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    let c = unsafe { &mut *c };
    if c.jiffies != jiffies || c.ns == 0 {
        // SAFETY: as above.
        c.ns = unsafe { bpf_ktime_get_coarse_ns() };
        c.jiffies = jiffies;
    }
    c.ns
}
