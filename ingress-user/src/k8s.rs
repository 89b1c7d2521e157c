//! Kubernetes route source: reflectors on Gateway, HTTPRoute, ReferenceGrant,
//! Service, EndpointSlice and Namespace; every change (debounced) rebuilds the
//! snapshot and publishes a new table. Watch errors, API server restarts and
//! `410 Expired` relists are handled by the watchers; the stores keep their last
//! state meanwhile, so the served table is never dropped. With `--write-status`,
//! HTTPRoute `status.parents` and Gateway listener status are written with
//! server-side apply under one field manager.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::resources::{Resources, key_of};
use crate::routing::{ParentStatus, Table};
use crate::source::Publisher;

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

/// The reflector stores the snapshot is built from.
#[derive(Clone)]
pub struct Stores {
    pub gateways: Store<Gateway>,
    pub routes: Store<HttpRoute>,
    pub grants: Store<ReferenceGrant>,
    pub services: Store<Service>,
    /// EndpointSlices as dynamic objects: discovery.k8s.io/v1, or v1beta1 on old servers.
    pub slices: Store<DynamicObject>,
    pub namespaces: Store<Namespace>,
}

/// An EndpointSlice of any served version as the v1 type (v1beta1 has the same
/// addresses, conditions and ports; its `topology` is ignored).
pub fn endpoint_slice_from_dynamic(obj: &DynamicObject) -> Option<EndpointSlice> {
    let mut v = serde_json::to_value(obj).ok()?;
    v["apiVersion"] = json!("discovery.k8s.io/v1");
    v["kind"] = json!("EndpointSlice");
    match serde_json::from_value(v) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(name = ?obj.metadata.name, error = %e, "skipping an EndpointSlice that does not parse");
            None
        }
    }
}

impl Stores {
    /// Every object in the stores, as the engine's input.
    pub fn snapshot(&self) -> Resources {
        let mut res = Resources::default();
        for o in self.gateways.state() {
            res.gateways.insert(key_of(&o.metadata), (*o).clone());
        }
        for o in self.routes.state() {
            res.http_routes.insert(key_of(&o.metadata), (*o).clone());
        }
        for o in self.grants.state() {
            res.reference_grants.insert(key_of(&o.metadata), (*o).clone());
        }
        for o in self.services.state() {
            res.services.insert(key_of(&o.metadata), (*o).clone());
        }
        for o in self.slices.state() {
            if let Some(s) = endpoint_slice_from_dynamic(&o) {
                res.endpoint_slices.insert(key_of(&s.metadata), s);
            }
        }
        for o in self.namespaces.state() {
            res.namespaces.insert(o.metadata.name.clone().unwrap_or_default(), (*o).clone());
        }
        res
    }

    async fn wait_until_ready(&self) -> Result<(), KubeError> {
        let r = tokio::try_join!(
            self.gateways.wait_until_ready(),
            self.routes.wait_until_ready(),
            self.grants.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
        r.map(|_| ()).map_err(|_| KubeError::NotReady)
    }
}

/// Drives one reflector forever; every event (and every error, logged) wakes `changed`.
fn spawn_reflector<K>(what: &'static str, api: Api<K>, writer: reflector::store::Writer<K>, changed: Arc<Notify>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                // The watcher retries with backoff and relists after 410 Expired; the
                // store keeps its last state until the relist completes.
                Err(e) => tracing::warn!(kind = what, error = %e, "watch error; retrying, the served table stays"),
            }
        }
    });
}

