//! The pod leg in the kernel (`--pod-cgroup`, `ingress_common::pod_leg`): two thin
//! programs over one SOCKHASH.
//! - `pod_leg_ops` (cgroup sock_ops, on the pods' cgroup): a pod's socket of a
//!   connection from one of the agent's addresses ([`POD_LEG_AGENTS`]) goes into
//!   [`POD_LEG_SOCKS`] as it is established, before it carries a byte.
//! - `pod_leg_msg` (sk_msg, on the SOCKHASH): what a socket of the map sends goes into
//!   the receive queue of the socket at the other end when that one is in the map too
//!   (the agent puts its end in only between two exchanges, when nothing is in flight);
//!   else it is sent the normal way. Either way nothing is dropped.

use aya_ebpf::bindings::{BPF_ANY, BPF_F_INGRESS, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, sk_action};
use aya_ebpf::macros::{sk_msg, sock_ops};
use aya_ebpf::programs::{SkMsgContext, SockOpsContext};
use ingress_common::pod_leg::{PodLegStats, peer_key};
use ingress_common::splice::SpliceKey;

use crate::maps::{POD_LEG_AGENTS, POD_LEG_SOCKS, POD_LEG_STATS};
use crate::segment::normalize_remote_port;

#[sock_ops]
pub fn pod_leg_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return 1;
    }
    // IPv4, or IPv4-mapped on a dual-stack listener: the v4 fields hold the addresses
    let remote_ip4 = ctx.remote_ip4();
    // SAFETY: a map lookup with a valid key.
    if unsafe { POD_LEG_AGENTS.get(&remote_ip4) }.is_none() {
        return 1;
    }
    let mut key = SpliceKey {
        local_ip4: ctx.local_ip4(),
        remote_ip4,
        local_port: ctx.local_port(),
        remote_port: normalize_remote_port(ctx.remote_port()),
    };
    // SAFETY: the context's pointer is valid for the program's run.
    let ops = unsafe { &mut *ctx.ops };
    let ok = POD_LEG_SOCKS.update(&mut key, ops, BPF_ANY as u64).is_ok();
    count(|s| if ok { s.pod_sockets += 1 } else { s.pod_socket_errors += 1 });
    1
}

#[sk_msg]
pub fn pod_leg_msg(ctx: SkMsgContext) -> u32 {
    // SAFETY: the context's pointer is valid for the program's run.
    let md = unsafe { &*ctx.msg };
    let own = SpliceKey {
        local_ip4: md.local_ip4,
        remote_ip4: md.remote_ip4,
        local_port: md.local_port,
        remote_port: normalize_remote_port(md.remote_port),
    };
    let size = ctx.size() as u64;
    // SK_PASS when the peer is in the map (the message then goes to its receive queue);
    // SK_DROP when it is not, and then the message is sent the normal way: never dropped.
    if POD_LEG_SOCKS.redirect_msg(&ctx, peer_key(&own), BPF_F_INGRESS as u64) as u32 == sk_action::SK_PASS {
        count(|s| {
            s.redirected_msgs += 1;
            s.redirected_bytes += size;
        });
    } else {
        count(|s| s.passed_msgs += 1);
    }
    sk_action::SK_PASS
}

#[inline(always)]
fn count(f: impl FnOnce(&mut PodLegStats)) {
    if let Some(s) = POD_LEG_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        f(unsafe { &mut *s });
    }
}
