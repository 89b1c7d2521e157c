//! Status written back with server-side apply under one field manager: HTTPRoute and
//! GRPCRoute `status.parents` from the engine's route reports, and Gateway and listener status.
//! The bodies are the gateway-api crate's status types with k8s-openapi's
//! `Condition`; the engine's [`ParentStatus`] is converted here, at the edge.

use std::collections::HashMap;

use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteStatus, HttpRouteStatusParents, HttpRouteStatusParentsParentRef,
};
use gateway_api::apis::standard::gateways::{
    Gateway, GatewayListeners, GatewayStatus, GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
};
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde_json::Value;

use super::{CONTROLLER_NAME, FIELD_MANAGER};
use crate::resources::{Resources, key_of};
use crate::routing::{self, ParentStatus, RouteKind, Table};

/// The apply body: kind, name and status only. Hand-written because the crate's object
/// types always carry a `spec`, and applying one would claim its fields for our manager.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    status: S,
}

/// `status` as a server-side-apply body for the object `meta` names.
fn apply_body<K: Resource<DynamicType = ()>>(meta: &ObjectMeta, status: impl Serialize) -> Value {
    let body = StatusApply {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        metadata: ObjectMeta { name: meta.name.clone(), namespace: meta.namespace.clone(), ..ObjectMeta::default() },
        status,
    };
    // Plain structs of strings, numbers and lists: serializing them cannot fail.
    serde_json::to_value(body).expect("a status body serializes")
}

/// A condition, keeping `lastTransitionTime` from `previous` when its status did not change.
fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: Some(generation.unwrap_or(0)),
        last_transition_time,
    }
}

/// The engine's condition as a Kubernetes one.
fn from_engine(c: &routing::Condition, generation: Option<i64>, previous: &[Condition]) -> Condition {
    condition(&c.kind, c.status, &c.reason, &c.message, generation, previous)
}

/// The server-side-apply body for an HTTPRoute's status: one `parents` entry per
/// parentRef to a served Gateway.
pub fn route_status_body(route: &HttpRoute, parents: &[ParentStatus]) -> Value {
    let generation = route.metadata.generation;
    let previous: Vec<Condition> =
        route.status.iter().flat_map(|s| &s.parents).flat_map(|p| p.conditions.iter().cloned()).collect();
    let parents = parents
        .iter()
        .map(|p| HttpRouteStatusParents {
            parent_ref: HttpRouteStatusParentsParentRef {
                group: Some(Gateway::group(&()).into_owned()),
                kind: Some(Gateway::kind(&()).into_owned()),
                namespace: Some(p.gateway.namespace.clone()),
                name: p.gateway.name.clone(),
                section_name: p.section_name.clone(),
                port: p.port,
            },
            controller_name: CONTROLLER_NAME.to_string(),
            conditions: p.conditions.iter().map(|c| from_engine(c, generation, &previous)).collect(),
        })
        .collect();
    apply_body::<HttpRoute>(&route.metadata, HttpRouteStatus { parents })
}

/// The status body of a route kind whose `status.parents` have an HTTPRoute's fields
/// (TLSRoute, GRPCRoute): built as an HTTPRoute's from the route's metadata and its
/// previous status (for the transition times), then retagged `api_version`/`kind`.
fn route_like_status_body(
    metadata: &ObjectMeta,
    previous: Option<Value>,
    api_version: &str,
    kind: &str,
    parents: &[ParentStatus],
) -> Value {
    let as_http = HttpRoute {
        metadata: metadata.clone(),
        spec: Default::default(),
        status: previous.and_then(|v| serde_json::from_value(v).ok()),
    };
    let mut body = route_status_body(&as_http, parents);
    body["apiVersion"] = api_version.into();
    body["kind"] = kind.into();
    body
}

/// The server-side-apply body for a TLSRoute's status at `api_version` (the version
/// the server serves).
pub fn tls_route_status_body(route: &TlsRoute, api_version: &str, parents: &[ParentStatus]) -> Value {
    let previous = route.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
    route_like_status_body(&route.metadata, previous, api_version, &TlsRoute::kind(&()), parents)
}

/// The server-side-apply body for a GRPCRoute's status: as an HTTPRoute's.
pub fn grpc_route_status_body(route: &GrpcRoute, parents: &[ParentStatus]) -> Value {
    let previous = route.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
    route_like_status_body(&route.metadata, previous, &GrpcRoute::api_version(&()), &GrpcRoute::kind(&()), parents)
}

