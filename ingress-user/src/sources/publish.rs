//! Route sources feed a [`Publisher`], which compiles and swaps in a new routing
//! table, or, when the new input is bad, keeps the last good table and records the
//! error for `/readyz` and `ingress routes`.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::ListenMapping;
use crate::resources::Resources;
use crate::routing;

/// What the route source last did, for `/readyz` and `/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub source: String,
    /// Tables published so far (1 after the first load).
    pub generation: u64,
    /// Seconds since the epoch of the last published table.
    pub published_at: u64,
    /// Why the newest input was not used; the last good table stays in service.
    pub error: Option<String>,
}

pub struct Publisher {
    table: routing::TableHandle,
    /// By slot (the proxy's listener index); a config reload may add slots.
    mappings: Mutex<Vec<ListenMapping>>,
    state: Mutex<SourceState>,
    /// Consumers of every published set of resources (the L4 translation), and the
    /// last set, handed to a consumer added later.
    hooks: Mutex<(Option<Resources>, Vec<ResourcesHook>)>,
}

/// Called with every set of resources the source publishes.
pub type ResourcesHook = Box<dyn FnMut(&Resources) + Send>;

impl Publisher {
    pub fn new(table: routing::TableHandle, mappings: Vec<ListenMapping>, source: String) -> Arc<Self> {
        Arc::new(Self {
            table,
            mappings: Mutex::new(mappings),
            state: Mutex::new(SourceState { source, generation: 0, published_at: 0, error: None }),
            hooks: Mutex::new((None, Vec::new())),
        })
    }

    /// Compiles `res`, swaps the table in, clears the error; returns the new table.
    pub fn publish(&self, res: &Resources) -> Arc<routing::Table> {
        let mappings = self.mappings.lock().expect("listen mappings").clone();
        let table = routing::compile(res, &mappings);
        for (m, l) in mappings.iter().zip(&table.listeners) {
            for p in &l.problems {
                tracing::warn!(listen = %m, "{p}");
            }
        }
        for r in &table.routes {
            for p in &r.problems {
                tracing::warn!(route = %r.route, "{p}");
            }
        }
        let table = Arc::new(table);
        self.table.store(table.clone());
        let mut s = self.state.lock().expect("source state");
        s.generation += 1;
        s.published_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        s.error = None;
        tracing::info!(generation = s.generation, "routing table published: {}", res.summary());
        drop(s);
        let mut hooks = self.hooks.lock().expect("resource hooks");
        for h in hooks.1.iter_mut() {
            h(res);
        }
        hooks.0 = Some(res.clone());
        table
    }

    /// Replaces the listen mappings (a config reload) and recompiles the last published
    /// resources for them, so the table has a slot for every mapping before it serves.
    pub fn set_mappings(&self, mappings: Vec<ListenMapping>) {
        *self.mappings.lock().expect("listen mappings") = mappings;
        if let Some(res) = self.last_resources() {
            self.publish(&res);
        }
    }

    /// The listen mappings, by slot (the Kubernetes source reads the Secrets their
    /// HTTPS listeners reference).
    pub fn mappings(&self) -> Vec<ListenMapping> {
        self.mappings.lock().expect("listen mappings").clone()
    }

    /// Adds a consumer of published resources; it first gets the last set published.
    pub fn add_hook(&self, mut hook: ResourcesHook) {
        let mut hooks = self.hooks.lock().expect("resource hooks");
        if let Some(last) = &hooks.0 {
            hook(last);
        }
        hooks.1.push(hook);
    }

    /// The last set of resources published, if any.
    pub fn last_resources(&self) -> Option<Resources> {
        self.hooks.lock().expect("resource hooks").0.clone()
    }

    /// Records why the newest input was rejected; the current table stays.
    pub fn reject(&self, error: String) {
        tracing::error!("{error}; keeping the last good routing table");
        self.state.lock().expect("source state").error = Some(error);
    }

    pub fn state(&self) -> SourceState {
        self.state.lock().expect("source state").clone()
    }
}
