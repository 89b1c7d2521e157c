//! Keys and values of the XDP guard's maps (the `GUARD_*` and `SYN_BUCKETS` names in
//! [`crate::maps`]): which ports are guarded and how, the per-port CIDR lists (LPM
//! tries), the SYN token bucket's configuration and per-source state, and the
//! counters per (port, reason).
//!
//! Byte orders: the index of the port array and [`GuardCounterKey::port`] are in host
//! byte order; the LPM keys hold the port and the address in network byte order, so that
//! the trie's prefix is "port, then the address's leading bits".

use core::mem::size_of;

/// [`GuardPort::flags`]: the port has deny rules (look the source up in the deny trie).
pub const GUARD_DENY: u16 = 1;
/// [`GuardPort::flags`]: the port has an allow list: a source not in the allow trie is dropped.
pub const GUARD_ALLOW: u16 = 2;
/// [`GuardPort::flags`]: a TCP SYN (without ACK) to this port is charged to its source's token bucket.
pub const GUARD_SYN: u16 = 4;

/// Entry of [`crate::maps::GUARD_PORTS_MAP`] (an array indexed by the destination port):
/// the `GUARD_*` flags of the port, and its counter slot: the index of its cells in
/// [`crate::maps::XDP_SLOT_STATS_MAP`] and [`crate::maps::GUARD_SLOT_DROPS_MAP`] (per-CPU
/// arrays, whose lookups the verifier inlines), so that a guarded port's packets never
/// touch a hash map. Slot 0: none (the port is counted in the per-CPU hashes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuardPort {
    pub flags: u16,
    pub slot: u16,
}
const _: () = assert!(size_of::<GuardPort>() == 4);

/// Counter slots of the guarded ports: entries of the slot arrays; slot 0 is never
/// given (it means "no slot"), so at most `GUARD_SLOTS - 1` ports have one.
pub const GUARD_SLOTS: u32 = 256;

/// Value of [`crate::maps::XDP_SLOT_STATS_MAP`] (per CPU, one per slot): what
/// [`crate::maps::XDP_STATS_MAP`] holds for a port without a slot, for the slot's port:
/// packets and bytes per (protocol, verdict). Only TCP and UDP packets have ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotStats {
    pub tcp_pass: crate::stats::StatsValue,
    pub tcp_drop: crate::stats::StatsValue,
    pub udp_pass: crate::stats::StatsValue,
    pub udp_drop: crate::stats::StatsValue,
}
const _: () = assert!(size_of::<SlotStats>() == 64);

/// Value of [`crate::maps::GUARD_SLOT_DROPS_MAP`] (per CPU, one per slot): the slot's
/// port's drops per reason, which [`crate::maps::GUARD_COUNTERS_MAP`] holds for a port
/// without a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotDrops {
    pub denied: crate::stats::StatsValue,
    pub not_allowed: crate::stats::StatsValue,
    pub syn_rate: crate::stats::StatsValue,
}
const _: () = assert!(size_of::<SlotDrops>() == 48);

/// Data of an IPv4 LPM key (after the trie's `prefix_len`): port then address, both
/// big-endian. A rule `PORT=A.B.C.D/N` is stored with prefix length `16 + N`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GuardNet4 {
    pub port: [u8; 2],
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<GuardNet4>() == 6);

/// Data of an IPv6 LPM key: port then address, both big-endian; prefix length `16 + N`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GuardNet6 {
    pub port: [u8; 2],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<GuardNet6>() == 18);

/// Bits of the port in an LPM key's prefix length.
pub const PORT_BITS: u32 = 16;

/// Value of the LPM tries: always [`GUARD_RULE`] (the key's presence is the rule).
pub const GUARD_RULE: u32 = 1;

/// Units of one token in the token bucket: one SYN costs `SYN_TOKEN` units and a
/// rate of R SYNs/s adds R units per nanosecond, so the program needs only integer
/// adds, multiplies and compares.
pub const SYN_TOKEN: u64 = 1_000_000_000;

/// The only entry of [`crate::maps::GUARD_CONFIG_MAP`]: the SYN token bucket, all
/// precomputed by the agent. `rate == 0`: no SYN is charged.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuardConfig {
    /// Tokens per second (`--syn-rate`), i.e. units per nanosecond.
    pub rate: u64,
    /// Bucket size in units: `--syn-burst * SYN_TOKEN`.
    pub cap: u64,
    /// Nanoseconds an empty bucket takes to fill (`ceil(cap / rate)`): an idle time at
    /// least this long refills the bucket without a multiplication that could overflow.
    pub fill_ns: u64,
}
const _: () = assert!(size_of::<GuardConfig>() == 24);

/// Key of [`crate::maps::SYN_BUCKETS_MAP`]: a source address, IPv4 as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`), network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SynSource {
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<SynSource>() == 16);

/// Value of [`crate::maps::SYN_BUCKETS_MAP`]: the units left at `last_ns`
/// (`bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC at tick resolution). A source's first
/// SYN finds a full bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynBucket {
    pub tokens: u64,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<SynBucket>() == 16);

/// Value of [`crate::maps::SYN_SLOTS_MAP`]: the token bucket of source `addr` (as
/// [`SynSource::addr`]: IPv6, or IPv4-mapped IPv6, in packet order, held as two words in
/// memory order) when `used` is 1; a slot whose bucket has refilled to the cap is free
/// for another source (a full bucket is what a new source starts with, so nothing is
/// lost).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynSlot {
    pub addr: [u64; 2],
    pub used: u32,
    pub _pad: u32,
    pub bucket: SynBucket,
}
const _: () = assert!(size_of::<SynSlot>() == 40);

