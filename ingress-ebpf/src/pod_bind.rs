//! tc ingress in a pod's network namespace (delayed binding, study step 4): a pure ACK
//! or first data segment (no SYN/RST) of a connection the edge admitted
//! (`POD_ADMITTED`, keyed as the pod sees it), whose seq is the client's ISN + 1 and
//! which finds a LISTEN socket (`bpf_sk_lookup_tcp`), becomes the pod's socket: `bpf_sk_assign_tcp_reqsk`
//! with the attributes the cookie encoded and the segment's timestamps; the kernel then
//! creates the socket from it with ISN = the cookie. Everything else passes
//! (TC_ACT_OK: no entry means the kernel answers as usual, e.g. with a RST). Nothing
//! fills the map and the agent does not attach it yet.

use core::mem::size_of;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{BPF_F_CURRENT_NETNS, TC_ACT_OK, bpf_sock_tuple};
use aya_ebpf::helpers::{bpf_sk_lookup_tcp, bpf_sk_release};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use ingress_common::pod_bind::{PodFlowKey, TcpReqAttrs};

use crate::kfunc::bpf_sk_assign_tcp_reqsk;
use crate::maps::POD_ADMITTED;
use crate::nat::{TCP_ACK, TCP_RST, TCP_SYN, parse_tcp4};

const TCP_LISTEN: u32 = 10;

#[classifier]
pub fn pod_bind(ctx: TcContext) -> i32 {
    try_pod_bind(&ctx);
    TC_ACT_OK as i32
}

#[inline(always)]
fn try_pod_bind(ctx: &TcContext) -> Option<()> {
    let p = parse_tcp4(ctx)?;
    if p.flags & (TCP_SYN | TCP_RST | TCP_ACK) != TCP_ACK {
        return None;
    }
    let key = PodFlowKey { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport };
    // SAFETY: read-only copy of the value.
    let admit = *unsafe { POD_ADMITTED.get(&key) }?;
    let seq = u32::from_be(ctx.load::<u32>(p.l4 + 4).ok()?);
    if seq != admit.client_isn.wrapping_add(1) {
        return None;
    }
    let doff = ((ctx.load::<u8>(p.l4 + 12).ok()? >> 4) as usize) * 4;
    // Timestamps only in Linux's fixed ACK layout (NOP NOP TS first): a general option
    // walk in this program exceeds the verifier's 1M-instruction budget (it needs
    // bpf_loop, not written yet). An admitted flow with timestamps whose segment has
    // them elsewhere is not bound here (it passes).
    let ts = if doff >= 32 && ctx.load::<u32>(p.l4 + 20).ok()? == u32::from_be(0x0101_080a) {
        Some((u32::from_be(ctx.load::<u32>(p.l4 + 24).ok()?), u32::from_be(ctx.load::<u32>(p.l4 + 28).ok()?)))
    } else {
        None
    };
    if admit.tstamp_ok != 0 && ts.is_none() {
        return None;
    }
    // SAFETY: all-zero is a valid bpf_sock_tuple.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // SAFETY: writing the ipv4 member of the union.
    unsafe {
        let t = &mut tuple.__bindgen_anon_1.ipv4;
        t.saddr = p.saddr;
        t.daddr = p.daddr;
        t.sport = p.sport;
        t.dport = p.dport;
    }
    let v4 = size_of::<aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    // A full socket (the kfunc takes a `struct sock`, not the sock_common of
    // bpf_skc_lookup_tcp). SAFETY: valid context and tuple; released below.
    let sk = unsafe { bpf_sk_lookup_tcp(ctx.as_ptr(), &mut tuple, v4, BPF_F_CURRENT_NETNS as u64, 0) };
    if sk.is_null() {
        return None;
    }
    // SAFETY: a socket pointer from the lookup; `state` is readable.
    if unsafe { (*sk).state } == TCP_LISTEN {
        let mut attrs = TcpReqAttrs::from_admit(&admit, ts);
        // SAFETY: the skb of this tc program, a listener from the lookup, attributes on the stack.
        unsafe {
            bpf_sk_assign_tcp_reqsk(ctx.skb.skb, sk, &mut attrs, size_of::<TcpReqAttrs>() as i32);
        }
    }
    // SAFETY: releases the lookup's reference.
    unsafe { bpf_sk_release(sk as *mut _) };
    Some(())
}
