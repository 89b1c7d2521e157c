//! tc ingress on the VM NIC: a TCP packet to a frontend (a VM address on an L4 port)
//! is DNATed to the flow's endpoint (conntrack hit, or a Maglev pick for a new flow)
//! and redirected into the k3d network. Everything else passes untouched.

use aya_ebpf::bindings::TC_ACT_UNSPEC;
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use ingress_common::l4::{CT_DIR_REPLY, L4CtEntry, L4CtKey, flow_hash};
use ingress_common::proto;

use crate::conntrack::{L4Event, count, initial_state, lookup_orig, now_ns, orig_key, touch};
use crate::maps::L4_CT;
use crate::nat::{Forward, forward, local_or_zero, parse_tcp4_direct, rewrite};
use crate::service::{pick, tcp_service};

#[classifier]
pub fn l4_nic(ctx: TcContext) -> i32 {
    // Not ours: TC_ACT_UNSPEC lets a later tc/TCX program see it, then the stack.
    try_l4_nic(&ctx).unwrap_or(TC_ACT_UNSPEC)
}

#[inline(always)]
fn try_l4_nic(ctx: &TcContext) -> Option<i32> {
    let p = parse_tcp4_direct(ctx)?;
    // Loopback and "this host" addresses are frontends for local clients (the cgroup
    // hooks) only; a packet carrying them on the wire is not ours.
    if local_or_zero(p.daddr) || local_or_zero(p.saddr) {
        return None;
    }
    let svc = tcp_service(p.daddr, p.dport)?;
    let key = orig_key(&p);
    let now = now_ns();
    let (ep_addr, ep_port) = match lookup_orig(&key, p.flags, now) {
        Some(e) => {
            touch(e, p.flags, now);
            // SAFETY: valid map value pointer.
            unsafe { ((*e).nat_addr, (*e).nat_port) }
        }
        None => {
            let Some(ep) = pick(&svc, flow_hash(p.saddr, p.daddr, p.sport, p.dport)) else {
                count(svc.id, L4Event::NoEndpoint);
                return None;
            };
            let entry = L4CtEntry {
                nat_addr: ep.addr,
                nat_port: ep.port,
                state: initial_state(p.flags),
                _pad0: 0,
                service: svc.id,
                _pad1: 0,
                last_seen_ns: now,
            };
            let back = L4CtKey {
                src_addr: ep.addr,
                dst_addr: p.saddr,
                src_port: ep.port,
                dst_port: p.sport,
                proto: proto::TCP,
                dir: CT_DIR_REPLY,
                _pad: 0,
            };
            let back_entry = L4CtEntry { nat_addr: p.daddr, nat_port: p.dport, ..entry };
            // The reply entry first: a reply can only come after the packet goes out.
            if L4_CT.insert(&back, &back_entry, 0).is_err() || L4_CT.insert(&key, &entry, 0).is_err() {
                count(svc.id, L4Event::CtError);
                return None;
            }
            count(svc.id, L4Event::NewFlow);
            (ep.addr, ep.port)
        }
    };
    if rewrite(ctx, &p, true, ep_addr, ep_port).is_err() {
        // The helpers fail before writing anything only on a bad offset; the packet
        // is dropped rather than sent half rewritten.
        return Some(aya_ebpf::bindings::TC_ACT_SHOT as i32);
    }
    count(svc.id, L4Event::Forwarded(p.tot_len as u64));
    let out = forward(ctx, &p, p.saddr, ep_addr, p.sport, ep_port);
    if let Forward::Stack = out {
        count(svc.id, L4Event::FibFallback);
    }
    Some(out.verdict())
}
