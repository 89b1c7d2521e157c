//! The proxy's live counters (atomics shared by the connection tasks); a snapshot is
//! the [`ProxyCounters`] of `/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::ProxyCounters;

/// Lock-free request counters shared by the proxy tasks.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    // bumped on every request by every worker: one cache line per thread (`Sharded`)
    requests: Sharded,
    by_class: [Sharded; 4],
    backend_errors: Sharded,
    upgraded_active: std::sync::Arc<AtomicU64>,
    upgraded_total: AtomicU64,
    connections_active: std::sync::Arc<AtomicU64>,
    parked: AtomicU64,
    // the per-source cap (proxy/sources.rs)
    evicted: AtomicU64,
    refused: AtomicU64,
    // HTTP/2 (proxy/h2.rs)
    h2_connections: AtomicU64,
    h2_reset_floods: AtomicU64,
    /// TLS termination (HTTPS listeners)
    pub tls: super::tls::TlsMetrics,
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

    /// An idle connection was closed to admit a new one from its source.
    pub fn evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// A new connection was refused: every connection of its source was busy.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection speaks HTTP/2.
    pub fn h2_connection(&self) {
        self.h2_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP/2 connection was closed for cancelling too many streams (rapid reset).
    pub fn h2_reset_flood(&self) {
        self.h2_reset_floods.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request(&self) {
        self.requests.add(1);
    }

    pub fn response(&self, status: u16) {
        if (200..600).contains(&status) {
            self.by_class[(status / 100 - 2) as usize].add(1);
        }
    }

    pub fn backend_error(&self) {
        self.backend_errors.add(1);
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
        let c = |i: usize| self.by_class[i].get();
        ProxyCounters {
            requests: self.requests.get(),
            upgraded_active: self.upgraded_active.load(Ordering::Relaxed),
            upgraded_total: self.upgraded_total.load(Ordering::Relaxed),
            connections_active: self.connections_active.load(Ordering::Relaxed),
            connections_parked: self.parked.load(Ordering::Relaxed),
            responses_2xx: c(0),
            responses_3xx: c(1),
            responses_4xx: c(2),
            responses_5xx: c(3),
            backend_errors: self.backend_errors.get(),
            connections_evicted: self.evicted.load(Ordering::Relaxed),
            connections_refused: self.refused.load(Ordering::Relaxed),
            h2_connections: self.h2_connections.load(Ordering::Relaxed),
            h2_reset_floods: self.h2_reset_floods.load(Ordering::Relaxed),
            tls: self.tls.snapshot(),
            workers: Vec::new(),
        }
    }
}

/// A counter bumped from every worker thread, read rarely: a slot per cache line, each
/// thread adding to its own (threads beyond [`SLOTS`] share), the value their sum. On the
/// request path no two workers write the same line.
#[derive(Debug, Default)]
pub struct Sharded([Slot; SLOTS]);

const SLOTS: usize = 8;

#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot(AtomicU64);

/// This thread's slot: threads take slots in the order they first count.
fn slot() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

impl Sharded {
    pub fn add(&self, n: u64) {
        self.0[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn sharded_counts_add_up_over_threads() {
        let c = std::sync::Arc::new(Sharded::default());
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(i + 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 1000 * (1 + 2 + ... + 12)
        assert_eq!(c.get(), 78_000);
        assert!(c.0.iter().filter(|s| s.0.load(Ordering::Relaxed) > 0).count() > 1, "spread over slots");
    }
}
