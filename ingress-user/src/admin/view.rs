//! `GET /routes` as one typed document: the compiled table, the route source's state
//! and how XDP is attached. The admin server writes it; `ingress routes` reads it.

use serde::{Deserialize, Serialize};

use crate::routing::view::TableView;
use crate::sources::publish::SourceState;
use crate::telemetry::XdpInfo;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoutesView {
    #[serde(flatten)]
    pub table: TableView,
    pub source: SourceState,
    pub xdp: Option<XdpInfo>,
}

/// Human-readable form for `ingress routes`.
pub fn format_routes(v: &RoutesView) -> String {
    let mut out = format!("source: {} (table generation {})\n", v.source.source, v.source.generation);
    if let Some(e) = &v.source.error {
        out += &format!("  ! newest input rejected, serving the last good table: {e}\n");
    }
    if let Some(x) = &v.xdp {
        out += &format!("XDP on {}: {} mode\n", x.interface, x.mode);
        if let Some(why) = &x.why_generic {
            out += &format!("  ! generic (skb) mode: {why}\n");
        }
    }
    out + &v.table.format_text()
}
