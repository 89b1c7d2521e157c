//! Kubernetes route source: reflectors on Gateway, HTTPRoute, ReferenceGrant,
//! Service, EndpointSlice and Namespace ([`watch`]), and on each Secret an HTTPS
//! listener references ([`secrets`]); every change (debounced) rebuilds
//! the snapshot and publishes a new table. Watch errors, API server restarts and
//! `410 Expired` relists are handled by the watchers; the stores keep their last
//! state meanwhile, so the served table is never dropped. With `--write-status`,
//! HTTPRoute `status.parents` and Gateway listener status are written with
//! server-side apply under one field manager ([`status`]).

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::Notify;

use super::publish::Publisher;

pub mod client;
pub mod nodes;
pub mod secrets;
pub mod status;
pub mod watch;

#[cfg(test)]
mod fixtures;

pub use client::client;
use status::StatusWriter;
use watch::start_reflectors;

/// The one field manager every status write uses.
pub const FIELD_MANAGER: &str = "ebpf-host-ingress";
/// `controllerName` in HTTPRoute status.parents.
pub const CONTROLLER_NAME: &str = "openchoreo.dev/ebpf-host-ingress";
/// Quiet time before a change is compiled: a burst of watch events becomes one table.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("the API server serves no EndpointSlice kind in discovery.k8s.io (needs Kubernetes >= 1.17)")]
    NoEndpointSlices,
    #[error("a reflector stopped before its first list completed")]
    NotReady,
}

/// Runs the Kubernetes source: waits for the first complete lists, publishes, then
/// republishes on every change (debounced). Returns only on a start-up error.
pub async fn run(client: Client, publisher: Arc<Publisher>, write_status: bool) -> Result<(), KubeError> {
    let changed = Arc::new(Notify::new());
    let stores = start_reflectors(client.clone(), changed.clone()).await?;
    stores.wait_until_ready().await?;
    let mut writer = StatusWriter::new(client.clone());
    // the Secrets of HTTPS listeners, watched one by one (secrets.rs)
    let secret_watch = secrets::SecretWatch::new(client, changed.clone());
    loop {
        let res = loop {
            let mut res = stores.snapshot();
            secret_watch.fill(&mut res);
            if !secret_watch.follow(&secrets::referenced_secrets(&res, &publisher.mappings())).await {
                break res;
            }
        };
        let table = publisher.publish(&res);
        if write_status {
            // the TLSRoute version: known once its CRD is served (at start or later)
            writer.set_tls_routes(stores.tls_routes.get().map(|(_, ar)| ar.clone()));
            writer.write(&table, &res).await;
        }
        changed.notified().await;
        // Debounce: let the burst settle.
        loop {
            tokio::select! {
                _ = changed.notified() => continue,
                _ = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
    }
}