/// Value of [`crate::maps::SYN_CLOCK_MAP`] (per CPU): `bpf_ktime_get_coarse_ns` as
/// read while `jiffies` was current. The coarse clock moves only at a tick, when
/// jiffies does, so while jiffies is the same the clock reads the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynClock {
    pub jiffies: u64,
    pub ns: u64,
}
const _: () = assert!(size_of::<SynClock>() == 16);

/// The [`crate::maps::SYN_SLOTS_MAP`] slot of the source whose address (16 bytes in
/// packet order, IPv4 mapped) is held in memory order as the words `addr`: the top
/// bits of a multiplicative hash of the words folded to 32 bits.
#[inline(always)]
pub const fn syn_slot(addr: [u64; 2]) -> u32 {
    let x = addr[0] ^ addr[1];
    let h = (x ^ (x >> 32)) as u32;
    h.wrapping_mul(0x9e37_79b1) >> (32 - crate::maps::SYN_SLOTS_BITS)
}

/// The words [`syn_slot`] and [`SynSlot::addr`] take for an address's 16 bytes.
pub const fn syn_words(addr: [u8; 16]) -> [u64; 2] {
    let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
    let mut i = 0;
    while i < 8 {
        a[i] = addr[i];
        b[i] = addr[i + 8];
        i += 1;
    }
    [u64::from_ne_bytes(a), u64::from_ne_bytes(b)]
}

/// Why the guard dropped a packet, or why it passed one it could not check.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GuardReason {
    /// Dropped: the source is in the port's deny list.
    Denied = 1,
    /// Dropped: the port has an allow list and the source is not in it.
    NotAllowed = 2,
    /// Dropped: a SYN over the source's token bucket.
    SynRate = 3,
    /// Passed unchecked: truncated or invalid Ethernet/VLAN/IP/TCP/UDP header.
    Malformed = 4,
    /// Passed unchecked: an IPv6 extension-header chain longer than the parser's bound.
    ExtHeaders = 5,
    /// Passed unchecked: a non-first IP fragment (no ports; its first fragment was checked).
    Fragment = 6,
}

impl GuardReason {
    pub const ALL: [GuardReason; 6] =
        [Self::Denied, Self::NotAllowed, Self::SynRate, Self::Malformed, Self::ExtHeaders, Self::Fragment];

    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Denied,
            2 => Self::NotAllowed,
            3 => Self::SynRate,
            4 => Self::Malformed,
            5 => Self::ExtHeaders,
            6 => Self::Fragment,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::NotAllowed => "not-allowed",
            Self::SynRate => "syn-rate",
            Self::Malformed => "malformed",
            Self::ExtHeaders => "ext-headers",
            Self::Fragment => "fragment",
        }
    }

    /// Whether packets counted under this reason were dropped (else passed).
    pub const fn is_drop(self) -> bool {
        matches!(self, Self::Denied | Self::NotAllowed | Self::SynRate)
    }
}

/// Key of [`crate::maps::GUARD_COUNTERS_MAP`] (value: [`crate::stats::StatsValue`],
/// per CPU): destination port in host byte order (0 when the packet has none) and a
/// [`GuardReason`] as `u8`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GuardCounterKey {
    pub port: u16,
    pub reason: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<GuardCounterKey>() == 4);

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type is repr(C), Copy, and has no implicit padding (size checks above).
    unsafe impl aya::Pod for super::GuardPort {}
    unsafe impl aya::Pod for super::GuardNet4 {}
    unsafe impl aya::Pod for super::GuardNet6 {}
    unsafe impl aya::Pod for super::GuardConfig {}
    unsafe impl aya::Pod for super::SynSource {}
    unsafe impl aya::Pod for super::SynBucket {}
    unsafe impl aya::Pod for super::GuardCounterKey {}
    unsafe impl aya::Pod for super::SlotStats {}
    unsafe impl aya::Pod for super::SlotDrops {}
    unsafe impl aya::Pod for super::SynSlot {}
    unsafe impl aya::Pod for super::SynClock {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::SYN_SLOTS_ENTRIES;

    fn mapped(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&a);
        b
    }

    #[test]
    fn syn_words_hold_the_bytes_in_memory_order() {
        let b: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let w = syn_words(b);
        let mut back = [0u8; 16];
        back[..8].copy_from_slice(&w[0].to_ne_bytes());
        back[8..].copy_from_slice(&w[1].to_ne_bytes());
        assert_eq!(back, b);
    }

    #[test]
    fn the_sources_of_a_subnet_spread_over_the_slots() {
        // every address of an IPv4 /24 and of an IPv6 /120 in its own slot, all in range
        for prefix in [mapped([198, 18, 0, 0]), [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] {
            let mut seen = std::collections::BTreeSet::new();
            for last in 0..=255u8 {
                let mut a = prefix;
                a[15] = last;
                let s = syn_slot(syn_words(a));
                assert!(s < SYN_SLOTS_ENTRIES);
                seen.insert(s);
            }
            assert_eq!(seen.len(), 256, "{prefix:?}/120: slots collide");
        }
    }
}
