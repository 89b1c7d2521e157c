//! The command line: `ingress run` (the agent) and its admin clients (`stats`,
//! `routes`). Parsing only; [`crate::app`] does the work.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{ListenMapping, PortCidr};

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
        /// or HTTPS listeners (all, or those on LISTENERPORT) on ADDR; HTTPS ones make
        /// ADDR speak TLS (e.g. 0.0.0.0:8443=openchoreo-control-plane/gateway-default:443).
        #[arg(long, value_name = "ADDR=NAMESPACE/GATEWAY[:LISTENERPORT]", required_unless_present = "config")]
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
        /// Client connections one source address may hold open (0: no cap). At the cap
        /// its oldest idle connection is closed to admit a new one; a new one is refused
        /// only when all of them are busy.
        #[arg(long, value_name = "N", default_value_t = crate::proxy::DEFAULT_MAX_PER_SOURCE)]
        max_connections_per_source: u32,
        /// On SIGTERM/SIGINT: how long in-flight requests may take to finish.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        drain_timeout: u64,
        /// PORT=TARGET; repeatable. Forwards TCP port PORT of the NIC's IPv4 addresses in
        /// the kernel (tc DNAT, conntrack, Maglev) to TARGET: IP:PORT, or
        /// NAMESPACE/SERVICE:PORT (that Service's ready endpoints). ebpf dataplane only.
        #[arg(long = "l4", value_name = "PORT=TARGET")]
        l4: Vec<crate::datapath::l4::L4Mapping>,
        /// Interface(s) the replies of L4 flows come back on, where the reverse-NAT
        /// program attaches (default: the interfaces of the routes to the L4 targets).
        #[arg(long, value_name = "IFACE")]
        l4_reply_interface: Vec<String>,
        /// XDP guard (ebpf dataplane): drop TCP and UDP packets to PORT from sources in
        /// CIDR (IPv4 or IPv6); repeatable. Deny wins over allow: a source in both lists
        /// of a port is dropped.
        #[arg(long, value_name = "PORT=CIDR")]
        deny: Vec<PortCidr>,
        /// XDP guard: a port with an allow list admits TCP and UDP packets only from its
        /// CIDRs (of either family: an IPv4-only list refuses every IPv6 source), unless
        /// a --deny also matches; repeatable.
        #[arg(long, value_name = "PORT=CIDR")]
        allow: Vec<PortCidr>,
        /// XDP guard: TCP SYNs (without ACK) per second per source address, to every L7
        /// listen port and L4 port; over-limit SYNs are dropped, established traffic is
        /// never touched. 0 = off, the default: a busy client or a NAT gateway in front
        /// of many users is never throttled unless asked for.
        #[arg(long, value_name = "N", default_value_t = 0)]
        syn_rate: u64,
        /// XDP guard: the per-source SYN bucket's size (a new source starts with a full
        /// one). Default: the --syn-rate (one second of SYNs); 0 = off.
        #[arg(long, value_name = "N")]
        syn_burst: Option<u64>,
        /// cgroup v2 directory the connect hooks for local clients attach to (default: the
        /// cgroup v2 mount in /proc/mounts, /sys/fs/cgroup/unified on hybrid hosts).
        #[arg(long, value_name = "PATH")]
        cgroup: Option<PathBuf>,
        /// cgroup v2 directory holding the pods (on the VM: the k3d node container's, e.g.
        /// /sys/fs/cgroup/system.slice/docker-ID.scope). Pooled HTTP/1.1 connections to
        /// pods then skip the TCP/IP stack on both ends (sockmap, eBPF dataplane).
        #[arg(long, value_name = "PATH")]
        pod_cgroup: Option<PathBuf>,
        /// CIDR=VIA; repeatable. Host route to a pod CIDR via its node, installed over
        /// netlink (protocol 207) and removed by `ingress detach`. Given, it replaces the
        /// routes from Node objects (Kubernetes source).
        #[arg(long, value_name = "CIDR=VIA")]
        pod_route: Vec<crate::datapath::pod_routes::PodRoute>,
        /// bpffs directory where maps and links are pinned so the data path outlives
        /// the agent (ebpf dataplane); a restarted agent adopts compatible pins.
        #[arg(long, value_name = "DIR", default_value = crate::datapath::pinning::DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// TOML file with any of these flags as keys (`--head-timeout` is `head_timeout`;
        /// see deploy/config.toml). A flag given here wins over its key; a repeatable flag
        /// replaces the key's whole list. SIGHUP re-reads the file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// On exit, remove everything attached and pinned, as `ingress detach` does
        /// (default: the pinned data path outlives the agent). `cargo xtask load` sets it.
        #[arg(long)]
        detach_on_exit: bool,
        /// HTTP/2: streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
        #[arg(long, value_name = "N", default_value_t = crate::proxy::h2::DEFAULT_MAX_CONCURRENT_STREAMS)]
        h2_max_concurrent_streams: u32,
        /// HTTP/2: seconds a client connection may stay without an open stream before
        /// it gets GOAWAY and is closed.
        #[arg(long, value_name = "SECONDS", default_value_t = crate::proxy::h2::DEFAULT_IDLE_TIMEOUT.as_secs())]
        h2_idle_timeout: u64,
        /// HTTP/2: seconds between keep-alive PINGs the agent sends on each client
        /// connection (an unanswered PING closes it after 20 s); 0, the default: none.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        h2_keepalive_interval: u64,
        /// How upgraded (WebSocket) and splice-safe connections are joined to their pod:
        /// `auto` splices through a pipe (splice(2)); once the first exchanges show small
        /// messages, upgraded pairs are joined in the kernel (sockmap) and splice-safe
        /// pairs are copied (the userspace dataplane copies); `kernel`, `pipe` or `copy`
        /// use that one mechanism.
        #[arg(long, value_enum, default_value = "auto")]
        join_mode: crate::datapath::join_choice::JoinMode,
        /// Delayed binding: hosts whose every request goes to one backend bound to their
        /// pod in eBPF, the connection never terminating on the host (eBPF dataplane and
        /// a kernel that `ingress check` says supports it; docs/delayed-binding.md).
        #[arg(long, value_enum, default_value = "off")]
        bind_in_kernel: OnOff,
        /// L7 worker threads, each with its own runtime, SO_REUSEPORT listener per --listen
        /// address and pod connection pool (default: the CPUs available). Needs a restart.
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// The flags given on the command line (filled by [`parse`]; not a flag).
        #[arg(skip)]
        given: Vec<String>,
    },
    /// Remove every program, link, map and route the agent attached or pinned.
    Detach {
        /// The agent's --pin-path.
        #[arg(long, value_name = "DIR", default_value = crate::datapath::pinning::DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// Also remove attachments of our programs on this interface that no pin holds.
        #[arg(long, value_name = "IFACE")]
        interface: Option<String>,
        /// Also remove attachments of our programs on this cgroup v2 directory (default:
        /// the cgroup v2 mount, as for `run`).
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
    /// Preflight: kernel, BTF, bpffs, cgroup v2, capabilities, XDP mode, TCX, sockmap,
    /// pinned state. Exits non-zero when anything is a blocker.
    Check {
        /// The VM's NIC (default: the interface of the IPv4 default route).
        #[arg(long, value_name = "IFACE")]
        interface: Option<String>,
        /// Where the agent pins its maps and links.
        #[arg(long, value_name = "DIR", default_value = crate::datapath::pinning::DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Only validate this config file of `ingress run` (no preflight rows, so the
        /// other flags are refused beside it): exit non-zero with FILE:LINE:COL: key
        /// `KEY`: REASON when it is wrong.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["interface", "pin_path", "json"])]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

// --- the config file's glue: which flags were given, and `run`'s flags as one value ---

/// Parses the process's arguments, recording which flags of `run` were given (the
/// config file's keys yield to those only).
pub fn parse() -> Cli {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] of `args`.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Cmd::Run { given, .. }, Some(("run", m))) = (&mut cli.cmd, matches.subcommand()) {
        *given = m
            .ids()
            .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.to_string())
            .collect();
    }
    Ok(cli)
}