/// Starts the reflectors. EndpointSlices use the version the server recommends.
pub async fn start_reflectors(client: Client, changed: Arc<Notify>) -> Result<Stores, KubeError> {
    let discovery = kube::discovery::Discovery::new(client.clone()).filter(&["discovery.k8s.io"]).run().await?;
    let (slice_ar, _) = discovery
        .get("discovery.k8s.io")
        .and_then(|g| g.recommended_kind("EndpointSlice"))
        .ok_or(KubeError::NoEndpointSlices)?;
    tracing::info!(version = %slice_ar.api_version, "watching EndpointSlices");

    let (gateways, w) = reflector::store();
    spawn_reflector("Gateway", Api::<Gateway>::all(client.clone()), w, changed.clone());
    let (routes, w) = reflector::store();
    spawn_reflector("HTTPRoute", Api::<HttpRoute>::all(client.clone()), w, changed.clone());
    let (grants, w) = reflector::store();
    spawn_reflector("ReferenceGrant", Api::<ReferenceGrant>::all(client.clone()), w, changed.clone());
    let (services, w) = reflector::store();
    spawn_reflector("Service", Api::<Service>::all(client.clone()), w, changed.clone());
    let (namespaces, w) = reflector::store();
    spawn_reflector("Namespace", Api::<Namespace>::all(client.clone()), w, changed.clone());
    let w = reflector::store::Writer::<DynamicObject>::new(slice_ar.clone());
    let slices = w.as_reader();
    spawn_reflector("EndpointSlice", Api::<DynamicObject>::all_with(client, &slice_ar), w, changed);
    Ok(Stores { gateways, routes, grants, services, slices, namespaces })
}

/// Runs the Kubernetes source: waits for the first complete lists, publishes, then
/// republishes on every change (debounced). Returns only on a start-up error.
pub async fn run(client: Client, publisher: Arc<Publisher>, write_status: bool) -> Result<(), KubeError> {
    let changed = Arc::new(Notify::new());
    let stores = start_reflectors(client.clone(), changed.clone()).await?;
    stores.wait_until_ready().await?;
    let mut writer = StatusWriter::new(client);
    loop {
        let res = stores.snapshot();
        let table = publisher.publish(&res);
        if write_status {
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

/// Writes statuses that changed since the last write (server-side apply).
pub struct StatusWriter {
    client: Client,
    last: HashMap<String, Value>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Condition JSON, keeping `lastTransitionTime` from `previous` when the status did not change.
fn condition_json(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Value],
) -> Value {
    let status = if status { "True" } else { "False" };
    let ltt = previous
        .iter()
        .find(|c| c["type"] == kind && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
        .unwrap_or_else(now);
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation.unwrap_or(0),
        "lastTransitionTime": ltt,
    })
}

/// The server-side-apply body for an HTTPRoute's status: one `parents` entry per
/// parentRef to a served Gateway.
pub fn route_status_body(route: &HttpRoute, parents: &[ParentStatus]) -> Value {
    let generation = route.metadata.generation;
    let previous: Vec<Value> = route
        .status
        .as_ref()
        .map(|s| {
            s.parents.iter().flat_map(|p| p.conditions.iter()).filter_map(|c| serde_json::to_value(c).ok()).collect()
        })
        .unwrap_or_default();
    let parents: Vec<Value> = parents
        .iter()
        .map(|p| {
            let mut parent_ref = json!({
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "namespace": p.gateway.namespace,
                "name": p.gateway.name,
            });
            if let Some(s) = &p.section_name {
                parent_ref["sectionName"] = json!(s);
            }
            if let Some(port) = p.port {
                parent_ref["port"] = json!(port);
            }
            let conditions: Vec<Value> = p
                .conditions
                .iter()
                .map(|c| condition_json(&c.kind, c.status, &c.reason, &c.message, generation, &previous))
                .collect();
            json!({"parentRef": parent_ref, "controllerName": CONTROLLER_NAME, "conditions": conditions})
        })
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": route.metadata.name, "namespace": route.metadata.namespace},
        "status": {"parents": parents},
    })
}

