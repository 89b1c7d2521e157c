//! The reflectors behind the Kubernetes source: one store per kind, each kept by a
//! watcher that relists after `410 Expired`, and the snapshot the engine reads.

use std::sync::Arc;

use futures::StreamExt;
use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::Notify;

use super::KubeError;
use crate::resources::{Resources, key_of};

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
    /// TLSRoutes at the version the server recommends, and that version; empty while the
    /// server serves no TLSRoute kind (its CRD is absent): set once it does
    /// ([`watch_for_late_kinds`]).
    pub tls_routes: Late<(Store<DynamicObject>, kube::api::ApiResource)>,
    /// GRPCRoutes, once the API server serves `grpcroutes` in gateway.networking.k8s.io/v1
    /// (at start, or when its CRD is installed later: [`watch_for_late_kinds`]).
    pub grpc_routes: Late<Store<GrpcRoute>>,
}

/// A store whose kind may appear after the agent started (a CRD installed later): set
/// once, by the reflector started when discovery first lists the kind.
pub type Late<T> = Arc<std::sync::OnceLock<T>>;

/// How often discovery is asked again for a kind the server did not serve at start
/// (doubling from 1 s up to this).
pub const LATE_KIND_POLL_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// A TLSRoute of any served version (v1, v1alpha3, v1alpha2: the same fields;
/// `hostnames` optional before v1) as the v1 type.
pub fn tls_route_from_dynamic(obj: &DynamicObject) -> Option<TlsRoute> {
    let mut v = serde_json::to_value(obj).ok()?;
    v["apiVersion"] = json!(TlsRoute::api_version(&()));
    if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.entry("hostnames").or_insert_with(|| json!([]));
    }
    match serde_json::from_value(v) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(name = ?obj.metadata.name, error = %e, "skipping a TLSRoute that does not parse");
            None
        }
    }
}

