//! The reusable L4 data path of the tc programs: IPv4/TCP header parsing over
//! `bpf_skb_load_bytes` (works on non-linear skbs), address/port rewriting with
//! checksum updates that are right for CHECKSUM_PARTIAL skbs too, and the FIB lookup +
//! neighbour redirect that forwards a rewritten packet.

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{
    BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup as FibParams,
    bpf_redir_neigh,
};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_redirect_neigh};
use aya_ebpf::programs::TcContext;
use ingress_common::proto;

use crate::parse::ETH_HLEN;

const ETH_P_IP: u16 = 0x0800;
const AF_INET: u8 = 2;

/// TCP flag bits used by the tracking.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An IPv4/TCP packet's facts and where its headers are. Addresses and ports in
/// network byte order, as loaded from the packet.
#[derive(Clone, Copy)]
pub struct Tcp4 {
    pub l3: usize,
    pub l4: usize,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub tos: u8,
    /// IP total length (host byte order).
    pub tot_len: u16,
}

// Offsets inside the headers.
const IP_TOT_LEN: usize = 2;
const IP_FRAG: usize = 6;
const IP_PROTO: usize = 9;
const IP_CSUM: usize = 10;
const IP_SADDR: usize = 12;
const IP_DADDR: usize = 16;
const TCP_SPORT: usize = 0;
const TCP_DPORT: usize = 2;
const TCP_DOFF: usize = 12;
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;

/// Parses an untagged Ethernet + IPv4 + TCP packet. `None` for everything else and for
/// anything malformed or truncated (bad version/IHL, lengths that do not fit the skb,
/// fragments, a TCP header shorter than 20 bytes): those are not ours.
#[inline(always)]
pub fn parse_tcp4(ctx: &TcContext) -> Option<Tcp4> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    if ethertype != ETH_P_IP {
        return None;
    }
    let l3 = ETH_HLEN;
    let vihl: u8 = ctx.load(l3).ok()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let tos: u8 = ctx.load(l3 + 1).ok()?;
    let tot_len = u16::from_be(ctx.load::<u16>(l3 + IP_TOT_LEN).ok()?);
    // More-fragments or an offset: a fragment (the L4 header is not in every piece).
    if u16::from_be(ctx.load::<u16>(l3 + IP_FRAG).ok()?) & 0x3fff != 0 {
        return None;
    }
    if ctx.load::<u8>(l3 + IP_PROTO).ok()? != proto::TCP {
        return None;
    }
    let l4 = l3 + ihl;
    let doff = ((ctx.load::<u8>(l4 + TCP_DOFF).ok()? >> 4) as usize) * 4;
    if doff < 20 || (tot_len as usize) < ihl + doff || l3 + tot_len as usize > ctx.len() as usize {
        return None;
    }
    Some(Tcp4 {
        l3,
        l4,
        saddr: ctx.load(l3 + IP_SADDR).ok()?,
        daddr: ctx.load(l3 + IP_DADDR).ok()?,
        sport: ctx.load(l4 + TCP_SPORT).ok()?,
        dport: ctx.load(l4 + TCP_DPORT).ok()?,
        flags: ctx.load(l4 + TCP_FLAGS).ok()?,
        tos,
        tot_len,
    })
}

/// [`parse_tcp4`] by direct packet access where the headers are in the skb's linear
/// part (every packet a veth or NIC hands up, in practice): plain loads instead of a
/// `bpf_skb_load_bytes` call per field (eleven of them, each a call and a return). A
/// packet whose headers are not all linear is parsed by [`parse_tcp4`]. The same
/// checks and the same `None` cases.
#[inline(always)]
pub fn parse_tcp4_direct(ctx: &TcContext) -> Option<Tcp4> {
    use crate::parse::ptr_at;
    let (start, end) = (ctx.data(), ctx.data_end());
    // Ethernet and the fixed IPv4 header
    let Ok(h) = ptr_at::<[u8; ETH_HLEN + 20]>(start, end, 0) else {
        return parse_tcp4(ctx);
    };
    // SAFETY: ptr_at checked that these bytes are inside the linear packet data.
    let h = unsafe { &*h };
    if u16::from_be_bytes([h[12], h[13]]) != ETH_P_IP {
        return None;
    }
    let l3 = ETH_HLEN;
    let vihl = h[l3];
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let tot_len = u16::from_be_bytes([h[l3 + IP_TOT_LEN], h[l3 + IP_TOT_LEN + 1]]);
    if u16::from_be_bytes([h[l3 + IP_FRAG], h[l3 + IP_FRAG + 1]]) & 0x3fff != 0 {
        return None;
    }
    if h[l3 + IP_PROTO] != proto::TCP {
        return None;
    }
    let word = |o: usize| u32::from_ne_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let (saddr, daddr, tos) = (word(l3 + IP_SADDR), word(l3 + IP_DADDR), h[l3 + 1]);
    let l4 = l3 + ihl;
    let Ok(t) = ptr_at::<[u8; 20]>(start, end, l4) else {
        return parse_tcp4(ctx);
    };
    // SAFETY: as above.
    let t = unsafe { &*t };
    let doff = ((t[TCP_DOFF] >> 4) as usize) * 4;
    if doff < 20 || (tot_len as usize) < ihl + doff || l3 + tot_len as usize > ctx.len() as usize {
        return None;
    }
    Some(Tcp4 {
        l3,
        l4,
        saddr,
        daddr,
        sport: u16::from_ne_bytes([t[TCP_SPORT], t[TCP_SPORT + 1]]),
        dport: u16::from_ne_bytes([t[TCP_DPORT], t[TCP_DPORT + 1]]),
        flags: t[TCP_FLAGS],
        tos,
        tot_len,
    })
}

