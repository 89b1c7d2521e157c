//! XDP on the VM NIC: counts packets and bytes per (destination port, protocol,
//! verdict) in a per-CPU hash map, logs new TCP connections at debug level, and
//! passes every packet (the guard comes with a later issue).

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use ingress_common::proto;
use ingress_common::stats::{NO_PORT, StatsKey, Verdict};

use crate::counters::count_packet;
use crate::parse::{TCP_ACK, TCP_SYN, parse_l4};

#[xdp]
pub fn ingress_xdp(ctx: XdpContext) -> u32 {
    // Every packet passes: a parse error only means "not a packet we understand",
    // and the kernel stack is the right place to deal with it (fail open).
    let (key_proto, port) = match parse_l4(ctx.data(), ctx.data_end()) {
        Ok(Some(l4)) => {
            if l4.proto == proto::TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                debug!(&ctx, "xdp: TCP SYN to port {} from port {}", l4.dst_port, l4.src_port);
            }
            (l4.proto, l4.dst_port)
        }
        Ok(None) | Err(()) => (proto::NONE, NO_PORT),
    };
    let verdict = Verdict::Pass;
    count_packet(&ctx, StatsKey { dst_port: port, proto: key_proto, verdict: verdict as u8 });
    xdp_action::XDP_PASS
}
