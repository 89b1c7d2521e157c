//! The ABI between the kernel programs and the agent: map names and sizes, and the
//! `#[repr(C)]` keys and values stored in those maps. Every type has explicit padding
//! and a compile-time size check, so both sides agree byte for byte.
#![no_std]

use core::mem::size_of;

/// Per-CPU hash map of packet/byte counters, keyed by [`StatsKey`]; written by the XDP
/// program on the VM NIC, read by the agent (`GET /stats`, `ingress stats`).
pub const XDP_STATS_MAP: &str = "XDP_STATS";
/// Distinct (port, protocol, verdict) keys the stats map can hold. Once full, new keys
/// are not counted (the program still passes the packet) and [`OVERFLOW_PORT`] counts them.
pub const XDP_STATS_MAX_ENTRIES: u32 = 4096;
/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "ingress_xdp";

/// Port value used for packets that carry no TCP/UDP port (ARP, ICMP, fragments, ...).
pub const NO_PORT: u16 = 0;
/// Port value used when the stats map is full; lets the agent show that counts were lost.
pub const OVERFLOW_PORT: u16 = 0xffff;

/// IP protocol numbers as stored in [`StatsKey::proto`]; 0 means "not IP".
pub mod proto {
    pub const NONE: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// What the XDP program decided for a packet. Values are the kernel's `xdp_action`
/// numbers so the program can return them directly.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::Drop => "drop",
            Self::Pass => "pass",
            Self::Tx => "tx",
            Self::Redirect => "redirect",
        }
    }
}

/// Key of [`XDP_STATS_MAP`]: destination port in host byte order, IP protocol, verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatsKey {
    pub dst_port: u16,
    pub proto: u8,
    /// A [`Verdict`] as `u8`.
    pub verdict: u8,
}
const _: () = assert!(size_of::<StatsKey>() == 4);

/// Value of [`XDP_STATS_MAP`] (one per CPU): packets and bytes (frame length as seen by XDP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsValue {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<StatsValue>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are repr(C), Copy, and have no padding (size checks above).
    unsafe impl aya::Pod for super::StatsKey {}
    unsafe impl aya::Pod for super::StatsValue {}
}

/// SOCKHASH of the sockets joined for in-kernel splicing, keyed by [`SpliceKey`].
pub const SPLICE_SOCKS_MAP: &str = "SPLICE_SOCKS";
/// Hash map: a spliced socket's [`SpliceKey`] -> [`SplicePeer`] (its peer's key, and
/// the bytes moved from it to the peer).
pub const SPLICE_PEERS_MAP: &str = "SPLICE_PEERS";
/// Per-CPU array with one [`SpliceStats`].
pub const SPLICE_STATS_MAP: &str = "SPLICE_STATS";
/// Spliced sockets at most (two per joined connection).
pub const SPLICE_MAX_ENTRIES: u32 = 65536;
/// Name of the sk_skb stream-verdict program.
pub const SPLICE_PROGRAM: &str = "splice_verdict";

/// A TCP socket as an sk_skb program sees it (`__sk_buff` fields, IPv4): addresses
/// in network byte order; `remote_port` in network byte order in the low 16 bits
/// (the program moves it there), `local_port` in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SpliceKey {
    pub local_ip4: u32,
    pub remote_ip4: u32,
    pub local_port: u32,
    pub remote_port: u32,
}
const _: () = assert!(size_of::<SpliceKey>() == 16);

/// A joined socket's entry: where its bytes go, how many went there, and the TCP
/// sequence number its next byte has. Written only by the verdict program running for
/// this socket (under its lock); the agent creates it and reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SplicePeer {
    pub key: SpliceKey,
    pub redirected_bytes: u64,
    /// The sequence number after the last byte handed on (valid with [`SPLICE_SEQ_KNOWN`]).
    /// A segment that starts before it overlaps bytes already handed on: the kernel's
    /// `tcp_read_skb` gives such segments whole, so the program cuts the overlap off.
    pub next_seq: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<SplicePeer>() == 32);

/// [`SplicePeer::flags`]: `next_seq` holds a sequence number.
pub const SPLICE_SEQ_KNOWN: u32 = 1;
/// [`SplicePeer::flags`]: from now on this socket's bytes go to the agent, never to the
/// peer (set when a redirect failed; the agent then copies, in order).
pub const SPLICE_PASSING: u32 = 2;

/// Hash map: joined sockets whose bytes the agent takes over (it saw bytes reach user
/// space), written only by the agent: [`SpliceKey`] -> 1.
pub const SPLICE_USER_PASS_MAP: &str = "SPLICE_USER_PASS";

/// Bytes and segments the verdict program redirected, the ones it passed because the
/// socket had no peer, the overlapping bytes it cut, the segments it handed to the
/// agent of a joined socket, and segments whose control block did not hold a
/// consistent sequence range (a kernel whose layout differs) or whose overlap could not
/// be cut: those are passed, and their socket handed to the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceStats {
    pub redirected_bytes: u64,
    pub redirected_skbs: u64,
    pub unmatched_skbs: u64,
    pub trimmed_bytes: u64,
    pub passed_skbs: u64,
    pub layout_mismatches: u64,
}
const _: () = assert!(size_of::<SpliceStats>() == 48);

#[cfg(feature = "user")]
mod user_splice {
    // SAFETY: repr(C), Copy, no padding (size checks above).
    unsafe impl aya::Pod for super::SpliceKey {}
    unsafe impl aya::Pod for super::SpliceStats {}
    unsafe impl aya::Pod for super::SplicePeer {}
}
