//! What `GET /stats` returns and `ingress stats` reads back: XDP packet/byte counts
//! per (port, protocol, verdict) summed over CPUs, the proxy's request counts, the
//! joined connections. Plain data, and the table `ingress stats` prints.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpCounter {
    pub port: u16,
    pub proto: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProxyCounters {
    pub requests: u64,
    /// Upgraded (e.g. WebSocket) connections open now, and in total.
    #[serde(default)]
    pub upgraded_active: u64,
    #[serde(default)]
    pub upgraded_total: u64,
    /// Client connections open now.
    #[serde(default)]
    pub connections_active: u64,
    /// Times an idle keep-alive connection was taken back from hyper to wait without
    /// buffers (it is served again when the client sends).
    #[serde(default)]
    pub connections_parked: u64,
    pub responses_2xx: u64,
    pub responses_3xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    pub backend_errors: u64,
    /// Idle connections closed to admit a new one from a source at
    /// `--max-connections-per-source`, and new ones refused (all of its source's busy).
    #[serde(default)]
    pub connections_evicted: u64,
    #[serde(default)]
    pub connections_refused: u64,
    /// HTTP/2 client connections in total, and those closed for cancelling too many
    /// streams (rapid reset, CVE-2023-44487).
    #[serde(default)]
    pub h2_connections: u64,
    #[serde(default)]
    pub h2_reset_floods: u64,
    /// TLS termination on HTTPS listeners.
    #[serde(default)]
    pub tls: super::tls::TlsCounters,
    /// Client connections accepted by each L7 worker (`--workers`; empty without them).
    #[serde(default)]
    pub workers: Vec<u64>,
}

/// What `GET /stats` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsView {
    pub dataplane: String,
    /// The interface the XDP program is attached to, and in which mode.
    pub xdp: Option<XdpInfo>,
    pub xdp_counters: Vec<XdpCounter>,
    pub proxy: ProxyCounters,
    /// Upgraded connections joined in the kernel (sockmap) or copied in user space.
    #[serde(default)]
    pub splice: SpliceCounters,
    /// L4 forwarding (`--l4`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<super::l4::L4View>,
    /// The XDP guard: drops per (port, reason), and packets it passed unchecked.
    #[serde(default)]
    pub guard: Vec<GuardCounter>,
    /// TLS passthrough connections by outcome.
    #[serde(default)]
    pub passthrough: super::passthrough::PassthroughCounters,
    /// The pod leg in the kernel (`--pod-cgroup`), when loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_leg: Option<PodLegCounters>,
    /// Delayed binding (`--bind-in-kernel on`): the kernel pieces and their outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<super::bind::BindView>,
}

/// One counter of the XDP guard: packets to `port` (0: none, e.g. malformed) that it
/// dropped (`verdict` "drop": denied, not-allowed, syn-rate) or passed unchecked
/// ("pass": malformed, ext-headers, fragment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardCounter {
    pub port: u16,
    pub reason: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpInfo {
    pub interface: String,
    pub mode: String,
    /// In generic mode: why driver mode was refused, and what to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_generic: Option<String>,
}

/// The table `ingress stats` prints.
pub fn format_table(s: &StatsView) -> String {
    let mut out = String::new();
    match &s.xdp {
        Some(x) => {
            out += &format!("dataplane: {} (XDP on {}, {} mode)\n", s.dataplane, x.interface, x.mode);
            if let Some(why) = &x.why_generic {
                out += &format!("  ! XDP runs in generic (skb) mode: {why}\n");
            }
        }
        None => out += &format!("dataplane: {} (no XDP program)\n", s.dataplane),
    }
    if s.xdp.is_some() {
        out += &format!("{:>6}  {:<8} {:<8} {:>12} {:>14}\n", "PORT", "PROTO", "VERDICT", "PACKETS", "BYTES");
        for c in &s.xdp_counters {
            let port = match c.port {
                ingress_common::stats::NO_PORT => "-".to_string(),
                ingress_common::stats::OVERFLOW_PORT => "other".to_string(),
                p => p.to_string(),
            };
            out += &format!("{:>6}  {:<8} {:<8} {:>12} {:>14}\n", port, c.proto, c.verdict, c.packets, c.bytes);
        }
    }
    out += &format_guard(&s.guard);
    let p = &s.proxy;
    out += &format!(
        "proxy: {} requests; 2xx {} 3xx {} 4xx {} 5xx {}; backend errors {}\n",
        p.requests, p.responses_2xx, p.responses_3xx, p.responses_4xx, p.responses_5xx, p.backend_errors
    );
    out += &super::tls::format_tls(&p.tls);
    if !p.workers.is_empty() {
        let each: Vec<String> = p.workers.iter().map(u64::to_string).collect();
        out += &format!("workers: {}; connections accepted by each: {}\n", p.workers.len(), each.join(" "));
    }
    if let Some(l4) = &s.l4 {
        out += &super::l4::format_l4(l4);
    }
    if let Some(b) = &s.bind {
        out += &super::bind::format_bind(b);
    }
    if let Some(l) = &s.pod_leg {
        out += &format!(
            "pod leg ({}): agent sockets {} (refused {}), pod sockets {} (refused {}); sends moved {} ({} bytes), sent the normal way {}\n",
            l.cgroup,
            l.agent_sockets,
            l.agent_socket_errors,
            l.pod_sockets,
            l.pod_socket_errors,
            l.redirected_msgs,
            l.redirected_bytes,
            l.passed_msgs
        );
    }
    out += &s.splice.choice.format();
    let t = &s.passthrough;
    if t.connections > 0 || t.active > 0 {
        out += &format!(
            "passthrough: {} connections ({} open); kernel {} userspace {}; closed: no_sni {} no_route {} no_backend {} connect_failed {} rejected {}\n",
            t.connections,
            t.active,
            t.kernel,
            t.userspace,
            t.no_sni,
            t.no_route,
            t.no_backend,
            t.backend_connect_failures,
            t.rejected
        );
    }
    out
}

