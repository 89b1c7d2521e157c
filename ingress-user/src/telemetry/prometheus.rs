//! Prometheus metrics for `GET /metrics`: per route and backend, requests by status
//! class, a latency histogram (to the response head), request and response body
//! bytes; connection gauges (active, upgraded).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::ProxyCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub backend: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub backend: String,
}

/// Labels of the XDP guard's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    pub port: u16,
    pub reason: String,
}

/// Labels of the joined pairs' choices (`--join-mode`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JoinLabels {
    pub class: String,
    pub mechanism: String,
    pub reason: String,
}

/// Labels of delayed binding's first-segment outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindLabels {
    pub outcome: String,
}

/// Labels of the L4 path's per-port counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4Labels {
    pub port: u16,
}

/// The L4 path's per-port counter families: name (without `_total`), help, how to read
/// the kernel's total from a port's counters.
type L4Family = (&'static str, &'static str, fn(&super::l4::L4PortCounters) -> u64);
const L4_FAMILIES: [L4Family; 8] = [
    ("l4_flows", "New L4 flows (conntrack entries created)", |p| p.flows),
    ("l4_packets", "Client-to-endpoint packets forwarded by the L4 path", |p| p.packets),
    ("l4_bytes", "Client-to-endpoint bytes (IP length) forwarded by the L4 path", |p| p.bytes),
    ("l4_reply_packets", "Endpoint-to-client packets reverse-NATed", |p| p.reply_packets),
    ("l4_reply_bytes", "Endpoint-to-client bytes (IP length) reverse-NATed", |p| p.reply_bytes),
    ("l4_no_endpoint_packets", "Packets to an L4 port without endpoint (passed untouched)", |p| p.no_endpoint),
    ("l4_fib_fallback_packets", "Rewritten packets handed to the kernel stack (no FIB route)", |p| p.fib_fallback),
    ("l4_conntrack_errors", "Flows the conntrack map could not take", |p| p.conntrack_errors),
];

#[derive(Clone)]
struct Buckets;
impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        // 50 us .. ~26 s
        Histogram::new(exponential_buckets(0.00005, 2.0, 20))
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, Buckets>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    connections: Gauge,
    upgraded: Gauge,
    spliced: Gauge,
    guard_drops: Family<GuardLabels, Counter>,
    guard_unchecked: Family<GuardLabels, Counter>,
    /// One family per `L4_FAMILIES` entry, in its order.
    l4: Vec<Family<L4Labels, Counter>>,
    l4_endpoints: Family<L4Labels, Gauge>,
    l4_conntrack_flows: Gauge,
    l4_conntrack_entries: Gauge,
    /// TLS passthrough outcomes and active connections (registered here).
    pub passthrough: super::passthrough::PassthroughMetrics,
    /// Joined pairs by class, mechanism and reason.
    join_choices: Family<JoinLabels, Counter>,
    /// Delayed binding (`--bind-in-kernel on`): no outcome series until [`Metrics::set_bind`]
    /// (hosts: 0 without binding).
    bind_first_segments: Family<BindLabels, Counter>,
    bind_hosts: Gauge,
    /// TLS termination (HTTPS listeners): `/stats` `tls` as families (telemetry/tls.rs).
    tls: super::tls::TlsPrometheus,
    /// The handles of each (route, backend) pair seen, so a request looks its series up
    /// by two shared strings instead of building label sets (and their strings) every time.
    handles: std::sync::RwLock<HashMap<Arc<str>, Vec<(Arc<str>, Arc<RouteHandles>)>>>,
    /// This instance's number, for the per-thread front of `handles` ([`LastHandles`]).
    id: u64,
}

/// The (route, backend) pairs a thread looked up last, per [`Metrics`] (by its `id`): a
/// request on a worker finds its series by two pointer comparisons, without the shared
/// lock of `handles` (whose reader count every worker would write). Labels are the
/// table's shared strings, so the same pair is the same pointers until the table
/// changes; the entries hold them, so a pointer is never reused for another label.
struct LastHandles(Vec<(u64, Arc<str>, Arc<str>, Arc<RouteHandles>)>);

/// Entries each thread keeps (the oldest goes first).
const LAST_HANDLES: usize = 16;

