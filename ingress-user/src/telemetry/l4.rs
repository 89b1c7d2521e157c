//! The L4 forwarding part of `/stats` and `ingress stats`: per L4 port flows, packets
//! and bytes both ways, and the conntrack table's occupancy (`/metrics` has the same
//! figures through prometheus-client, `prometheus.rs`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4PortCounters {
    pub port: u16,
    /// The `--l4` value.
    pub target: String,
    /// Endpoints the port forwards new flows to now.
    pub endpoints: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// Packets passed untouched because the port had no endpoint.
    pub no_endpoint: u64,
    /// Packets rewritten but handed to the kernel stack (no FIB route to redirect).
    pub fib_fallback: u64,
    pub conntrack_errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4View {
    /// Times the maps were reprogrammed for a changed model (1 after the first).
    #[serde(default)]
    pub programmed: u64,
    /// "tcx" or "legacy tc (clsact)", and where the programs are attached.
    pub tc_mode: String,
    pub attached: Vec<String>,
    pub ports: Vec<L4PortCounters>,
    /// Live (not expired) flows, all entries (two per flow), and the map's capacity.
    pub conntrack_flows: u64,
    pub conntrack_entries: u64,
    pub conntrack_capacity: u64,
}

/// The `ingress stats` lines for L4 forwarding.
pub fn format_l4(v: &L4View) -> String {
    let mut out = format!("l4: {} on {}\n", v.tc_mode, v.attached.join(", "));
    out += &format!(
        "{:>6}  {:<32} {:>4} {:>8} {:>10} {:>12} {:>10} {:>12} {:>8}\n",
        "PORT", "TARGET", "EPS", "FLOWS", "PACKETS", "BYTES", "REPLIES", "REPLY-BYTES", "NO-EP"
    );
    for p in &v.ports {
        out += &format!(
            "{:>6}  {:<32} {:>4} {:>8} {:>10} {:>12} {:>10} {:>12} {:>8}\n",
            p.port, p.target, p.endpoints, p.flows, p.packets, p.bytes, p.reply_packets, p.reply_bytes, p.no_endpoint
        );
    }
    out += &format!(
        "conntrack: {} flows, {} of {} entries\n",
        v.conntrack_flows, v.conntrack_entries, v.conntrack_capacity
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> L4View {
        L4View {
            programmed: 1,
            tc_mode: "tcx".into(),
            attached: vec!["l4_nic on eth0".into(), "l4_reply on br-k3d".into()],
            ports: vec![L4PortCounters {
                port: 6550,
                target: "6550=172.18.0.2:6443".into(),
                endpoints: 1,
                flows: 3,
                packets: 30,
                bytes: 3000,
                reply_packets: 20,
                reply_bytes: 9000,
                ..Default::default()
            }],
            conntrack_flows: 2,
            conntrack_entries: 6,
            conntrack_capacity: 131072,
        }
    }

    #[test]
    fn the_table_shows_ports_and_conntrack() {
        let t = format_l4(&view());
        assert!(t.contains("l4: tcx on l4_nic on eth0, l4_reply on br-k3d"), "{t}");
        assert!(t.contains("  6550  6550=172.18.0.2:6443"), "{t}");
        assert!(t.contains("conntrack: 2 flows, 6 of 131072 entries"), "{t}");
    }
}
