//! Wiring: the route source, the table handle, the eBPF dataplane, the proxy and the
//! admin endpoint, started in that order; shutdown drains in-flight requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;

use crate::admin::{self, Admin};
use crate::cli::{Cli, Cmd, DataplaneMode, OnOff};
use crate::config::ListenMapping;
use crate::datapath::{self, Joiner};
use crate::proxy::{Proxy, ProxyConfig};
use crate::routing;
use crate::sources::publish::Publisher;
use crate::sources::{k8s, manifest, watch_dir};
use crate::telemetry::{StatsView, format_table};

/// Runs a parsed command line.
pub fn main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run {
            manifests,
            kubeconfig,
            write_status,
            listen,
            interface,
            dataplane,
            admin,
            drain_timeout,
            max_connections_per_source,
            head_timeout,
            forwarded_headers,
            request_id,
            cgroup,
            pod_route,
        } => {
            let source = match manifests {
                Some(dir) => Source::Manifests(dir),
                None => Source::Kubernetes { kubeconfig, write_status },
            };
            raise_open_files_limit();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.spawn(return_freed_memory());
            let config = ProxyConfig {
                max_connections_per_source,
                head_timeout: Duration::from_secs(head_timeout),
                forwarded_headers: forwarded_headers == OnOff::On,
                request_ids: request_id,
            };
            let drain = Duration::from_secs(drain_timeout);
            let host = HostSetup { cgroup, pod_routes: pod_route };
            rt.block_on(serve(source, listen, interface, dataplane, admin, config, drain, host))
        }
        Cmd::Stats { admin, json } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if json {
                println!("{}", rt.block_on(admin::client::get(admin, "/stats"))?);
            } else {
                let s: StatsView = rt.block_on(admin::client::get_json(admin, "/stats"))?;
                print!("{}", format_table(&s));
            }
            Ok(())
        }
        Cmd::Check { interface, pin_path, json } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let report = rt.block_on(crate::check::check(interface.as_deref(), &pin_path));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::check::report::format_table(&report));
            }
            if !report.blockers.is_empty() {
                bail!("not ready: {} blocker(s): {}", report.blockers.len(), report.blockers.join(", "));
            }
            Ok(())
        }
        Cmd::Detach { pin_path, interface, cgroup } => {
            // LEAD: the pin part's detach (programs, links, pins under --pin-path, the
            // cgroup hooks, XDP/tc on --interface) goes here beside the routes.
            let _ = (&pin_path, &interface);
            if let Some(dir) = cgroup.as_deref() {
                datapath::mounts::cgroup_dir(Some(dir))?;
            }
            for r in datapath::routes::remove_our_routes_blocking()? {
                println!("removed route {r}");
            }
            Ok(())
        }
        Cmd::Routes { admin, json } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if json {
                println!("{}", rt.block_on(admin::client::get(admin, "/routes"))?);
            } else {
                let v: admin::RoutesView = rt.block_on(admin::client::get_json(admin, "/routes"))?;
                print!("{}", admin::format_routes(&v));
            }
            Ok(())
        }
    }
}

/// Two descriptors per proxied or joined connection: lift the soft limit on open
/// files (often 1024) to the hard one, and say what is left. (libc directly: two
/// calls, no crate needed.)
fn raise_open_files_limit() {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return;
        }
        if rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                rl = raised;
            }
        }
    }
    if rl.rlim_cur < 4096 {
        tracing::warn!(
            limit = rl.rlim_cur,
            "few open files allowed (RLIMIT_NOFILE): about half as many client connections can be served; raise it (ulimit -n, LimitNOFILE=)"
        );
    }
}

/// glibc keeps freed heap in its arenas: after a burst (large bodies, many
/// connections) the agent's RSS would stay at the burst's peak. Hand it back to the
/// kernel every few seconds (a few microseconds when there is little to return).
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory; no pointers are involved.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Host-side setup of `run`: the cgroup for the connect hooks, the host routes.
struct HostSetup {
    cgroup: Option<PathBuf>,
    pod_routes: Vec<datapath::pod_routes::PodRoute>,
}

enum Source {
    Manifests(PathBuf),
    Kubernetes { kubeconfig: Option<PathBuf>, write_status: bool },
}