/// The server-side-apply body for a served Gateway's status: Accepted/Programmed, and
/// per served listener the attached route count.
pub fn gateway_status_body(gw: &Gateway, table: &Table) -> Value {
    let key = key_of(&gw.metadata);
    let generation = gw.metadata.generation;
    let previous: Vec<Condition> = gw
        .status
        .iter()
        .flat_map(|s| {
            let top = s.conditions.iter().flatten();
            let listeners = s.listeners.iter().flatten().flat_map(|l| &l.conditions);
            top.chain(listeners).cloned()
        })
        .collect();
    let served = |kind, message| condition(kind, true, kind, message, generation, &previous);
    let mut listeners = Vec::new();
    for lt in table.listeners.iter().filter(|l| l.gateway == key) {
        for (name, _) in &lt.listeners {
            let attached = format!("{key}/{name}");
            // TLS passthrough listeners take TLSRoutes (routing/passthrough.rs)
            let tls = lt.passthrough.as_ref().is_some_and(|p| p.listeners.iter().any(|(n, _)| n == name));
            let reports = if tls { &table.tls_routes } else { &table.routes };
            let count = reports.iter().filter(|r| r.attached.contains(&attached)).count();
            // supportedKinds: the protocol's kinds, narrowed by allowedRoutes.kinds
            let spec = gw.spec.listeners.iter().find(|l| l.name == *name);
            let (supported, invalid_kinds) = listener_kinds(spec, tls);
            listeners.push(GatewayStatusListeners {
                name: name.clone(),
                supported_kinds: Some(supported),
                attached_routes: i32::try_from(count).unwrap_or(i32::MAX),
                conditions: match lt
                    .tls
                    .as_ref()
                    .and_then(|t| t.listener(name))
                    .and_then(|l| l.certificate.as_ref().err())
                {
                    None if invalid_kinds.is_empty() => vec![
                        served("Accepted", "listener served by the host ingress"),
                        served("Programmed", "listener served by the host ingress"),
                        served("ResolvedRefs", "all references resolved"),
                    ],
                    // allowedRoutes.kinds names kinds this listener cannot serve (the
                    // others, if any, are its supportedKinds and attach)
                    None => {
                        let message = format!(
                            "allowedRoutes.kinds names kinds this listener cannot serve: {}",
                            invalid_kinds.join(", ")
                        );
                        vec![
                            served("Accepted", "listener served by the host ingress"),
                            served("Programmed", "listener served by the host ingress"),
                            condition("ResolvedRefs", false, "InvalidRouteKinds", &message, generation, &previous),
                        ]
                    }
                    // HTTPS: its certificate cannot be used; it refuses handshakes
                    Some(p) => vec![
                        served("Accepted", "listener served by the host ingress"),
                        condition("Programmed", false, "Invalid", &p.message, generation, &previous),
                        condition("ResolvedRefs", false, p.reason, &p.message, generation, &previous),
                    ],
                },
            });
        }
    }
    let status = GatewayStatus {
        conditions: Some(vec![
            served("Accepted", "served by the host ingress"),
            served("Programmed", "served by the host ingress"),
        ]),
        listeners: Some(listeners),
        ..GatewayStatus::default()
    };
    apply_body::<Gateway>(&gw.metadata, status)
}

