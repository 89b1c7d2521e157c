//! Wiring: the route source, the table handle, the eBPF dataplane, the proxy and the
//! admin endpoint, started in that order; shutdown drains in-flight requests.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;

use crate::reload::{ExitSettings, Listeners, Reloader};

use crate::admin::{self, Admin};
use crate::cli::{Cli, Cmd, DataplaneMode};
use crate::config::settings::{RunSettings, SourceSetting};
use crate::datapath::{self, GuardMaps, Joiner};
use crate::proxy::Proxy;
use crate::routing;
use crate::sources::publish::Publisher;
use crate::sources::{k8s, manifest, watch_dir};
use crate::telemetry::{StatsView, format_table};

/// Runs a parsed command line.
pub fn main(cli: Cli) -> Result<()> {
    match cli.cmd {
        cmd @ Cmd::Run { .. } => {
            let (config, flags, given) = crate::cli::run_flags(cmd).expect("a run command");
            let given: std::collections::BTreeSet<String> = given.into_iter().collect();
            let file = config.as_deref().map(crate::config::file::load).transpose()?;
            let settings = crate::config::settings::merge(&flags, &given, file.as_ref())?;
            if let Some(f) = &file {
                tracing::info!(config = %f.path, "config file read");
            }
            raise_open_files_limit();
            // the control runtime (route sources, admin, reloads, signals); the L7 data
            // path runs on its own worker threads (proxy/workers.rs)
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            rt.spawn(return_freed_memory());
            let reload = crate::reload::ReloadSource { path: config, flags, given };
            let detach = rt.block_on(serve(settings, reload))?;
            drop(rt);
            if let Some(d) = detach {
                // --detach-on-exit (`cargo xtask load`): nothing of ours outlives the agent
                // (outside the runtime: detach runs one of its own)
                let report = datapath::detach::detach(&d.pin_path, d.interface.as_deref(), d.cgroup.as_deref())?;
                for line in report.render().lines() {
                    tracing::info!("detach on exit: {line}");
                }
                if !report.failed.is_empty() {
                    bail!("--detach-on-exit could not remove everything (see the FAILED lines above)");
                }
            }
            Ok(())
        }
        Cmd::Detach { pin_path, interface, cgroup } => {
            // the hooks' cgroup: the one given, else the default `run` attaches to
            let cgroup = match cgroup {
                Some(dir) => Some(datapath::mounts::cgroup_dir(Some(&dir))?),
                None => datapath::mounts::cgroup_dir(None).ok(),
            };
            let report = datapath::detach::detach(&pin_path, interface.as_deref(), cgroup.as_deref())?;
            print!("{}", report.render());
            if !report.failed.is_empty() {
                bail!("ingress detach could not remove everything (see FAILED lines above)");
            }
            Ok(())
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
        Cmd::Check { config: Some(path), .. } => {
            // `ingress check --config FILE`: the file alone, as the agent would read it
            print!("{}", crate::check::config::validate(&path)?);
            Ok(())
        }
        Cmd::Check { interface, pin_path, json, config: None } => {
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
    pin_path: PathBuf,
}

/// `--l4` and `--l4-reply-interface`.
struct L4Args {
    mappings: Vec<datapath::l4::L4Mapping>,
    reply_ifaces: Vec<String>,
}

async fn serve(settings: RunSettings, reload: crate::reload::ReloadSource) -> Result<Option<DetachOnExit>> {
    let RunSettings {
        source,
        listen,
        interface,
        dataplane: mode,
        admin: admin_addr,
        proxy: config,
        drain,
        l4,
        l4_reply_interface,
        guard,
        cgroup,
        pod_cgroup,
        pod_route,
        pin_path,
        detach_on_exit,
        bind_in_kernel,
        workers: worker_count,
    } = settings.clone();
    // delayed binding: settings::check refuses `on` without the eBPF dataplane
    if bind_in_kernel && mode != DataplaneMode::Ebpf {
        bail!("{}", crate::config::settings::BIND_IN_KERNEL_NEEDS_EBPF);
    }
    let bind_opts =
        datapath::bind::BindOptions { forwarded_headers: config.forwarded_headers, request_ids: config.request_ids };
    let l4 = L4Args { mappings: l4, reply_ifaces: l4_reply_interface };
    let host = HostSetup { cgroup, pod_routes: pod_route, pin_path };
    let l7_ports: Vec<u16> = listen.iter().map(|m| m.addr.port()).collect();
    datapath::l4::check_mappings(&l4.mappings, &l7_ports).map_err(anyhow::Error::msg)?;
    if !l4.mappings.is_empty() && mode != DataplaneMode::Ebpf {
        bail!(
            "--l4 needs the ebpf dataplane: give --interface IFACE (the VM's NIC) and do not use --dataplane userspace"
        );
    }
    let hup = crate::reload::sighup()?;
    let table = routing::TableHandle::default();
    let mut node_client = None;
    let publisher = match source {
        SourceSetting::Manifests(dir) => {
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
        SourceSetting::Kubernetes { kubeconfig, write_status } => {
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

    // --cgroup: an explicit directory must be a cgroup v2 one; the default is looked up.
    // The connect hooks for local clients attach there (with --l4).
    let cgroup = match (mode, host.cgroup.as_deref()) {
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
    // --pod-route first: a route that cannot be added stops the start before anything is
    // attached or pinned.
    if !host.pod_routes.is_empty() {
        datapath::route_sync::install_flags(&host.pod_routes).await?;
    }
    let mut joiner = Joiner::new(None);
    let mut programs = None;
    let mut l4_runtime = None;
    let mut bind_runtime = None;
    let mut guard_maps: Option<Mutex<GuardMaps>> = None;
    let mut guard_entries = None;
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
            let mut d = datapath::load_pinned(datapath::Pins::open(&host.pin_path)?)?;
            // The guard's rules are in its maps before XDP sees the first packet.
            // every L7 listen port and every L4 port
            let guarded_ports = datapath::guard::guarded_ports(
                listen.iter().map(|m| m.addr.port()).chain(l4.mappings.iter().map(|m| m.port)),
            );
            let entries = datapath::guard::translate(&guard, &guarded_ports)?;
            d.guard.program(&entries)?;
            guard_entries = Some(entries.clone());
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
            if let Some(dir) = &pod_cgroup {
                // asked for: a failure stops the start (the operator named the cgroup)
                d.load_pod_leg(dir).with_context(|| format!("--pod-cgroup {}", dir.display()))?;
            }
            if let Err(e) = d.spawn_logger() {
                tracing::warn!(error = %e, "eBPF log records will not be shown");
            }
            if !l4.mappings.is_empty() {
                l4_runtime = Some(l4_start(&mut d, iface, &l4, &publisher, cgroup.as_deref())?);
            }
            if bind_in_kernel {
                let l4_reply = l4_runtime.as_ref().map(|r| r.reply_ifaces().to_vec()).unwrap_or_default();
                bind_runtime = Some(bind_start(&mut d, iface, &l4_reply, bind_opts, &publisher, &table)?);
            }
            let xdp = d.xdp.clone();
            let datapath::Dataplane { ebpf, stats, guard: g, .. } = d;
            guard_maps = Some(Mutex::new(g));
            // The programs stay attached while `ebpf` lives: until the end of the run.
            programs = Some(ebpf);
            ("ebpf", xdp, Some(Mutex::new(stats)))
        }
    };

    // Host routes: the Nodes' pod CIDRs (Kubernetes source, eBPF) when no --pod-route.
    if let (true, Some(client), DataplaneMode::Ebpf) = (host.pod_routes.is_empty(), node_client, mode) {
        tokio::spawn(datapath::route_sync::follow_nodes(client));
    }

    let proxy = Proxy::new(config, table.clone(), joiner);
    let workers = Arc::new(
        crate::proxy::workers::Workers::start(&proxy, worker_count).context("cannot start the L7 worker threads")?,
    );
    let listeners = Listeners::start(&proxy, &workers, &listen).await?;
    let admin = Arc::new(Admin {
        proxy: proxy.clone(),
        table,
        publisher,
        dataplane: dp.into(),
        xdp,
        stats_map,
        l4: l4_runtime,
        guard: guard_maps,
        bind: bind_runtime,
    });
    let l = TcpListener::bind(admin_addr).await.with_context(|| format!("cannot listen on --admin {admin_addr}"))?;
    tracing::info!(%admin_addr, "admin endpoint: /stats /routes /readyz");
    tokio::spawn(admin.clone().serve(l));

    // SIGHUP: re-read the config file (and without one, say so instead of dying)
    let exit = Arc::new(Mutex::new(ExitSettings { drain, detach_on_exit }));
    let reloader = Reloader {
        source: reload,
        current: settings,
        listeners,
        admin: admin.clone(),
        guard_entries,
        exit: exit.clone(),
    };
    tokio::spawn(crate::reload::follow_sighup(reloader, hup));
    tokio::spawn(crate::reload::ready_when_published(admin.publisher.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    crate::reload::notify(&[sd_notify::NotifyState::Stopping]);
    let ExitSettings { drain, detach_on_exit } = exit.lock().expect("exit settings").clone();
    tracing::info!(?drain, "shutting down: no new connections, finishing in-flight requests");
    let left = proxy.shutdown(drain).await;
    if left > 0 {
        tracing::warn!(connections = left, "drain time over; closing the remaining connections");
    }
    workers.stop();
    drop(programs);
    Ok((detach_on_exit && mode == DataplaneMode::Ebpf).then(|| DetachOnExit {
        pin_path: host.pin_path.clone(),
        interface: interface.clone(),
        cgroup: cgroup.clone(),
    }))
}

/// What `--detach-on-exit` removes once the agent has stopped.
struct DetachOnExit {
    pin_path: PathBuf,
    interface: Option<String>,
    cgroup: Option<PathBuf>,
}

/// Attaches the L4 programs, programs the maps from the route source (now and on every
/// update), and sweeps expired flows.
fn l4_start(
    d: &mut datapath::Dataplane,
    nic: &str,
    l4: &L4Args,
    publisher: &Arc<Publisher>,
    cgroup: Option<&std::path::Path>,
) -> Result<Arc<datapath::l4_maps::L4Runtime>> {
    use datapath::l4_maps::{L4Runtime, forwarding_enabled, interface_ipv4, reply_interfaces};
    let mut frontends = interface_ipv4(nic).with_context(|| format!("reading the addresses of {nic}"))?;
    if frontends.is_empty() {
        bail!("--l4: interface {nic} has no IPv4 address to forward from");
    }
    let reply_ifaces = if l4.reply_ifaces.is_empty() {
        let res = publisher.last_resources().unwrap_or_default();
        let model = datapath::l4::resolve(&l4.mappings, |ns, n, p| routing::resolve_service_endpoints(&res, ns, n, p));
        let targets: Vec<_> = model.services.iter().flat_map(|s| s.endpoints.iter().copied()).collect();
        let found = reply_interfaces(&targets);
        if found.is_empty() {
            bail!(
                "--l4: cannot tell which interface replies come back on (no route to any L4 target yet); give --l4-reply-interface IFACE (the k3d bridge)"
            );
        }
        found
    } else {
        l4.reply_ifaces.clone()
    };
    for i in std::iter::once(nic.to_string()).chain(reply_ifaces.iter().cloned()) {
        if !forwarding_enabled(&i) {
            bail!(
                "--l4 needs IPv4 forwarding on {i} (the programs' FIB lookup refuses otherwise): sysctl -w net.ipv4.ip_forward=1 (Docker sets it)"
            );
        }
    }
    let maps = d.attach_l4(nic, &reply_ifaces)?;
    // Local clients: processes in `cgroup` dialling a VM address, 127.0.0.1 or 0.0.0.0
    // on an L4 port are connected straight to the target (the NIC program never sees
    // loopback or 0.0.0.0, so those frontends are the hooks' alone).
    match cgroup {
        Some(dir) => {
            d.attach_cgroup_hooks(dir)?;
            frontends.extend([std::net::Ipv4Addr::LOCALHOST, std::net::Ipv4Addr::UNSPECIFIED]);
        }
        None => tracing::warn!("no cgroup v2 for the connect hooks: clients on this host do not reach the L4 ports"),
    }
    tracing::info!(mode = maps.tc_mode, nic, reply = ?reply_ifaces, frontends = ?frontends, "L4 forwarding attached");
    let rt = Arc::new(L4Runtime::new(maps, l4.mappings.clone(), frontends, reply_ifaces));
    let hook = rt.clone();
    publisher.add_hook(Box::new(move |res| hook.sync(res)));
    let sweeper = rt.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let gone = sweeper.sweep();
            if gone > 0 {
                tracing::debug!(entries = gone, "expired L4 flows swept");
            }
        }
    });
    Ok(rt)
}

/// Delayed binding (`--bind-in-kernel on`): attaches the kernel pieces, syncs their maps
/// with every published table, rotates the cookie keys.
fn bind_start(
    d: &mut datapath::Dataplane,
    nic: &str,
    l4_reply: &[String],
    opts: datapath::bind::BindOptions,
    publisher: &Arc<Publisher>,
    table: &routing::TableHandle,
) -> Result<Arc<datapath::bind_runtime::BindRuntime>> {
    if !datapath::l4_maps::forwarding_enabled(nic) {
        bail!(
            "--bind-in-kernel on forwards bound connections from {nic} to the pods, which needs IPv4 forwarding (the programs' FIB lookup refuses otherwise): sysctl -w net.ipv4.ip_forward=1 (Docker sets it)"
        );
    }
    let rt = Arc::new(d.attach_bind(nic, l4_reply, opts).context("--bind-in-kernel on")?);
    let sync = {
        let (hook, t, p) = (rt.clone(), table.clone(), publisher.clone());
        Arc::new(move || {
            let listen: Vec<std::net::SocketAddr> = p.mappings().iter().map(|m| m.addr).collect();
            hook.sync(&t.load(), &listen);
        })
    };
    let on_publish = sync.clone();
    publisher.add_hook(Box::new(move |_res| on_publish()));
    // the node's conntrack strictness can change under a running agent
    let watcher = rt.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(datapath::bind_runtime::CONNTRACK_RECHECK);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (w, sync) = (watcher.clone(), sync.clone());
            // namespace switches: off the runtime's threads
            let _ = tokio::task::spawn_blocking(move || {
                if w.recheck_conntrack() {
                    sync();
                }
            })
            .await;
        }
    });
    let rotor = rt.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(datapath::bind_runtime::ROTATION);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = rotor.rotate() {
                tracing::error!(error = %e, "SYN cookie key rotation failed; the current key stays");
            }
        }
    });
    Ok(rt)
}
