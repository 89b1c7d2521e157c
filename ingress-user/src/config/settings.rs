//! What `ingress run` runs with: the flags merged over the config file, checked.
//! Pure (no I/O): [`merge`] is called at start, by `ingress check --config`, and on
//! every SIGHUP with the same flags and the re-read file.
//!
//! Precedence: a flag given on the command line wins over the file's key, the file's
//! key over the flag's default. A repeatable flag given at all replaces the file's
//! whole list (`--listen A` with `listen = [B, C]` in the file serves A only). A
//! switch (`--request-id`, `--write-status`, `--detach-on-exit`) can only turn its key
//! on. The route source is one choice: `--manifests` replaces the file's source,
//! `--kubeconfig` or `--write-status` select Kubernetes (with the file's other
//! Kubernetes key, if any).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{ConfigFile, FileConfig, FileError, values};
use crate::cli::{DataplaneMode, OnOff};
use crate::config::{ListenMapping, PortCidr};
use crate::datapath::guard::{GuardError, GuardRules};
use crate::datapath::l4::L4Mapping;
use crate::datapath::pod_routes::PodRoute;
use crate::proxy::ProxyConfig;

/// The flags of `ingress run` as clap parsed them (defaults filled in).
#[derive(Clone, Debug)]
pub struct RunFlags {
    pub manifests: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub write_status: bool,
    pub listen: Vec<ListenMapping>,
    pub interface: Option<String>,
    pub dataplane: Option<DataplaneMode>,
    pub admin: SocketAddr,
    pub forwarded_headers: OnOff,
    pub request_id: bool,
    pub head_timeout: u64,
    pub max_connections_per_source: u32,
    pub drain_timeout: u64,
    pub l4: Vec<L4Mapping>,
    pub l4_reply_interface: Vec<String>,
    pub deny: Vec<PortCidr>,
    pub allow: Vec<PortCidr>,
    pub syn_rate: u64,
    pub syn_burst: Option<u64>,
    pub cgroup: Option<PathBuf>,
    pub pod_cgroup: Option<PathBuf>,
    pub pod_route: Vec<PodRoute>,
    pub pin_path: PathBuf,
    pub detach_on_exit: bool,
    pub h2_max_concurrent_streams: u32,
    pub h2_idle_timeout: u64,
    pub h2_keepalive_interval: u64,
    pub join_mode: crate::datapath::join_choice::JoinMode,
    pub bind_in_kernel: OnOff,
    /// `--workers` (None: the CPUs available).
    pub workers: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSetting {
    Manifests(PathBuf),
    Kubernetes { kubeconfig: Option<PathBuf>, write_status: bool },
}

/// Everything `ingress run` needs, merged and checked.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub source: SourceSetting,
    pub listen: Vec<ListenMapping>,
    pub interface: Option<String>,
    /// Resolved: ebpf when an interface is given, else userspace, unless set.
    pub dataplane: DataplaneMode,
    pub admin: SocketAddr,
    pub proxy: ProxyConfig,
    pub drain: Duration,
    pub l4: Vec<L4Mapping>,
    pub l4_reply_interface: Vec<String>,
    pub guard: GuardRules,
    pub cgroup: Option<PathBuf>,
    pub pod_cgroup: Option<PathBuf>,
    pub pod_route: Vec<PodRoute>,
    pub pin_path: PathBuf,
    pub detach_on_exit: bool,
    /// `--bind-in-kernel` (delayed binding); refused when on until it carries traffic.
    pub bind_in_kernel: bool,
    /// L7 worker threads (`--workers`, `proxy/workers.rs`).
    pub workers: usize,
}

/// A merge that failed: at a key of the file, or in the flags alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{0}")]
    Flags(String),
}

