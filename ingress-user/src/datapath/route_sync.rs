//! Which host routes the agent keeps, and when: `--pod-route` flags once at start
//! (a failure stops the start), or, with the Kubernetes source and the eBPF dataplane,
//! the pod CIDRs of the Node objects, re-synced on every Node change. Routes stay when
//! the agent stops (the pinned data path keeps using them); `ingress detach` removes
//! them ([`super::routes::remove_our_routes`]).

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::watch;

use super::pod_routes::{PodRoute, wanted_from_nodes};
use super::routes;
use crate::sources::k8s::nodes::watch_nodes;

/// Installs the `--pod-route` routes; errors name each route that could not be added.
pub async fn install_flags(wanted: &[PodRoute]) -> Result<()> {
    let handle = routes::connect()?;
    let applied = routes::sync(&handle, wanted).await?;
    if !applied.errors.is_empty() {
        bail!("--pod-route: {}", applied.errors.join("; "));
    }
    Ok(())
}

/// Follows the Nodes: every change recomputes the wanted set and syncs the main table.
/// Runs until the watcher stops.
pub async fn follow_nodes(client: kube::Client) {
    let handle = match routes::connect() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "host routes from Nodes are off");
            return;
        }
    };
    let (tx, mut rx) = watch::channel(Vec::new());
    tokio::spawn(watch_nodes(client, tx, crate::sources::k8s::DEBOUNCE));
    while rx.changed().await.is_ok() {
        let nodes = rx.borrow_and_update().clone();
        let local = routes::local_addresses(&handle).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list local addresses; no node is taken for this host");
            Vec::new()
        });
        let (wanted, problems) = wanted_from_nodes(&nodes, &local);
        for p in &problems {
            tracing::warn!("host routes: {p}");
        }
        match routes::sync(&handle, &wanted).await {
            Ok(a) if !a.plan.is_empty() => {
                tracing::info!(nodes = nodes.len(), wanted = wanted.len(), "host routes synced")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "host routes not synced; retrying on the next Node change"),
        }
        // a burst of Node updates becomes one sync
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
