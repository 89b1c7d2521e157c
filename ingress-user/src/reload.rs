//! SIGHUP: re-read `--config FILE`, merge the same flags over it, and apply what can
//! change without a restart ([`crate::config::reload::plan`]): the listeners (bound
//! before anything changes, so a port that cannot be bound leaves the running ones as
//! they are), the proxy's limits and headers, the XDP guard's rules, the drain time.
//! Keys that need a restart are logged, one line each. A file that does not parse or
//! merge is logged with its FILE:LINE:COL and the running config stays.
//! Also the systemd readiness protocol (`READY=1`, `RELOADING=1`, `STOPPING=1`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::admin::Admin;
use crate::config::ListenMapping;
use crate::config::reload::{SlotPlan, plan, slots};
use crate::config::settings::{RunFlags, RunSettings, merge};
use crate::datapath::guard::{self, GuardEntries};
use crate::proxy::Proxy;
use crate::proxy::workers::{Serving, Workers};
use crate::sources::publish::Publisher;

/// What a reload re-reads and merges: the file, the command line's flags.
pub struct ReloadSource {
    pub path: Option<PathBuf>,
    pub flags: RunFlags,
    pub given: BTreeSet<String>,
}

/// What shutdown reads, as the last reload left it.
#[derive(Clone, Debug)]
pub struct ExitSettings {
    pub drain: Duration,
    pub detach_on_exit: bool,
}

/// The proxy's listening sockets, by slot (see [`crate::config::reload::SlotPlan`]):
/// each served by every L7 worker (`proxy/workers.rs`).
pub struct Listeners {
    slots: Vec<ListenMapping>,
    workers: Arc<Workers>,
    /// Every worker's accept task and socket for the slot (the sockets are kept to
    /// hand the same ones to a new mapping on the same address without a moment unbound).
    open: Vec<Option<Serving>>,
}

impl Listeners {
    /// Binds every mapping and starts accepting; the first that cannot be bound fails the start.
    pub async fn start(proxy: &Arc<Proxy>, workers: &Arc<Workers>, listen: &[ListenMapping]) -> Result<Self> {
        let mut me = Self { slots: listen.to_vec(), workers: workers.clone(), open: Vec::new() };
        for (i, m) in listen.iter().enumerate() {
            let socks = bind(workers, m)?;
            me.open.push(Some(spawn(proxy, workers, socks, i, m)?));
        }
        Ok(me)
    }

    fn active(&self) -> Vec<bool> {
        self.open.iter().map(Option::is_some).collect()
    }

    /// Moves to `new`: binds what is new (nothing changes if one cannot be bound), gives
    /// the publisher the new slots, then stops the removed listeners and starts the new.
    async fn apply(&mut self, proxy: &Arc<Proxy>, publisher: &Publisher, new: &[ListenMapping]) -> Result<SlotPlan> {
        let p = slots(&self.slots, &self.active(), new);
        let mut bound = Vec::new();
        for &i in &p.open {
            let m = &p.slots[i];
            // the same address as a listener being removed: its sockets, not a new bind
            let reuse = p.close.iter().find(|&&c| self.slots[c].addr == m.addr).and_then(|&c| self.open[c].as_ref());
            let socks = match reuse {
                Some(serving) => serving.sockets()?,
                None => bind(&self.workers, m)?,
            };
            bound.push((i, socks));
        }
        publisher.set_mappings(p.slots.clone());
        self.slots = p.slots.clone();
        self.open.resize_with(self.slots.len(), || None);
        for &c in &p.close {
            if let Some(serving) = self.open[c].take() {
                serving.stop().await;
                tracing::info!(listen = %self.slots[c], "stopped listening (config reload); its open connections finish");
            }
        }
        for (i, socks) in bound {
            self.open[i] = Some(spawn(proxy, &self.workers, socks, i, &self.slots[i])?);
        }
        Ok(p)
    }
}

fn bind(workers: &Workers, m: &ListenMapping) -> Result<Vec<std::net::TcpListener>> {
    workers.bind(m.addr).with_context(|| format!("cannot listen on {} (--listen {m})", m.addr))
}

fn spawn(
    proxy: &Arc<Proxy>,
    workers: &Workers,
    socks: Vec<std::net::TcpListener>,
    i: usize,
    m: &ListenMapping,
) -> Result<Serving> {
    let serving = workers.serve(proxy, socks, i).with_context(|| format!("cannot serve {m}"))?;
    tracing::info!(listen = %m, workers = workers.len(), "serving");
    Ok(serving)
}

/// Applies reloads to the running agent.
pub struct Reloader {
    pub source: ReloadSource,
    /// What runs now (keys that need a restart keep their running value here).
    pub current: RunSettings,
    pub listeners: Listeners,
    pub admin: Arc<Admin>,
    /// The guard's entries in XDP's maps (ebpf dataplane).
    pub guard_entries: Option<GuardEntries>,
    pub exit: Arc<Mutex<ExitSettings>>,
}