// LEAD: the other parts add flags here too; a run-config struct would take them all.
#[allow(clippy::too_many_arguments)]
async fn serve(
    source: Source,
    listen: Vec<ListenMapping>,
    interface: Option<String>,
    dataplane: Option<DataplaneMode>,
    admin_addr: SocketAddr,
    config: ProxyConfig,
    drain: Duration,
    host: HostSetup,
) -> Result<()> {
    let mode = dataplane.unwrap_or(if interface.is_some() { DataplaneMode::Ebpf } else { DataplaneMode::Userspace });
    let table = routing::TableHandle::default();
    let mut node_client = None;
    let publisher = match source {
        Source::Manifests(dir) => {
            // Start-up needs a valid set: there is no last good table to fall back on yet.
            let resources =
                manifest::load_dir(&dir).with_context(|| format!("loading manifests from {}", dir.display()))?;
            let publisher = Publisher::new(table.clone(), listen.clone(), format!("manifests in {}", dir.display()));
            publisher.publish(&resources);
            match watch_dir::watch_manifests(dir.clone(), publisher.clone()) {
                Ok(watch) => {
                    tokio::spawn(watch);
                }
                Err(e) => {
                    tracing::error!(error = %e, dir = %dir.display(), "cannot watch manifests: changes are not picked up until restart")
                }
            }
            publisher
        }
        Source::Kubernetes { kubeconfig, write_status } => {
            let client = k8s::client(kubeconfig.as_deref()).await.map_err(|e| {
                anyhow::anyhow!("cannot build a Kubernetes client: {e} (use --kubeconfig FILE or --manifests DIR)")
            })?;
            node_client = Some(client.clone());
            let publisher = Publisher::new(table.clone(), listen.clone(), "Kubernetes".into());
            let p = publisher.clone();
            tokio::spawn(async move {
                if let Err(e) = k8s::run(client, p.clone(), write_status).await {
                    p.reject(format!("Kubernetes source stopped: {e}"));
                }
            });
            publisher
        }
    };

    let mut joiner = Joiner::new(None);
    let mut programs = None;
    let (dp, xdp, stats_map) = match mode {
        DataplaneMode::Userspace => ("userspace", None, None),
        DataplaneMode::Ebpf => {
            let Some(iface) = interface.as_deref() else {
                bail!(
                    "--dataplane ebpf needs --interface IFACE (the VM's NIC); use --dataplane userspace to run without eBPF"
                );
            };
            let mut d = datapath::load()?;
            d.attach_xdp(iface)?;
            match d.load_splicer() {
                Ok(s) => joiner = Joiner::new(Some(s)),
                Err(e) => tracing::warn!(
                    error = %e,
                    "in-kernel splicing (sockmap) is unavailable; upgraded connections are copied in user space. \
                     Needs CONFIG_BPF_STREAM_PARSER and CAP_BPF/CAP_NET_ADMIN"
                ),
            }
            if let Err(e) = d.spawn_logger() {
                tracing::warn!(error = %e, "eBPF log records will not be shown");
            }
            let xdp = d.xdp.clone();
            let datapath::Dataplane { ebpf, stats, .. } = d;
            // The programs stay attached while `ebpf` lives: until the end of the run.
            programs = Some(ebpf);
            ("ebpf", xdp, Some(Mutex::new(stats)))
        }
    };

    // --cgroup: an explicit directory must be a cgroup v2 one; the default is looked up.
    // LEAD: hand `_cgroup` to the connect hooks.
    let _cgroup = match (mode, host.cgroup.as_deref()) {
        (_, Some(dir)) => Some(datapath::mounts::cgroup_dir(Some(dir))?),
        (DataplaneMode::Ebpf, None) => match datapath::mounts::cgroup_dir(None) {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroup for the connect hooks");
                None
            }
        },
        (DataplaneMode::Userspace, None) => None,
    };
    // Host routes: --pod-route, else the Nodes' pod CIDRs (Kubernetes source, eBPF).
    if !host.pod_routes.is_empty() {
        datapath::route_sync::install_flags(&host.pod_routes).await?;
    } else if let (Some(client), DataplaneMode::Ebpf) = (node_client, mode) {
        tokio::spawn(datapath::route_sync::follow_nodes(client));
    }

    let proxy = Proxy::new(config, table.clone(), joiner);
    for (i, m) in listen.iter().enumerate() {
        let l =
            TcpListener::bind(m.addr).await.with_context(|| format!("cannot listen on {} (--listen {m})", m.addr))?;
        tracing::info!(listen = %m, "serving");
        tokio::spawn(proxy.clone().serve(l, i));
    }
    let admin = Arc::new(Admin { proxy: proxy.clone(), table, publisher, dataplane: dp.into(), xdp, stats_map });
    let l = TcpListener::bind(admin_addr).await.with_context(|| format!("cannot listen on --admin {admin_addr}"))?;
    tracing::info!(%admin_addr, "admin endpoint: /stats /routes /readyz");
    tokio::spawn(admin.serve(l));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(?drain, "shutting down: no new connections, finishing in-flight requests");
    let left = proxy.shutdown(drain).await;
    if left > 0 {
        tracing::warn!(connections = left, "drain time over; closing the remaining connections");
    }
    drop(programs);
    Ok(())
}
