//! Pure translation between the agent's model and map entries: XDP counter entries
//! (summed over CPUs) into named counters, and joining or parting two sockets as an
//! ordered list of map updates ([`super::maps`] carries them out).

use ingress_common::proto;
use ingress_common::splice::{SpliceKey, SplicePeer};
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

/// One insert of a join. `Socket(i)` is the socket of pair member `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOp {
    Peer(SpliceKey, SplicePeer),
    Socket(usize),
}

/// One removal of a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartOp {
    Socket(SpliceKey),
    Peer(SpliceKey),
    Takeover(SpliceKey),
}

/// Joining `keys[0]` and `keys[1]`: the peer entries go in first, so every segment
/// the verdict program sees on a joined socket has its entry (its sequence tracking
/// starts with the first one); then the sockets enter the SOCKHASH.
pub fn join_ops(keys: [SpliceKey; 2]) -> [JoinOp; 4] {
    let entry = |key| SplicePeer { key, ..Default::default() };
    [JoinOp::Peer(keys[0], entry(keys[1])), JoinOp::Peer(keys[1], entry(keys[0])), JoinOp::Socket(0), JoinOp::Socket(1)]
}

/// Undoing a join: the sockets leave the SOCKHASH first (their bytes take the normal
/// path again), then their entries.
pub fn part_ops(keys: [SpliceKey; 2]) -> [PartOp; 6] {
    [
        PartOp::Socket(keys[0]),
        PartOp::Socket(keys[1]),
        PartOp::Peer(keys[0]),
        PartOp::Takeover(keys[0]),
        PartOp::Peer(keys[1]),
        PartOp::Takeover(keys[1]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u32) -> SpliceKey {
        SpliceKey { local_ip4: 1, remote_ip4: 2, local_port: port, remote_port: 9 }
    }

    #[test]
    fn a_join_enters_both_peers_before_either_socket() {
        let ops = join_ops([key(1), key(2)]);
        let last_peer = ops.iter().rposition(|o| matches!(o, JoinOp::Peer(..))).unwrap();
        let first_socket = ops.iter().position(|o| matches!(o, JoinOp::Socket(_))).unwrap();
        assert!(last_peer < first_socket, "{ops:?}");
        // each socket's entry names the other one, with no bytes counted yet
        assert!(ops.contains(&JoinOp::Peer(key(1), SplicePeer { key: key(2), ..Default::default() })));
        assert!(ops.contains(&JoinOp::Peer(key(2), SplicePeer { key: key(1), ..Default::default() })));
    }

    #[test]
    fn a_part_removes_both_sockets_before_any_entry() {
        let ops = part_ops([key(1), key(2)]);
        let last_socket = ops.iter().rposition(|o| matches!(o, PartOp::Socket(_))).unwrap();
        let first_entry = ops.iter().position(|o| !matches!(o, PartOp::Socket(_))).unwrap();
        assert!(last_socket < first_entry, "{ops:?}");
        for k in [key(1), key(2)] {
            assert!(ops.contains(&PartOp::Peer(k)) && ops.contains(&PartOp::Takeover(k)));
        }
    }
}
