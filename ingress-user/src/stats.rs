//! Counters the agent reports: XDP packet/byte counts per (port, protocol, verdict),
//! summed over CPUs, and the proxy's request counts. Plain data; formatting for
//! `ingress stats` lives here too.

use std::sync::atomic::{AtomicU64, Ordering};

use ingress_common::proto;
use ingress_common::stats::{StatsKey, Verdict};
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
}

/// What `GET /stats` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub dataplane: String,
    /// The interface the XDP program is attached to, and in which mode.
    pub xdp: Option<XdpInfo>,
    pub xdp_counters: Vec<XdpCounter>,
    pub proxy: ProxyCounters,
    /// Upgraded connections joined in the kernel (sockmap) or copied in user space.
    #[serde(default)]
    pub splice: crate::splice::SpliceCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XdpInfo {
    pub interface: String,
    pub mode: String,
    /// In generic mode: why driver mode was refused, and what to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_generic: Option<String>,
}

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

/// Lock-free request counters shared by the proxy tasks.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    requests: AtomicU64,
    by_class: [AtomicU64; 4],
    backend_errors: AtomicU64,
    upgraded_active: std::sync::Arc<AtomicU64>,
    upgraded_total: AtomicU64,
    connections_active: std::sync::Arc<AtomicU64>,
    parked: AtomicU64,
}

/// Counts a connection as active until dropped.
pub struct ActiveGuard(std::sync::Arc<AtomicU64>);
pub type UpgradeGuard = ActiveGuard;

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ProxyMetrics {
    pub fn parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn response(&self, status: u16) {
        if (200..600).contains(&status) {
            self.by_class[(status / 100 - 2) as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn backend_error(&self) {
        self.backend_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upgraded(&self) -> UpgradeGuard {
        self.upgraded_total.fetch_add(1, Ordering::Relaxed);
        self.upgraded_active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.upgraded_active.clone())
    }

    pub fn connection(&self) -> ActiveGuard {
        self.connections_active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.connections_active.clone())
    }

    pub fn snapshot(&self) -> ProxyCounters {
        let c = |i: usize| self.by_class[i].load(Ordering::Relaxed);
        ProxyCounters {
            requests: self.requests.load(Ordering::Relaxed),
            upgraded_active: self.upgraded_active.load(Ordering::Relaxed),
            upgraded_total: self.upgraded_total.load(Ordering::Relaxed),
            connections_active: self.connections_active.load(Ordering::Relaxed),
            connections_parked: self.parked.load(Ordering::Relaxed),
            responses_2xx: c(0),
            responses_3xx: c(1),
            responses_4xx: c(2),
            responses_5xx: c(3),
            backend_errors: self.backend_errors.load(Ordering::Relaxed),
        }
    }
}

/// The table `ingress stats` prints.
pub fn format_table(s: &Stats) -> String {
    let mut out = String::new();
    match &s.xdp {
        Some(x) => {
            out += &format!("dataplane: {} (XDP on {}, {} mode)\n", s.dataplane, x.interface, x.mode);
            if let Some(why) = &x.why_generic {
                out += &format!("  ! XDP runs in generic (skb) mode, which is slower: {why}\n");
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
    let p = &s.proxy;
    out += &format!(
        "proxy: {} requests; 2xx {} 3xx {} 4xx {} 5xx {}; backend errors {}\n",
        p.requests, p.responses_2xx, p.responses_3xx, p.responses_4xx, p.responses_5xx, p.backend_errors
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = Stats {
            dataplane: "ebpf".into(),
            xdp: Some(XdpInfo { interface: "eth0".into(), mode: "driver".into(), why_generic: None }),
            xdp_counters: c,
            proxy: Default::default(),
            splice: Default::default(),
        };
        let t = format_table(&s);
        assert!(t.contains("  8080  tcp      pass                5            300"), "{t}");
    }

    #[test]
    fn proxy_metrics_count_by_class() {
        let m = ProxyMetrics::default();
        m.request();
        m.response(200);
        m.response(404);
        m.response(503);
        m.response(503);
        let s = m.snapshot();
        assert_eq!((s.requests, s.responses_2xx, s.responses_4xx, s.responses_5xx), (1, 1, 1, 2));
    }
}
