//! Pure translation between the agent's model and map entries: XDP counter entries
//! (summed over CPUs) into named counters.

use ingress_common::proto;
use ingress_common::stats::{StatsKey, Verdict};

use crate::telemetry::XdpCounter;

pub fn proto_name(p: u8) -> String {
    match p {
        proto::NONE => "non-ip".into(),
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        p => format!("ip-proto-{p}"),
    }
}

/// Sums per-CPU values into sorted counters.
pub fn xdp_counters(entries: impl IntoIterator<Item = (StatsKey, u64, u64)>) -> Vec<XdpCounter> {
    let mut out: Vec<(StatsKey, XdpCounter)> = entries
        .into_iter()
        .filter(|(_, packets, _)| *packets > 0)
        .map(|(k, packets, bytes)| {
            let verdict =
                Verdict::from_u8(k.verdict).map(|v| v.name().to_string()).unwrap_or_else(|| k.verdict.to_string());
            (k, XdpCounter { port: k.dst_port, proto: proto_name(k.proto), verdict, packets, bytes })
        })
        .collect();
    out.sort_by_key(|(k, _)| *k);
    out.into_iter().map(|(_, c)| c).collect()
}