/// Whether `addr` (network byte order) is in 127.0.0.0/8 or 0.0.0.0/8: never forwarded.
#[inline(always)]
pub fn local_or_zero(addr: u32) -> bool {
    let first = u32::from_be(addr) >> 24;
    first == 127 || first == 0
}

/// Replaces the destination (`dst == true`) or source address and port, updating the IP
/// header checksum and the TCP checksum (the address through the pseudo header).
#[inline(always)]
pub fn rewrite(ctx: &TcContext, p: &Tcp4, dst: bool, addr: u32, port: u16) -> Result<(), i64> {
    let (addr_off, port_off, old_addr, old_port) = if dst {
        (p.l3 + IP_DADDR, p.l4 + TCP_DPORT, p.daddr, p.dport)
    } else {
        (p.l3 + IP_SADDR, p.l4 + TCP_SPORT, p.saddr, p.sport)
    };
    let csum = p.l4 + TCP_CSUM;
    if old_addr != addr {
        ctx.l4_csum_replace(csum, old_addr as u64, addr as u64, (BPF_F_PSEUDO_HDR as u64) | 4)?;
        ctx.l3_csum_replace(p.l3 + IP_CSUM, old_addr as u64, addr as u64, 4)?;
        ctx.store(addr_off, &addr, 0)?;
    }
    if old_port != port {
        ctx.l4_csum_replace(csum, old_port as u64, port as u64, 2)?;
        ctx.store(port_off, &port, 0)?;
    }
    Ok(())
}

/// How a rewritten packet left the program.
pub enum Forward {
    /// `bpf_redirect_neigh` to the interface the FIB chose: `TC_ACT_REDIRECT`.
    Redirected(i32),
    /// No usable route (forwarding disabled, unreachable, needs fragmenting...): the
    /// rewritten packet goes to the kernel stack, which routes it or answers ICMP.
    Stack,
}

impl Forward {
    #[inline(always)]
    pub fn verdict(&self) -> i32 {
        match self {
            Forward::Redirected(v) => *v,
            Forward::Stack => TC_ACT_OK as i32,
        }
    }
}

/// Looks up the route of the (rewritten) packet from the interface it arrived on and
/// redirects it to the next hop's interface with `bpf_redirect_neigh`, which fills in
/// the Ethernet header from the neighbour table (resolving it when needed).
#[inline(always)]
pub fn forward(ctx: &TcContext, p: &Tcp4, saddr: u32, daddr: u32, sport: u16, dport: u16) -> Forward {
    // SAFETY: the context pointer is the program's __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = proto::TCP;
    fib.sport = sport;
    fib.dport = dport;
    // tot_len 0: the kernel checks the skb against the out device's MTU itself, which
    // is right for GSO skbs too (GRO on veth makes them; their tot_len exceeds the MTU).
    fib.__bindgen_anon_1.tot_len = 0;
    fib.ifindex = ifindex;
    fib.__bindgen_anon_2.tos = p.tos;
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: valid context and parameter struct of the size given.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut fib, core::mem::size_of::<FibParams>() as i32, 0) };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return Forward::Stack;
    }
    // The FIB put the next hop (the gateway, or the destination itself) in ipv4_dst.
    // SAFETY: written by the lookup for AF_INET.
    let nh = unsafe { fib.__bindgen_anon_4.ipv4_dst };
    // SAFETY: as above.
    let mut neigh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    neigh.nh_family = AF_INET as u32;
    neigh.__bindgen_anon_1.ipv4_nh = nh;
    // SAFETY: valid parameter struct of the size given.
    let v = unsafe { bpf_redirect_neigh(fib.ifindex, &mut neigh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) };
    Forward::Redirected(v as i32)
}
