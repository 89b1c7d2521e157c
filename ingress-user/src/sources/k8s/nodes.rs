//! The Node watcher: each Node's `spec.podCIDRs` and InternalIP, for the host routes
//! to the pods ([`crate::datapath::pod_routes::wanted_from_nodes`]). Needs `list` and
//! `watch` on `nodes` (cluster-scoped: a ClusterRole).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::datapath::pod_routes::NodeFacts;

/// What the route syncer needs of a Node: `spec.podCIDRs` (or the older single
/// `spec.podCIDR`) and the `InternalIP` addresses in `status.addresses`.
pub fn node_facts(n: &Node) -> NodeFacts {
    let spec = n.spec.as_ref();
    let mut pod_cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if let Some(c) = spec.and_then(|s| s.pod_cidr.clone())
        && !pod_cidrs.contains(&c)
    {
        pod_cidrs.insert(0, c);
    }
    let internal_ips = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| a.iter().filter(|a| a.type_ == "InternalIP").map(|a| a.address.clone()).collect())
        .unwrap_or_default();
    NodeFacts { name: n.metadata.name.clone().unwrap_or_default(), pod_cidrs, internal_ips }
}

/// Watches Nodes and sends the facts of all of them (sorted by name) on every change,
/// debounced by `debounce`. Runs until the receiver is dropped; watch errors are logged
/// and retried with backoff (the last facts stay).
pub async fn watch_nodes(client: Client, tx: watch::Sender<Vec<NodeFacts>>, debounce: Duration) {
    let (store, writer) = reflector::store::<Node>();
    let stream =
        reflector::reflector(writer, watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut ready = false;
    loop {
        let ev = if ready {
            tokio::select! {
                ev = stream.next() => ev,
                _ = tokio::time::sleep(debounce) => {
                    let mut facts: Vec<NodeFacts> = store.state().iter().map(|n| node_facts(n)).collect();
                    facts.sort_by(|a, b| a.name.cmp(&b.name));
                    if tx.send(facts).is_err() {
                        return;
                    }
                    ready = false;
                    continue;
                }
            }
        } else {
            stream.next().await
        };
        match ev {
            None => return,
            Some(Ok(watcher::Event::InitApply(_) | watcher::Event::Init)) => {}
            Some(Ok(_)) => ready = true,
            Some(Err(e)) => tracing::warn!(
                error = %e,
                "Node watch error (needs list/watch on nodes: a ClusterRole); retrying, host routes stay as they are"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    use super::*;

    #[test]
    fn facts_take_pod_cidrs_and_only_internal_ips() {
        let mut n = Node::default();
        n.metadata.name = Some("k3d-openchoreo-server-0".into());
        n.spec = Some(NodeSpec {
            pod_cidr: Some("10.42.0.0/24".into()),
            pod_cidrs: Some(vec!["10.42.0.0/24".into(), "fd00:42::/64".into()]),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress { type_: "Hostname".into(), address: "k3d-openchoreo-server-0".into() },
                NodeAddress { type_: "InternalIP".into(), address: "172.18.0.2".into() },
                NodeAddress { type_: "ExternalIP".into(), address: "203.0.113.9".into() },
            ]),
            ..Default::default()
        });
        let f = node_facts(&n);
        assert_eq!(f.name, "k3d-openchoreo-server-0");
        assert_eq!(f.pod_cidrs, ["10.42.0.0/24", "fd00:42::/64"], "podCIDR not repeated");
        assert_eq!(f.internal_ips, ["172.18.0.2"]);
    }

    #[test]
    fn old_single_pod_cidr_and_a_node_without_spec() {
        let n = Node {
            spec: Some(NodeSpec { pod_cidr: Some("10.42.1.0/24".into()), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(node_facts(&n).pod_cidrs, ["10.42.1.0/24"]);
        let f = node_facts(&Node::default());
        assert!(f.pod_cidrs.is_empty() && f.internal_ips.is_empty());
    }
}
