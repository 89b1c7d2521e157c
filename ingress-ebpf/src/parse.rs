//! Bounds-checked packet parsing shared by the programs: [`parse_l4`] (Ethernet with
//! one VLAN tag, IPv4 with options, IPv6 without extension headers: the ports and TCP
//! flags), and the guard's stricter [`parse_ip`] (two VLAN tags, header fields
//! checked, IPv6 extension headers skipped within a bound, the source address).

use core::mem::size_of;

use ingress_common::proto;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// The L4 facts a program needs about a packet.
#[derive(Clone, Copy)]
#[allow(dead_code)] // see parse_l4
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
#[allow(dead_code)] // the XDP program moved to parse_ip; kept for the other programs
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

// ---- The guard's parser: every header checked, IPv6 extension headers skipped ----

const ETH_P_8021Q_INNER_MAX: usize = 2;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
/// IPv6 extension headers skipped at most (hop-by-hop, routing, destination options,
/// fragment, AH); a longer chain is passed unchecked ([`Unparsed::ExtHeaders`]).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// What the guard needs about an IP packet.
#[derive(Clone, Copy)]
pub struct Ip {
    /// Source address: IPv6, or IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), its 16
    /// bytes in packet order held as two words (so that building it is two stores,
    /// not a call to a byte-wise memset); [`Ip::src_bytes`] gives the bytes.
    pub src: [u64; 2],
    pub v6: bool,
    /// Protocol of the L4 header (after IPv6 extension headers).
    pub proto: u8,
    /// TCP/UDP ports and the TCP flags; `None` for other protocols and non-first fragments.
    pub ports: Option<Ports>,
    /// A non-first fragment (no L4 header).
    pub fragment: bool,
}

impl Ip {
    /// The source address's 16 bytes in network order.
    #[inline(always)]
    pub fn src_bytes(&self) -> [u8; 16] {
        // SAFETY: [u64; 2] and [u8; 16] have the same size, and every bit pattern is a
        // valid [u8; 16]; the words hold the bytes in memory (packet) order.
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(self.src) }
    }

    /// The IPv4 source address's 4 bytes (the last 4 of the mapped address).
    #[inline(always)]
    pub fn src4(&self) -> [u8; 4] {
        let w = self.src[1].to_ne_bytes();
        [w[4], w[5], w[6], w[7]]
    }
}

#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

/// Why a packet was not parsed to its L4 header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unparsed {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): nothing to check.
    NotIp,
    /// A header is cut short or has impossible fields.
    Malformed,
    /// More IPv6 extension headers than [`MAX_IPV6_EXT_HEADERS`].
    ExtHeaders,
}

#[inline(always)]
fn be16_or(start: usize, end: usize, offset: usize, e: Unparsed) -> Result<u16, Unparsed> {
    be16(start, end, offset).map_err(|_| e)
}

/// Parses Ethernet, up to two VLAN tags (802.1Q, 802.1ad QinQ), IPv4 (IHL >= 5, total
/// length within the frame, fragments) or IPv6 (payload length within the frame,
/// extension headers within [`MAX_IPV6_EXT_HEADERS`]), then TCP (data offset >= 5,
/// whole header present) or UDP (8 bytes present). Every read is bounds-checked.
#[inline(always)]
pub fn parse_ip(start: usize, end: usize) -> Result<Ip, Unparsed> {
    use Unparsed::Malformed;
    let mut ethertype = be16_or(start, end, 12, Malformed)?;
    let mut l3 = ETH_HLEN;
    let mut tags = 0;
    while tags < ETH_P_8021Q_INNER_MAX && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        ethertype = be16_or(start, end, l3 + 2, Malformed)?;
        l3 += 4;
        tags += 1;
    }
    let mut ip = Ip { src: [0; 2], v6: false, proto: 0, ports: None, fragment: false };
    let l4_off = match ethertype {
        ETH_P_IP => {
            let hdr: *const [u8; 20] = ptr_at(start, end, l3).map_err(|_| Malformed)?;
            // SAFETY: ptr_at checked that the 20 bytes are inside the packet.
            let h = unsafe { *hdr };
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            if h[0] >> 4 != 4 || ihl < 20 || total < ihl {
                return Err(Malformed);
            }
            // the whole datagram is in the frame (Ethernet padding may follow it)
            if start + l3 + total > end {
                return Err(Malformed);
            }
            ip.src = [0, u64::from_ne_bytes([0, 0, 0xff, 0xff, h[12], h[13], h[14], h[15]])];
            ip.proto = h[9];
            if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                ip.fragment = true;
                return Ok(ip);
            }
            l3 + ihl
        }
        ETH_P_IPV6 => {
            let hdr: *const [u8; 40] = ptr_at(start, end, l3).map_err(|_| Malformed)?;
            // SAFETY: ptr_at checked that the 40 bytes are inside the packet.
            let h = unsafe { &*hdr };
            let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
            if h[0] >> 4 != 6 || start + l3 + 40 + payload > end {
                return Err(Malformed);
            }
            ip.v6 = true;
            ip.src = [
                u64::from_ne_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
                u64::from_ne_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
            ];
            let mut next = h[6];
            let mut off = l3 + 40;
            let mut n = 0;
            loop {
                match next {
                    IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH => {}
                    _ => break,
                }
                if n == MAX_IPV6_EXT_HEADERS {
                    return Err(Unparsed::ExtHeaders);
                }
                n += 1;
                let eh: *const [u8; 8] = ptr_at(start, end, off).map_err(|_| Malformed)?;
                // SAFETY: ptr_at checked that the header's first 8 bytes are in the packet.
                let eh = unsafe { *eh };
                let len = match next {
                    IPPROTO_FRAGMENT => {
                        if u16::from_be_bytes([eh[2], eh[3]]) & 0xfff8 != 0 {
                            ip.proto = eh[0];
                            ip.fragment = true;
                            return Ok(ip);
                        }
                        8
                    }
                    IPPROTO_AH => (eh[1] as usize + 2) * 4,
                    _ => (eh[1] as usize + 1) * 8,
                };
                next = eh[0];
                off += len;
            }
            ip.proto = next;
            off
        }
        _ => return Err(Unparsed::NotIp),
    };
    if ip.proto == proto::TCP {
        let th: *const [u8; 20] = ptr_at(start, end, l4_off).map_err(|_| Malformed)?;
        // SAFETY: ptr_at checked that the 20 bytes are inside the packet.
        let t = unsafe { *th };
        let doff = ((t[12] >> 4) as usize) * 4;
        if doff < 20 || start + l4_off + doff > end {
            return Err(Malformed);
        }
        ip.ports = Some(Ports {
            src: u16::from_be_bytes([t[0], t[1]]),
            dst: u16::from_be_bytes([t[2], t[3]]),
            tcp_flags: t[13],
        });
    } else if ip.proto == proto::UDP {
        let uh: *const [u8; 8] = ptr_at(start, end, l4_off).map_err(|_| Malformed)?;
        // SAFETY: ptr_at checked that the 8 bytes are inside the packet.
        let u = unsafe { *uh };
        ip.ports =
            Some(Ports { src: u16::from_be_bytes([u[0], u[1]]), dst: u16::from_be_bytes([u[2], u[3]]), tcp_flags: 0 });
    }
    Ok(ip)
}
