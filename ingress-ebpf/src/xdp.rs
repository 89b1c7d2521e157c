//! XDP on the VM NIC: counts packets and bytes per (destination port, protocol,
//! verdict) in a per-CPU hash map, logs new TCP connections at debug level, and
//! passes every packet (the guard comes with a later issue).

use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuHashMap, programs::XdpContext};
use aya_log_ebpf::debug;
use ingress_common::{NO_PORT, OVERFLOW_PORT, StatsKey, StatsValue, Verdict, XDP_STATS_MAX_ENTRIES, proto};

use crate::parse::{TCP_ACK, TCP_SYN, parse_l4};

#[map(name = "XDP_STATS")]
static XDP_STATS: PerCpuHashMap<StatsKey, StatsValue> = PerCpuHashMap::with_max_entries(XDP_STATS_MAX_ENTRIES, 0);

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
    count(&ctx, StatsKey { dst_port: port, proto: key_proto, verdict: verdict as u8 });
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(ctx: &XdpContext, key: StatsKey) {
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(v) = XDP_STATS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*v).packets += 1;
            (*v).bytes += len;
        }
        return;
    }
    let first = StatsValue { packets: 1, bytes: len };
    if XDP_STATS.insert(&key, &first, 0).is_err() {
        // Map full: account under the overflow key of this protocol, which the agent
        // creates at load time (so it exists even when the map fills up).
        let over = StatsKey { dst_port: OVERFLOW_PORT, proto: key.proto, verdict: key.verdict };
        if let Some(v) = XDP_STATS.get_ptr_mut(&over) {
            unsafe {
                (*v).packets += 1;
                (*v).bytes += len;
            }
        }
    }
}
