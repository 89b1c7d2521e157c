//! Admin HTTP endpoint: `GET /stats` (JSON counters), `GET /routes` (the compiled
//! table and the route source's state), `GET /readyz`: 200 when every listen address
//! has a Gateway listener to serve and the newest input was accepted; otherwise 503
//! with the reasons (traffic is still served from the last good table).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::RoutesView;
use crate::datapath::{GuardMaps, StatsMap};
use crate::proxy::Proxy;
use crate::routing::TableHandle;
use crate::routing::view::TableView;
use crate::sources::publish::Publisher;
use crate::telemetry::{StatsView, XdpInfo};

pub struct Admin {
    pub proxy: Arc<Proxy>,
    pub table: TableHandle,
    pub publisher: Arc<Publisher>,
    pub dataplane: String,
    pub xdp: Option<XdpInfo>,
    pub stats_map: Option<Mutex<StatsMap>>,
    /// L4 forwarding, when `--l4` is given.
    pub l4: Option<Arc<crate::datapath::l4_maps::L4Runtime>>,
    /// The XDP guard's maps (ebpf dataplane).
    pub guard: Option<Mutex<GuardMaps>>,
    /// Delayed binding, with `--bind-in-kernel on`.
    pub bind: Option<Arc<crate::datapath::bind_runtime::BindRuntime>>,
}

impl Admin {
    pub fn stats(&self) -> StatsView {
        let xdp_counters = match &self.stats_map {
            Some(m) => match m.lock().expect("stats map lock").read() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reading XDP counters failed");
                    vec![]
                }
            },
            None => vec![],
        };
        StatsView {
            dataplane: self.dataplane.clone(),
            xdp: self.xdp.clone(),
            xdp_counters,
            proxy: crate::telemetry::ProxyCounters {
                workers: self.proxy.worker_stats.snapshot(),
                ..self.proxy.metrics.snapshot()
            },
            splice: self.proxy.joiner().counters(),
            l4: self.l4.as_ref().map(|l| l.view()),
            guard: self.guard_counters(),
            passthrough: self.proxy.prom.passthrough.snapshot(),
            bind: self.bind.as_ref().map(|b| b.view()),
            pod_leg: crate::datapath::pod_leg::installed().map(|l| l.counters()),
        }
    }

    /// The XDP guard's counters (none without the eBPF dataplane).
    fn guard_counters(&self) -> Vec<crate::telemetry::GuardCounter> {
        let Some(m) = &self.guard else {
            return vec![];
        };
        m.lock().expect("guard maps lock").read().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the XDP guard's counters failed");
            vec![]
        })
    }

    /// `/routes`. A host the engine finds splice-safe is still not spliced when the
    /// agent adds headers to every request or has no sockmap program: it says so.
    pub fn routes(&self) -> RoutesView {
        let mut table = TableView::of(&self.table.load());
        if self.proxy.config().forwarded_headers {
            table.not_spliced_because(
                "X-Forwarded-* headers are added to every request (`--forwarded-headers off` allows splicing)",
            );
        } else if !self.proxy.joiner().available() {
            table.not_spliced_because("the sockmap program is not loaded (eBPF dataplane needed)");
        }
        // delayed binding: nothing is bound while the proxy adds headers to requests
        let config = self.proxy.config();
        if let Some(why) = crate::routing::kernel_bind::runtime_reason(config.forwarded_headers, config.request_ids) {
            table.not_bound_because(why);
        }
        // and the hosts the running binding left out (e.g. no pod namespace found)
        if let Some(b) = &self.bind {
            table.apply_bind_decisions(&b.decisions());
        }
        RoutesView { table, source: self.publisher.state(), xdp: self.xdp.clone() }
    }

    /// `/metrics`: the proxy's families, and the L4 ones when configured.
    fn metrics_text(&self) -> String {
        if let Some(l4) = &self.l4 {
            self.proxy.prom.set_l4(&l4.view());
        }
        self.proxy.prom.set_join_choices(&self.proxy.joiner().counters().choice);
        if let Some(b) = &self.bind {
            self.proxy.prom.set_bind(&b.view());
        }
        self.proxy.prom.encode(&self.proxy.metrics.snapshot(), self.splice_active())
    }

    /// Pairs joined in the kernel right now.
    fn splice_active(&self) -> u64 {
        self.proxy.joiner().counters().kernel_active
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/stats" => json(StatusCode::OK, serde_json::to_string_pretty(&self.stats()).expect("stats serialize")),
            "/metrics" => {
                self.proxy.prom.set_guard(&self.guard_counters());
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Full::new(self.metrics_text().into()))
                    .expect("response")
            }
            "/routes" => json(StatusCode::OK, serde_json::to_string_pretty(&self.routes()).expect("routes serialize")),
            "/readyz" => {
                let t = self.table.load();
                let state = self.publisher.state();
                let mut problems: Vec<String> = t
                    .listeners
                    .iter()
                    .filter(|l| l.listeners.is_empty())
                    .flat_map(|l| l.problems.iter().cloned())
                    .collect();
                if state.generation == 0 {
                    problems.push("no routing table loaded yet".into());
                }
                if let Some(e) = &state.error {
                    problems.push(format!(
                        "{}: newest input rejected, still serving the last good routing table (generation {}): {e}",
                        state.source, state.generation
                    ));
                }
                if problems.is_empty() {
                    text(StatusCode::OK, "ok\n".into())
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", problems.join("\n")))
                }
            }
            _ => text(StatusCode::NOT_FOUND, "endpoints: /stats /metrics /routes /readyz\n".into()),
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(body.into()))
        .expect("response")
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .expect("response")
}
