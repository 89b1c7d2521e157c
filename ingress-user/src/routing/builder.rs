//! One listen mapping's table under construction: the Gateway's served listeners, the
//! entries per hostname in precedence order, and notes on rules that never match.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gateway_api::apis::standard::gateways::{Gateway, GatewayListeners};

use super::matching::PathMatch;
use super::rules::CompiledRule;
use super::{Entry, Hostname, ListenerTable, RouteKind, VirtualHost};
use crate::config::ListenMapping;
use crate::resources::{ObjectKey, Resources};

pub(super) struct TableBuilder<'a> {
    pub(super) table: ListenerTable,
    pub(super) gateway: Option<&'a Gateway>,
    pub(super) served: Vec<&'a GatewayListeners>,
    /// hostname (None = any) -> entries
    pub(super) vhosts: HashMap<Option<Hostname>, Vec<Entry>>,
    pub(super) seen: HashSet<(RouteKind, ObjectKey, Option<Hostname>)>,
    /// `protocol: TLS`, `tls.mode: Passthrough` listeners: TLSRoutes attach here (passthrough.rs).
    pub(super) passthrough: Vec<&'a GatewayListeners>,
}

impl<'a> TableBuilder<'a> {
    pub(super) fn new(res: &'a Resources, m: &ListenMapping) -> Self {
        let mut table = ListenerTable { gateway: m.gateway.clone(), ..Default::default() };
        let gateway = res.gateways.get(&m.gateway);
        let mut served = Vec::new();
        let mut passthrough = Vec::new();
        match gateway {
            None => table.problems.push(format!("Gateway {} not found", m.gateway)),
            Some(gw) => {
                for l in &gw.spec.listeners {
                    if m.listener_port.is_some_and(|p| i32::from(p) != l.port) {
                        continue;
                    }
                    if super::passthrough::is_passthrough(l) {
                        passthrough.push(l);
                        continue;
                    }
                    if l.protocol != "HTTP" && l.protocol != "HTTPS" {
                        table.problems.push(format!(
                            "listener {} ({} port {}) is not served: only HTTP, HTTPS (Terminate) and TLS (Passthrough) listeners are",
                            l.name, l.protocol, l.port
                        ));
                        continue;
                    }
                    served.push(l);
                }
                // HTTPS: one protocol per mapping, certificates (routing/tls.rs)
                let https = super::tls::choose_protocol(&mut served, m.listener_port, &mut table.problems);
                for l in &served {
                    table.listeners.push((l.name.clone(), l.port as u16));
                }
                if https {
                    let ns = crate::resources::namespace_of(&gw.metadata);
                    let (tls, problems) = super::tls::build(res, &ns, &served);
                    table.problems.extend(problems);
                    table.tls = Some(tls);
                }
                if served.is_empty() && passthrough.is_empty() {
                    table.problems.push(format!(
                        "Gateway {} has no HTTP or HTTPS listener{}",
                        m.gateway,
                        m.listener_port.map(|p| format!(" on port {p}")).unwrap_or_default()
                    ));
                }
            }
        }
        Self { table, gateway, served, vhosts: HashMap::new(), seen: HashSet::new(), passthrough }
    }

    /// The listeners routes of `kind` attach to: TLS passthrough ones for TLSRoutes.
    pub(super) fn listeners_for(&self, kind: RouteKind) -> &[&'a GatewayListeners] {
        if kind == RouteKind::Tls { &self.passthrough } else { &self.served }
    }

    pub(super) fn add(
        &mut self,
        kind: RouteKind,
        route: &ObjectKey,
        hostnames: &[Option<Hostname>],
        rules: &[CompiledRule],
    ) {
        for h in hostnames {
            if !self.seen.insert((kind, route.clone(), h.clone())) {
                continue;
            }
            let entries = self.vhosts.entry(h.clone()).or_default();
            for r in rules {
                for m in &r.matchers {
                    entries.push(Entry { matcher: m.clone(), rule: r.rule.clone() });
                }
            }
        }
    }

    /// The finished table, and notes (route, text) about rules that can never match.
    pub(super) fn finish(self) -> (ListenerTable, Vec<(String, String)>) {
        let mut t = self.table;
        let mut notes = Vec::new();
        for (h, mut entries) in self.vhosts {
            entries.sort_by(|a, b| a.matcher.precedence(&b.matcher));
            shadowed(&h, &entries, &mut notes);
            let name = h.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "*".into());
            let mut vhost = VirtualHost::new(name, entries);
            if t.tls.is_some() {
                vhost.splice = Err("served over TLS: the agent terminates it, no join in the kernel".into());
            }
            let vhost = Arc::new(vhost);
            match h {
                Some(Hostname::Exact(e)) => {
                    t.hosts.insert(e, vhost);
                }
                Some(Hostname::Wildcard(suffix)) => t.wildcards.push((suffix, vhost)),
                None => t.any = Some(vhost),
            }
        }
        t.wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        notes.sort();
        notes.dedup();
        (t, notes)
    }
}

/// Notes for entries that an earlier entry (higher precedence) always wins over: the
/// same match, or any regular-expression path after a bare `PathPrefix /`.
pub(super) fn shadowed(host: &Option<Hostname>, entries: &[Entry], notes: &mut Vec<(String, String)>) {
    let host = host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "*".into());
    let mut seen: HashMap<String, &Entry> = HashMap::new();
    let mut catch_all: Option<&Entry> = None;
    for e in entries {
        let winner = match (&e.matcher.path, catch_all) {
            (PathMatch::Regex(_), Some(c)) => Some(c),
            _ => seen.get(&e.matcher.signature()).copied(),
        };
        if let Some(w) = winner {
            if !Arc::ptr_eq(&w.rule, &e.rule) {
                notes.push((
                    e.rule.route_label(),
                    format!(
                        "rule {} match `{}` on host {host} never matches: {} rule {} takes precedence",
                        e.rule.index,
                        e.matcher.signature(),
                        w.rule.route_label(),
                        w.rule.index
                    ),
                ));
            }
            continue;
        }
        seen.insert(e.matcher.signature(), e);
        if catch_all.is_none() && e.matcher.is_catch_all() {
            catch_all = Some(e);
        }
    }
}
