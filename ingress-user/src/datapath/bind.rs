//! Delayed binding's map entries, pure: from the routing table and the listen ports to
//! the bindable hosts' map (`BIND_HOSTS`: listen port + host -> backend id) and the
//! backends' map (`BIND_BACKENDS`: backend id -> its IPv4 endpoints). Only hosts
//! [`crate::routing::kernel_bind::decision`] finds eligible get an entry; the others
//! are listed with the reason. Nothing loads these maps yet (binding is not on).

use std::collections::BTreeMap;

use ingress_common::bind::{BIND_MAX_ENDPOINTS, BindBackend, BindEndpoint, BindTarget};
use ingress_common::head::BindHostKey;

use crate::routing::Table;
use crate::routing::kernel_bind::{self, bind_endpoints};

/// Options of the agent that make nothing bindable (headers added to every request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    pub forwarded_headers: bool,
    pub request_ids: bool,
}

/// One host's decision, for reports and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDecision {
    /// The listener table's index (as in the routing table and its view).
    pub listener: usize,
    pub port: u16,
    pub hostname: String,
    pub decision: Result<u32, String>,
}

/// The maps' entries, in a stable order (backend ids from 1 by first appearance).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BindEntries {
    pub hosts: Vec<(BindHostKey, BindTarget)>,
    pub backends: Vec<(u32, BindBackend)>,
    /// Backend id -> backend name (`namespace/service:port`).
    pub backend_names: BTreeMap<u32, String>,
    pub decisions: Vec<HostDecision>,
}

impl BindEntries {
    /// The backend the kernel binds a connection with this key to, as the map lookup
    /// would find it: (id, name).
    pub fn lookup(&self, key: &BindHostKey) -> Option<(u32, &str)> {
        let (_, t) = self.hosts.iter().find(|(k, _)| k == key)?;
        Some((t.backend, self.backend_names.get(&t.backend)?.as_str()))
    }
}

/// The entries for `table`, whose listener table `i` is served on port `ports[i]` (the
/// `--listen` mappings in order; a table without a port gets no entries).
pub fn translate(table: &Table, ports: &[u16], opts: BindOptions) -> BindEntries {
    let mut out = BindEntries::default();
    let mut ids: BTreeMap<String, u32> = BTreeMap::new();
    let runtime = kernel_bind::runtime_reason(opts.forwarded_headers, opts.request_ids);
    for (i, lt) in table.listeners.iter().enumerate() {
        let Some(&port) = ports.get(i) else { continue };
        let shared = ports.iter().filter(|&&p| p == port).count() > 1;
        for (vhost, decision) in lt.kernel_binding() {
            let decision = decision.and_then(|()| match runtime {
                Some(why) => Err(why.to_string()),
                None if shared => Err(format!(
                    "port {port} is served by more than one --listen address: the kernel's key has the port only"
                )),
                None => Ok(()),
            });
            let decision = decision.and_then(|()| {
                let backend = vhost.splice_backend().ok_or("no backend")?;
                let eps = bind_endpoints(backend)?;
                let key =
                    BindHostKey::new(port, vhost.hostname.as_bytes()).ok_or("the hostname does not fit the key")?;
                let next = ids.len() as u32 + 1;
                let id = *ids.entry(backend.name.clone()).or_insert_with(|| {
                    out.backends.push((next, backend_value(&eps)));
                    out.backend_names.insert(next, backend.name.clone());
                    next
                });
                out.hosts.push((key, BindTarget { backend: id, _pad: 0 }));
                Ok(id)
            });
            out.decisions.push(HostDecision { listener: i, port, hostname: vhost.hostname.clone(), decision });
        }
    }
    out
}

fn backend_value(eps: &[std::net::SocketAddr]) -> BindBackend {
    let mut b = BindBackend::default();
    for (slot, e) in b.endpoints.iter_mut().zip(eps.iter().take(BIND_MAX_ENDPOINTS)) {
        if let std::net::SocketAddr::V4(v4) = e {
            *slot = BindEndpoint { addr: u32::from_ne_bytes(v4.ip().octets()), port: v4.port(), _pad: 0 };
        }
    }
    b.count = eps.len().min(BIND_MAX_ENDPOINTS) as u32;
    b
}

pub mod corpus;
#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