/// The flags over the file (see the module text), checked.
pub fn merge(
    flags: &RunFlags,
    given: &BTreeSet<String>,
    file: Option<&ConfigFile>,
) -> Result<RunSettings, SettingsError> {
    let empty = FileConfig::default();
    let f = file.map_or(&empty, |c| &c.config);
    // An error about `key`: at its line when the file set it, else about the flag.
    let blame = |key: &str, reason: String| -> SettingsError {
        match file {
            Some(c) if c.positions.contains_key(key) => c.error_at(key, reason).into(),
            _ => SettingsError::Flags(reason),
        }
    };
    // a scalar with a default: the flag when given, else the file, else the default
    let given_or = |id: &str| given.contains(id);

    if let (Some(_), Some(other)) = (
        &f.manifests,
        [("kubeconfig", f.kubeconfig.is_some()), ("write_status", f.write_status == Some(true))]
            .iter()
            .find(|(_, set)| *set),
    ) {
        return Err(blame(
            other.0,
            "the route source is either `manifests` (a directory) or Kubernetes (`kubeconfig`, `write_status`), not both".into(),
        ));
    }
    let source = if let Some(d) = &flags.manifests {
        SourceSetting::Manifests(d.clone())
    } else if flags.kubeconfig.is_some() || flags.write_status {
        SourceSetting::Kubernetes {
            kubeconfig: flags.kubeconfig.clone().or_else(|| f.kubeconfig.clone()),
            write_status: flags.write_status || f.write_status == Some(true),
        }
    } else if let Some(d) = &f.manifests {
        SourceSetting::Manifests(d.clone())
    } else {
        SourceSetting::Kubernetes { kubeconfig: f.kubeconfig.clone(), write_status: f.write_status == Some(true) }
    };

    let listen = list(&flags.listen, values(&f.listen));
    if listen.is_empty() {
        return Err(SettingsError::Flags(match file {
            Some(c) => format!(
                "{}: nothing to serve: no `listen` key and no --listen ADDR=NAMESPACE/GATEWAY[:LISTENERPORT]",
                c.path
            ),
            None => "nothing to serve: give --listen ADDR=NAMESPACE/GATEWAY[:LISTENERPORT] or --config FILE".into(),
        }));
    }
    let interface = flags.interface.clone().or_else(|| f.interface.clone());
    let dataplane = flags.dataplane.or(f.dataplane.as_ref().map(|c| c.0)).unwrap_or(if interface.is_some() {
        DataplaneMode::Ebpf
    } else {
        DataplaneMode::Userspace
    });
    let pick = |id: &str, flag: u64, file: Option<u64>| if given_or(id) { flag } else { file.unwrap_or(flag) };
    let proxy = ProxyConfig {
        max_connections_per_source: if given_or("max_connections_per_source") {
            flags.max_connections_per_source
        } else {
            f.max_connections_per_source.unwrap_or(flags.max_connections_per_source)
        },
        head_timeout: Duration::from_secs(pick("head_timeout", flags.head_timeout, f.head_timeout)),
        forwarded_headers: if given_or("forwarded_headers") {
            flags.forwarded_headers
        } else {
            f.forwarded_headers.as_ref().map_or(flags.forwarded_headers, |c| c.0)
        } == OnOff::On,
        request_ids: flags.request_id || f.request_id == Some(true),
        h2: crate::proxy::h2::H2Config {
            max_concurrent_streams: if given_or("h2_max_concurrent_streams") {
                flags.h2_max_concurrent_streams
            } else {
                f.h2_max_concurrent_streams.unwrap_or(flags.h2_max_concurrent_streams)
            },
            idle_timeout: Duration::from_secs(pick("h2_idle_timeout", flags.h2_idle_timeout, f.h2_idle_timeout)),
            // 0: no keep-alive PINGs
            keepalive_interval: Some(pick(
                "h2_keepalive_interval",
                flags.h2_keepalive_interval,
                f.h2_keepalive_interval,
            ))
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        },
        join_mode: if given_or("join_mode") {
            flags.join_mode
        } else {
            f.join_mode.as_ref().map_or(flags.join_mode, |c| c.0)
        },
    };
    let drain = Duration::from_secs(pick("drain_timeout", flags.drain_timeout, f.drain_timeout));
    let admin = if given_or("admin") { flags.admin } else { f.admin.as_ref().map_or(flags.admin, |a| a.0) };
    let pin_path = if given_or("pin_path") {
        flags.pin_path.clone()
    } else {
        f.pin_path.clone().unwrap_or(flags.pin_path.clone())
    };
    let l4 = list(&flags.l4, values(&f.l4));
    let syn_rate = pick("syn_rate", flags.syn_rate, f.syn_rate);
    let syn_burst = flags.syn_burst.or(f.syn_burst);
    let guard = GuardRules::from_flags(
        list(&flags.deny, values(&f.deny)),
        list(&flags.allow, values(&f.allow)),
        syn_rate,
        syn_burst,
    )
    .map_err(|e| {
        let key = match e {
            GuardError::BurstWithoutRate(_) | GuardError::Burst(_) => "syn_burst",
            GuardError::Rate(_) => "syn_rate",
            GuardError::TooManyRules { flag, .. } => flag,
        };
        blame(key, e.to_string())
    })?;
    let settings = RunSettings {
        source,
        interface,
        dataplane,
        admin,
        proxy,
        drain,
        l4_reply_interface: list(&flags.l4_reply_interface, f.l4_reply_interface.clone()),
        guard,
        cgroup: flags.cgroup.clone().or_else(|| f.cgroup.clone()),
        pod_cgroup: flags.pod_cgroup.clone().or_else(|| f.pod_cgroup.clone()),
        pod_route: list(&flags.pod_route, values(&f.pod_route)),
        pin_path,
        detach_on_exit: flags.detach_on_exit || f.detach_on_exit == Some(true),
        bind_in_kernel: if given_or("bind_in_kernel") {
            flags.bind_in_kernel
        } else {
            f.bind_in_kernel.as_ref().map_or(flags.bind_in_kernel, |c| c.0)
        } == OnOff::On,
        l4,
        listen,
        workers: flags.workers.or(f.workers).unwrap_or_else(crate::proxy::workers::default_count),
    };
    check(&settings).map_err(|(key, reason)| blame(key, reason))?;
    Ok(settings)
}

