//! tc ingress on the interface replies come back on (the k3d bridge): a packet from an
//! endpoint to a client of a tracked flow gets its frontend back as source (reverse
//! NAT) and is redirected out the NIC. Everything else passes untouched.

use aya_ebpf::bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use ingress_common::l4::{CT_DIR_ORIG, L4CtKey};
use ingress_common::proto;

use crate::conntrack::{L4Event, count, lookup_orig, now_ns, reply_key, touch};
use crate::maps::L4_CT;
use crate::nat::{Forward, TCP_ACK, forward, parse_tcp4_direct, rewrite};

#[classifier]
pub fn l4_reply(ctx: TcContext) -> i32 {
    // Not ours: TC_ACT_UNSPEC lets a later tc/TCX program see it, then the stack.
    try_l4_reply(&ctx).unwrap_or(TC_ACT_UNSPEC)
}

#[inline(always)]
fn try_l4_reply(ctx: &TcContext) -> Option<i32> {
    let p = parse_tcp4_direct(ctx)?;
    // SAFETY: read-only copy of the value.
    let back = *unsafe { L4_CT.get(&reply_key(&p)) }?;
    let orig = L4CtKey {
        src_addr: p.daddr,
        dst_addr: back.nat_addr,
        src_port: p.dport,
        dst_port: back.nat_port,
        proto: proto::TCP,
        dir: CT_DIR_ORIG,
        _pad: 0,
    };
    let now = now_ns();
    // A reply never opens a flow: look up as for a packet that is not a bare SYN.
    let e = lookup_orig(&orig, p.flags | TCP_ACK, now)?;
    // SAFETY: valid map value pointer.
    let (to_addr, to_port) = unsafe { ((*e).nat_addr, (*e).nat_port) };
    if to_addr != p.saddr || to_port != p.sport {
        // The flow was re-opened to another endpoint; this is a stale reply.
        return None;
    }
    touch(e, p.flags, now);
    if rewrite(ctx, &p, false, back.nat_addr, back.nat_port).is_err() {
        return Some(TC_ACT_SHOT as i32);
    }
    count(back.service, L4Event::Reply(p.tot_len as u64));
    let out = forward(ctx, &p, back.nat_addr, p.daddr, back.nat_port, p.dport);
    if let Forward::Stack = out {
        count(back.service, L4Event::FibFallback);
    }
    Some(out.verdict())
}