/// An EndpointSlice of any served version as the v1 type (v1beta1 has the same
/// addresses, conditions and ports; its `topology` is ignored).
pub fn endpoint_slice_from_dynamic(obj: &DynamicObject) -> Option<EndpointSlice> {
    // Retagged by hand: kube's `DynamicObject::try_parse` keeps the v1beta1 apiVersion,
    // which k8s-openapi's v1 type refuses.
    let mut v = serde_json::to_value(obj).ok()?;
    v["apiVersion"] = json!(EndpointSlice::api_version(&()));
    v["kind"] = json!(EndpointSlice::kind(&()));
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
        for o in self.grpc_routes.get().iter().flat_map(|s| s.state()) {
            res.grpc_routes.insert(key_of(&o.metadata), (*o).clone());
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
        for o in self.tls_routes.get().iter().flat_map(|(s, _)| s.state()) {
            if let Some(r) = tls_route_from_dynamic(&o) {
                res.tls_routes.insert(key_of(&r.metadata), r);
            }
        }
        res
    }

    pub(super) async fn wait_until_ready(&self) -> Result<(), KubeError> {
        let r = tokio::try_join!(
            self.gateways.wait_until_ready(),
            self.routes.wait_until_ready(),
            self.grants.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
        r.map_err(|_| KubeError::NotReady)?;
        if let Some((tls, _)) = self.tls_routes.get() {
            tls.wait_until_ready().await.map_err(|_| KubeError::NotReady)?;
        }
        if let Some(g) = self.grpc_routes.get() {
            g.wait_until_ready().await.map_err(|_| KubeError::NotReady)?;
        }
        Ok(())
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
    let discovery = kube::discovery::Discovery::new(client.clone())
        .filter(&["discovery.k8s.io", "gateway.networking.k8s.io"])
        .run()
        .await?;
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
    let tls_routes = Late::default();
    let grpc_routes = Late::default();
    let late = LateKinds { client: client.clone(), changed: changed.clone() };
    if !late.tls_routes(&discovery, &tls_routes) {
        tracing::info!(
            "the API server serves no TLSRoute kind: TLS passthrough listeners get no routes until its CRD is installed"
        );
    }
    if !late.grpc_routes(&discovery, &grpc_routes) {
        tracing::warn!(
            "the API server has no GRPCRoute v1 (gateway.networking.k8s.io): GRPCRoutes are watched once its CRD is installed"
        );
    }
    if tls_routes.get().is_none() || grpc_routes.get().is_none() {
        tokio::spawn(watch_for_late_kinds(late, tls_routes.clone(), grpc_routes.clone()));
    }
    let w = reflector::store::Writer::<DynamicObject>::new(slice_ar.clone());
    let slices = w.as_reader();
    spawn_reflector("EndpointSlice", Api::<DynamicObject>::all_with(client, &slice_ar), w, changed);
    Ok(Stores { gateways, routes, grants, services, slices, namespaces, tls_routes, grpc_routes })
}

/// What starts the reflector of a kind whose CRD may come late.
struct LateKinds {
    client: Client,
    changed: Arc<Notify>,
}

impl LateKinds {
    /// Starts the TLSRoute reflector if `discovery` lists the kind (at the version the
    /// server recommends). Whether it is (now) watched.
    fn tls_routes(
        &self,
        discovery: &kube::discovery::Discovery,
        slot: &Late<(Store<DynamicObject>, kube::api::ApiResource)>,
    ) -> bool {
        if slot.get().is_some() {
            return true;
        }
        let Some((ar, _)) = discovery.get("gateway.networking.k8s.io").and_then(|g| g.recommended_kind("TLSRoute"))
        else {
            return false;
        };
        tracing::info!(version = %ar.api_version, "watching TLSRoutes");
        let w = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let store = w.as_reader();
        spawn_reflector("TLSRoute", Api::<DynamicObject>::all_with(self.client.clone(), &ar), w, self.changed.clone());
        let _ = slot.set((store, ar));
        true
    }

    /// Starts the GRPCRoute (v1) reflector if `discovery` lists it. Whether it is (now) watched.
    fn grpc_routes(&self, discovery: &kube::discovery::Discovery, slot: &Late<Store<GrpcRoute>>) -> bool {
        if slot.get().is_some() {
            return true;
        }
        if !grpc_routes_served(discovery) {
            return false;
        }
        tracing::info!("watching GRPCRoutes");
        let (store, w) = reflector::store();
        spawn_reflector("GRPCRoute", Api::<GrpcRoute>::all(self.client.clone()), w, self.changed.clone());
        let _ = slot.set(store);
        true
    }
}

/// Asks discovery again (every 1, 2, 4, 8, then [`LATE_KIND_POLL_MAX`] seconds) for the
/// kinds not served at start, and starts each one's reflector when its CRD has been
/// installed: TLSRoute and GRPCRoute need no restart. Ends once both are watched.
/// (Discovery needs no RBAC beyond an authenticated client; the kinds' own rules are
/// in deploy/k3d/rbac.yaml already.)
async fn watch_for_late_kinds(
    late: LateKinds,
    tls_routes: Late<(Store<DynamicObject>, kube::api::ApiResource)>,
    grpc_routes: Late<Store<GrpcRoute>>,
) {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LATE_KIND_POLL_MAX);
        let discovery = match kube::discovery::Discovery::new(late.client.clone())
            .filter(&["gateway.networking.k8s.io"])
            .run()
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "discovery for late CRDs failed; asking again later");
                continue;
            }
        };
        let before = (tls_routes.get().is_some(), grpc_routes.get().is_some());
        let now = (late.tls_routes(&discovery, &tls_routes), late.grpc_routes(&discovery, &grpc_routes));
        if now != before {
            tracing::info!("a Gateway API CRD was installed after the start: its routes are watched now");
            late.changed.notify_one();
        }
        if now == (true, true) {
            return;
        }
    }
}

/// Whether discovery lists `grpcroutes` in gateway.networking.k8s.io/v1 (the standard
/// channel's GRPCRoute; older installs have only v1alpha2, or no GRPCRoute at all).
fn grpc_routes_served(discovery: &kube::discovery::Discovery) -> bool {
    discovery.get("gateway.networking.k8s.io").is_some_and(|g| {
        g.versioned_resources("v1").iter().any(|(ar, _)| ar.kind == GrpcRoute::kind(&()) && ar.plural == "grpcroutes")
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use kube::runtime::watcher::Event;

    use super::super::fixtures::{fixture, gateway, route, service, slice_v1beta1};
    use super::*;
    use crate::config::ListenMapping;
    use crate::routing::compile;

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
    fn tls_routes_of_any_served_version_become_the_v1_type() {
        let alpha: DynamicObject = serde_saphyr::from_str(
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: t, namespace: apps}\nspec:\n  parentRefs: [{name: gw, namespace: infra}]\n  rules: [{backendRefs: [{name: svc, port: 443}]}]\n",
        )
        .unwrap();
        let r = tls_route_from_dynamic(&alpha).expect("converted");
        assert!(r.spec.hostnames.is_empty());
        assert_eq!(r.spec.rules[0].backend_refs[0].port, Some(443));
        assert_eq!(key_of(&r.metadata), crate::resources::ObjectKey::new("apps", "t"));
        let broken: DynamicObject = serde_saphyr::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: t, namespace: apps}\nspec: {hostnames: [a], rules: [{backendRefs: [{name: svc, port: x}]}]}\n",
        )
        .unwrap();
        assert!(tls_route_from_dynamic(&broken).is_none(), "a route that does not parse is skipped");
    }
}
