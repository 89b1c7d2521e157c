//! Keys and values of the map the cgroup hooks for local clients keep
//! ([`crate::maps::L4_LOCAL_MAP`]): what a socket of a process on the VM dialled before
//! its connect was rewritten to an endpoint, so that `getpeername` can give it back.

use core::mem::size_of;

/// Value of [`crate::maps::L4_LOCAL_MAP`] (key: the socket cookie, `u64`): the frontend
/// the socket dialled, network byte order. For an IPv4 socket `addr[3]` holds the
/// address and the rest is 0; for an IPv6 socket `addr` is the IPv6 address it dialled
/// (`::ffff:a.b.c.d`, `::1` or `::`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct L4LocalDial {
    pub addr: [u32; 4],
    pub port: u16,
    /// 4 or 6.
    pub family: u16,
}
const _: () = assert!(size_of::<L4LocalDial>() == 20);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Copy, no implicit padding (size check above).
    unsafe impl aya::Pod for super::L4LocalDial {}
}