/// `run`'s config file, flags, and the ids of the flags given; None for other commands.
pub fn run_flags(cmd: Cmd) -> Option<(Option<PathBuf>, crate::config::settings::RunFlags, Vec<String>)> {
    let Cmd::Run {
        manifests,
        kubeconfig,
        write_status,
        listen,
        interface,
        dataplane,
        admin,
        forwarded_headers,
        request_id,
        head_timeout,
        max_connections_per_source,
        drain_timeout,
        l4,
        l4_reply_interface,
        deny,
        allow,
        syn_rate,
        syn_burst,
        cgroup,
        pod_cgroup,
        pod_route,
        pin_path,
        config,
        detach_on_exit,
        h2_max_concurrent_streams,
        h2_idle_timeout,
        h2_keepalive_interval,
        join_mode,
        bind_in_kernel,
        workers,
        given,
    } = cmd
    else {
        return None;
    };
    let flags = crate::config::settings::RunFlags {
        manifests,
        kubeconfig,
        write_status,
        listen,
        interface,
        dataplane,
        admin,
        forwarded_headers,
        request_id,
        head_timeout,
        max_connections_per_source,
        drain_timeout,
        l4,
        l4_reply_interface,
        deny,
        allow,
        syn_rate,
        syn_burst,
        cgroup,
        pod_cgroup,
        pod_route,
        pin_path,
        detach_on_exit,
        h2_max_concurrent_streams,
        h2_idle_timeout,
        h2_keepalive_interval,
        join_mode,
        bind_in_kernel,
        workers,
    };
    Some((config, flags, given))
}

