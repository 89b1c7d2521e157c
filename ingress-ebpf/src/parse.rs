//! Bounds-checked packet parsing shared by the programs: Ethernet (one VLAN tag),
//! IPv4 (options skipped, fragments recognised) and IPv6 (no extension headers),
//! the TCP/UDP ports, and the TCP flag bits.

use core::mem::size_of;

use ingress_common::proto;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// The L4 facts a program needs about a packet.
#[derive(Clone, Copy)]
pub struct L4 {
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
}

/// TCP flag bits (the header's flags byte, and `TCP_SKB_CB(skb)->tcp_flags`).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// Returns a pointer to a `T` at `offset` in `[start, end)`, or `Err` if it does not fit.
/// This single check is what satisfies the verifier's packet-bounds rule for every read.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, offset: usize) -> Result<*const T, ()> {
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn be16(start: usize, end: usize, offset: usize) -> Result<u16, ()> {
    let p: *const [u8; 2] = ptr_at(start, end, offset)?;
    // SAFETY: ptr_at checked that 2 bytes at `offset` are inside the packet.
    Ok(u16::from_be_bytes(unsafe { *p }))
}

#[inline(always)]
fn byte(start: usize, end: usize, offset: usize) -> Result<u8, ()> {
    let p: *const u8 = ptr_at(start, end, offset)?;
    // SAFETY: ptr_at checked that the byte is inside the packet.
    Ok(unsafe { *p })
}

/// Parses the packet in `[start, end)`. `Ok(None)` for packets that are not IP;
/// `proto` set and ports 0 for IP packets that are not TCP/UDP or are non-first fragments.
#[inline(always)]
pub fn parse_l4(start: usize, end: usize) -> Result<Option<L4>, ()> {
    let mut ethertype = be16(start, end, 12)?;
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16(start, end, l3 + 2)?;
        l3 += 4;
    }
    let (ip_proto, l4_off) = match ethertype {
        ETH_P_IP => {
            let vihl = byte(start, end, l3)?;
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(());
            }
            let ip_proto = byte(start, end, l3 + 9)?;
            // Fragment offset != 0: no L4 header in this packet.
            if be16(start, end, l3 + 6)? & 0x1fff != 0 {
                return Ok(Some(L4 { proto: ip_proto, src_port: 0, dst_port: 0, tcp_flags: 0 }));
            }
            (ip_proto, l3 + ihl)
        }
        ETH_P_IPV6 => (byte(start, end, l3 + 6)?, l3 + 40),
        _ => return Ok(None),
    };
    let mut l4 = L4 { proto: ip_proto, src_port: 0, dst_port: 0, tcp_flags: 0 };
    if ip_proto == proto::TCP || ip_proto == proto::UDP {
        l4.src_port = be16(start, end, l4_off)?;
        l4.dst_port = be16(start, end, l4_off + 2)?;
        if ip_proto == proto::TCP {
            l4.tcp_flags = byte(start, end, l4_off + 13)?;
        }
    }
    Ok(Some(l4))
}
