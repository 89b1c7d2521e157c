//! The L4 forwarding part of `/stats`, `ingress stats` and `/metrics`: per L4 port
//! flows, packets and bytes both ways, and the conntrack table's occupancy.

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

/// A counter family: name, help, how to read it from a port's counters.
type Family = (&'static str, &'static str, fn(&L4PortCounters) -> u64);

/// Prometheus text lines for L4 forwarding (appended to `/metrics` before `# EOF`).
pub fn prometheus_l4(v: &L4View) -> String {
    let mut out = String::new();
    let families: [Family; 7] = [
        ("ingress_l4_flows_total", "New L4 flows (conntrack entries created)", |p| p.flows),
        ("ingress_l4_packets_total", "Client-to-endpoint packets forwarded by the L4 path", |p| p.packets),
        ("ingress_l4_bytes_total", "Client-to-endpoint bytes (IP length) forwarded", |p| p.bytes),
        ("ingress_l4_reply_packets_total", "Endpoint-to-client packets reverse-NATed", |p| p.reply_packets),
        ("ingress_l4_reply_bytes_total", "Endpoint-to-client bytes reverse-NATed", |p| p.reply_bytes),
        ("ingress_l4_no_endpoint_packets_total", "Packets to an L4 port without endpoint", |p| p.no_endpoint),
        ("ingress_l4_fib_fallback_packets_total", "Rewritten packets handed to the kernel stack", |p| p.fib_fallback),
    ];
    for (name, help, get) in families {
        let base = name.trim_end_matches("_total");
        out += &format!("# HELP {base} {help}.\n# TYPE {base} counter\n");
        for p in &v.ports {
            out += &format!("{name}{{port=\"{}\"}} {}\n", p.port, get(p));
        }
    }
    out += "# HELP ingress_l4_conntrack_flows Live L4 flows in the conntrack map.\n# TYPE ingress_l4_conntrack_flows gauge\n";
    out += &format!("ingress_l4_conntrack_flows {}\n", v.conntrack_flows);
    out += "# HELP ingress_l4_conntrack_entries Entries in the conntrack map (two per flow).\n# TYPE ingress_l4_conntrack_entries gauge\n";
    out += &format!("ingress_l4_conntrack_entries {}\n", v.conntrack_entries);
    out
}

/// Inserts the L4 lines into an exposition, before its `# EOF` line if it has one.
pub fn append_before_eof(mut exposition: String, extra: &str) -> String {
    if let Some(i) = exposition.rfind("# EOF") {
        exposition.insert_str(i, extra);
    } else {
        exposition.push_str(extra);
    }
    exposition
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

    #[test]
    fn metrics_have_one_line_per_port_before_eof() {
        let m = append_before_eof("ingress_requests_total 1\n# EOF\n".into(), &prometheus_l4(&view()));
        assert!(m.contains("ingress_l4_flows_total{port=\"6550\"} 3\n"), "{m}");
        assert!(m.contains("ingress_l4_reply_bytes_total{port=\"6550\"} 9000\n"), "{m}");
        assert!(m.contains("ingress_l4_conntrack_flows 2\n"), "{m}");
        assert!(m.ends_with("# EOF\n"), "{m}");
        assert!(m.starts_with("ingress_requests_total 1\n"));
    }
}
