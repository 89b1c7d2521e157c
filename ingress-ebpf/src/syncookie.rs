//! XDP: answers a plain IPv4 SYN to a frontend in `SYNCOOKIE_TARGETS` with a SYN-ACK
//! whose ISN is the edge's SYN cookie (ingress_common::syncookie: the cookie, the
//! option parsing and the SYN-ACK are pure code shared with the host's tests), built
//! in place and sent back with XDP_TX; no state is kept. Everything else passes
//! untouched: not IPv4/TCP, VLAN tags, IP options, fragments, flags other than SYN
//! (ECE/CWR allowed), data on the SYN (TFO), unusual or malformed options (MPTCP, TFO
//! cookies, MD5, duplicates, bad lengths), targets not in the map, an unset config.
//! IPv6 SYNs pass (not answered yet). The agent does not attach it yet.

use core::ffi::c_void;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX};
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_loop, bpf_xdp_adjust_tail};
use aya_ebpf::macros::xdp;
use aya_ebpf::programs::XdpContext;
use ingress_common::syncookie::{
    self, MAX_OPTIONS, OPT_BUF, SYNACK_LEN, SynCookieTarget, SynParse, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
    TCP_URG, Tuple,
};

use crate::maps::{SYNCOOKIE_CONFIG, SYNCOOKIE_SCRATCH, SYNCOOKIE_TARGETS};
use crate::parse::{ETH_HLEN, ptr_at};

const ETH_P_IP: u16 = 0x0800;
const IP_LEN: usize = 20;
const TCP_OFF: usize = ETH_HLEN + IP_LEN;
const FRAME_LEN: usize = ETH_HLEN + SYNACK_LEN;

#[xdp]
pub fn syncookie_xdp(ctx: XdpContext) -> u32 {
    try_syncookie(&ctx).unwrap_or(XDP_PASS)
}

/// The context `bpf_loop` hands the callback: the walk's map value.
#[repr(C)]
struct LoopCtx {
    parse: *mut SynParse,
}

/// One option of the walk; stops the loop (returns 1) when it has ended.
#[inline(never)]
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the LoopCtx of try_syncookie; its pointer is a valid
    // map value.
    let s = unsafe { &mut *(*(ctx as *mut LoopCtx)).parse };
    if syncookie::parse_step(s) { 1 } else { 0 }
}

