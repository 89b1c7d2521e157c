//! tc ingress in a pod's network namespace (delayed binding, study step 4): a pure ACK
//! or first data segment (no SYN/RST) of a connection the edge admitted
//! (`POD_ADMITTED`, keyed as the pod sees it), whose seq is the client's ISN + 1 and
//! which finds a LISTEN socket, becomes the pod's socket: `bpf_sk_assign_tcp_reqsk`
//! with the attributes the cookie encoded and the segment's timestamps; the kernel then
//! creates the socket from it with ISN = the cookie. Everything else passes
//! (TC_ACT_OK: no entry means the kernel answers as usual, e.g. with a RST). Nothing
//! fills the map and the agent does not attach it yet.

use core::mem::size_of;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{BPF_F_CURRENT_NETNS, TC_ACT_OK, bpf_sock_tuple};
use aya_ebpf::helpers::{bpf_sk_release, bpf_skc_lookup_tcp};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use ingress_common::bind::{PodFlowKey, TcpReqAttrs, find_timestamp};
use ingress_common::syncookie::{MAX_OPTIONS, OPT_BUF};

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
    let optlen = doff.saturating_sub(20);
    let mut opts = [0u8; OPT_BUF];
    let mut i = 0;
    while i < MAX_OPTIONS {
        if i >= optlen {
            break;
        }
        opts[i] = ctx.load::<u8>(p.l4 + 20 + i).ok()?;
        i += 1;
    }
    let ts = find_timestamp(&opts, optlen);
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
    // SAFETY: valid context and tuple; the reference is released below.
    let sk = unsafe { bpf_skc_lookup_tcp(ctx.as_ptr(), &mut tuple, v4, BPF_F_CURRENT_NETNS as u64, 0) };
    if sk.is_null() {
        return None;
    }
    // SAFETY: a socket pointer from the lookup; `state` is readable on sock_common.
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