impl Reloader {
    /// Re-reads the file and applies it; Ok(lines saying what changed), or why nothing did.
    pub async fn reload(&mut self) -> Result<Vec<String>> {
        let Some(path) = self.source.path.clone() else {
            anyhow::bail!("no --config file: nothing to reload");
        };
        let file = crate::config::file::load(&path)?;
        let new = merge(&self.source.flags, &self.source.given, Some(&file))?;
        let p = plan(&self.current, &new);
        let mut done = Vec::new();
        // everything that can fail before anything changes: the guard's entries
        let entries = match &self.guard_entries {
            Some(_) if p.guard.is_some() || p.listen.is_some() => {
                let ports = guard::guarded_ports(
                    new.listen.iter().map(|m| m.addr.port()).chain(self.current.l4.iter().map(|m| m.port)),
                );
                Some(guard::translate(&new.guard, &ports)?)
            }
            _ => None,
        };
        if let Some(listen) = &p.listen {
            let s = self.listeners.apply(&self.admin.proxy, &self.admin.publisher, listen).await?;
            self.current.listen = listen.clone();
            done.push(format!(
                "listen: now {} (opened {}, closed {})",
                list(listen),
                list(&s.open.iter().map(|&i| s.slots[i].clone()).collect::<Vec<_>>()),
                list(&s.close.iter().map(|&i| s.slots[i].clone()).collect::<Vec<_>>()),
            ));
        }
        if let Some(c) = &p.proxy {
            self.admin.proxy.set_config(c.clone());
            self.current.proxy = c.clone();
            done.push(format!(
                "limits: head_timeout {}s, max_connections_per_source {}, forwarded_headers {}, request_id {}",
                c.head_timeout.as_secs(),
                c.max_connections_per_source,
                if c.forwarded_headers { "on" } else { "off" },
                c.request_ids
            ));
        }
        if let (Some(new_entries), Some(old), Some(maps)) = (entries, &self.guard_entries, &self.admin.guard) {
            if &new_entries != old {
                maps.lock().expect("guard maps").replace(old, &new_entries)?;
                done.push(format!("guard: {}", guard::describe(&new.guard, &new_entries)));
                self.guard_entries = Some(new_entries);
            }
            self.current.guard = new.guard.clone();
        }
        {
            let mut exit = self.exit.lock().expect("exit settings");
            if let Some(d) = p.drain {
                exit.drain = d;
                self.current.drain = d;
                done.push(format!("drain_timeout: {}s", d.as_secs()));
            }
            if let Some(d) = p.detach_on_exit {
                exit.detach_on_exit = d;
                self.current.detach_on_exit = d;
                done.push(format!("detach_on_exit: {d}"));
            }
        }
        for key in &p.restart {
            tracing::warn!(
                config = %path.display(),
                "config reload: `{key}` changed; it takes effect only after a restart (systemctl restart ebpf-ingress), the running value stays"
            );
        }
        Ok(done)
    }
}

fn list(v: &[ListenMapping]) -> String {
    if v.is_empty() { "none".into() } else { v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") }
}

/// SIGHUP's handler, installed before anything could send one (its default action
/// ends the process).
pub fn sighup() -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot handle SIGHUP")
}

/// Reloads on every SIGHUP until the process ends.
pub async fn follow_sighup(mut r: Reloader, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        notify(&[sd_notify::NotifyState::Reloading]);
        let shown = r.source.path.as_ref().map_or("(none)".into(), |p| p.display().to_string());
        match r.reload().await {
            Ok(done) if done.is_empty() => {
                tracing::info!(config = %shown, "config reloaded: nothing changed that applies live")
            }
            Ok(done) => {
                for d in done {
                    tracing::info!(config = %shown, "config reloaded: {d}");
                }
            }
            Err(e) => tracing::error!("config reload failed, keeping the running config: {e:#}"),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// Tells systemd (a `Type=notify` unit's $NOTIFY_SOCKET); nothing without it.
pub fn notify(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut all = state.to_vec();
    if state.iter().any(|s| matches!(s, sd_notify::NotifyState::Reloading)) {
        // systemd wants the time of a reload's start with RELOADING=1
        if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
            all.push(t);
        }
    }
    if let Err(e) = sd_notify::notify(&all) {
        tracing::warn!(error = %e, "cannot notify systemd ($NOTIFY_SOCKET)");
    }
}

/// READY=1 once the first routing table is published (programs are attached and the
/// listeners bound before this is called).
pub async fn ready_when_published(publisher: Arc<Publisher>) {
    while publisher.state().generation == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!("ready: routing table loaded, programs attached, listeners bound");
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]);
}