/// The server-side-apply body for a served Gateway's status: Accepted/Programmed, and
/// per served listener the attached route count.
pub fn gateway_status_body(gw: &Gateway, table: &Table) -> Value {
    let key = key_of(&gw.metadata);
    let generation = gw.metadata.generation;
    let previous: Vec<Value> = gw
        .status
        .as_ref()
        .map(|s| {
            let top = s.conditions.iter().flatten();
            let listeners = s.listeners.iter().flatten().flat_map(|l| l.conditions.iter());
            top.chain(listeners).filter_map(|c| serde_json::to_value(c).ok()).collect()
        })
        .unwrap_or_default();
    let mut listeners = Vec::new();
    for lt in table.listeners.iter().filter(|l| l.gateway == key) {
        for (name, _) in &lt.listeners {
            let attached = format!("{key}/{name}");
            let count = table.routes.iter().filter(|r| r.attached.contains(&attached)).count();
            listeners.push(json!({
                "name": name,
                "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                "attachedRoutes": count,
                "conditions": [
                    condition_json("Accepted", true, "Accepted", "listener served by the host ingress", generation, &previous),
                    condition_json("Programmed", true, "Programmed", "listener served by the host ingress", generation, &previous),
                    condition_json("ResolvedRefs", true, "ResolvedRefs", "all references resolved", generation, &previous),
                ],
            }));
        }
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": gw.metadata.name, "namespace": gw.metadata.namespace},
        "status": {
            "conditions": [
                condition_json("Accepted", true, "Accepted", "served by the host ingress", generation, &previous),
                condition_json("Programmed", true, "Programmed", "served by the host ingress", generation, &previous),
            ],
            "listeners": listeners,
        },
    })
}

/// Drops what changes on every write, to compare bodies.
fn comparable(v: &Value) -> String {
    let mut v = v.clone();
    strip_times(&mut v);
    v.to_string()
}

fn strip_times(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("lastTransitionTime");
            m.values_mut().for_each(strip_times);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_times),
        _ => {}
    }
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self { client, last: HashMap::new() }
    }

    pub async fn write(&mut self, table: &Table, res: &Resources) {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        for report in &table.routes {
            let Some(route) = res.http_routes.iter().find(|(k, _)| k.to_string() == report.route).map(|(_, r)| r)
            else {
                continue;
            };
            if report.parents.is_empty() {
                continue;
            }
            let body = route_status_body(route, &report.parents);
            let id = format!("HTTPRoute {}", report.route);
            if self.last.get(&id).map(comparable) == Some(comparable(&body)) {
                continue;
            }
            let api: Api<HttpRoute> =
                Api::namespaced(self.client.clone(), route.metadata.namespace.as_deref().unwrap_or("default"));
            match api.patch_status(route.metadata.name.as_deref().unwrap_or(""), &pp, &Patch::Apply(&body)).await {
                Ok(_) => {
                    self.last.insert(id, body);
                }
                Err(e) => {
                    tracing::warn!(route = %report.route, error = %e, "writing HTTPRoute status failed; will retry on the next change")
                }
            }
        }
        let mut gateways: Vec<_> = table.listeners.iter().map(|l| l.gateway.clone()).collect();
        gateways.sort();
        gateways.dedup();
        for key in gateways {
            let Some(gw) = res.gateways.get(&key) else { continue };
            let body = gateway_status_body(gw, table);
            let id = format!("Gateway {key}");
            if self.last.get(&id).map(comparable) == Some(comparable(&body)) {
                continue;
            }
            let api: Api<Gateway> = Api::namespaced(self.client.clone(), &key.namespace);
            match api.patch_status(&key.name, &pp, &Patch::Apply(&body)).await {
                Ok(_) => {
                    self.last.insert(id, body);
                }
                Err(e) => {
                    tracing::warn!(gateway = %key, error = %e, "writing Gateway status failed; will retry on the next change")
                }
            }
        }
    }
}

