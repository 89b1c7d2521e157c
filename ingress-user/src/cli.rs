//! The command line: `ingress run` (the agent) and its admin clients (`stats`,
//! `routes`). Parsing only; [`crate::app`] does the work.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ListenMapping;

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

#[derive(Parser)]
#[command(
    name = "ingress",
    version,
    about = "eBPF-accelerated host ingress for single-VM Kubernetes (Gateway API HTTPRoutes)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataplaneMode {
    /// XDP on --interface, user-space L7 proxy.
    Ebpf,
    /// No eBPF at all; the same routing.
    Userspace,
}

#[derive(Subcommand)]
pub enum Cmd {
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
        #[arg(long, value_name = "N", default_value_t = crate::proxy::DEFAULT_MAX_PER_SOURCE)]
        max_connections_per_source: u32,
        /// On SIGTERM/SIGINT: how long in-flight requests may take to finish.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        drain_timeout: u64,
        /// bpffs directory where maps and links are pinned so the data path outlives
        /// the agent (ebpf dataplane); a restarted agent adopts compatible pins.
        #[arg(long, value_name = "DIR", default_value = crate::datapath::pinning::DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
    /// Remove every program, link, map and route the agent attached or pinned.
    Detach {
        /// The agent's --pin-path.
        #[arg(long, value_name = "DIR", default_value = crate::datapath::pinning::DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// Also remove attachments of our programs on this interface that no pin holds.
        #[arg(long, value_name = "IFACE")]
        interface: Option<String>,
        /// Also remove attachments of our programs on this cgroup v2 directory.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<PathBuf>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}
