//! IP protocol numbers as the programs parse them and store them in keys
//! ([`StatsKey::proto`]); 0 means "not IP".
//!
//! [`StatsKey::proto`]: crate::stats::StatsKey::proto

pub const NONE: u8 = 0;
pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;
