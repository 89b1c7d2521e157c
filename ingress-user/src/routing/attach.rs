//! Route attachment: which served listeners a route's parentRefs select and accept
//! (sectionName, port, allowedRoutes kinds and namespaces), and the hostnames that
//! result from intersecting the route's with the listener's.
use std::collections::BTreeMap;

use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteParentRefs};
use gateway_api::apis::standard::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From_,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::{Selector, SelectorExt};

use super::{Hostname, RouteKind, RouteReport};
use crate::resources::{ObjectKey, Resources, namespace_of};

use super::GATEWAY_GROUP;
use super::builder::TableBuilder;
use super::status::{ParentAttach, Problem, Reason};

/// One listener a route attached to through its parentRef number `parent`: (parent,
/// table index, listener name, effective hostnames; None = any).
pub(super) type Attachment = (usize, usize, String, Vec<Option<Hostname>>);

/// What attachment reads of a route of any kind: its kind, hostnames and parentRefs
/// (a GRPCRoute's parentRefs have an HTTPRoute's fields, converted by the caller).
pub(super) struct RouteParents<'r> {
    pub(super) kind: RouteKind,
    pub(super) hostnames: &'r [String],
    pub(super) parent_refs: Vec<HttpRouteParentRefs>,
}

impl<'r> RouteParents<'r> {
    pub(super) fn http(route: &'r HttpRoute) -> Self {
        Self {
            kind: RouteKind::Http,
            hostnames: route.spec.hostnames.as_deref().unwrap_or(&[]),
            parent_refs: route.spec.parent_refs.clone().unwrap_or_default(),
        }
    }
}