/// A client from `--kubeconfig FILE`, or inferred (in-cluster, then `$KUBECONFIG` / `~/.kube/config`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenMapping;
    use crate::routing::compile;
    use http::{Request, Response};
    use kube::api::ApiResource;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_yaml::from_str(s).unwrap()
    }

    fn gateway() -> Gateway {
        yaml(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra, generation: 3}\nspec:\n  gatewayClassName: x\n  listeners: [{name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}]\n",
        )
    }

    fn route(name: &str, host: &str) -> HttpRoute {
        yaml(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps, generation: 2}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n"
        ))
    }

    fn service() -> Service {
        yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: apps}\nspec: {ports: [{name: http, port: 80}]}\n",
        )
    }

    fn slice_v1beta1(ip: &str) -> DynamicObject {
        yaml(&format!(
            "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {{name: svc-1, namespace: apps, labels: {{kubernetes.io/service-name: svc}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints: [{{addresses: ['{ip}'], conditions: {{ready: true}}, topology: {{zone: a}}}}]\n"
        ))
    }

    struct Fixture {
        gw: Writer<Gateway>,
        routes: Writer<HttpRoute>,
        svc: Writer<Service>,
        slices: Writer<DynamicObject>,
        stores: Stores,
    }

    fn fixture() -> Fixture {
        let gw = Writer::<Gateway>::default();
        let routes = Writer::<HttpRoute>::default();
        let grants = Writer::<ReferenceGrant>::default();
        let svc = Writer::<Service>::default();
        let ar = ApiResource {
            group: "discovery.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "discovery.k8s.io/v1beta1".into(),
            kind: "EndpointSlice".into(),
            plural: "endpointslices".into(),
        };
        let slices = Writer::<DynamicObject>::new(ar);
        let ns = Writer::<Namespace>::default();
        let stores = Stores {
            gateways: gw.as_reader(),
            routes: routes.as_reader(),
            grants: grants.as_reader(),
            services: svc.as_reader(),
            slices: slices.as_reader(),
            namespaces: ns.as_reader(),
        };
        Fixture { gw, routes, svc, slices, stores }
    }

    fn served_hosts(stores: &Stores) -> Vec<(String, Vec<String>)> {
        let m: ListenMapping = "127.0.0.1:8080=infra/gw".parse().unwrap();
        let t = compile(&stores.snapshot(), &[m]);
        let h = HeaderMap::new();
        t.listeners[0]
            .vhosts()
            .iter()
            .map(|v| {
                let head = crate::routing::RequestHead {
                    method: "GET",
                    host: &v.hostname,
                    path: "/",
                    query: None,
                    headers: &h,
                };
                let eps = match &t.listeners[0].find(&head).unwrap().rule.backends[0].target {
                    crate::routing::BackendTarget::Endpoints(e) => e.iter().map(|a| a.to_string()).collect(),
                    crate::routing::BackendTarget::Invalid(w) => vec![w.clone()],
                };
                (v.hostname.clone(), eps)
            })
            .collect()
    }
    use http::HeaderMap;

    #[test]
    fn store_events_drive_the_snapshot_and_a_relist_keeps_the_old_state_until_done() {
        let mut f = fixture();
        f.gw.apply_watcher_event(&Event::Apply(gateway()));
        f.svc.apply_watcher_event(&Event::Apply(service()));
        f.routes.apply_watcher_event(&Event::Apply(route("r1", "a.test")));
        f.slices.apply_watcher_event(&Event::Apply(slice_v1beta1("10.42.0.7")));
        assert_eq!(served_hosts(&f.stores), [("a.test".to_string(), vec!["10.42.0.7:8080".to_string()])]);

        // endpoints change, route added
        f.slices.apply_watcher_event(&Event::Apply(slice_v1beta1("10.42.0.8")));
        f.routes.apply_watcher_event(&Event::Apply(route("r2", "b.test")));
        assert_eq!(served_hosts(&f.stores).len(), 2);
        assert_eq!(served_hosts(&f.stores)[0].1, ["10.42.0.8:8080"]);

        // 410 Expired -> relist: Init, InitApply..., InitDone. Until InitDone the old state stays.
        f.routes.apply_watcher_event(&Event::Init);
        f.routes.apply_watcher_event(&Event::InitApply(route("r2", "b.test")));
        assert_eq!(served_hosts(&f.stores).len(), 2, "the served state survives the relist");
        f.routes.apply_watcher_event(&Event::InitDone);
        assert_eq!(
            served_hosts(&f.stores),
            [("b.test".to_string(), vec!["10.42.0.8:8080".to_string()])],
            "r1 was deleted while the watch was down"
        );

        // delete
        f.routes.apply_watcher_event(&Event::Delete(route("r2", "b.test")));
        assert!(served_hosts(&f.stores).is_empty());
    }

    #[test]
    fn route_status_keeps_transition_times_while_the_status_holds() {
        let mut f = fixture();
        f.gw.apply_watcher_event(&Event::Apply(gateway()));
        f.routes.apply_watcher_event(&Event::Apply(route("r1", "a.test")));
        let res = f.stores.snapshot();
        let m: ListenMapping = "127.0.0.1:8080=infra/gw".parse().unwrap();
        let t = compile(&res, &[m]);
        let report = t.routes.iter().find(|r| r.route == "apps/r1").unwrap();
        let mut r = route("r1", "a.test");
        let body = route_status_body(&r, &report.parents);
        let parent = &body["status"]["parents"][0];
        assert_eq!(parent["controllerName"], CONTROLLER_NAME);
        assert_eq!(parent["parentRef"]["name"], "gw");
        assert_eq!(parent["conditions"][0]["type"], "Accepted");
        assert_eq!(parent["conditions"][0]["status"], "True");
        assert_eq!(parent["conditions"][1]["type"], "ResolvedRefs");
        assert_eq!(parent["conditions"][1]["status"], "False", "svc is not in the stores");
        assert_eq!(parent["conditions"][1]["reason"], "BackendNotFound");
        assert_eq!(parent["conditions"][0]["observedGeneration"], 2);
        // the object now carries that status with an old transition time: it is kept
        let mut status = body["status"].clone();
        status["parents"][0]["conditions"][0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        r.status = Some(serde_json::from_value(status).unwrap());
        let again = route_status_body(&r, &report.parents);
        assert_eq!(again["status"]["parents"][0]["conditions"][0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(comparable(&again), comparable(&body));
        let gw = gateway_status_body(&res.gateways.values().next().unwrap().clone(), &t);
        assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(gw["status"]["listeners"][0]["name"], "http");
    }

    #[tokio::test]
    async fn status_is_written_with_server_side_apply_under_one_field_manager() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
        let client = Client::new(svc, "default");
        let mut f = fixture();
        f.gw.apply_watcher_event(&Event::Apply(gateway()));
        f.svc.apply_watcher_event(&Event::Apply(service()));
        f.routes.apply_watcher_event(&Event::Apply(route("r1", "a.test")));
        let res = f.stores.snapshot();
        let m: ListenMapping = "127.0.0.1:8080=infra/gw".parse().unwrap();
        let table = compile(&res, &[m]);
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (req, send) = handle.next_request().await.expect("a request");
                assert_eq!(req.method(), http::Method::PATCH);
                assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
                let uri = req.uri().to_string();
                assert!(uri.contains("fieldManager=ebpf-host-ingress") && uri.contains("force=true"), "{uri}");
                let body = req.into_body().collect_bytes().await.unwrap();
                let v: Value = serde_json::from_slice(&body).unwrap();
                seen.push((uri.split('?').next().unwrap().to_string(), v.clone()));
                // answer with the whole object, as the API server does
                let mut obj = if uri.contains("/httproutes/") {
                    serde_json::to_value(route("r1", "a.test")).unwrap()
                } else {
                    serde_json::to_value(gateway()).unwrap()
                };
                obj["status"] = v["status"].clone();
                send.send_response(
                    Response::builder().body(kube::client::Body::from(serde_json::to_vec(&obj).unwrap())).unwrap(),
                );
            }
            (seen, handle)
        });
        let mut w = StatusWriter::new(client);
        w.write(&table, &res).await;
        let (seen, _handle) = server.await.unwrap();
        assert_eq!(seen[0].0, "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes/r1/status");
        assert_eq!(seen[0].1["status"]["parents"][0]["conditions"][0]["reason"], "Accepted");
        assert_eq!(seen[1].0, "/apis/gateway.networking.k8s.io/v1/namespaces/infra/gateways/gw/status");
        assert_eq!(seen[1].1["status"]["listeners"][0]["attachedRoutes"], 1);
        // Unchanged: nothing is written again. A request would wait forever for the
        // mock (kept alive in `_handle`) to answer, so the write would time out.
        let again = tokio::time::timeout(Duration::from_secs(1), w.write(&table, &res)).await;
        assert!(again.is_ok(), "an unchanged status was written again");
    }
}