#[cfg(test)]
mod guard_flag_tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Cli, clap::Error> {
        let base = ["ingress", "run", "--listen", "0.0.0.0:8080=ns/gw"];
        Cli::try_parse_from(base.iter().chain(args))
    }

    #[test]
    fn guard_flags_repeat_and_default_to_off() {
        let cli =
            run(&["--deny", "8080=10.0.0.0/8", "--allow", "9080=fd00::/8", "--deny", "8080=2001:db8::1"]).unwrap();
        let Cmd::Run { deny, allow, syn_rate, syn_burst, .. } = cli.cmd else { panic!("run") };
        assert_eq!(
            deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["8080=10.0.0.0/8", "8080=2001:db8::1/128"]
        );
        assert_eq!(allow.len(), 1);
        assert_eq!((syn_rate, syn_burst), (0, None), "the SYN limit is off unless asked for");
        let Cmd::Run { syn_rate, syn_burst, .. } = run(&["--syn-rate", "100", "--syn-burst", "300"]).unwrap().cmd
        else {
            panic!("run")
        };
        assert_eq!((syn_rate, syn_burst), (100, Some(300)));
    }

    #[test]
    fn a_bad_guard_value_names_the_flag_and_the_value() {
        for (args, flag, why) in [
            (["--allow", "9080=fd00::/200"], "--allow", "`/200` is not 0..=128"),
            (["--deny", "web=10.0.0.0/8"], "--deny", "PORT `web`"),
            (["--syn-rate", "many"], "--syn-rate", "many"),
        ] {
            let e = run(&args).err().expect("refused").to_string();
            assert!(e.contains(flag) && e.contains(why), "{args:?}: {e}");
        }
    }
}

#[cfg(test)]
mod check_flag_tests {
    use super::*;

    /// `check --config` validates the file only: a preflight flag beside it would be
    /// silently unused, so clap refuses the pair and names both.
    #[test]
    fn check_config_refuses_the_preflight_flags_beside_it() {
        for flag in [&["--interface", "eth0"][..], &["--pin-path", "/sys/fs/bpf/x"], &["--json"]] {
            let args = ["ingress", "check", "--config", "/etc/ebpf-ingress/config.toml"];
            let e = Cli::try_parse_from(args.iter().chain(flag)).err().expect("refused").to_string();
            assert!(e.contains("--config") && e.contains(flag[0]), "{flag:?}: {e}");
        }
        let ok = Cli::try_parse_from(["ingress", "check", "--config", "/etc/ebpf-ingress/config.toml"]).unwrap();
        assert!(matches!(ok.cmd, Cmd::Check { config: Some(_), .. }));
        let pre = Cli::try_parse_from(["ingress", "check", "--interface", "eth0", "--json"]).unwrap();
        assert!(matches!(pre.cmd, Cmd::Check { config: None, json: true, .. }));
    }
}
