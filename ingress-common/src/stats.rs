//! Keys and values of the XDP program's counters ([`crate::maps::XDP_STATS_MAP`]).

use core::mem::size_of;

/// Port value used for packets that carry no TCP/UDP port (ARP, ICMP, fragments, ...).
pub const NO_PORT: u16 = 0;
/// Port value used when the stats map is full; lets the agent show that counts were lost.
pub const OVERFLOW_PORT: u16 = 0xffff;

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

/// Key of [`crate::maps::XDP_STATS_MAP`]: destination port in host byte order, IP
/// protocol ([`crate::proto`]), verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatsKey {
    pub dst_port: u16,
    pub proto: u8,
    /// A [`Verdict`] as `u8`.
    pub verdict: u8,
}
const _: () = assert!(size_of::<StatsKey>() == 4);

/// Value of [`crate::maps::XDP_STATS_MAP`] (one per CPU): packets and bytes (frame
/// length as seen by XDP).
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
