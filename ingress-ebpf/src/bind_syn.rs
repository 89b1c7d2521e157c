//! Delayed binding's hand-off from the XDP guard: a plain IPv4 TCP SYN the guard passed
//! on a guarded port is tail-called into the SYN cookie program (`syncookie_xdp`,
//! slot [`BIND_SYN_SLOT`] of `BIND_SYN_PROGS`). The array is empty unless the agent runs
//! with `--bind-in-kernel on`: the tail call then fails and the SYN passes as before.

use aya_ebpf::bindings::xdp_action::XDP_PASS;
use aya_ebpf::programs::XdpContext;
use ingress_common::maps::BIND_SYN_SLOT;
use ingress_common::proto;

use crate::maps::BIND_SYN_PROGS;
use crate::parse::{Ip, TCP_ACK, TCP_SYN};

/// The verdict for a packet the guard passes: XDP_PASS, unless it is an IPv4 SYN and
/// the cookie program is in the array (then this does not return).
#[inline(always)]
pub fn pass(ctx: &XdpContext, ip: &Ip, tcp_flags: u8) -> u32 {
    if ip.proto == proto::TCP && !ip.v6 && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // SAFETY: the context is this program's own; a failed tail call (empty slot)
        // returns and the packet passes.
        unsafe { BIND_SYN_PROGS.tail_call(ctx, BIND_SYN_SLOT) };
    }
    XDP_PASS
}
