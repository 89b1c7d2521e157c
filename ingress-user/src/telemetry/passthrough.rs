//! TLS passthrough counters: one Prometheus family `ingress_passthrough_connections_total`
//! by outcome (the one source of truth), its `/stats` view, and a gauge of the
//! connections passing through now.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// What happened to one connection on a TLS passthrough listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Routed by SNI and joined to a pod in the kernel (sockmap).
    Kernel,
    /// Routed by SNI and copied to the pod in user space.
    Userspace,
    /// A ClientHello without server_name: closed.
    NoSni,
    /// No TLSRoute hostname matches the SNI: closed.
    NoRoute,
    /// The route's weighted pick has no usable backend (invalid ref, no ready endpoint): closed.
    NoBackend,
    /// Every endpoint tried refused or timed out: closed.
    BackendConnectFailed,
    /// Not TLS, a malformed or oversize ClientHello, none in time, or closed before one.
    Rejected,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Self::Kernel,
        Self::Userspace,
        Self::NoSni,
        Self::NoRoute,
        Self::NoBackend,
        Self::BackendConnectFailed,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Userspace => "userspace",
            Self::NoSni => "no_sni",
            Self::NoRoute => "no_route",
            Self::NoBackend => "no_backend",
            Self::BackendConnectFailed => "backend_connect_failed",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// The live counters (cheap clones of the registered metrics).
#[derive(Debug, Default)]
pub struct PassthroughMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    active: Gauge,
    active_now: Arc<AtomicU64>,
}

/// Counts a connection as passing through until dropped.
pub struct PassingGuard(Gauge, Arc<AtomicU64>);

impl Drop for PassingGuard {
    fn drop(&mut self) {
        self.0.dec();
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PassthroughMetrics {
    /// Registers the families (called once, on the agent's registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "passthrough_connections",
            "Connections on TLS passthrough listeners by outcome: kernel or userspace (routed by SNI), no_sni, no_route, no_backend, backend_connect_failed, rejected",
            self.outcomes.clone(),
        );
        registry.register("passthrough_active", "TLS passthrough connections open to a pod", self.active.clone());
        // every outcome shows from the start, at 0
        for o in Outcome::ALL {
            let _ = self.outcomes.get_or_create(&OutcomeLabels { outcome: o.as_str() });
        }
    }

    pub fn count(&self, o: Outcome) {
        self.outcomes.get_or_create(&OutcomeLabels { outcome: o.as_str() }).inc();
    }

    /// A connection joined to a pod, counted active while the guard lives.
    pub fn passing(&self) -> PassingGuard {
        self.active.inc();
        self.active_now.fetch_add(1, Ordering::Relaxed);
        PassingGuard(self.active.clone(), self.active_now.clone())
    }

    pub fn snapshot(&self) -> PassthroughCounters {
        let get = |o: Outcome| self.outcomes.get_or_create(&OutcomeLabels { outcome: o.as_str() }).get();
        let c = PassthroughCounters {
            connections: 0,
            active: self.active_now.load(Ordering::Relaxed),
            kernel: get(Outcome::Kernel),
            userspace: get(Outcome::Userspace),
            no_sni: get(Outcome::NoSni),
            no_route: get(Outcome::NoRoute),
            no_backend: get(Outcome::NoBackend),
            backend_connect_failures: get(Outcome::BackendConnectFailed),
            rejected: get(Outcome::Rejected),
        };
        PassthroughCounters {
            connections: c.kernel
                + c.userspace
                + c.no_sni
                + c.no_route
                + c.no_backend
                + c.backend_connect_failures
                + c.rejected,
            ..c
        }
    }
}

/// The `passthrough` part of `/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PassthroughCounters {
    /// Connections whose outcome is known (the sum of the others but `active`).
    pub connections: u64,
    /// Joined to a pod now.
    pub active: u64,
    /// Routed by SNI: joined in the kernel (sockmap), or copied in user space.
    pub kernel: u64,
    pub userspace: u64,
    /// Closed: no server_name; no TLSRoute for it; no usable backend; no endpoint answered.
    pub no_sni: u64,
    pub no_route: u64,
    pub no_backend: u64,
    pub backend_connect_failures: u64,
    /// Closed: not TLS, a malformed or oversize ClientHello, or none within --head-timeout.
    pub rejected: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_add_up_and_show_in_the_exposition() {
        let m = PassthroughMetrics::default();
        let mut registry = Registry::with_prefix("ingress");
        m.register(&mut registry);
        m.count(Outcome::Kernel);
        m.count(Outcome::NoSni);
        m.count(Outcome::NoSni);
        let guard = m.passing();
        let s = m.snapshot();
        assert_eq!((s.connections, s.kernel, s.no_sni, s.no_route, s.active), (3, 1, 2, 0, 1));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("ingress_passthrough_connections_total{outcome=\"no_sni\"} 2"), "{text}");
        assert!(text.contains("ingress_passthrough_connections_total{outcome=\"no_route\"} 0"), "{text}");
        assert!(text.contains("ingress_passthrough_active 1"), "{text}");
        drop(guard);
        assert_eq!(m.snapshot().active, 0);
    }
}
