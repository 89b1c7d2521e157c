//! References: backendRefs to Services, their ports to EndpointSlice ready
//! endpoints, and ReferenceGrants for cross-namespace references.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use gateway_api::apis::experimental::httproutes::HttpRouteRulesBackendRefs;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::resources::{ObjectKey, Resources};

use super::status::{Problem, Reason};
use super::{BackendProtocol, GATEWAY_GROUP, RouteKind};

pub(super) fn resolve_backend(
    res: &Resources,
    slices: &SliceIndex<'_>,
    route: &ObjectKey,
    b: &HttpRouteRulesBackendRefs,
    ns: &str,
) -> Result<Vec<SocketAddr>, Problem> {
    resolve_backend_from(res, slices, RouteKind::Http, route, b, ns)
}

/// [`resolve_backend`] for a backendRef of a route of `route_kind` (the kind a
/// ReferenceGrant must name in `from`); a GRPCRoute's backendRef has the same fields.
pub(super) fn resolve_backend_from(
    res: &Resources,
    slices: &SliceIndex<'_>,
    route_kind: RouteKind,
    route: &ObjectKey,
    b: &HttpRouteRulesBackendRefs,
    ns: &str,
) -> Result<Vec<SocketAddr>, Problem> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !(group.is_empty() || group == "core") || kind != "Service" {
        return Err(Problem::new(Reason::InvalidKind, format!("{group}/{kind} is not a Service")));
    }
    if ns != route.namespace && !reference_granted_from(res, route_kind, &route.namespace, ns, &b.name) {
        let why = format!("no ReferenceGrant in {ns} allows {}s from {}", route_kind.as_str(), route.namespace);
        return Err(Problem::new(Reason::RefNotPermitted, why));
    }
    let Some(port) = b.port else {
        return Err(Problem::new(Reason::UnsupportedValue, "a Service backendRef needs a port"));
    };
    let Some(svc) = res.services.get(&ObjectKey::new(ns, &b.name)) else {
        return Err(Problem::new(Reason::BackendNotFound, format!("Service {ns}/{} not found", b.name)));
    };
    let Some(sp) = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|ps| ps.iter().find(|p| p.port == port))
    else {
        return Err(Problem::new(Reason::BackendNotFound, format!("Service {ns}/{} has no port {port}", b.name)));
    };
    Ok(slices.ready_endpoints(ns, &b.name, sp.name.as_deref().unwrap_or("")))
}

/// The protocol spoken to Service `ns/name` port `port`, from the port's `appProtocol`
/// ([`BackendProtocol::from_app_protocol`]); HTTP/1.1 when there is no such port (the
/// reference is then invalid anyway).
pub(crate) fn backend_protocol(res: &Resources, ns: &str, name: &str, port: Option<i32>) -> BackendProtocol {
    let app = res
        .services
        .get(&ObjectKey::new(ns, name))
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .and_then(|ps| ps.iter().find(|p| Some(p.port) == port))
        .and_then(|p| p.app_protocol.as_deref());
    BackendProtocol::from_app_protocol(app)
}

/// EndpointSlices by (namespace, Service), built once per compile.
pub(super) struct SliceIndex<'a>(pub(super) HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>);

impl<'a> SliceIndex<'a> {
    pub(super) fn new(res: &'a Resources) -> Self {
        let mut m: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for (k, slice) in &res.endpoint_slices {
            if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
                m.entry((k.namespace.as_str(), svc.as_str())).or_default().push(slice);
            }
        }
        Self(m)
    }

    /// Ready endpoints of a Service port, from every EndpointSlice of the Service: the
    /// slice port with the Service port's name gives the container port.
    fn ready_endpoints(&self, ns: &str, service: &str, port_name: &str) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for slice in self.0.get(&(ns, service)).into_iter().flatten() {
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
            else {
                continue;
            };
            for ep in &slice.endpoints {
                // "ready" unset means ready (EndpointSlice API).
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        out.push(SocketAddr::new(ip, port as u16));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Whether a ReferenceGrant in `to_ns` lets routes of `kind` in `from_ns` refer to `service`.
pub(super) fn reference_granted_from(
    res: &Resources,
    kind: RouteKind,
    from_ns: &str,
    to_ns: &str,
    service: &str,
) -> bool {
    res.reference_grants.iter().any(|(k, g)| {
        k.namespace == to_ns
            && g.spec.from.iter().any(|f| f.group == GATEWAY_GROUP && f.kind == kind.as_str() && f.namespace == from_ns)
            && g.spec.to.iter().any(|t| {
                (t.group.is_empty() || t.group == "core")
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == service)
            })
    })
}

/// Whether a ReferenceGrant in the target's namespace lets objects of Gateway API kind
/// `from` (kind, namespace) refer to the core object `to` (kind, namespace, name): the
/// same check as [`reference_granted`], for other kinds (a Gateway's certificateRefs).
pub(super) fn reference_granted_to(res: &Resources, from: (&str, &str), to: (&str, &str, &str)) -> bool {
    let ((from_kind, from_ns), (to_kind, to_ns, to_name)) = (from, to);
    res.reference_grants.iter().any(|(k, g)| {
        k.namespace == to_ns
            && g.spec.from.iter().any(|f| f.group == GATEWAY_GROUP && f.kind == from_kind && f.namespace == from_ns)
            && g.spec.to.iter().any(|t| {
                (t.group.is_empty() || t.group == "core")
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
    })
}

/// The ready endpoints of Service `namespace/name` port `port`, resolved exactly as a
/// backendRef from an HTTPRoute in the same namespace (for `--l4 PORT=NS/SERVICE:PORT`).
pub fn resolve_service_endpoints(
    res: &Resources,
    namespace: &str,
    name: &str,
    port: i32,
) -> Result<Vec<SocketAddr>, String> {
    let slices = SliceIndex::new(res);
    let b = HttpRouteRulesBackendRefs { name: name.to_string(), port: Some(port), ..Default::default() };
    resolve_backend(res, &slices, &ObjectKey::new(namespace, name), &b, namespace).map_err(|p| p.to_string())
}