#[inline(always)]
fn try_syncookie(ctx: &XdpContext) -> Option<u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth: *const [u8; ETH_HLEN] = ptr_at(start, end, 0).ok()?;
    // SAFETY: ptr_at checked the bytes are in the packet.
    let eth = unsafe { *eth };
    if u16::from_be_bytes([eth[12], eth[13]]) != ETH_P_IP {
        return None;
    }
    let ip: *const [u8; IP_LEN] = ptr_at(start, end, ETH_HLEN).ok()?;
    // SAFETY: as above.
    let ip = unsafe { *ip };
    // version 4 without options, not a fragment, TCP
    if ip[0] != 0x45 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || ip[9] != 6 {
        return None;
    }
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let tcp: *const [u8; 20] = ptr_at(start, end, TCP_OFF).ok()?;
    // SAFETY: as above.
    let tcp = unsafe { *tcp };
    let flags = tcp[13];
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN | TCP_PSH | TCP_URG) != TCP_SYN {
        return None;
    }
    let doff = ((tcp[12] >> 4) as usize) * 4;
    // no payload (TFO data), the whole datagram in the frame
    if doff < 20 || tot_len != IP_LEN + doff || start + ETH_HLEN + tot_len > end {
        return None;
    }
    let t = Tuple {
        saddr: u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]),
        daddr: u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]),
        sport: u16::from_be_bytes([tcp[0], tcp[1]]),
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
    };
    let target = SynCookieTarget { addr: t.daddr.to_be(), port: t.dport.to_be(), _pad: 0 };
    // SAFETY: read-only lookup.
    unsafe { SYNCOOKIE_TARGETS.get(&target) }?;
    let cfg = SYNCOOKIE_CONFIG.get(0)?;
    if cfg.path_mss == 0 {
        return None;
    }
    // A socket of this VM still has the tuple (the agent's connection in TIME_WAIT after
    // it closed first, the client reusing its port): only the stack can recycle it, so
    // the SYN goes there and the connection to the agent, as without binding. Answered
    // here, the cookie's ACK would meet the TIME_WAIT socket and hang.
    if vm_socket_has(ctx, &ip, &tcp) {
        return None;
    }
    let optlen = doff - 20;
    // The option walk runs in bpf_loop (5.17) over a per-CPU map value: the verifier
    // checks one step, whose inputs (read from the map) it does not know, instead of
    // every combination of options at every position (which exceeded 1M instructions).
    let s = SYNCOOKIE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a valid per-CPU map value, used by this program alone, to the end of this
    // run on this CPU.
    let s = unsafe { &mut *s };
    s.opts = [0u8; OPT_BUF];
    let mut i = 0;
    while i < MAX_OPTIONS {
        if i >= optlen {
            break;
        }
        let b: *const u8 = ptr_at(start, end, TCP_OFF + 20 + i).ok()?;
        // SAFETY: as above.
        s.opts[i] = unsafe { *b };
        i += 1;
    }
    s.start(optlen);
    let mut lctx = LoopCtx { parse: s as *mut SynParse };
    // SAFETY: the callback and its context follow bpf_loop's contract.
    unsafe { bpf_loop(MAX_OPTIONS as u32 + 1, step as *mut c_void, &mut lctx as *mut LoopCtx as *mut c_void, 0) };
    let o = s.result().ok()?;
    let client_isn = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ecn = syncookie::ecn_setup(flags);
    // SAFETY: no preconditions.
    let random = unsafe { bpf_get_prandom_u32() };
    let cookie = syncookie::make(cfg, &t, client_isn, &o, ecn, random);
    // the frame becomes exactly Ethernet + the 60-byte headers (options EOL-padded)
    let delta = FRAME_LEN as i32 - (end - start) as i32;
    if delta != 0 {
        // SAFETY: the program's own context.
        if unsafe { bpf_xdp_adjust_tail(ctx.as_ptr() as *mut _, delta) } != 0 {
            return None; // nothing written yet: the SYN passes untouched
        }
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    // resized: from here on a failure drops the frame (never passes a mangled one)
    let Ok(mac) = ptr_at::<[u8; 12]>(start, end, 0) else { return Some(XDP_DROP) };
    let Ok(hdr) = ptr_at::<[u8; SYNACK_LEN]>(start, end, ETH_HLEN) else { return Some(XDP_DROP) };
    let (mac, hdr) = (mac as *mut [u8; 12], hdr as *mut [u8; SYNACK_LEN]);
    let mut macs = [0u8; 12];
    macs[0..6].copy_from_slice(&eth[6..12]);
    macs[6..12].copy_from_slice(&eth[0..6]);
    // SAFETY: ptr_at checked both ranges are in the (resized) packet; the ethertype stays.
    unsafe {
        *mac = macs;
        syncookie::synack(cfg, &t, client_isn, &o, &cookie, ecn, &mut *hdr);
    }
    Some(XDP_TX)
}

/// Whether a socket of this namespace other than a listener (established, TIME_WAIT,
/// ...) has the SYN's 4-tuple (`bpf_skc_lookup_tcp`, Linux 5.2).
#[inline(always)]
fn vm_socket_has(ctx: &XdpContext, ip: &[u8; IP_LEN], tcp: &[u8; 20]) -> bool {
    use aya_ebpf::EbpfContext;
    use aya_ebpf::bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple};
    use aya_ebpf::helpers::{bpf_sk_release, bpf_skc_lookup_tcp};
    // SAFETY: all-zero is a valid bpf_sock_tuple.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // SAFETY: writing the ipv4 member of the union (addresses and ports as in the packet).
    unsafe {
        let t = &mut tuple.__bindgen_anon_1.ipv4;
        t.saddr = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
        t.daddr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
        t.sport = u16::from_ne_bytes([tcp[0], tcp[1]]);
        t.dport = u16::from_ne_bytes([tcp[2], tcp[3]]);
    }
    let v4 = core::mem::size_of::<aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    // SAFETY: valid context and tuple; the reference is released at once.
    let sk = unsafe { bpf_skc_lookup_tcp(ctx.as_ptr(), &mut tuple, v4, BPF_F_CURRENT_NETNS as u64, 0) };
    if sk.is_null() {
        return false;
    }
    // a listener is what the lookup falls back to: not the tuple's
    // SAFETY: `state` is readable on a socket-common pointer.
    let listening = unsafe { (*sk).state } == 10;
    // SAFETY: releases the lookup's reference.
    unsafe { bpf_sk_release(sk as *mut _) };
    !listening
}
