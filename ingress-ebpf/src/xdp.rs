//! XDP on the VM NIC: the guard in front of every listener. Counts packets and bytes
//! per (destination port, protocol, verdict); drops what the guard's rules refuse
//! (per-port deny/allow lists, the per-source SYN rate; see [`crate::guard`]),
//! counting each drop per (port, reason); passes everything else untouched, including
//! what it cannot parse (counted as malformed, too many IPv6 extension headers, or
//! fragment). Logs new TCP connections at debug level.
//!
//! A guarded port's packets are counted in its counter slot (per-CPU arrays, one
//! inlined lookup); every other packet in the per-CPU hashes.

use aya_ebpf::{macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use ingress_common::guard::GuardReason;
use ingress_common::proto;
use ingress_common::stats::{NO_PORT, StatsKey, Verdict};

use crate::counters::{count_guard, count_packet, count_slot};
use crate::guard;
use crate::parse::{TCP_ACK, TCP_SYN, Unparsed, parse_ip};

#[xdp]
pub fn ingress_xdp(ctx: XdpContext) -> u32 {
    // A packet the parser does not understand passes (fail open): the kernel stack is
    // the right place to deal with it.
    let (key_proto, port, drop) = match parse_ip(ctx.data(), ctx.data_end()) {
        Ok(ip) => match ip.ports {
            Some(p) => {
                if ip.proto == proto::TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    debug!(&ctx, "xdp: TCP SYN to port {} from port {}", p.dst, p.src);
                }
                let gp = guard::port(p.dst);
                let drop = guard::check(&ip, p.dst, p.tcp_flags, gp.flags);
                if gp.slot != 0 && count_slot(&ctx, gp.slot, ip.proto, drop) {
                    return match drop {
                        Some(_) => Verdict::Drop as u32,
                        // delayed binding: a SYN may go on to the cookie program
                        None => crate::bind_syn::pass(&ctx, &ip, p.tcp_flags),
                    };
                }
                (ip.proto, p.dst, drop)
            }
            None => {
                if ip.fragment {
                    count_guard(&ctx, NO_PORT, GuardReason::Fragment);
                }
                (ip.proto, NO_PORT, None)
            }
        },
        Err(Unparsed::NotIp) => (proto::NONE, NO_PORT, None),
        Err(Unparsed::Malformed) => {
            count_guard(&ctx, NO_PORT, GuardReason::Malformed);
            (proto::NONE, NO_PORT, None)
        }
        Err(Unparsed::ExtHeaders) => {
            count_guard(&ctx, NO_PORT, GuardReason::ExtHeaders);
            (proto::NONE, NO_PORT, None)
        }
    };
    let verdict = match drop {
        Some(reason) => {
            count_guard(&ctx, port, reason);
            Verdict::Drop
        }
        None => Verdict::Pass,
    };
    count_packet(&ctx, StatsKey { dst_port: port, proto: key_proto, verdict: verdict as u8 });
    verdict as u32
}
