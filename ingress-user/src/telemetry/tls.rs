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
