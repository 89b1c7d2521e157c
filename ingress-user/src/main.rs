//! `ingress`: the agent (`run`) and its admin clients (`stats`, `routes`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ingress::admin::Admin;
use ingress::config::ListenMapping;
use ingress::proxy::{Proxy, ProxyConfig};
use ingress::sources::publish::Publisher;
use ingress::sources::{k8s, manifest, watch_dir};
use ingress::splice::Joiner;
use ingress::{ebpf, routing, stats};
use tokio::net::TcpListener;

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

#[derive(Parser)]
#[command(
    name = "ingress",
    version,
    about = "eBPF-accelerated host ingress for single-VM Kubernetes (Gateway API HTTPRoutes)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DataplaneMode {
    /// XDP on --interface, user-space L7 proxy.
    Ebpf,
    /// No eBPF at all; the same routing.
    Userspace,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve Gateway API routes.
    Run {
        /// Directory of Gateway / HTTPRoute / Service / EndpointSlice manifests (*.yaml,
        /// *.yml, *.json), reloaded on change. Without it, routes come from Kubernetes.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["kubeconfig", "write_status"])]
        manifests: Option<PathBuf>,
        /// Kubernetes source: this kubeconfig (default: in-cluster, then $KUBECONFIG or ~/.kube/config).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// Kubernetes source: write HTTPRoute and Gateway status (server-side apply).
        #[arg(long)]
        write_status: bool,
        /// ADDR=NAMESPACE/GATEWAY[:LISTENERPORT]; repeatable. Serves that Gateway's HTTP
        /// listeners (all, or those on LISTENERPORT) on ADDR.
        #[arg(long, value_name = "ADDR=NAMESPACE/GATEWAY[:LISTENERPORT]", required = true)]
        listen: Vec<ListenMapping>,
        /// The VM's NIC, where the XDP program attaches (ebpf dataplane).
        #[arg(long, value_name = "IFACE")]
        interface: Option<String>,
        /// Default: ebpf when --interface is given, else userspace.
        #[arg(long, value_enum)]
        dataplane: Option<DataplaneMode>,
        /// Admin endpoint (/stats, /routes, /readyz).
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
        admin: SocketAddr,
        /// Add X-Forwarded-For, -Proto and -Host to requests. `off` lets splice-safe
        /// hosts be joined to their pod in the kernel (eBPF dataplane).
        #[arg(long, value_enum, default_value = "on")]
        forwarded_headers: OnOff,
        /// Add an X-Request-Id to requests that have none.
        #[arg(long)]
        request_id: bool,
        /// Seconds a client has to send a whole request head; a keep-alive connection
        /// idle that long is closed too.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        head_timeout: u64,
        /// Client connections one source address may hold open (0: no cap).
        #[arg(long, value_name = "N", default_value_t = ingress::proxy::DEFAULT_MAX_PER_SOURCE)]
        max_connections_per_source: u32,
        /// On SIGTERM/SIGINT: how long in-flight requests may take to finish.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        drain_timeout: u64,
    },
    /// Print the XDP and proxy counters of a running agent.
    Stats {
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
        admin: SocketAddr,
        /// Print the JSON of GET /stats.
        #[arg(long)]
        json: bool,
    },
    /// Print the compiled routing table of a running agent.
    Routes {
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
        admin: SocketAddr,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
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
            rt.block_on(run(source, listen, interface, dataplane, admin, config, drain))
        }
        Cmd::Stats { admin, json } => {
            let body = admin_get(admin, "/stats")?;
            if json {
                println!("{body}");
            } else {
                let s: stats::Stats = serde_json::from_str(&body).context("parsing /stats")?;
                print!("{}", stats::format_table(&s));
            }
            Ok(())
        }
        Cmd::Routes { admin, json } => {
            let body = admin_get(admin, "/routes")?;
            if json {
                println!("{body}");
            } else {
                let v: serde_json::Value = serde_json::from_str(&body).context("parsing /routes")?;
                print!("{}", routing::describe::format_text(&v));
            }
            Ok(())
        }
    }
}

/// Two descriptors per proxied or joined connection: lift the soft limit on open
/// files (often 1024) to the hard one, and say what is left.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

enum Source {
    Manifests(PathBuf),
    Kubernetes { kubeconfig: Option<PathBuf>, write_status: bool },
}

async fn run(
    source: Source,
    listen: Vec<ListenMapping>,
    interface: Option<String>,
    dataplane: Option<DataplaneMode>,
    admin_addr: SocketAddr,
    config: ProxyConfig,
    drain: Duration,
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
    let (dp, xdp, stats_map) = match mode {
        DataplaneMode::Userspace => ("userspace", None, None),
        DataplaneMode::Ebpf => {
            let Some(iface) = interface.as_deref() else {
                bail!(
                    "--dataplane ebpf needs --interface IFACE (the VM's NIC); use --dataplane userspace to run without eBPF"
                );
            };
            let mut d = ebpf::load()?;
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
            let ebpf::Dataplane { ebpf, stats, .. } = d;
            // The programs stay attached while `ebpf` lives: keep it for the whole run.
            Box::leak(Box::new(ebpf));
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
    Ok(())
}

/// GET on the admin endpoint (loopback, HTTP/1.0, whole body).
fn admin_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
        format!("cannot reach the agent's admin endpoint at {addr} (is `ingress run` running? see --admin)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").context("malformed admin response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("admin endpoint answered: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}
