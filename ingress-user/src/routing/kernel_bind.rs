//! Eligibility for delayed binding (the kernel picks the pod from the first request's
//! Host and the connection never reaches the agent), pure: a host is kernel-bindable
//! when it is splice-safe (one backend, unchanged, for every request; a catch-all rule;
//! see `splice_decision`) and, beyond that, the kernel's head scanner can find it:
//! an exact hostname (the kernel looks hosts up by exact name, not by wildcard) whose
//! key fits ([`HOST_KEY_MAX`]) and has only the characters the scanner accepts, on a
//! plain-HTTP listen address, with IPv4 endpoints the kernel's map can hold. The
//! options that add headers to every request (`--forwarded-headers`, `--request-id`)
//! make nothing bindable: a bound connection's bytes reach the pod unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use ingress_common::bind::BIND_MAX_ENDPOINTS;
use ingress_common::head::HOST_KEY_MAX;

use super::{Backend, BackendTarget, ListenerTable, VirtualHost};

/// How a virtual host is found by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Exact,
    Wildcard,
    /// Routes without hostnames: any Host.
    Any,
}

/// Why nothing is bindable when the proxy adds headers to every request, or None.
pub fn runtime_reason(forwarded_headers: bool, request_ids: bool) -> Option<&'static str> {
    if forwarded_headers {
        Some("the proxy adds X-Forwarded-* headers to every request (`--forwarded-headers off` allows binding)")
    } else if request_ids {
        Some("the proxy adds X-Request-Id to requests (`--request-id` is on)")
    } else {
        None
    }
}

/// Whether the head scanner can produce `host` as a key: lowercase letters, digits,
/// `-`, `.`, `_`, no trailing dot (the scanner strips one), 1..HOST_KEY_MAX bytes.
pub fn scannable_host(host: &str) -> bool {
    let b = host.as_bytes();
    !b.is_empty()
        && b.len() < HOST_KEY_MAX
        && !host.ends_with('.')
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_'))
}

/// The IPv4 endpoints of the backend every request of a bindable host goes to.
pub fn bind_endpoints(b: &Backend) -> Result<Vec<SocketAddr>, String> {
    let BackendTarget::Endpoints(eps) = &b.target else { return Err(format!("backend {} does not resolve", b.name)) };
    if eps.iter().any(|e| !e.is_ipv4()) {
        return Err(format!("backend {} has an IPv6 endpoint (the kernel's backend map holds IPv4)", b.name));
    }
    if eps.len() > BIND_MAX_ENDPOINTS {
        return Err(format!(
            "backend {} has {} endpoints (the kernel's map holds {BIND_MAX_ENDPOINTS})",
            b.name,
            eps.len()
        ));
    }
    Ok(eps.clone())
}

/// Whether connections to `vhost` (found as `kind` on `listener`) may be bound to its
/// pod in the kernel, or why not. Runtime options are judged by [`runtime_reason`].
pub fn decision(listener: &ListenerTable, vhost: &VirtualHost, kind: HostKind) -> Result<(), String> {
    if let Err(w) = &vhost.splice {
        return Err(format!("not splice-safe: {w}"));
    }
    if listener.tls.is_some() {
        return Err("the listen address terminates TLS (HTTPS): the kernel cannot read the request head".into());
    }
    if listener.passthrough.is_some() {
        return Err("the listen address serves TLS passthrough".into());
    }
    match kind {
        HostKind::Exact => {}
        HostKind::Wildcard => return Err("a wildcard hostname: the kernel looks hosts up by exact name".into()),
        HostKind::Any => {
            return Err("routes without hostnames (any Host): the kernel looks hosts up by exact name".into());
        }
    }
    let h = &vhost.hostname;
    if h.len() >= HOST_KEY_MAX {
        return Err(format!("the hostname has {} bytes; the kernel's host key holds {}", h.len(), HOST_KEY_MAX - 1));
    }
    if !scannable_host(h) {
        return Err("the hostname has characters the kernel's head scanner does not accept".into());
    }
    let b = vhost.splice_backend().ok_or("no backend")?;
    bind_endpoints(b).map(|_| ())
}

