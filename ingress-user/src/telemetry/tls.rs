//! TLS termination counters (HTTPS listeners, proxy/tls.rs): handshakes done and
//! resumed, and why others were refused. Atomics in the proxy; [`TlsCounters`] is
//! their snapshot in `/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct TlsMetrics {
    handshakes: AtomicU64,
    resumed: AtomicU64,
    unrecognized_name: AtomicU64,
    invalid_certificate: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// What `/stats` shows of TLS termination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCounters {
    /// Handshakes completed, and how many of them resumed a session.
    pub handshakes: u64,
    pub resumed: u64,
    /// Refused with `unrecognized_name`: no HTTPS listener serves the SNI (or none was sent).
    pub unrecognized_name: u64,
    /// Refused: the SNI selects a listener whose certificate cannot be used.
    pub invalid_certificate: u64,
    /// Failed otherwise (a protocol error, no shared cipher or version, the client left).
    pub failed: u64,
    /// Not complete within --head-timeout.
    pub timed_out: u64,
}

impl TlsMetrics {
    pub fn handshake(&self, resumed: bool) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.resumed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn unrecognized_name(&self) {
        self.unrecognized_name.fetch_add(1, Ordering::Relaxed);
    }

    pub fn invalid_certificate(&self) {
        self.invalid_certificate.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TlsCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TlsCounters {
            handshakes: l(&self.handshakes),
            resumed: l(&self.resumed),
            unrecognized_name: l(&self.unrecognized_name),
            invalid_certificate: l(&self.invalid_certificate),
            failed: l(&self.failed),
            timed_out: l(&self.timed_out),
        }
    }
}

/// The line of `ingress stats` (nothing before the first TLS connection).
pub fn format_tls(c: &TlsCounters) -> String {
    if *c == TlsCounters::default() {
        return String::new();
    }
    format!(
        "tls: {} handshakes ({} resumed); refused: {} unrecognized name, {} invalid certificate; {} failed, {} timed out\n",
        c.handshakes, c.resumed, c.unrecognized_name, c.invalid_certificate, c.failed, c.timed_out
    )
}

/// Why a TLS handshake on an HTTPS listener did not complete (the `reason` label of
/// `ingress_tls_handshake_failures_total`), with its `/stats` counter.
type Failure = (&'static str, fn(&TlsCounters) -> u64);
const FAILURES: [Failure; 4] = [
    ("unrecognized_name", |c| c.unrecognized_name),
    ("invalid_certificate", |c| c.invalid_certificate),
    ("failed", |c| c.failed),
    ("timed_out", |c| c.timed_out),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
}

/// The TLS termination counters of `/stats` as Prometheus families (brought up to the
/// atomics' totals at each scrape, as the guard's and L4's are):
/// `ingress_tls_handshakes_total`, `ingress_tls_resumed_handshakes_total` and
/// `ingress_tls_handshake_failures_total{reason=unrecognized_name|invalid_certificate|failed|timed_out}`
/// (every reason present from the start, at 0).
#[derive(Debug, Default)]
pub struct TlsPrometheus {
    handshakes: prometheus_client::metrics::counter::Counter,
    resumed: prometheus_client::metrics::counter::Counter,
    failures: prometheus_client::metrics::family::Family<FailureLabels, prometheus_client::metrics::counter::Counter>,
}

impl TlsPrometheus {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("tls_handshakes", "TLS handshakes completed on HTTPS listeners", self.handshakes.clone());
        registry.register(
            "tls_resumed_handshakes",
            "TLS handshakes on HTTPS listeners that resumed a session (ticket or session ID)",
            self.resumed.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on HTTPS listeners refused or failed, by reason",
            self.failures.clone(),
        );
        for (reason, _) in FAILURES {
            let _ = self.failures.get_or_create(&FailureLabels { reason });
        }
    }

    /// Brings the families up to `c` (the counters only grow).
    pub fn set(&self, c: &TlsCounters) {
        let up = |counter: &prometheus_client::metrics::counter::Counter, total: u64| {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        };
        up(&self.handshakes, c.handshakes);
        up(&self.resumed, c.resumed);
        for (reason, get) in FAILURES {
            up(&self.failures.get_or_create(&FailureLabels { reason }), get(c));
        }
    }
}

#[cfg(test)]
mod prometheus_tests {
    use super::*;

    #[test]
    fn the_stats_counters_are_prometheus_families() {
        let p = TlsPrometheus::default();
        let mut registry = prometheus_client::registry::Registry::with_prefix("ingress");
        p.register(&mut registry);
        let text = |_: &TlsPrometheus| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        let before = text(&p);
        assert!(before.contains("ingress_tls_handshakes_total 0"), "{before}");
        assert!(before.contains(r#"ingress_tls_handshake_failures_total{reason="timed_out"} 0"#), "{before}");
        let m = TlsMetrics::default();
        m.handshake(false);
        m.handshake(true);
        m.handshake(true);
        m.unrecognized_name();
        m.invalid_certificate();
        m.invalid_certificate();
        m.failed();
        p.set(&m.snapshot());
        p.set(&m.snapshot()); // twice: totals, not increments
        let after = text(&p);
        for line in [
            "ingress_tls_handshakes_total 3",
            "ingress_tls_resumed_handshakes_total 2",
            r#"ingress_tls_handshake_failures_total{reason="unrecognized_name"} 1"#,
            r#"ingress_tls_handshake_failures_total{reason="invalid_certificate"} 2"#,
            r#"ingress_tls_handshake_failures_total{reason="failed"} 1"#,
            r#"ingress_tls_handshake_failures_total{reason="timed_out"} 0"#,
        ] {
            assert!(after.contains(line), "{line} in:\n{after}");
        }
    }
}
