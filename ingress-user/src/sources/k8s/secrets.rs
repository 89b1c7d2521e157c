//! The Secrets of HTTPS listeners: watched one by one, only those the served
//! Gateways' certificateRefs name (a reflector per `namespace/name`, a list/watch with
//! `fieldSelector=metadata.name=NAME` in its namespace, which RBAC `resourceNames` can
//! grant), never every Secret of the cluster. The set follows the Gateways: before each
//! publish the referenced set is computed from the snapshot; new references get a
//! reflector (and the publish waits, bounded, for its first list, so a new listener does
//! not flap through `InvalidCertificateRef`), dropped ones are stopped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::config::ListenMapping;
use crate::resources::{ObjectKey, Resources, namespace_of};

/// How long a publish waits for a newly referenced Secret's first list.
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

struct Watched {
    store: Store<Secret>,
    task: tokio::task::JoinHandle<()>,
}

/// The reflectors on referenced Secrets.
pub struct SecretWatch {
    client: Client,
    changed: Arc<Notify>,
    watched: Mutex<BTreeMap<ObjectKey, Watched>>,
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        for w in self.watched.lock().expect("secret watches").values() {
            w.task.abort();
        }
    }
}

impl SecretWatch {
    pub fn new(client: Client, changed: Arc<Notify>) -> Self {
        Self { client, changed, watched: Mutex::new(BTreeMap::new()) }
    }

    /// Watches exactly `wanted`: starts reflectors for new keys (and waits, at most
    /// [`FIRST_LIST_WAIT`], for their first lists), stops the others. Returns whether
    /// a reflector was started (the snapshot should then be taken again).
    pub async fn follow(&self, wanted: &[ObjectKey]) -> bool {
        let mut started = Vec::new();
        {
            let mut w = self.watched.lock().expect("secret watches");
            w.retain(|k, v| {
                let keep = wanted.contains(k);
                if !keep {
                    tracing::info!(secret = %k, "no listener references this Secret any more: not watched");
                    v.task.abort();
                }
                keep
            });
            for k in wanted {
                if w.contains_key(k) {
                    continue;
                }
                tracing::info!(secret = %k, "watching the Secret of an HTTPS listener");
                let watched = self.spawn(k);
                started.push(watched.store.clone());
                w.insert(k.clone(), watched);
            }
        }
        for s in &started {
            // a Secret that does not exist lists empty (ready); a forbidden one stays
            // unready and its watch error is logged: go on without it
            let _ = tokio::time::timeout(FIRST_LIST_WAIT, s.wait_until_ready()).await;
        }
        !started.is_empty()
    }

    fn spawn(&self, key: &ObjectKey) -> Watched {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        let changed = self.changed.clone();
        let secret = key.to_string();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(_) => changed.notify_one(),
                    Err(e) => tracing::warn!(%secret, error = %e,
                        "watch error on a listener's Secret (does rbac.yaml grant get/list/watch on it?); retrying"),
                }
            }
        });
        Watched { store, task }
    }

    /// Adds the watched Secrets to a snapshot.
    pub fn fill(&self, res: &mut Resources) {
        for w in self.watched.lock().expect("secret watches").values() {
            for s in w.store.state() {
                res.secrets.insert(crate::resources::key_of(&s.metadata), (*s).clone());
            }
        }
    }
}

/// The Secrets the served HTTPS listeners may read: for each mapping, its Gateway's
/// HTTPS listeners (on the mapped port, if one is given), their certificateRefs to core
/// Secrets, cross-namespace ones only with a ReferenceGrant. Sorted, without repeats.
pub fn referenced_secrets(res: &Resources, mappings: &[ListenMapping]) -> Vec<ObjectKey> {
    let mut out = Vec::new();
    for m in mappings {
        let Some(gw) = res.gateways.get(&m.gateway) else { continue };
        let ns = namespace_of(&gw.metadata);
        for l in &gw.spec.listeners {
            if l.protocol != "HTTPS" || m.listener_port.is_some_and(|p| i32::from(p) != l.port) {
                continue;
            }
            out.extend(crate::routing::tls::permitted_refs(res, &ns, l));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_secrets_of_served_https_listeners_are_watched() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: x
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: a, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: a-tls}, {name: c, namespace: certs}, {name: d, namespace: denied}]}}
  - {name: b, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: b-tls}, {kind: ConfigMap, name: cm}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: infra}
spec:
  gatewayClassName: x
  listeners:
  - {name: a, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: not-served}]}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: '', kind: Secret}]
";
        let mut res = Resources::default();
        let mut errors = Vec::new();
        crate::sources::manifest::load_text(std::path::Path::new("t.yaml"), yaml, &mut res, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let keys = |listen: &[&str]| {
            let ms: Vec<ListenMapping> = listen.iter().map(|l| l.parse().unwrap()).collect();
            referenced_secrets(&res, &ms).iter().map(|k| k.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(keys(&["127.0.0.1:1=infra/gw:443"]), ["certs/c", "infra/a-tls"], "no grant for denied/d");
        assert_eq!(
            keys(&["127.0.0.1:1=infra/gw:443", "127.0.0.1:2=infra/gw"]),
            ["certs/c", "infra/a-tls", "infra/b-tls"]
        );
        assert!(keys(&["127.0.0.1:1=infra/gw:80"]).is_empty(), "an HTTP mapping reads no Secret");
    }
}