/// The guard's lines of `ingress stats` (nothing when it counted nothing).
fn format_guard(rows: &[GuardCounter]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out =
        format!("guard:\n{:>6}  {:<12} {:<8} {:>12} {:>14}\n", "PORT", "REASON", "VERDICT", "PACKETS", "BYTES");
    for c in rows {
        let port = match c.port {
            ingress_common::stats::NO_PORT => "-".to_string(),
            ingress_common::stats::OVERFLOW_PORT => "other".to_string(),
            p => p.to_string(),
        };
        out += &format!("{:>6}  {:<12} {:<8} {:>12} {:>14}\n", port, c.reason, c.verdict, c.packets, c.bytes);
    }
    out
}

/// `/stats` and `ingress stats`: the pod leg, when `--pod-cgroup` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodLegCounters {
    pub cgroup: String,
    /// Agent ends of pooled connections put in the map, and those the map refused.
    pub agent_sockets: u64,
    pub agent_socket_errors: u64,
    /// Pod ends put in the map by sock_ops (every connection from the agent's addresses).
    pub pod_sockets: u64,
    pub pod_socket_errors: u64,
    /// Send calls moved into the other end's receive queue, their bytes, and send
    /// calls that went the normal way (the other end not in the map).
    pub redirected_msgs: u64,
    pub redirected_bytes: u64,
    pub passed_msgs: u64,
}

/// Joined connections: in the kernel (sockmap) or copied in user space.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpliceCounters {
    pub available: bool,
    pub joined_active: u64,
    pub joined_total: u64,
    /// Of the active ones, those joined in the kernel.
    #[serde(default)]
    pub kernel_active: u64,
    pub copied_in_userspace: u64,
    pub kernel_redirected_bytes: u64,
    pub kernel_redirected_skbs: u64,
    pub kernel_unmatched_skbs: u64,
    /// Bytes of segments that overlapped bytes already handed on, cut off in the kernel.
    #[serde(default)]
    pub kernel_trimmed_bytes: u64,
    /// Segments of joined sockets handed to the agent (a direction it took over).
    #[serde(default)]
    pub kernel_passed_skbs: u64,
    /// Segments whose TCP control block did not match the layout the program reads.
    #[serde(default)]
    pub kernel_layout_mismatches: u64,
    /// Directions of joined connections the agent took over (bytes reached user space).
    #[serde(default)]
    pub taken_over: u64,
    /// Pairs per class by mechanism (kernel join, splice(2) through a pipe, copy) and why.
    #[serde(default)]
    pub choice: crate::datapath::join_choice::JoinChoices,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::translate::xdp_counters;
    use ingress_common::proto;
    use ingress_common::stats::StatsKey;

    #[test]
    fn counters_are_named_sorted_and_zeroes_dropped() {
        let k = |port, proto, verdict| StatsKey { dst_port: port, proto, verdict };
        let c = xdp_counters([
            (k(9080, proto::TCP, 2), 3, 180),
            (k(8080, proto::TCP, 2), 5, 300),
            (k(0, proto::NONE, 2), 0, 0),
            (k(0, proto::NONE, 1), 1, 42),
        ]);
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].port, c[0].proto.as_str(), c[0].verdict.as_str()), (0, "non-ip", "drop"));
        assert_eq!((c[1].port, c[1].packets, c[1].bytes), (8080, 5, 300));
        let s = StatsView {
            dataplane: "ebpf".into(),
            xdp: Some(XdpInfo { interface: "eth0".into(), mode: "driver".into(), why_generic: None }),
            xdp_counters: c,
            proxy: Default::default(),
            splice: Default::default(),
            l4: None,
            bind: None,
            pod_leg: None,
            guard: vec![GuardCounter {
                port: 8080,
                reason: "syn-rate".into(),
                verdict: "drop".into(),
                packets: 19000,
                bytes: 1140000,
            }],
            passthrough: Default::default(),
        };
        let t = format_table(&s);
        assert!(t.contains("  8080  tcp      pass                5            300"), "{t}");
        assert!(t.contains("guard:\n"), "{t}");
        assert!(t.contains("  8080  syn-rate     drop            19000        1140000"), "{t}");
    }
}