thread_local! {
    static LAST: std::cell::RefCell<LastHandles> = const { std::cell::RefCell::new(LastHandles(Vec::new())) };
}

/// More (route, backend) pairs than this in the handle cache: it starts over (the
/// families keep every series; only the shortcut is rebuilt).
const HANDLE_CACHE_MAX: usize = 4096;

/// The series of one (route, backend) pair: body byte counters, the latency histogram,
/// and the request counter per status class (created on first use, so a class never
/// seen does not show as a zero series).
pub struct RouteHandles {
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    latency: Histogram,
    classes: [std::sync::OnceLock<Counter>; 10],
    route: Arc<str>,
    backend: Arc<str>,
}

impl RouteHandles {
    /// Counts one answered request with its status and time to the response head.
    pub fn record(&self, metrics: &Metrics, status: u16, elapsed: Duration) {
        let class = (status / 100).min(9);
        self.classes[class as usize]
            .get_or_init(|| {
                let labels = RequestLabels {
                    route: self.route.to_string(),
                    backend: self.backend.to_string(),
                    class: format!("{class}xx"),
                };
                metrics.requests.get_or_create_owned(&labels)
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ingress");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, Buckets>::new_with_constructor(Buckets);
        let bytes_in = Family::<RouteLabels, Counter>::default();
        let bytes_out = Family::<RouteLabels, Counter>::default();
        let connections = Gauge::default();
        let upgraded = Gauge::default();
        let spliced = Gauge::default();
        registry.register("requests", "Requests by route, backend and status class", requests.clone());
        registry.register("request_duration_seconds", "Time to the response head", latency.clone());
        registry.register("request_body_bytes", "Request body bytes sent to backends", bytes_in.clone());
        registry.register("response_body_bytes", "Response body bytes sent to clients", bytes_out.clone());
        registry.register("client_connections", "Client connections open", connections.clone());
        registry.register("upgraded_connections", "Upgraded (WebSocket) connections open", upgraded.clone());
        registry.register("spliced_connections", "Connection pairs joined in the kernel (sockmap)", spliced.clone());
        let guard_drops = Family::<GuardLabels, Counter>::default();
        let guard_unchecked = Family::<GuardLabels, Counter>::default();
        registry.register("guard_drops", "Packets the XDP guard dropped, by port and reason", guard_drops.clone());
        registry.register(
            "guard_unchecked",
            "Packets the XDP guard passed without checking (malformed, long IPv6 header chains, fragments)",
            guard_unchecked.clone(),
        );
        let l4: Vec<Family<L4Labels, Counter>> = L4_FAMILIES
            .iter()
            .map(|(name, help, _)| {
                let f = Family::<L4Labels, Counter>::default();
                registry.register(*name, *help, f.clone());
                f
            })
            .collect();
        let l4_endpoints = Family::<L4Labels, Gauge>::default();
        let (l4_conntrack_flows, l4_conntrack_entries) = (Gauge::default(), Gauge::default());
        registry.register("l4_endpoints", "Endpoints an L4 port forwards new flows to", l4_endpoints.clone());
        registry.register("l4_conntrack_flows", "Live L4 flows in the conntrack map", l4_conntrack_flows.clone());
        registry.register(
            "l4_conntrack_entries",
            "Entries in the conntrack map (two per flow)",
            l4_conntrack_entries.clone(),
        );
        let passthrough = super::passthrough::PassthroughMetrics::default();
        passthrough.register(&mut registry);
        let tls = super::tls::TlsPrometheus::default();
        tls.register(&mut registry);
        let join_choices = Family::<JoinLabels, Counter>::default();
        registry.register(
            "join_choices",
            "Joined connection pairs by class (upgraded, splice_safe, passthrough), mechanism (joined_kernel, spliced_pipe, copied) and reason",
            join_choices.clone(),
        );
        let bind_first_segments = Family::<BindLabels, Counter>::default();
        registry.register(
            "bind_first_segments",
            "First segments after the edge SYN cookie, by outcome (bound: served by the pod through the kernel; fallback: handed to the agent's proxy)",
            bind_first_segments.clone(),
        );
        let bind_hosts = Gauge::default();
        registry.register("bind_hosts", "Hosts bound in the kernel now", bind_hosts.clone());
        Self {
            join_choices,
            bind_first_segments,
            bind_hosts,
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            connections,
            upgraded,
            spliced,
            guard_drops,
            guard_unchecked,
            l4,
            l4_endpoints,
            l4_conntrack_flows,
            l4_conntrack_entries,
            passthrough,
            tls,
            handles: Default::default(),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        }
    }
}

impl Metrics {
    /// The series of `route` and `backend` (empty strings: the request was not routed).
    pub fn handles(&self, route: &Arc<str>, backend: &Arc<str>) -> Arc<RouteHandles> {
        let mine = |e: &&(u64, Arc<str>, Arc<str>, Arc<RouteHandles>)| {
            e.0 == self.id && Arc::ptr_eq(&e.1, route) && Arc::ptr_eq(&e.2, backend)
        };
        if let Some(h) = LAST.with_borrow(|l| l.0.iter().find(mine).map(|e| e.3.clone())) {
            return h;
        }
        let h = self.shared_handles(route, backend);
        LAST.with_borrow_mut(|l| {
            if l.0.len() >= LAST_HANDLES {
                l.0.remove(0);
            }
            l.0.push((self.id, route.clone(), backend.clone(), h.clone()));
        });
        h
    }

    /// [`Metrics::handles`] from the shared cache (or new series).
    fn shared_handles(&self, route: &Arc<str>, backend: &Arc<str>) -> Arc<RouteHandles> {
        let found = |m: &HashMap<Arc<str>, Vec<(Arc<str>, Arc<RouteHandles>)>>| {
            m.get(&**route)?.iter().find(|(b, _)| **b == **backend).map(|(_, h)| h.clone())
        };
        if let Some(h) = found(&self.handles.read().unwrap_or_else(|e| e.into_inner())) {
            return h;
        }
        let mut cache = self.handles.write().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = found(&cache) {
            return h;
        }
        if cache.len() >= HANDLE_CACHE_MAX {
            cache.clear();
        }
        let l = RouteLabels { route: route.to_string(), backend: backend.to_string() };
        let h = Arc::new(RouteHandles {
            bytes_in: self.bytes_in.get_or_create_owned(&l),
            bytes_out: self.bytes_out.get_or_create_owned(&l),
            latency: self.latency.get_or_create_owned(&l),
            classes: Default::default(),
            route: route.clone(),
            backend: backend.clone(),
        });
        cache.entry(route.clone()).or_default().push((backend.clone(), h.clone()));
        h
    }

    /// Brings the guard's counters up to the kernel's totals (they only grow).
    pub fn set_guard(&self, rows: &[super::GuardCounter]) {
        for r in rows {
            let family = if r.verdict == "drop" { &self.guard_drops } else { &self.guard_unchecked };
            let c = family.get_or_create(&GuardLabels { port: r.port, reason: r.reason.clone() });
            let seen = c.get();
            if r.packets > seen {
                c.inc_by(r.packets - seen);
            }
        }
    }

    /// Brings the L4 families up to the kernel's per-port totals and the conntrack
    /// occupancy (a port's families appear once it is configured).
    pub fn set_l4(&self, v: &super::l4::L4View) {
        for p in &v.ports {
            let labels = L4Labels { port: p.port };
            for (family, (_, _, get)) in self.l4.iter().zip(L4_FAMILIES) {
                let c = family.get_or_create(&labels);
                let (total, seen) = (get(p), c.get());
                if total > seen {
                    c.inc_by(total - seen);
                }
            }
            self.l4_endpoints.get_or_create(&labels).set(p.endpoints as i64);
        }
        self.l4_conntrack_flows.set(v.conntrack_flows as i64);
        self.l4_conntrack_entries.set(v.conntrack_entries as i64);
    }

    /// Brings the join-choice counters up to the joiner's totals (they only grow).
    pub fn set_join_choices(&self, v: &crate::datapath::join_choice::JoinChoices) {
        for (class, c) in v.classes() {
            for (key, n) in &c.reasons {
                let (mechanism, reason) = key.split_once(':').unwrap_or((key.as_str(), ""));
                let labels = JoinLabels { class: class.into(), mechanism: mechanism.into(), reason: reason.into() };
                let counter = self.join_choices.get_or_create(&labels);
                let seen = counter.get();
                if *n > seen {
                    counter.inc_by(n - seen);
                }
            }
        }
    }

    /// Brings delayed binding's families up to the kernel's outcome totals and the
    /// number of hosts bound.
    pub fn set_bind(&self, v: &super::bind::BindView) {
        for (outcome, total) in &v.first_segment {
            let c = self.bind_first_segments.get_or_create(&BindLabels { outcome: outcome.clone() });
            let seen = c.get();
            if *total > seen {
                c.inc_by(total - seen);
            }
        }
        self.bind_hosts.set(v.hosts as i64);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self, counters: &ProxyCounters, spliced: u64) -> String {
        self.connections.set(counters.connections_active as i64);
        self.spliced.set(spliced as i64);
        self.upgraded.set(counters.upgraded_active as i64);
        self.tls.set(&counters.tls);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// A body that adds the length of every data frame to a counter as it streams.
pub struct Counted<B> {
    inner: B,
    counter: Counter,
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: Counter) -> Self {
        Self { inner, counter }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let p = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &p {
            if let Some(d) = f.data_ref() {
                self.counter.inc_by(d.len() as u64);
            }
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// For tests: a shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn exposition_has_the_families_and_counted_bytes() {
        let m = Metrics::default();
        let (route, backend): (Arc<str>, Arc<str>) = ("apps/r".into(), "apps/svc:80".into());
        m.handles(&route, &backend).record(&m, 200, Duration::from_millis(3));
        // looked up again by equal strings: the same series
        m.handles(&"apps/r".into(), &"apps/svc:80".into()).record(&m, 503, Duration::from_millis(1));
        let out = m.handles(&route, &backend).bytes_out.clone();
        let body = Counted::new(Full::new(Bytes::from_static(b"hello world")), out);
        let _ = body.collect().await.unwrap();
        let text = m.encode(&ProxyCounters { connections_active: 4, ..Default::default() }, 2);
        assert!(
            text.contains(r#"ingress_requests_total{route="apps/r",backend="apps/svc:80",class="2xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"class="5xx"} 1"#), "{text}");
        assert!(
            text.contains(r#"ingress_response_body_bytes_total{route="apps/r",backend="apps/svc:80"} 11"#),
            "{text}"
        );
        assert!(text.contains("ingress_request_duration_seconds_bucket"), "{text}");
        assert!(
            text.contains(r#"ingress_request_duration_seconds_count{route="apps/r",backend="apps/svc:80"} 2"#),
            "{text}"
        );
        // a class never seen is not a zero series
        assert!(!text.contains(r#"class="4xx""#), "{text}");
        assert!(text.contains("ingress_client_connections 4"), "{text}");
        assert!(text.contains("ingress_spliced_connections 2"), "{text}");
    }

    #[test]
    fn handles_are_per_metrics_and_by_label_not_by_pointer() {
        let (a, b) = (Metrics::default(), Metrics::default());
        let (route, backend): (Arc<str>, Arc<str>) = (Arc::from("apps/r#0"), Arc::from("apps/svc:80"));
        for _ in 0..3 {
            a.handles(&route, &backend).record(&a, 200, Duration::from_millis(1));
        }
        b.handles(&route, &backend).record(&b, 200, Duration::from_millis(1));
        // the same label in other strings (a new table): the same series
        let (route2, backend2): (Arc<str>, Arc<str>) = (Arc::from("apps/r#0"), Arc::from("apps/svc:80"));
        a.handles(&route2, &backend2).record(&a, 200, Duration::from_millis(1));
        let count = |m: &Metrics| {
            let text = m.encode(&ProxyCounters::default(), 0);
            text.lines()
                .find(|l| l.starts_with("ingress_request_duration_seconds_count{route=\"apps/r#0\""))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
                .unwrap_or_else(|| panic!("no count series: {text}"))
        };
        assert_eq!((count(&a), count(&b)), ("4".to_string(), "1".to_string()));
        // another thread finds the same series
        std::thread::scope(|s| {
            s.spawn(|| a.handles(&route, &backend).record(&a, 200, Duration::from_millis(1)));
        });
        assert_eq!(count(&a), "5");
    }

    #[test]
    fn join_choices_follow_the_joiners_totals() {
        use crate::datapath::join_choice::{ChoiceTally, JoinClass, Mechanism, Reason};
        let m = Metrics::default();
        let t = ChoiceTally::default();
        t.count(JoinClass::Upgraded, Mechanism::SplicedPipe, Reason::Bulk);
        m.set_join_choices(&t.view());
        t.count(JoinClass::Upgraded, Mechanism::SplicedPipe, Reason::Bulk);
        t.count(JoinClass::SpliceSafe, Mechanism::JoinedKernel, Reason::SmallMessages);
        m.set_join_choices(&t.view());
        m.set_join_choices(&t.view());
        let text = m.encode(&ProxyCounters::default(), 0);
        assert!(
            text.contains(r#"ingress_join_choices_total{class="upgraded",mechanism="spliced_pipe",reason="bulk"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ingress_join_choices_total{class="splice_safe",mechanism="joined_kernel",reason="small_messages"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn guard_counters_follow_the_kernel_totals() {
        let m = Metrics::default();
        let row = |reason: &str, verdict: &str, packets| super::super::GuardCounter {
            port: if verdict == "drop" { 8080 } else { 0 },
            reason: reason.into(),
            verdict: verdict.into(),
            packets,
            bytes: packets * 60,
        };
        m.set_guard(&[row("syn-rate", "drop", 5), row("malformed", "pass", 2)]);
        m.set_guard(&[row("syn-rate", "drop", 12), row("malformed", "pass", 2)]);
        let text = m.encode(&ProxyCounters::default(), 0);
        assert!(text.contains(r#"ingress_guard_drops_total{port="8080",reason="syn-rate"} 12"#), "{text}");
        assert!(text.contains(r#"ingress_guard_unchecked_total{port="0",reason="malformed"} 2"#), "{text}");
    }

    #[test]
    fn binding_families_appear_once_set_and_follow_the_kernel_totals() {
        let m = Metrics::default();
        let text = m.encode(&ProxyCounters::default(), 0);
        assert!(!text.contains("ingress_bind_first_segments_total{"), "no outcome without binding: {text}");
        assert!(text.contains("ingress_bind_hosts 0\n"), "{text}");
        let view = |bound, hosts| super::super::bind::BindView {
            hosts,
            first_segment: vec![("bound".into(), bound), ("fallback".into(), 1)],
            ..Default::default()
        };
        m.set_bind(&view(3, 2));
        m.set_bind(&view(7, 1));
        let text = m.encode(&ProxyCounters::default(), 0);
        assert!(text.contains("ingress_bind_first_segments_total{outcome=\"bound\"} 7\n"), "{text}");
        assert!(text.contains("ingress_bind_first_segments_total{outcome=\"fallback\"} 1\n"), "{text}");
        assert!(text.contains("ingress_bind_hosts 1\n"), "{text}");
        assert!(text.contains("# TYPE ingress_bind_first_segments counter"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn l4_counters_follow_the_kernel_totals_per_port() {
        use super::super::l4::{L4PortCounters, L4View};
        let m = Metrics::default();
        let view = |flows, bytes| L4View {
            ports: vec![
                L4PortCounters { port: 6550, endpoints: 1, flows, bytes, reply_bytes: 9000, ..Default::default() },
                L4PortCounters { port: 10081, endpoints: 2, ..Default::default() },
            ],
            conntrack_flows: 2,
            conntrack_entries: 6,
            ..Default::default()
        };
        m.set_l4(&view(3, 3000));
        m.set_l4(&view(5, 4000));
        let text = m.encode(&ProxyCounters::default(), 0);
        assert!(text.contains(r#"ingress_l4_flows_total{port="6550"} 5"#), "{text}");
        assert!(text.contains(r#"ingress_l4_bytes_total{port="6550"} 4000"#), "{text}");
        assert!(text.contains(r#"ingress_l4_reply_bytes_total{port="6550"} 9000"#), "{text}");
        assert!(text.contains(r#"ingress_l4_flows_total{port="10081"} 0"#), "{text}");
        assert!(text.contains(r#"ingress_l4_endpoints{port="10081"} 2"#), "{text}");
        assert!(text.contains("ingress_l4_conntrack_flows 2\n"), "{text}");
        assert!(text.contains("ingress_l4_conntrack_entries 6\n"), "{text}");
        assert!(text.contains("# TYPE ingress_l4_packets counter"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