impl ListenerTable {
    /// Every virtual host in [`ListenerTable::vhosts`] order, with its kind.
    pub fn vhosts_by_kind(&self) -> Vec<(&Arc<VirtualHost>, HostKind)> {
        let mut v: Vec<_> = self.hosts.values().map(|h| (h, HostKind::Exact)).collect();
        v.sort_by(|a, b| a.0.hostname.cmp(&b.0.hostname));
        v.extend(self.wildcards.iter().map(|(_, h)| (h, HostKind::Wildcard)));
        v.extend(self.any.iter().map(|h| (h, HostKind::Any)));
        v
    }

    /// [`decision`] for every virtual host, in [`ListenerTable::vhosts`] order.
    pub fn kernel_binding(&self) -> Vec<(&Arc<VirtualHost>, Result<(), String>)> {
        self.vhosts_by_kind().into_iter().map(|(v, k)| (v, decision(self, v, k))).collect()
    }
}

impl super::Table {
    /// Every IPv4 endpoint any backend of the table names, bound or not: an endpoint
    /// still here is a live pod, so the flows bound to it are left alone when its host
    /// stops being eligible.
    pub fn ipv4_endpoints(&self) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
        let mut out = std::collections::BTreeSet::new();
        for lt in &self.listeners {
            for v in lt.vhosts() {
                for b in v.entries.iter().flat_map(|e| &e.rule.backends) {
                    if let BackendTarget::Endpoints(eps) = &b.target {
                        out.extend(eps.iter().filter_map(|e| match e {
                            SocketAddr::V4(a) => Some(*a.ip()),
                            SocketAddr::V6(_) => None,
                        }));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::tests::{GATEWAY, route, service, table};

    #[test]
    fn any_host_routes_are_not_bound_and_only_scannable_names_are_keys() {
        let body = "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n";
        let t = table(
            &format!("{GATEWAY}{}{}", service("app", "a", &["10.42.0.10"]), route("app", "r", body)),
            "0.0.0.0:9080=infra/gw:80",
        );
        let d = t.listeners[0].kernel_binding();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0.hostname, "*");
        assert!(d[0].0.splice.is_ok(), "splice-safe, but found by any Host");
        assert!(d[0].1.as_ref().is_err_and(|w| w.contains("any Host")), "{:?}", d[0].1);
        assert!(scannable_host("a-b.c_d.test") && scannable_host(&"a".repeat(63)));
        for bad in ["", "A.test", "a.test.", "a b", "[::1]", "a:80", "é.test"] {
            assert!(!scannable_host(bad), "{bad:?}");
        }
        assert!(!scannable_host(&"a".repeat(64)));
        assert!(runtime_reason(true, false).is_some_and(|w| w.contains("X-Forwarded")));
        assert!(runtime_reason(false, true).is_some_and(|w| w.contains("X-Request-Id")));
        assert_eq!(runtime_reason(false, false), None);
    }

    #[test]
    fn the_tables_endpoints_are_every_backends_bound_or_not() {
        // one host split by path (not bindable), its backends' endpoints still count
        let body = "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: [a.test]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /x}}]\n    backendRefs: [{name: a, port: 80}]\n  - backendRefs: [{name: b, port: 80}]\n";
        let objs = format!(
            "{GATEWAY}{}{}{}",
            service("app", "a", &["10.42.0.10", "10.42.0.11"]),
            service("app", "b", &["10.42.0.12"]),
            route("app", "r", body)
        );
        let t = table(&objs, "0.0.0.0:9080=infra/gw:80");
        assert!(t.listeners[0].kernel_binding().iter().all(|(_, d)| d.is_err()), "nothing bindable");
        let want: Vec<std::net::Ipv4Addr> =
            ["10.42.0.10", "10.42.0.11", "10.42.0.12"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(t.ipv4_endpoints().into_iter().collect::<Vec<_>>(), want);
    }
}