/// The route kinds a served listener supports (`status.listeners[].supportedKinds`):
/// those its protocol takes (HTTP and HTTPS: HTTPRoute and GRPCRoute; TLS passthrough:
/// TLSRoute), narrowed by its `allowedRoutes.kinds` when that is given. Also each kind
/// that list names which the listener cannot serve (`group/kind`): the spec asks for
/// `ResolvedRefs=False` with `InvalidRouteKinds` then, and for the valid ones alone in
/// supportedKinds.
pub fn listener_kinds(
    listener: Option<&GatewayListeners>,
    passthrough: bool,
) -> (Vec<GatewayStatusListenersSupportedKinds>, Vec<String>) {
    let group = HttpRoute::group(&()).into_owned();
    let protocol: Vec<String> = if passthrough {
        vec![TlsRoute::kind(&()).into_owned()]
    } else {
        vec![HttpRoute::kind(&()).into_owned(), GrpcRoute::kind(&()).into_owned()]
    };
    let kind = |k: &str| GatewayStatusListenersSupportedKinds { group: Some(group.clone()), kind: k.to_string() };
    let asked = listener.and_then(|l| l.allowed_routes.as_ref()?.kinds.as_ref()).filter(|k| !k.is_empty());
    let Some(asked) = asked else {
        return (protocol.iter().map(|k| kind(k)).collect(), vec![]);
    };
    let (mut supported, mut invalid) = (Vec::new(), Vec::new());
    for k in asked {
        let g = k.group.as_deref().unwrap_or(&group);
        if g == group && protocol.contains(&k.kind) {
            if !supported.iter().any(|s: &GatewayStatusListenersSupportedKinds| s.kind == k.kind) {
                supported.push(kind(&k.kind));
            }
        } else {
            invalid.push(format!("{g}/{}", k.kind));
        }
    }
    (supported, invalid)
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

/// Writes statuses that changed since the last write (server-side apply).
pub struct StatusWriter {
    client: Client,
    /// The last body written per object (`HTTPRoute ns/name`, `Gateway ns/name`).
    last: HashMap<String, Value>,
    /// The TLSRoute version the server serves (None: no TLSRoute kind, nothing to write).
    tls_routes: Option<ApiResource>,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self { client, last: HashMap::new(), tls_routes: None }
    }

    /// The TLSRoute version to write status at (None: the kind is not served).
    pub fn set_tls_routes(&mut self, api: Option<ApiResource>) {
        self.tls_routes = api;
    }

    pub async fn write(&mut self, table: &Table, res: &Resources) {
        for report in &table.routes {
            let Some(route) = res.http_routes.iter().find(|(k, _)| k.to_string() == report.route).map(|(_, r)| r)
            else {
                continue;
            };
            if report.parents.is_empty() {
                continue;
            }
            let body = route_status_body(route, &report.parents);
            let api: Api<HttpRoute> =
                Api::namespaced(self.client.clone(), route.metadata.namespace.as_deref().unwrap_or("default"));
            let name = route.metadata.name.as_deref().unwrap_or("");
            self.apply(&api, name, format!("HTTPRoute {}", report.route), body).await;
        }
        for report in table.tls_routes.iter().filter(|r| !r.parents.is_empty()) {
            let (Some(ar), Some(route)) =
                (&self.tls_routes, res.tls_routes.iter().find(|(k, _)| k.to_string() == report.route))
            else {
                continue;
            };
            let body = tls_route_status_body(route.1, &ar.api_version, &report.parents);
            let ns = route.1.metadata.namespace.as_deref().unwrap_or("default");
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
            let name = route.1.metadata.name.clone().unwrap_or_default();
            self.apply(&api, &name, format!("TLSRoute {}", report.route), body).await;
        }
        for report in table.routes.iter().filter(|r| !r.parents.is_empty()) {
            let Some((key, route)) = res.grpc_routes.iter().find(|(k, _)| RouteKind::Grpc.label(k) == report.route)
            else {
                continue;
            };
            let body = grpc_route_status_body(route, &report.parents);
            let api: Api<GrpcRoute> = Api::namespaced(self.client.clone(), &key.namespace);
            self.apply(&api, &key.name, report.route.clone(), body).await;
        }
        let mut gateways: Vec<_> = table.listeners.iter().map(|l| l.gateway.clone()).collect();
        gateways.sort();
        gateways.dedup();
        for key in gateways {
            let Some(gw) = res.gateways.get(&key) else { continue };
            let body = gateway_status_body(gw, table);
            let api: Api<Gateway> = Api::namespaced(self.client.clone(), &key.namespace);
            self.apply(&api, &key.name, format!("Gateway {key}"), body).await;
        }
    }

    /// Applies `body` to `name`'s status unless it is what was last written; a failure
    /// is logged and retried on the next change.
    async fn apply<K>(&mut self, api: &Api<K>, name: &str, id: String, body: Value)
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if self.last.get(&id).map(comparable) == Some(comparable(&body)) {
            return;
        }
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(name, &pp, &Patch::Apply(&body)).await {
            Ok(_) => {
                self.last.insert(id, body);
            }
            Err(e) => tracing::warn!(object = %id, error = %e, "writing status failed; will retry on the next change"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::super::fixtures::{fixture, gateway, grpc_route, route, service};
    use super::*;
    use crate::config::ListenMapping;
    use crate::resources::ObjectKey;
    use crate::routing::compile;

    fn engine_condition(kind: &'static str, status: bool, reason: &str, message: &str) -> routing::Condition {
        routing::Condition { kind: kind.into(), status, reason: reason.into(), message: message.into() }
    }

    /// The body for one route under two parents, field for field what the hand-built
    /// JSON of the earlier writer sent (keys sorted, as serde_json's map keeps them).
    #[test]
    fn the_typed_route_body_is_the_json_the_api_server_gets() {
        let mut r = route("r1", "a.test");
        // Transition times of conditions that hold are kept: fixed, so the body is too.
        let held = |kind: &str, status: &str| json!({"type": kind, "status": status, "reason": "x", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"});
        r.status = Some(
            serde_json::from_value(json!({"parents": [{
                "parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME,
                "conditions": [held("Accepted", "True"), held("ResolvedRefs", "True"), held("Accepted", "False")],
            }]}))
            .unwrap(),
        );
        let parents = [
            ParentStatus {
                gateway: ObjectKey::new("infra", "gw"),
                section_name: Some("http".into()),
                port: None,
                conditions: vec![
                    engine_condition("Accepted", true, "Accepted", "accepted"),
                    engine_condition("ResolvedRefs", true, "ResolvedRefs", "resolved"),
                ],
            },
            ParentStatus {
                gateway: ObjectKey::new("infra", "gw2"),
                section_name: None,
                port: Some(8080),
                conditions: vec![
                    engine_condition("Accepted", false, "NotAllowedByListeners", "namespace apps not allowed"),
                    engine_condition("ResolvedRefs", true, "ResolvedRefs", "resolved"),
                ],
            },
        ];
        let cond = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                "observedGeneration": 2, "lastTransitionTime": "2020-01-01T00:00:00Z"})
        };
        let expected = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r1", "namespace": "apps"},
            "status": {"parents": [
                {
                    "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                        "namespace": "infra", "name": "gw", "sectionName": "http"},
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [
                        cond("Accepted", "True", "Accepted", "accepted"),
                        cond("ResolvedRefs", "True", "ResolvedRefs", "resolved"),
                    ],
                },
                {
                    "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                        "namespace": "infra", "name": "gw2", "port": 8080},
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [
                        cond("Accepted", "False", "NotAllowedByListeners", "namespace apps not allowed"),
                        cond("ResolvedRefs", "True", "ResolvedRefs", "resolved"),
                    ],
                },
            ]},
        });
        let body = route_status_body(&r, &parents);
        assert_eq!(body, expected);
        // The bytes Patch::Apply sends: serde_json's sorted map, as before.
        assert_eq!(serde_json::to_string(&body).unwrap(), expected.to_string());
    }

    #[test]
    fn the_typed_gateway_body_is_the_json_the_api_server_gets() {
        let res = {
            let mut f = fixture();
            f.gw.apply_watcher_event(&Event::Apply(gateway()));
            f.svc.apply_watcher_event(&Event::Apply(service()));
            f.routes.apply_watcher_event(&Event::Apply(route("r1", "a.test")));
            f.stores.snapshot()
        };
        let m: ListenMapping = "127.0.0.1:8080=infra/gw".parse().unwrap();
        let table = compile(&res, &[m]);
        let body = gateway_status_body(&res.gateways[&ObjectKey::new("infra", "gw")], &table);
        let mut shown = body.clone();
        strip_times(&mut shown);
        let cond = |kind: &str, message: &str| json!({"type": kind, "status": "True", "reason": kind, "message": message, "observedGeneration": 3});
        let listener = "listener served by the host ingress";
        let expected = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "infra"},
            "status": {
                "conditions": [cond("Accepted", "served by the host ingress"), cond("Programmed", "served by the host ingress")],
                "listeners": [{
                    "name": "http",
                    "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}],
                    "attachedRoutes": 1,
                    "conditions": [cond("Accepted", listener), cond("Programmed", listener), cond("ResolvedRefs", "all references resolved")],
                }],
            },
        });
        assert_eq!(shown, expected);
        // A new transition time is RFC 3339 in whole seconds, as the API server keeps it.
        let t = body["status"]["conditions"][0]["lastTransitionTime"].as_str().unwrap();
        assert!(t.parse::<k8s_openapi::jiff::Timestamp>().is_ok() && t.ends_with('Z') && !t.contains('.'), "{t}");
    }

    /// An HTTPS listener whose Secret is missing: ResolvedRefs=False InvalidCertificateRef
    /// and Programmed=False; the other listener of the Gateway stays programmed.
    #[test]
    fn an_https_listener_with_a_missing_secret_is_not_programmed() {
        let gw: Gateway = serde_saphyr::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra, generation: 3}\nspec:\n  gatewayClassName: x\n  listeners:\n  - {name: bad, protocol: HTTPS, port: 443, hostname: b.test, tls: {certificateRefs: [{name: nope}]}}\n  - {name: good, protocol: HTTPS, port: 443, hostname: a.test, tls: {certificateRefs: [{name: ok}]}}\n",
        )
        .unwrap();
        let mut res = crate::resources::Resources::default();
        res.gateways.insert(ObjectKey::new("infra", "gw"), gw.clone());
        let c = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: ObjectMeta { name: Some("ok".into()), namespace: Some("infra".into()), ..Default::default() },
            type_: Some("kubernetes.io/tls".into()),
            string_data: Some(
                [("tls.crt".to_string(), c.cert.pem()), ("tls.key".to_string(), c.signing_key.serialize_pem())].into(),
            ),
            ..Default::default()
        };
        res.secrets.insert(ObjectKey::new("infra", "ok"), secret);
        let m: ListenMapping = "127.0.0.1:8443=infra/gw:443".parse().unwrap();
        let table = compile(&res, &[m]);
        let body = gateway_status_body(&gw, &table);
        let listeners = body["status"]["listeners"].as_array().unwrap();
        let cond = |l: &Value, kind: &str| {
            let c = l["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap().clone();
            (c["status"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string())
        };
        assert_eq!(listeners[0]["name"], "bad");
        assert_eq!(cond(&listeners[0], "ResolvedRefs"), ("False".into(), "InvalidCertificateRef".into()));
        assert_eq!(cond(&listeners[0], "Programmed"), ("False".into(), "Invalid".into()));
        assert_eq!(cond(&listeners[0], "Accepted").0, "True");
        assert_eq!(listeners[1]["name"], "good");
        assert_eq!(cond(&listeners[1], "ResolvedRefs"), ("True".into(), "ResolvedRefs".into()));
        assert_eq!(cond(&listeners[1], "Programmed"), ("True".into(), "Programmed".into()));
        assert!(listeners[0]["conditions"][2]["message"].as_str().unwrap().contains("infra/nope"), "{body}");
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

    /// A GRPCRoute's status: the HTTPRoute body's shape under kind GRPCRoute, its own
    /// generation, and ResolvedRefs from its backendRefs.
    #[test]
    fn the_grpc_route_body_is_the_httproute_shape_under_its_kind() {
        let mut f = fixture();
        f.gw.apply_watcher_event(&Event::Apply(gateway()));
        f.grpc.apply_watcher_event(&Event::Apply(grpc_route("g1", "g.test")));
        let res = f.stores.snapshot();
        assert_eq!(res.grpc_routes.len(), 1, "the store feeds the snapshot");
        let m: ListenMapping = "127.0.0.1:8080=infra/gw".parse().unwrap();
        let t = compile(&res, &[m]);
        let report = t.routes.iter().find(|r| r.route == "GRPCRoute apps/g1").expect("a report for the GRPCRoute");
        let body = grpc_route_status_body(&res.grpc_routes[&ObjectKey::new("apps", "g1")], &report.parents);
        let mut shown = body.clone();
        strip_times(&mut shown);
        let cond = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message, "observedGeneration": 4});
        let expected = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "g1", "namespace": "apps"},
            "status": {"parents": [{
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": "gw"},
                "controllerName": CONTROLLER_NAME,
                "conditions": [
                    cond("Accepted", "True", "Accepted", "the route is served"),
                    cond("ResolvedRefs", "False", "BackendNotFound", "rule 0 backendRef apps/svc:80: Service apps/svc not found"),
                ],
            }]},
        });
        assert_eq!(shown, expected);
        // the listener counts it among its attached routes
        let gw = gateway_status_body(&res.gateways[&ObjectKey::new("infra", "gw")], &t);
        assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
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

    #[test]
    fn tls_route_status_and_passthrough_listeners_in_the_gateway_status() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra, generation: 1}\nspec:\n  gatewayClassName: x\n  listeners: [{name: pass, protocol: TLS, port: 8443, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}]\n---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: t, namespace: apps, generation: 4}\nspec:\n  parentRefs: [{name: gw, namespace: infra, sectionName: pass}]\n  rules: [{backendRefs: [{name: svc, port: 443}]}]\n";
        let mut res = Resources::default();
        let mut errors = vec![];
        crate::sources::manifest::load_text(std::path::Path::new("t.yaml"), yaml, &mut res, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let m: ListenMapping = "127.0.0.1:8443=infra/gw:8443".parse().unwrap();
        let table = compile(&res, &[m]);
        let report = &table.tls_routes[0];
        let route = &res.tls_routes[&ObjectKey::new("apps", "t")];
        let body = tls_route_status_body(route, "gateway.networking.k8s.io/v1alpha2", &report.parents);
        assert_eq!(body["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
        assert_eq!(body["kind"], "TLSRoute");
        assert_eq!(body["metadata"], json!({"name": "t", "namespace": "apps"}));
        let parent = &body["status"]["parents"][0];
        assert_eq!(parent["parentRef"]["sectionName"], "pass");
        assert_eq!(parent["conditions"][0]["status"], "True", "{parent}");
        assert_eq!(parent["conditions"][1]["reason"], "BackendNotFound", "svc is not there");
        assert_eq!(parent["conditions"][0]["observedGeneration"], 4);
        let gw = gateway_status_body(&res.gateways[&ObjectKey::new("infra", "gw")], &table);
        let l = &gw["status"]["listeners"][0];
        assert_eq!(l["supportedKinds"][0]["kind"], "TLSRoute", "{l}");
        assert_eq!(l["attachedRoutes"], 1);
    }

    /// Spec (ListenerStatus.supportedKinds): kinds named in allowedRoutes.kinds that the
    /// listener does not support MUST NOT appear, ResolvedRefs is False with
    /// InvalidRouteKinds, and the valid ones that were named are listed.
    #[test]
    fn supported_kinds_are_narrowed_by_allowed_routes_kinds() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra, generation: 2}\nspec:\n  gatewayClassName: x\n  listeners:\n  - {name: plain, protocol: HTTP, port: 80}\n  - {name: http-only, protocol: HTTP, port: 80, hostname: h.test, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}\n  - {name: mixed, protocol: HTTP, port: 80, hostname: m.test, allowedRoutes: {kinds: [{kind: GRPCRoute}, {kind: TLSRoute}, {group: example.com, kind: HTTPRoute}]}}\n  - {name: pass, protocol: TLS, port: 8443, tls: {mode: Passthrough}}\n  - {name: pass-wrong, protocol: TLS, port: 8443, hostname: w.test, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}\n";
        let mut res = Resources::default();
        let mut errors = vec![];
        crate::sources::manifest::load_text(std::path::Path::new("k.yaml"), yaml, &mut res, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let maps: Vec<ListenMapping> =
            ["127.0.0.1:8080=infra/gw:80", "127.0.0.1:8443=infra/gw:8443"].iter().map(|m| m.parse().unwrap()).collect();
        let table = compile(&res, &maps);
        let gw = gateway_status_body(&res.gateways[&ObjectKey::new("infra", "gw")], &table);
        let listener = |name: &str| {
            let ls = gw["status"]["listeners"].as_array().unwrap();
            let l = ls.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("no {name} in {ls:?}"));
            let kinds: Vec<String> = l["supportedKinds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kind"].as_str().unwrap().to_string())
                .collect();
            let resolved = l["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "ResolvedRefs").unwrap();
            (
                kinds,
                resolved["status"].as_str().unwrap().to_string(),
                resolved["reason"].as_str().unwrap().to_string(),
                resolved["message"].as_str().unwrap().to_string(),
            )
        };
        let (kinds, status, reason, _) = listener("plain");
        assert_eq!(
            (kinds, status.as_str(), reason.as_str()),
            (vec!["HTTPRoute".to_string(), "GRPCRoute".to_string()], "True", "ResolvedRefs")
        );
        let (kinds, status, _, _) = listener("http-only");
        assert_eq!((kinds, status.as_str()), (vec!["HTTPRoute".to_string()], "True"), "narrowed, all valid");
        let (kinds, status, reason, message) = listener("mixed");
        assert_eq!(
            (kinds, status.as_str(), reason.as_str()),
            (vec!["GRPCRoute".to_string()], "False", "InvalidRouteKinds")
        );
        assert!(
            message.contains("gateway.networking.k8s.io/TLSRoute") && message.contains("example.com/HTTPRoute"),
            "{message}"
        );
        let (kinds, status, _, _) = listener("pass");
        assert_eq!((kinds, status.as_str()), (vec!["TLSRoute".to_string()], "True"));
        let (kinds, status, reason, _) = listener("pass-wrong");
        assert!(kinds.is_empty(), "no valid kind: {kinds:?}");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidRouteKinds"));
        // the pure builder, alone
        let (k, bad) = listener_kinds(None, true);
        assert_eq!((k.len(), bad.len()), (1, 0));
    }
}
