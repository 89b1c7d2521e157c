//! Keys and values of the splice maps (the `SPLICE_*` names in [`crate::maps`]): a
//! joined socket, its peer entry and flags, and the verdict program's counters.

use core::mem::size_of;

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
mod user {
    // SAFETY: repr(C), Copy, no padding (size checks above).
    unsafe impl aya::Pod for super::SpliceKey {}
    unsafe impl aya::Pod for super::SpliceStats {}
    unsafe impl aya::Pod for super::SplicePeer {}
}
