//! The manifest directory watcher: reloads the directory on every change, after a
//! quiet period, and publishes the new set or keeps the last good table.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

use super::manifest;
use super::publish::Publisher;

/// How long a directory must be quiet before a reload: editors write in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads the manifests of `dir` and publishes them, or rejects them.
pub fn reload(dir: &Path, publisher: &Publisher) {
    match manifest::load_dir(dir) {
        Ok(res) => {
            publisher.publish(&res);
        }
        Err(e) => publisher.reject(e.to_string()),
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

/// Starts watching `dir`: the watch is registered when this returns (so no change
/// made after it is missed), and the returned future reloads on every change, after
/// [`DEBOUNCE`] of quiet, until it is dropped.
pub fn watch_manifests(dir: PathBuf, publisher: Arc<Publisher>) -> notify::Result<impl Future<Output = ()>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let _ = tx.send(ev);
    })?;
    // notify's inotify backend adds the watch before `watch` returns.
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %dir.display(), "watching manifests for changes");
    Ok(async move {
        // The watcher lives as long as the loop: dropping it ends the watch.
        let _watcher = watcher;
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
            let _ = tokio::task::spawn_blocking(move || reload(&d, &publisher)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenMapping;
    use crate::routing;
    use crate::sources::publish::SourceState;

    // A per-process directory under std's temp dir: enough here, without the tempfile crate.
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
        reload(&dir, &publisher);
        assert_eq!(publisher.state().generation, 1);
        assert_eq!(hosts(&table), ["a.test"]);
        // Registered on return: the write below cannot slip in before the watch.
        let watch = tokio::spawn(watch_manifests(dir.clone(), publisher.clone()).expect("watch the directory"));

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
