//! What the agent reports: [`counters`] (the proxy's live counters), [`prometheus`]
//! (`/metrics` families and the byte-counting body), [`view`] (the typed `/stats`
//! document, shared by the admin server and `ingress stats`).

pub mod counters;
pub mod l4;
// TLS passthrough outcomes (proxy/passthrough.rs)
pub mod passthrough;
pub mod prometheus;
pub mod tls;
pub mod view;
// delayed binding (--bind-in-kernel on): the kernel pieces and BIND_FIRST_COUNTS
pub mod bind;

pub use counters::ProxyMetrics;
pub use view::{GuardCounter, PodLegCounters, ProxyCounters, SpliceCounters, StatsView, XdpCounter, XdpInfo, format_table};