/// Why `--bind-in-kernel on` is refused without the eBPF dataplane.
pub const BIND_IN_KERNEL_NEEDS_EBPF: &str = "--bind-in-kernel on binds connections in XDP/tc on the VM's NIC: it needs the ebpf dataplane (--interface IFACE, not --dataplane userspace)";

/// Why `--pod-cgroup` is refused without the eBPF dataplane.
pub const POD_CGROUP_NEEDS_EBPF: &str = "--pod-cgroup joins pooled pod connections in the kernel (sockmap): it needs the ebpf dataplane (--interface IFACE, not --dataplane userspace)";

/// The flag's list when given, else the file's, else none.
fn list<T: Clone>(flag: &[T], file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() { file.unwrap_or_default() } else { flag.to_vec() }
}

/// Checks across keys: (the key to blame, why).
fn check(s: &RunSettings) -> Result<(), (&'static str, String)> {
    if s.bind_in_kernel && (s.dataplane != DataplaneMode::Ebpf || s.interface.is_none()) {
        return Err(("bind_in_kernel", BIND_IN_KERNEL_NEEDS_EBPF.into()));
    }
    if s.pod_cgroup.is_some() && (s.dataplane != DataplaneMode::Ebpf || s.interface.is_none()) {
        return Err(("pod_cgroup", POD_CGROUP_NEEDS_EBPF.into()));
    }
    if let Some(why) = crate::proxy::workers::check_count(s.workers) {
        return Err(("workers", why));
    }
    if s.proxy.h2.max_concurrent_streams == 0 {
        let why = "--h2-max-concurrent-streams 0 would refuse every HTTP/2 request: give at least 1 (default 100)";
        return Err(("h2_max_concurrent_streams", why.into()));
    }
    if s.proxy.h2.idle_timeout.is_zero() {
        let why = "--h2-idle-timeout 0 would close every HTTP/2 connection at once: give seconds (default 300)";
        return Err(("h2_idle_timeout", why.into()));
    }
    let l7_ports: Vec<u16> = s.listen.iter().map(|m| m.addr.port()).collect();
    crate::datapath::l4::check_mappings(&s.l4, &l7_ports).map_err(|e| ("l4", e))?;
    let mut addrs = BTreeSet::new();
    for m in &s.listen {
        if !addrs.insert(m.addr) {
            return Err(("listen", format!("{} is served twice (listen {m})", m.addr)));
        }
    }
    if s.dataplane == DataplaneMode::Userspace {
        if !s.l4.is_empty() {
            return Err((
                "l4",
                "--l4 needs the ebpf dataplane: give --interface IFACE (the VM's NIC) and do not use --dataplane userspace"
                    .into(),
            ));
        }
        if s.guard.any() {
            let key = if !s.guard.deny.is_empty() {
                "deny"
            } else if !s.guard.allow.is_empty() {
                "allow"
            } else {
                "syn_rate"
            };
            return Err((
                key,
                "--deny, --allow and --syn-rate are enforced by the XDP guard: they need the ebpf dataplane (--interface IFACE), not --dataplane userspace".into(),
            ));
        }
    } else if s.interface.is_none() {
        return Err((
            "dataplane",
            "--dataplane ebpf needs --interface IFACE (the VM's NIC); use --dataplane userspace to run without eBPF"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse;

    fn flags(args: &[&str]) -> (RunFlags, BTreeSet<String>) {
        let cli = crate::cli::parse_from(["ingress", "run"].iter().chain(args)).expect("flags parse");
        let (_, flags, given) = crate::cli::run_flags(cli.cmd).expect("run");
        (flags, given.into_iter().collect())
    }

    fn merged(args: &[&str], file: &str) -> Result<RunSettings, SettingsError> {
        let args: Vec<&str> = ["--config", "c.toml"].iter().chain(args).copied().collect();
        let (f, given) = flags(&args);
        let file = parse("c.toml", file).expect("file parses");
        merge(&f, &given, Some(&file))
    }

    const FILE: &str = r#"
listen = ["0.0.0.0:8080=cp/gw:80", "0.0.0.0:9080=dp/gw:80"]
interface = "eth0"
head_timeout = 30
admin = "127.0.0.1:9911"
deny = ["8080=10.0.0.0/8"]
kubeconfig = "/etc/ebpf-ingress/kubeconfig"
"#;

    #[test]
    fn the_file_fills_what_no_flag_gives() {
        let s = merged(&[], FILE).unwrap();
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.interface.as_deref(), Some("eth0"));
        assert_eq!(s.dataplane, DataplaneMode::Ebpf, "an interface means the ebpf dataplane");
        assert_eq!(s.proxy.head_timeout, Duration::from_secs(30));
        assert_eq!(s.proxy.max_connections_per_source, crate::proxy::DEFAULT_MAX_PER_SOURCE, "flag default");
        assert_eq!(s.admin, "127.0.0.1:9911".parse().unwrap());
        assert_eq!(s.guard.deny.len(), 1);
        assert_eq!(
            s.source,
            SourceSetting::Kubernetes { kubeconfig: Some("/etc/ebpf-ingress/kubeconfig".into()), write_status: false }
        );
        assert_eq!(s.pin_path, PathBuf::from(crate::datapath::pinning::DEFAULT_PIN_PATH));
    }

    #[test]
    fn flags_win_and_a_repeated_flag_replaces_the_whole_list() {
        let s = merged(
            &[
                "--listen",
                "127.0.0.1:7000=x/y",
                "--head-timeout",
                "10",
                "--admin",
                "127.0.0.1:9901",
                "--manifests",
                "/tmp/m",
                "--deny",
                "7000=192.0.2.0/24",
                "--deny",
                "7000=198.51.100.0/24",
            ],
            FILE,
        )
        .unwrap();
        assert_eq!(s.listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:7000=x/y"]);
        // given on the command line, even with the default's value
        assert_eq!(s.proxy.head_timeout, Duration::from_secs(10));
        assert_eq!(s.admin, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(s.source, SourceSetting::Manifests("/tmp/m".into()), "--manifests replaces the file's source");
        assert_eq!(
            s.guard.deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["7000=192.0.2.0/24", "7000=198.51.100.0/24"]
        );
    }

    #[test]
    fn write_status_flag_keeps_the_files_kubeconfig() {
        let s = merged(&["--write-status"], FILE).unwrap();
        assert_eq!(
            s.source,
            SourceSetting::Kubernetes { kubeconfig: Some("/etc/ebpf-ingress/kubeconfig".into()), write_status: true }
        );
    }

    #[test]
    fn without_a_file_the_flags_alone_decide_as_before() {
        let (f, given) = flags(&["--listen", "127.0.0.1:8080=a/b", "--manifests", "/m"]);
        let s = merge(&f, &given, None).unwrap();
        assert_eq!(s.dataplane, DataplaneMode::Userspace);
        assert_eq!(s.proxy.head_timeout, Duration::from_secs(10));
        assert_eq!(s.drain, Duration::from_secs(10));
        assert!(s.proxy.forwarded_headers && !s.proxy.request_ids && !s.detach_on_exit);
        let (f, given) = flags(&["--manifests", "/m", "--config", "x.toml"]);
        let e = merge(&f, &given, None).unwrap_err().to_string();
        assert!(e.contains("nothing to serve"), "{e}");
    }

    #[test]
    fn errors_across_keys_point_at_the_key_in_the_file() {
        for (file, want) in [
            (
                "listen = [\"0.0.0.0:8080=a/b\"]\nmanifests = \"/m\"\nkubeconfig = \"/k\"\n",
                "c.toml:3:1: key `kubeconfig`: the route source is either",
            ),
            (
                "listen = [\"0.0.0.0:8080=a/b\"]\ninterface = \"eth0\"\n\nsyn_burst = 5\n",
                "c.toml:4:1: key `syn_burst`: --syn-burst 5 needs --syn-rate",
            ),
            (
                "listen = [\"0.0.0.0:8080=a/b\"]\ninterface = \"eth0\"\nl4 = [\"8080=10.0.0.1:80\"]\n",
                "c.toml:3:1: key `l4`:",
            ),
            (
                "listen = [\"0.0.0.0:8080=a/b\"]\nl4 = [\"6550=10.0.0.1:6443\"]\n",
                "c.toml:2:1: key `l4`: --l4 needs the ebpf dataplane",
            ),
            (
                "listen = [\"0.0.0.0:8080=a/b\"]\nallow = [\"8080=10.0.0.0/8\"]\n",
                "c.toml:2:1: key `allow`: --deny, --allow",
            ),
            (
                "listen = [\"0.0.0.0:8080=a/b\"]\ndataplane = \"ebpf\"\n",
                "c.toml:2:1: key `dataplane`: --dataplane ebpf needs --interface",
            ),
            (
                "listen = [\"0.0.0.0:8080=a/b\", \"0.0.0.0:8080=c/d\"]\n",
                "c.toml:1:1: key `listen`: 0.0.0.0:8080 is served twice",
            ),
            ("interface = \"eth0\"\n", "c.toml: nothing to serve"),
        ] {
            let e = merged(&[], file).unwrap_err().to_string();
            assert!(e.starts_with(want), "{file}: {e}");
        }
    }

    #[test]
    fn http2_limits_come_from_flags_or_the_file_and_zero_is_refused() {
        let s = merged(&[], "listen = [\"0.0.0.0:8080=a/b\"]\n").unwrap();
        assert_eq!(s.proxy.h2, crate::proxy::h2::H2Config::default());
        assert_eq!((s.proxy.h2.max_concurrent_streams, s.proxy.h2.idle_timeout.as_secs()), (100, 300));
        let file = "listen = [\"0.0.0.0:8080=a/b\"]\nh2_max_concurrent_streams = 7\nh2_idle_timeout = 9\n";
        let s = merged(&[], file).unwrap();
        assert_eq!((s.proxy.h2.max_concurrent_streams, s.proxy.h2.idle_timeout.as_secs()), (7, 9));
        let s = merged(&["--h2-max-concurrent-streams", "3"], file).unwrap();
        assert_eq!(s.proxy.h2.max_concurrent_streams, 3, "the flag wins");
        let e = merged(&[], "listen = [\"0.0.0.0:8080=a/b\"]\nh2_max_concurrent_streams = 0\n").unwrap_err();
        assert!(e.to_string().starts_with("c.toml:2:1: key `h2_max_concurrent_streams`: "), "{e}");
        let e = merged(&["--h2-idle-timeout", "0"], "listen = [\"0.0.0.0:8080=a/b\"]\n").unwrap_err();
        assert!(e.to_string().contains("--h2-idle-timeout 0"), "{e}");
    }

    #[test]
    fn http2_keepalive_pings_are_off_by_default_and_set_by_flag_or_file() {
        let plain = "listen = [\"0.0.0.0:8080=a/b\"]\n";
        assert_eq!(merged(&[], plain).unwrap().proxy.h2.keepalive_interval, None, "off by default");
        let file = "listen = [\"0.0.0.0:8080=a/b\"]\nh2_keepalive_interval = 30\n";
        assert_eq!(merged(&[], file).unwrap().proxy.h2.keepalive_interval, Some(Duration::from_secs(30)));
        let s = merged(&["--h2-keepalive-interval", "5"], file).unwrap();
        assert_eq!(s.proxy.h2.keepalive_interval, Some(Duration::from_secs(5)), "the flag wins");
        let s = merged(&["--h2-keepalive-interval", "0"], file).unwrap();
        assert_eq!(s.proxy.h2.keepalive_interval, None, "0: off");
    }

    #[test]
    fn bind_in_kernel_defaults_off_and_on_needs_the_ebpf_dataplane() {
        let s = merged(&[], "listen = [\"0.0.0.0:8080=a/b\"]\n").unwrap();
        assert!(!s.bind_in_kernel);
        let s = merged(&["--bind-in-kernel", "off"], "listen = [\"0.0.0.0:8080=a/b\"]\nbind_in_kernel = \"on\"\n");
        assert!(!s.unwrap().bind_in_kernel, "the flag wins over the file");
        let e = merged(&["--bind-in-kernel", "on"], "listen = [\"0.0.0.0:8080=a/b\"]\n").unwrap_err().to_string();
        assert!(e.contains("needs the ebpf dataplane") && e.contains("--interface IFACE"), "{e}");
        let e = merged(&[], "listen = [\"0.0.0.0:8080=a/b\"]\nbind_in_kernel = \"on\"\n").unwrap_err().to_string();
        assert!(e.starts_with("c.toml:2:1: key `bind_in_kernel`: "), "{e}");
        let s =
            merged(&["--bind-in-kernel", "on", "--interface", "eth0"], "listen = [\"0.0.0.0:8080=a/b\"]\n").unwrap();
        assert!(s.bind_in_kernel, "on with the eBPF dataplane on an interface");
        let e = parse("c.toml", "bind_in_kernel = true\n").unwrap_err().to_string();
        assert!(e.contains("bind_in_kernel"), "{e}");
    }

    #[test]
    fn a_flag_error_without_the_key_in_the_file_names_the_flag() {
        let e = merged(&["--syn-burst", "3", "--interface", "eth0"], "listen = [\"0.0.0.0:8080=a/b\"]\n").unwrap_err();
        assert!(matches!(&e, SettingsError::Flags(m) if m.contains("--syn-burst 3")), "{e}");
    }
}
