//! From objects to a [`Table`]: listener selection, route attachment (parentRefs,
//! allowedRoutes, hostname intersection, hostnames shared between HTTPRoutes and
//! GRPCRoutes), rule and filter compilation, backend resolution (Service port ->
//! EndpointSlice ready endpoints, ReferenceGrant).

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::attach::{Attachment, RouteParents, attach};
use super::builder::TableBuilder;
use super::grpc::{compile_grpc_rules, parents as grpc_parents};
use super::refs::SliceIndex;
use super::rules::compile_rules;
use super::status::{ParentAttach, Problem, Reason, RuleIssues, parent_statuses};
use super::{Hostname, RouteKind, RouteReport, Table};
use crate::config::ListenMapping;
use crate::resources::{ObjectKey, Resources};

/// A route after attachment, before its rules are compiled.
struct Candidate {
    kind: RouteKind,
    key: ObjectKey,
    /// Creation time, RFC 3339 (empty when unknown: sorts last).
    created: String,
    report: RouteReport,
    attachments: Vec<Attachment>,
    parents: Vec<ParentAttach>,
}

fn created(meta: &ObjectMeta) -> String {
    meta.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
}

/// Compiles the routing table for the given listen mappings.
pub fn compile(res: &Resources, mappings: &[ListenMapping]) -> Table {
    let slices = SliceIndex::new(res);
    let mut tables: Vec<TableBuilder> = mappings.iter().map(|m| TableBuilder::new(res, m)).collect();
    let mut candidates = Vec::new();
    let routes = res.http_routes.iter().map(|(k, r)| (k, RouteParents::http(r), created(&r.metadata)));
    let grpc = res.grpc_routes.iter().map(|(k, r)| (k, grpc_parents(r), created(&r.metadata)));
    for (key, parents, created) in routes.chain(grpc) {
        let label = parents.kind.label(key);
        let mut report = RouteReport { route: label, attached: vec![], problems: vec![], parents: vec![] };
        let (attachments, parents_status) = attach(res, &tables, key, &parents, &mut report);
        candidates.push(Candidate {
            kind: parents.kind,
            key: key.clone(),
            created,
            report,
            attachments,
            parents: parents_status,
        });
    }
    shared_hostnames(&mut candidates, &tables);
    let mut reports = Vec::new();
    for c in candidates {
        let Candidate { kind, key, mut report, attachments, parents, .. } = c;
        if !parents.is_empty() {
            let mut issues = RuleIssues::default();
            let rules = match kind {
                RouteKind::Http => compile_rules(res, &slices, &key, &res.http_routes[&key], &mut report, &mut issues),
                RouteKind::Grpc => {
                    compile_grpc_rules(res, &slices, &key, &res.grpc_routes[&key], &mut report, &mut issues)
                }
                // never a candidate here: TLSRoutes are compiled by passthrough.rs
                RouteKind::Tls => Vec::new(),
            };
            report.parents = parent_statuses(parents, &issues);
            for (_, t, listener, hostnames) in attachments {
                report.attached.push(format!("{}/{}", tables[t].table.gateway, listener));
                tables[t].add(kind, &key, &hostnames, &rules);
            }
            report.attached.sort();
            report.attached.dedup();
        }
        if !report.attached.is_empty() || !report.problems.is_empty() {
            reports.push(report);
        }
    }
    let tls_routes = super::passthrough::compile_tls_routes(res, &slices, &mut tables);
    let mut listeners = Vec::new();
    for tb in tables {
        let (table, notes) = tb.finish();
        for (route, note) in notes {
            match reports.iter_mut().find(|r| r.route == route) {
                Some(r) => r.problems.push(note),
                None => reports.push(RouteReport { route, attached: vec![], problems: vec![note], parents: vec![] }),
            }
        }
        listeners.push(table);
    }
    Table { listeners, routes: reports, tls_routes }
}

/// Whether two sets of effective hostnames (None = any host) have a host in common.
fn hostnames_intersect(a: &[Option<Hostname>], b: &[Option<Hostname>]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| match (x, y) {
            (None, _) | (_, None) => true,
            (Some(x), Some(y)) => Hostname::intersect(x, y).is_some(),
        })
    })
}

/// The GRPCRoute spec on a hostname an HTTPRoute and a GRPCRoute share:
///
/// > If a Route (A) of type HTTPRoute or GRPCRoute is attached to a Listener and that
/// > listener already has another Route (B) of the other type attached and the
/// > intersection of the hostnames of A and B is non-empty, then the implementation
/// > MUST accept exactly one of these two routes, determined by the following
/// > criteria, in order:
/// >
/// > * The oldest Route based on creation timestamp.
/// > * The Route appearing first in alphabetical order by "{namespace}/{name}".
/// >
/// > The rejected Route MUST raise an 'Accepted' condition with a status of 'False' in
/// > the corresponding RouteParentStatus.
///
/// So, per listener, routes are taken oldest first; a route whose hostnames meet those
/// of a route of the other kind already taken there is not attached to that listener.
/// A parentRef left with no listener is not accepted (`NotAllowedByListeners`, with
/// the winning route named in the message).
fn shared_hostnames(candidates: &mut [Candidate], tables: &[TableBuilder<'_>]) {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let k = |c: &Candidate| (c.created.is_empty(), c.created.clone(), c.key.clone(), c.kind);
        k(&candidates[a]).cmp(&k(&candidates[b]))
    });
    // (table, listener) -> the routes taken there, by kind: (label, effective hostnames)
    type Taken = Vec<(String, Vec<Option<Hostname>>)>;
    let mut taken: HashMap<(usize, String), [Taken; 2]> = HashMap::new();
    // (TLSRoutes never share a listener with these: passthrough.rs)
    let slot = |k: RouteKind| match k {
        RouteKind::Http | RouteKind::Tls => 0,
        RouteKind::Grpc => 1,
    };
    for i in order {
        let c = &mut candidates[i];
        let mut kept = Vec::new();
        let mut lost: Vec<(usize, String)> = Vec::new();
        for a in std::mem::take(&mut c.attachments) {
            let (parent, t, listener, hosts) = &a;
            let here = taken.entry((*t, listener.clone())).or_default();
            let other = &here[1 - slot(c.kind)];
            match other.iter().find(|(_, h)| hostnames_intersect(h, hosts)) {
                Some((winner, _)) => {
                    let why = format!(
                        "listener {}/{listener}: a hostname is shared with the older {winner} (an HTTPRoute and a \
                         GRPCRoute must not share a hostname on a listener)",
                        tables[*t].table.gateway
                    );
                    lost.push((*parent, why));
                }
                None => {
                    here[slot(c.kind)].push((c.report.route.clone(), hosts.clone()));
                    kept.push(a);
                }
            }
        }
        for (parent, why) in lost {
            let p = &mut c.parents[parent];
            if kept.iter().any(|a| a.0 == parent) {
                c.report.problems.push(format!("NotAllowedByListeners: {why}"));
            } else if p.rejection.is_none() {
                c.report.problems.push(format!("parentRef {}: not accepted: NotAllowedByListeners: {why}", p.gateway));
                p.rejection = Some(Problem::new(Reason::NotAllowedByListeners, why));
            }
        }
        c.attachments = kept;
    }
}