/// Where a route attaches ([`Attachment`]s), and its status per parentRef to a served Gateway.
pub(super) fn attach(
    res: &Resources,
    tables: &[TableBuilder<'_>],
    key: &ObjectKey,
    route: &RouteParents<'_>,
    report: &mut RouteReport,
) -> (Vec<Attachment>, Vec<ParentAttach>) {
    let mut parents = Vec::new();
    let route_hosts: Vec<Hostname> = route.hostnames.iter().map(|h| Hostname::parse(h)).collect();
    let mut out = Vec::new();
    for pref in &route.parent_refs {
        if pref.group.as_deref().is_some_and(|g| g != GATEWAY_GROUP)
            || pref.kind.as_deref().is_some_and(|k| k != "Gateway")
        {
            continue; // not a Gateway parent: not ours
        }
        let gw_key = ObjectKey::new(pref.namespace.clone().unwrap_or_else(|| key.namespace.clone()), &pref.name);
        let mut matched_any_table = false;
        let before = out.len();
        let mut reasons = Vec::new();
        for (t, tb) in tables.iter().enumerate() {
            if tb.table.gateway != gw_key || tb.gateway.is_none() {
                continue;
            }
            matched_any_table = true;
            for l in tb.listeners_for(route.kind) {
                match listener_accepts(res, tb.gateway.unwrap(), l, pref, route.kind, &key.namespace, &route_hosts) {
                    Ok(hosts) => out.push((parents.len(), t, l.name.clone(), hosts)),
                    Err(p) => reasons.push(p.within(&format!("{gw_key}/{}", l.name))),
                }
            }
        }
        if !matched_any_table {
            continue;
        }
        let accepted_here = out.len() > before;
        let rejection = if accepted_here {
            None
        } else {
            // The most telling reason: a listener that the ref selects but refuses the
            // route beats "no listener selected".
            let reason = [Reason::NotAllowedByListeners, Reason::NoMatchingListenerHostname]
                .into_iter()
                .find(|r| reasons.iter().any(|p| p.reason == *r))
                .unwrap_or(Reason::NoMatchingParent);
            let why = if reasons.is_empty() {
                if route.kind == RouteKind::Tls {
                    "no TLS passthrough listener served".to_string()
                } else {
                    "no HTTP listener served".to_string()
                }
            } else {
                reasons.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
            };
            report.problems.push(format!("parentRef {gw_key}: not accepted: {why}"));
            Some(Problem::new(reason, why))
        };
        parents.push(ParentAttach {
            gateway: gw_key,
            section_name: pref.section_name.clone(),
            port: pref.port,
            rejection,
        });
    }
    (out, parents)
}

/// Whether listener `l` accepts the route (of `kind`) through `pref`; the effective
/// hostnames if so.
pub(super) fn listener_accepts(
    res: &Resources,
    gw: &Gateway,
    l: &GatewayListeners,
    pref: &HttpRouteParentRefs,
    kind: RouteKind,
    route_ns: &str,
    route_hosts: &[Hostname],
) -> Result<Vec<Option<Hostname>>, Problem> {
    if pref.section_name.as_ref().is_some_and(|s| s != &l.name) {
        return Err(Problem::new(Reason::NoMatchingParent, "sectionName does not name this listener"));
    }
    if pref.port.is_some_and(|p| p != l.port) {
        return Err(Problem::new(Reason::NoMatchingParent, "port does not match this listener"));
    }
    let allowed = l.allowed_routes.as_ref();
    // "When unspecified or empty, the kinds of Routes selected are determined using the
    // Listener protocol": HTTP and HTTPS listeners take HTTPRoutes and GRPCRoutes, TLS
    // (passthrough) listeners TLSRoutes.
    let ok = match allowed.and_then(|a| a.kinds.as_ref()).filter(|k| !k.is_empty()) {
        Some(kinds) => kinds
            .iter()
            .any(|k| k.kind == kind.as_str() && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP),
        None => match kind {
            RouteKind::Tls => l.protocol == "TLS",
            RouteKind::Http | RouteKind::Grpc => matches!(l.protocol.as_str(), "HTTP" | "HTTPS"),
        },
    };
    if !ok {
        let why = format!("listener allowedRoutes.kinds excludes {}", kind.as_str());
        return Err(Problem::new(Reason::NotAllowedByListeners, why));
    }
    let ns = allowed.and_then(|a| a.namespaces.as_ref());
    let gw_ns = namespace_of(&gw.metadata);
    let ns_ok = match ns.and_then(|n| n.from.as_ref()).unwrap_or(&From_::Same) {
        From_::All => true,
        From_::Same => route_ns == gw_ns,
        From_::Selector => ns.and_then(|n| n.selector.as_ref()).is_some_and(|s| {
            // the Kubernetes label selector semantics, from kube's Selector
            let selector = LabelSelector {
                match_labels: s.match_labels.clone(),
                match_expressions: s.match_expressions.as_ref().map(|es| {
                    es.iter()
                        .map(|e| LabelSelectorRequirement {
                            key: e.key.clone(),
                            operator: e.operator.clone(),
                            values: e.values.clone(),
                        })
                        .collect()
                }),
            };
            // an expression kube cannot parse (unknown operator) selects nothing
            Selector::try_from(selector).is_ok_and(|sel| sel.matches(&namespace_labels(res, route_ns)))
        }),
    };
    if !ns_ok {
        return Err(Problem::new(Reason::NotAllowedByListeners, format!("namespace {route_ns} is not allowed")));
    }
    let listener_host = l.hostname.as_deref().map(Hostname::parse);
    let hosts: Vec<Option<Hostname>> = match (&listener_host, route_hosts.is_empty()) {
        (None, true) => vec![None],
        (None, false) => route_hosts.iter().cloned().map(Some).collect(),
        (Some(lh), true) => vec![Some(lh.clone())],
        (Some(lh), false) => route_hosts.iter().filter_map(|rh| Hostname::intersect(lh, rh)).map(Some).collect(),
    };
    if hosts.is_empty() {
        return Err(Problem::new(Reason::NoMatchingListenerHostname, "no route hostname matches the listener's"));
    }
    Ok(hosts)
}

/// Labels of a namespace, with the `kubernetes.io/metadata.name` label Kubernetes sets.
pub(super) fn namespace_labels(res: &Resources, ns: &str) -> BTreeMap<String, String> {
    let mut labels = res.namespaces.get(ns).and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    labels
}
