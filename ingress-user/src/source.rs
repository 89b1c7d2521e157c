//! Route sources feed a [`Publisher`], which compiles and swaps in a new routing
//! table, or, when the new input is bad, keeps the last good table and records the
//! error for `/readyz` and `ingress routes`. The manifest source watches its
//! directory and reloads on change, debounced.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};

use crate::config::ListenMapping;
use crate::manifest;
use crate::resources::Resources;
use crate::routing;

/// How long a directory must be quiet before a reload: editors write in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the route source last did, for `/readyz` and `/routes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
    mappings: Vec<ListenMapping>,
    state: Mutex<SourceState>,
}

impl Publisher {
    pub fn new(table: routing::TableHandle, mappings: Vec<ListenMapping>, source: String) -> Arc<Self> {
        Arc::new(Self {
            table,
            mappings,
            state: Mutex::new(SourceState { source, generation: 0, published_at: 0, error: None }),
        })
    }

    /// Compiles `res`, swaps the table in, clears the error; returns the new table.
    pub fn publish(&self, res: &Resources) -> Arc<routing::Table> {
        let table = routing::compile(res, &self.mappings);
        for (m, l) in self.mappings.iter().zip(&table.listeners) {
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
        table
    }

    /// Records why the newest input was rejected; the current table stays.
    pub fn reject(&self, error: String) {
        tracing::error!("{error}; keeping the last good routing table");
        self.state.lock().expect("source state").error = Some(error);
    }

    pub fn state(&self) -> SourceState {
        self.state.lock().expect("source state").clone()
    }

    /// Loads the manifests of `dir` and publishes them, or rejects them.
    pub fn reload_dir(&self, dir: &Path) {
        match manifest::load_dir(dir) {
            Ok(res) => {
                self.publish(&res);
            }
            Err(e) => self.reject(e.to_string()),
        }
    }
}

/// Whether a file-system event can change what the directory holds.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `dir` and reloads on every change, after [`DEBOUNCE`] of quiet. Runs
/// until the watcher fails.
pub async fn watch_manifests(dir: PathBuf, publisher: Arc<Publisher>) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let _ = tx.send(ev);
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %dir.display(), "watching manifests for changes");
    while let Some(ev) = rx.recv().await {
        match ev {
            Ok(ev) if !relevant(&ev.kind) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "manifest watch error");
                continue;
            }
        }
        // Debounce: wait for a quiet period, dropping the events of the burst.
        while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        let publisher = publisher.clone();
        let d = dir.clone();
        // Parsing and compiling are CPU work: off the async workers.
        let _ = tokio::task::spawn_blocking(move || publisher.reload_dir(&d)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ingress-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const GW: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: ns}\nspec:\n  gatewayClassName: x\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n";

    fn route(host: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules: [{{}}]\n"
        )
    }

    fn hosts(t: &routing::TableHandle) -> Vec<String> {
        t.load().listeners[0].vhosts().iter().map(|v| v.hostname.clone()).collect()
    }

    async fn wait_for(publisher: &Publisher, what: &str, cond: impl Fn(&SourceState) -> bool) {
        let start = std::time::Instant::now();
        while !cond(&publisher.state()) {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}: {:?}", publisher.state());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reloads_on_change_and_keeps_the_last_good_table_on_errors() {
        let dir = tempdir("reload");
        std::fs::write(dir.join("gw.yaml"), GW).unwrap();
        std::fs::write(dir.join("route.yaml"), route("a.test")).unwrap();
        let mapping: ListenMapping = "127.0.0.1:8080=ns/gw".parse().unwrap();
        let table = routing::TableHandle::default();
        let publisher = Publisher::new(table.clone(), vec![mapping], "manifests".into());
        publisher.reload_dir(&dir);
        assert_eq!(publisher.state().generation, 1);
        assert_eq!(hosts(&table), ["a.test"]);
        let watch = tokio::spawn(watch_manifests(dir.clone(), publisher.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await; // watch registered

        // a change: served after the debounce
        std::fs::write(dir.join("route.yaml"), route("b.test")).unwrap();
        wait_for(&publisher, "generation 2", |s| s.generation >= 2).await;
        assert_eq!(hosts(&table), ["b.test"]);

        // a bad file: error recorded with file, document, line, field; table unchanged
        std::fs::write(
            dir.join("bad.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: eighty}]\n",
        )
        .unwrap();
        wait_for(&publisher, "an error", |s| s.error.is_some()).await;
        let err = publisher.state().error.unwrap();
        assert!(err.contains("bad.yaml: document 1, line 5, field `spec.ports[0].port`"), "{err}");
        assert_eq!(hosts(&table), ["b.test"], "the last good table stays");
        let generation = publisher.state().generation;

        // fixed: error cleared, new table
        std::fs::remove_file(dir.join("bad.yaml")).unwrap();
        wait_for(&publisher, "the error to clear", |s| s.error.is_none()).await;
        assert!(publisher.state().generation > generation);
        watch.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
