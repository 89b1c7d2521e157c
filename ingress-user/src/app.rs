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
use crate::datapath::guard::GuardRules;
use crate::datapath::{self, GuardMaps, Joiner};
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
            deny,
            allow,
            syn_rate,
            syn_burst,
        } => {
            let guard = GuardRules::from_flags(deny, allow, syn_rate, syn_burst)?;
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
            rt.block_on(serve(source, listen, interface, dataplane, admin, config, drain, guard))
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

enum Source {
    Manifests(PathBuf),
    Kubernetes { kubeconfig: Option<PathBuf>, write_status: bool },
}

// The run's flags, one argument each; the L4, cgroup and pin flags join them at merge,
// when they are worth a struct of their own.
#[allow(clippy::too_many_arguments)]
async fn serve(
    source: Source,
    listen: Vec<ListenMapping>,
    interface: Option<String>,
    dataplane: Option<DataplaneMode>,
    admin_addr: SocketAddr,
    config: ProxyConfig,
    drain: Duration,
    guard: GuardRules,
) -> Result<()> {
    let mode = dataplane.unwrap_or(if interface.is_some() { DataplaneMode::Ebpf } else { DataplaneMode::Userspace });
    let table = routing::TableHandle::default();
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
    let mut guard_maps: Option<Mutex<GuardMaps>> = None;
    let (dp, xdp, stats_map) = match mode {
        DataplaneMode::Userspace if guard.any() => bail!(
            "--deny, --allow and --syn-rate are enforced by the XDP guard: they need the ebpf dataplane (--interface IFACE), not --dataplane userspace"
        ),
        DataplaneMode::Userspace => ("userspace", None, None),
        DataplaneMode::Ebpf => {
            let Some(iface) = interface.as_deref() else {
                bail!(
                    "--dataplane ebpf needs --interface IFACE (the VM's NIC); use --dataplane userspace to run without eBPF"
                );
            };
            let mut d = datapath::load()?;
            // The guard's rules are in its maps before XDP sees the first packet.
            let guarded_ports = datapath::guard::guarded_ports(listen.iter().map(|m| m.addr.port()));
            let entries = datapath::guard::translate(&guard, &guarded_ports)?;
            d.guard.program(&entries)?;
            tracing::info!("XDP guard: {}", datapath::guard::describe(&guard, &entries));
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
            let datapath::Dataplane { ebpf, stats, guard: g, .. } = d;
            guard_maps = Some(Mutex::new(g));
            // The programs stay attached while `ebpf` lives: until the end of the run.
            programs = Some(ebpf);
            ("ebpf", xdp, Some(Mutex::new(stats)))
        }
    };

    let proxy = Proxy::new(config, table.clone(), joiner);
    for (i, m) in listen.iter().enumerate() {
        let l =
            TcpListener::bind(m.addr).await.with_context(|| format!("cannot listen on {} (--listen {m})", m.addr))?;
        tracing::info!(listen = %m, "serving");
        tokio::spawn(proxy.clone().serve(l, i));
    }
    let admin = Arc::new(Admin {
        proxy: proxy.clone(),
        table,
        publisher,
        dataplane: dp.into(),
        xdp,
        stats_map,
        guard: guard_maps,
    });
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
