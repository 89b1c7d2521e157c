//! From objects to a [`Table`]: listener selection, route attachment (parentRefs,
//! allowedRoutes, hostname intersection), rule and filter compilation, backend
//! resolution (Service port -> EndpointSlice ready endpoints, ReferenceGrant).

use super::attach::attach;
use super::builder::TableBuilder;
use super::refs::SliceIndex;
use super::rules::compile_rules;
use super::status::{RuleIssues, parent_statuses};
use super::{RouteReport, Table};
use crate::config::ListenMapping;
use crate::resources::Resources;

/// Compiles the routing table for the given listen mappings.
pub fn compile(res: &Resources, mappings: &[ListenMapping]) -> Table {
    let slices = SliceIndex::new(res);
    let mut tables: Vec<TableBuilder> = mappings.iter().map(|m| TableBuilder::new(res, m)).collect();
    let mut reports = Vec::new();
    for (key, route) in &res.http_routes {
        let mut report = RouteReport { route: key.to_string(), attached: vec![], problems: vec![], parents: vec![] };
        let (attachments, parents) = attach(res, &tables, key, route, &mut report);
        if !parents.is_empty() {
            let mut issues = RuleIssues::default();
            let rules = compile_rules(res, &slices, key, route, &mut report, &mut issues);
            report.parents = parent_statuses(parents, &issues);
            for (t, listener, hostnames) in attachments {
                report.attached.push(format!("{}/{}", tables[t].table.gateway, listener));
                tables[t].add(key, &hostnames, &rules);
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
