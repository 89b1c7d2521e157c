//! `cargo xtask bench` (network part, root): today's path vs this ingress vs a direct
//! connection, on the k3d-shaped topology, interleaved over rounds with the order
//! rotating (A B C.., B C.. A, ...), medians reported; ratios are medians of the
//! per-round paired ratios, and a target is judged only on a clean run
//! (`ingress_tests::bench`). TIME_WAIT is capped in every bench namespace, so a
//! `Connection: close` run does not depend on what ran before it.
//!
//! - A, today's path: Docker DNAT -> nginx serverlb -> servicelb DNAT -> Envoy with
//!   the same routes -> ClusterIP DNAT -> pod (`legacy.rs`);
//! - B, direct: client -> pod IP through the same routers;
//! - N, nginx (Debian's) as a one-hop L7 proxy in the VM namespace with the same
//!   routes, generated from the compiled table (`nginx_l7.rs`): what a user would pick
//!   instead of this ingress;
//! - C, this ingress: userspace; eBPF (XDP, sockmap for upgrades); eBPF with
//!   `--forwarded-headers off` so splice-safe hosts are joined to the pod in the kernel;
//!   Ck, eBPF with `--bind-in-kernel on`: the benchmarked host (one backendRef, no
//!   filters, an exact hostname) bound to its pod in the kernel (delayed binding, issue
//!   14), each Ck run checked to have been bound (`BIND_FIRST_COUNTS`, the proxy's count).
//!
//! Workloads (wrk from the client namespace; bounded durations): small responses over
//! 64 keep-alive connections, a new connection per request, a 1 MiB response, and an
//! upgraded (WebSocket-style) connection's echo throughput, and connection setup time
//! and time to first byte over sequential connections (`ingress_tests::latency`). The
//! pod behind the benchmarked host runs nginx; the WebSocket pod runs the test echo
//! server. Writes `docs/bench/latest.md`, `latest.json` (the chart's input) and the
//! kernel-binding section on its own, `bind-latest.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::bench::{self, Faults, Median, Target, megabytes, paired_ratio, peak, rotation};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::kbind;
use ingress_tests::legacy::LegacyPath;
use ingress_tests::load::{LoadResult, process_cpu_seconds, upgrade_throughput};
use ingress_tests::netns::cap_time_wait;
use ingress_tests::nginx::PodNginx;
use ingress_tests::nginx_l7::NginxL7;
use ingress_tests::topology::{Topology, VM_IP, VM_NIC};
use ingress_tests::wrk::Wrk;
use serde_json::json;

const HOST: &str = "react-starter-development.openchoreovm-apis.localhost";
const WS_HOST: &str = "development.openchoreovm-apis.localhost:9080";
/// Idle keep-alive connections held open while the agent's RSS is read.
const IDLE: usize = 1000;
/// TIME_WAIT sockets each bench namespace may hold (`net.ipv4.tcp_max_tw_buckets`):
/// what one run leaves to the next stays this small.
const TIME_WAIT_BUCKETS: u32 = 256;
/// The latency workload: this many sequential connections at most, for at most
/// LATENCY_LIMIT.
const LATENCY_CONNS: usize = 2000;
const LATENCY_LIMIT: Duration = Duration::from_secs(10);
/// A Ck run counts as bound when the agent's proxy served at most this share of its
/// requests (a first segment lost and retransmitted can, rarely, end at the agent).
const MAX_PROXIED_SHARE: f64 = 0.001;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Path {
    Legacy,
    Direct,
    Nginx,
    Userspace,
    Ebpf,
    EbpfSplice,
    KernelBound,
}

const PATHS: [Path; 7] =
    [Path::Legacy, Path::Direct, Path::Nginx, Path::Userspace, Path::Ebpf, Path::EbpfSplice, Path::KernelBound];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Legacy => "A today's path (nginx serverlb + Envoy, 4 NATs)",
            Path::Direct => "B direct to the pod",
            Path::Nginx => "N nginx as a one-hop L7 proxy (same routes)",
            Path::Userspace => "C ingress, userspace",
            Path::Ebpf => "C ingress, eBPF (XDP; sockmap after upgrades)",
            Path::EbpfSplice => "C ingress, eBPF + splice-safe hosts joined in the kernel",
            Path::KernelBound => "Ck ingress, eBPF + eligible hosts bound to the pod in the kernel",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Path::Legacy => "A today",
            Path::Direct => "B direct",
            Path::Nginx => "N nginx",
            Path::Userspace => "C userspace",
            Path::Ebpf => "C eBPF",
            Path::EbpfSplice => "C eBPF+splice",
            Path::KernelBound => "Ck bound",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    KeepAlive,
    NewConnection,
    OneMiB,
    WebSocket,
    /// Connection setup time and time to first byte (`ingress_tests::latency`).
    Latency,
}

const WORKLOADS: [Workload; 5] =
    [Workload::KeepAlive, Workload::NewConnection, Workload::OneMiB, Workload::WebSocket, Workload::Latency];

impl Workload {
    /// The client's ephemeral ports for this workload on `path` in round `round`
    /// (`ip_local_port_range`): disjoint between workloads, B's apart from the others'
    /// (B's tuples are the pods' own, as Ck's are: a tuple B left in a pod's TIME_WAIT
    /// would hang Ck's bound connection on it; the other paths reach the pods from the
    /// VM's addresses), and the connection-per-request workloads' also between rounds
    /// (each round's Ck agent starts with empty maps, not knowing which tuples the last
    /// round's bound flows left in the pods' TIME_WAIT).
    fn ports(self, path: Path, round: usize) -> String {
        let (from, to) = match (self, path == Path::Direct) {
            (Workload::NewConnection, true) => (32768, 36999),
            (Workload::NewConnection, false) => (37000, 44999),
            (Workload::Latency, true) => (45000, 48999),
            (Workload::Latency, false) => (49000, 56999),
            (Workload::KeepAlive | Workload::OneMiB | Workload::WebSocket, true) => return "57000 58999".into(),
            (Workload::KeepAlive | Workload::OneMiB | Workload::WebSocket, false) => return "59000 60999".into(),
        };
        let part = (to - from + 1) / 3;
        let lo = from + part * (round % 3);
        format!("{lo} {}", lo + part - 1)
    }

    fn title(self, c: &Cfg) -> String {
        match self {
            Workload::KeepAlive => format!("Small responses over {} keep-alive connections", c.conns),
            Workload::NewConnection => {
                format!("A new connection per request ({} clients, `Connection: close`)", c.conns / 4)
            }
            Workload::OneMiB => format!("1 MiB responses ({} keep-alive connections)", c.conns / 8),
            Workload::WebSocket => {
                format!("WebSocket-style upgraded connection, {} MiB echoed each way", c.ws_bytes >> 20)
            }
            Workload::Latency => format!(
                "Connection setup and time to first byte ({LATENCY_CONNS} sequential connections at most, {} s at most, `GET /`)",
                LATENCY_LIMIT.as_secs()
            ),
        }
    }
    fn key(self) -> &'static str {
        match self {
            Workload::KeepAlive => "keep-alive",
            Workload::NewConnection => "new connection per request",
            Workload::OneMiB => "1 MiB responses",
            Workload::WebSocket => "WebSocket echo",
            Workload::Latency => "connection setup and first byte",
        }
    }
}

struct Cfg {
    rounds: usize,
    secs: u64,
    conns: usize,
    ws_bytes: usize,
}

/// One measurement.
#[derive(Clone, Debug, Default)]
struct Sample {
    rps: f64,
    mbps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
    errors: u64,
    non_2xx: u64,
    /// Requests answered; connections opened (wrk: -c, or one per request with
    /// `Connection: close`).
    requests: u64,
    connections: u64,
    /// The agent process's own CPU (user + system) per request (agent paths only).
    agent_cpu_us: f64,
    /// The latency workload: connect time and time to first byte, median and p99.
    connect_p50_us: f64,
    connect_p99_us: f64,
    first_byte_p50_us: f64,
    first_byte_p99_us: f64,
    /// Ck: what the binding check saw (connections wrk opened, or sequential connections).
    bind: Option<BindCheck>,
}

/// One Ck run's proof that its connections were bound in the kernel: the deltas of
/// `BIND_FIRST_COUNTS` and of the proxy's request count over the run.
#[derive(Clone, Debug, Default)]
struct BindCheck {
    /// Connections the run opened at least (wrk's -c; for one connection per request,
    /// the requests answered).
    connections: u64,
    requests: u64,
    bound: u64,
    fallback: u64,
    proxied: u64,
    /// One connection per request (wrk's, and the latency workload's sequential ones)
    /// from fast-reused ports: a new connection on the
    /// tuple of a bound flow closed with a FIN in the last 130 s goes to the agent (the
    /// pod may hold it in TIME_WAIT, `bind_first`), so only bound + proxied must cover it.
    reuses_tuples: bool,
}

impl BindCheck {
    /// Why the run was not (all) bound, or None.
    fn failure(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.reuses_tuples {
            if self.bound == 0 || self.bound + self.proxied < self.connections {
                why.push(format!(
                    "bound grew by {} and the proxy served {} for {} connections",
                    self.bound, self.proxied, self.connections
                ));
            }
        } else if self.bound < self.connections {
            why.push(format!("bound grew by {} for {} connections", self.bound, self.connections));
        }
        if !self.reuses_tuples && self.proxied as f64 > MAX_PROXIED_SHARE * self.requests as f64 {
            why.push(format!("the agent's proxy served {} of {} requests", self.proxied, self.requests));
        }
        if self.requests == 0 {
            why.push("no request answered".into());
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

impl Sample {
    fn of(r: &LoadResult, bytes_per_sec: f64) -> Self {
        Sample {
            rps: r.rps(),
            mbps: bytes_per_sec / 1e6,
            p50_us: r.p50.as_secs_f64() * 1e6,
            p99_us: r.p99.as_secs_f64() * 1e6,
            cpu_us: r.cpu_us_per_request(),
            errors: r.errors,
            non_2xx: r.non_2xx,
            ..Default::default()
        }
    }
    fn faults(&self) -> Faults {
        Faults { errors: self.errors, non_2xx: self.non_2xx }
    }
}

/// Peak RSS readings of one path, one per round (None: could not be read).
#[derive(Clone, Default)]
struct Memory {
    /// The agent under load, or the legacy path's nginx.
    main: Vec<Option<u64>>,
    /// The legacy path's Envoy.
    envoy: Vec<Option<u64>>,
    /// The agent holding IDLE idle connections.
    idle: Vec<Option<u64>>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut quick, mut out) = (ingress_bin(), false, PathBuf::from("docs/bench/latest.md"));
    let mut envoy = PathBuf::from("envoy");
    // L4 mode alone (prints its section, writes nothing): `netbench --l4-only`.
    let mut l4_only = false;
    // TLS mode alone (prints its section, writes nothing): `netbench --tls-only`.
    let mut tls_only = false;
    // The join mode alone (prints its section, writes nothing): `netbench --splice-only`.
    let mut splice_only = false;
    // `--rounds N`: that many rounds instead of the mode's (1 with --quick, else 3).
    let mut rounds: Option<usize> = None;
    // The agent's RSS alone, per dataplane, with where it is (`ingress_tests::rss`):
    // `netbench --rss-only` (prints, writes nothing).
    let mut rss_only = false;
    // The measurement loop (h-perf): `--paths B,N,C --workloads keepalive,close` runs only
    // those (see `Selection`), prints a short table with ratios to N and B, writes nothing.
    let mut sel = Selection::default();
    // the kernel-binding section's own file (default: bind-latest.md beside --out in a
    // full run; in a selection run only when given)
    let mut bind_out: Option<PathBuf> = None;
    // a diagnostic: the pods' TIME_WAIT cap (`--pod-time-wait N`; default TIME_WAIT_BUCKETS
    // like every namespace; 0: the pods keep no TIME_WAIT socket, see the kernel-binding
    // section)
    let mut pod_time_wait: Option<u32> = None;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = loadavg();
    while let Some(a) = args.next() {
        if sel.flag(&a, &mut args) {
            continue;
        }
        match a.as_str() {
            "--ingress" => bin = PathBuf::from(args.next().expect("--ingress PATH")),
            "--envoy" => envoy = PathBuf::from(args.next().expect("--envoy PATH")),
            "--quick" => quick = true,
            "--l4-only" => l4_only = true,
            "--tls-only" => tls_only = true,
            "--splice-only" => splice_only = true,
            "--rss-only" => rss_only = true,
            "--rounds" => rounds = Some(args.next().and_then(|n| n.parse().ok()).expect("--rounds N")),
            "--out" => out = PathBuf::from(args.next().expect("--out FILE")),
            "--bind-out" => bind_out = Some(PathBuf::from(args.next().expect("--bind-out FILE"))),
            "--pod-time-wait" => {
                pod_time_wait = Some(args.next().and_then(|n| n.parse().ok()).expect("--pod-time-wait N"))
            }
            "--bench" => {}
            other => panic!("netbench: unknown argument {other}"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netbench: needs root (network namespaces, XDP, iptables); skipped");
        return;
    }
    let c = if quick {
        eprintln!("netbench --quick: one round, so every figure is a single sample (no median)");
        Cfg { rounds: 1, secs: 2, conns: 64, ws_bytes: 16 << 20 }
    } else {
        Cfg { rounds: 3, secs: 5, conns: 64, ws_bytes: 128 << 20 }
    };
    let c = Cfg { rounds: rounds.unwrap_or(c.rounds), secs: sel.secs.unwrap_or(c.secs), ..c };
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("AGENT_RUST_LOG", "info") };
    let pods = openchoreo_pods();
    // the benchmarked host's Service has two pods: nginx in both; B goes to the first
    let is_react = |p: &ingress_tests::topology::PodSpec| p.name.starts_with("react-starter-development-");
    let react = pods.iter().find(|p| is_react(p)).expect("react pod").clone();
    let echo_pod = pods.iter().find(|p| p.name.starts_with("echo-websocket-service-")).expect("echo pod").ip;
    let topo = Topology::create_with("bench", &pods, |p| !is_react(p));
    topo.enable_direct_path();
    for ns in topo.namespaces() {
        cap_time_wait(&ns, TIME_WAIT_BUCKETS);
    }
    if let Some(n) = pod_time_wait {
        eprintln!("netbench: the pods keep at most {n} TIME_WAIT sockets (--pod-time-wait)");
        for (_, ns) in &topo.pods {
            cap_time_wait(ns, n);
        }
    }
    let nginx: Vec<PodNginx> =
        topo.pods.iter().filter(|(p, _)| is_react(p)).map(|(p, ns)| PodNginx::start(ns, (p.ip, 8080).into())).collect();
    // the table the agent compiles, for Envoy's routes
    let res = ingress::sources::manifest::load_dir(&openchoreo_dir()).expect("fixtures");
    let mappings: Vec<ingress::config::ListenMapping> =
        openchoreo_listens(VM_IP).iter().map(|l| l.parse().unwrap()).collect();
    let table = ingress::routing::compile(&res, &mappings);
    let lt = &table.listeners[1];

    // samples[path][workload][round]; peak RSS readings per path and round
    let mut samples = vec![vec![Vec::<Sample>::new(); WORKLOADS.len()]; PATHS.len()];
    // Ck on a kernel that cannot bind: not run, and said so in every report
    let bind_unsupported = kbind::unsupported();
    if let Some(why) = bind_unsupported {
        eprintln!("netbench: path Ck not run: {why}");
    }
    let mut memory = vec![Memory::default(); PATHS.len()];
    let (l4_only, tls_only, splice_only) = (l4_only || sel.on(), tls_only || sel.on(), splice_only || sel.on());
    for round in 0..if (l4_only || tls_only || splice_only) && !sel.on() { 0 } else { c.rounds } {
        // a path never always runs first, nor always after the same one
        for pi in rotation(&(0..PATHS.len()).collect::<Vec<_>>(), round) {
            let path = &PATHS[pi];
            if (rss_only && !matches!(path, Path::Userspace | Path::Ebpf | Path::EbpfSplice | Path::KernelBound))
                || !sel.path(*path)
                || (*path == Path::KernelBound && bind_unsupported.is_some())
            {
                continue;
            }
            let mut agent = None;
            let mut legacy = None;
            let mut nginx_l7 = None;
            let addr = match path {
                Path::Direct => format!("{}:8080", react.ip),
                Path::Legacy => {
                    let l = LegacyPath::create(&topo, lt, 9080, &envoy);
                    for ns in l.namespaces() {
                        cap_time_wait(ns, TIME_WAIT_BUCKETS);
                    }
                    legacy = Some(l);
                    format!("{VM_IP}:9080")
                }
                Path::Nginx => {
                    let n = NginxL7::start(&topo.vm_ns(), format!("{VM_IP}:9080").parse().unwrap(), lt);
                    if round == 0 && !n.skipped.is_empty() {
                        eprintln!("nginx path: table entries nginx does not express, left out: {:?}", n.skipped);
                    }
                    nginx_l7 = Some(n);
                    format!("{VM_IP}:9080")
                }
                Path::Userspace | Path::Ebpf | Path::EbpfSplice | Path::KernelBound => {
                    let flags: &[&str] = match path {
                        Path::Userspace => &["--dataplane", "userspace"],
                        Path::Ebpf => &["--interface", VM_NIC],
                        Path::EbpfSplice => &["--interface", VM_NIC, "--forwarded-headers", "off"],
                        _ => &kbind::BIND_ARGS,
                    };
                    let flags: Vec<&str> =
                        flags.iter().copied().chain(sel.agent_args.iter().map(|s| s.as_str())).collect();
                    let a = Agent::start(&bin, &topo.vm_ns(), &openchoreo_dir(), &openchoreo_listens(VM_IP), &flags);
                    if *path == Path::KernelBound {
                        let v = kbind::wait_bound(&a);
                        if round == 0 {
                            eprintln!("Ck: {}", ingress::telemetry::bind::format_bind(&v).trim());
                        }
                    }
                    agent = Some(a);
                    if rss_only {
                        rss_report(path.short(), "at start", agent.as_ref().unwrap());
                    }
                    format!("{VM_IP}:9080")
                }
            };
            sel.profile_start(&topo.vm_ns(), *path);
            for (wi, w) in WORKLOADS.iter().enumerate() {
                if !sel.workload(*w) {
                    continue;
                }
                // each workload's connections from ports of its own: a tuple one workload
                // left closed (the pod may hold it in TIME_WAIT, then a new connection on it
                // goes to the agent under Ck) is never another workload's
                ingress_tests::netns::sysctl(&topo.client_ns(), "net/ipv4/ip_local_port_range", &w.ports(*path, round));
                sel.profile_workload(w.key());
                let bind_before = (*path == Path::KernelBound).then(|| agent.as_ref().unwrap().stats());
                let agent_cpu0 = agent.as_ref().and_then(|a| process_cpu_seconds(a.pid()));
                let mut s = match w {
                    Workload::WebSocket => {
                        let ws_addr =
                            if *path == Path::Direct { format!("{echo_pod}:8080") } else { format!("{VM_IP}:9080") };
                        let (mbps, cpu) =
                            upgrade_throughput(&topo.client_ns(), ws_addr.parse().unwrap(), WS_HOST, c.ws_bytes);
                        Sample { mbps, cpu_us: cpu * 1e6, ..Default::default() }
                    }
                    Workload::Latency => {
                        let l = ingress_tests::latency::measure(
                            &topo.client_ns(),
                            addr.parse().unwrap(),
                            HOST,
                            "/",
                            LATENCY_CONNS,
                            LATENCY_LIMIT,
                        );
                        let ((c50, c99), (f50, f99)) = (l.connect(), l.first_byte());
                        let n = l.connect_us.len() as u64;
                        Sample {
                            requests: n,
                            errors: l.failures,
                            connect_p50_us: c50,
                            connect_p99_us: c99,
                            first_byte_p50_us: f50,
                            first_byte_p99_us: f99,
                            ..Default::default()
                        }
                    }
                    _ => {
                        let (conns, url_path, headers) = match w {
                            Workload::KeepAlive => (c.conns, "/", vec![]),
                            Workload::NewConnection => (c.conns / 4, "/", vec!["Connection: close"]),
                            _ => (c.conns / 8, "/1m", vec![]),
                        };
                        let (load, rep) = Wrk {
                            ns: &topo.client_ns(),
                            url: format!("http://{addr}{url_path}"),
                            host: HOST,
                            connections: conns,
                            threads: 2,
                            duration: Duration::from_secs(c.secs),
                            headers,
                        }
                        .run();
                        let mut s = Sample::of(&load, rep.bytes_per_sec);
                        s.requests = load.requests;
                        s.connections = if *w == Workload::NewConnection { load.requests } else { conns as u64 };
                        s
                    }
                };
                if let (Some(a), Some(cpu0)) = (&agent, agent_cpu0) {
                    let used = process_cpu_seconds(a.pid()).map(|c| c - cpu0);
                    s.agent_cpu_us = match used {
                        Some(c) if s.requests > 0 => c * 1e6 / s.requests as f64,
                        _ => f64::NAN,
                    };
                }
                if let Some(before) = bind_before {
                    let after = agent.as_ref().unwrap().stats();
                    let (b0, b1) = (before.bind.unwrap_or_default(), after.bind.unwrap_or_default());
                    let connections = if *w == Workload::Latency { s.requests } else { s.connections };
                    let check = BindCheck {
                        connections,
                        requests: s.requests,
                        bound: b1.count("bound") - b0.count("bound"),
                        fallback: b1.count("fallback") - b0.count("fallback"),
                        proxied: after.proxy.requests - before.proxy.requests,
                        reuses_tuples: matches!(w, Workload::NewConnection | Workload::Latency),
                    };
                    let deltas: Vec<String> = b1
                        .first_segment
                        .iter()
                        .map(|(n, c)| format!("{n} {}", c - b0.count(n)))
                        .filter(|t| !t.ends_with(" 0"))
                        .collect();
                    eprintln!(
                        "round {round} Ck {:<27} binding check: {check:?}; first segments over the run: {}",
                        w.key(),
                        deltas.join(", ")
                    );
                    // the run's figures are the kernel's only if its connections were bound
                    if *w != Workload::WebSocket
                        && let Some(why) = check.failure()
                    {
                        panic!(
                            "netbench: Ck {} was not served by kernel binding: {why}\n{}",
                            w.key(),
                            agent.as_ref().unwrap().stats_table()
                        );
                    }
                    s.bind = Some(check);
                }
                if *w == Workload::Latency {
                    eprintln!(
                        "round {round} {:<14} {:<27} {} connections: connect p50 {:.0} us p99 {:.0} us, first byte p50 {:.0} us p99 {:.0} us, failures {}",
                        path.short(),
                        w.key(),
                        s.requests,
                        s.connect_p50_us,
                        s.connect_p99_us,
                        s.first_byte_p50_us,
                        s.first_byte_p99_us,
                        s.errors
                    );
                } else {
                    eprintln!(
                        "round {round} {:<14} {:<27} {:>9.0} req/s {:>8.1} MB/s p50 {:>7.0} us p99 {:>7.0} us cpu {:>8.1} us/req errors {} non-2xx {}",
                        path.short(),
                        w.key(),
                        s.rps,
                        s.mbps,
                        s.p50_us,
                        s.p99_us,
                        s.cpu_us,
                        s.errors,
                        s.non_2xx
                    );
                }
                samples[pi][wi].push(s);
                sel.profile_stop();
            }
            if sel.on()
                && let Some(a) = agent.take()
            {
                a.stop();
            }
            if let Some(a) = agent {
                if rss_only {
                    rss_report(path.short(), "after the workloads", &a);
                }
                memory[pi].main.push(a.peak_rss_kib());
                // issue 4's target: RSS with 1,000 idle keep-alive connections
                let (held, now) = ingress_tests::load::with_idle_connections(
                    &topo.client_ns(),
                    addr.parse().unwrap(),
                    HOST,
                    IDLE,
                    || {
                        if rss_only {
                            rss_report(path.short(), &format!("holding {IDLE} idle connections"), &a);
                        }
                        a.rss_kib()
                    },
                );
                eprintln!("round {round} {:<14} RSS {} with {held} idle connections", path.short(), megabytes(now));
                assert_eq!(held, IDLE, "{}: idle connections refused", path.name());
                memory[pi].idle.push(now);
                a.stop();
            }
            if let Some(n) = nginx_l7 {
                memory[pi].main.push(n.peak_rss_kib());
            }
            if let Some(l) = legacy {
                let (n, e) = l.peak_rss_kib();
                memory[pi].main.push(n);
                memory[pi].envoy.push(e);
            }
        }
    }
    // L4 mode: the L4 path vs direct vs an nginx stream proxy, to the first nginx pod
    let l4_md = if tls_only || splice_only || rss_only {
        String::new()
    } else {
        ingress_tests::l4bench::run(
            &topo,
            &bin,
            &openchoreo_dir(),
            &openchoreo_listens(VM_IP),
            (react.ip, 8080).into(),
            c.secs,
            c.rounds,
            HOST,
        )
    };
    // TLS mode: HTTPS, handshakes and h2 through the agent vs Envoy terminating TLS vs
    // direct TLS to the first nginx pod
    let tls_md = if l4_only || splice_only || rss_only {
        String::new()
    } else {
        let react_ns = topo.pods.iter().find(|(p, _)| p.ip == react.ip).map(|(_, ns)| ns.clone()).expect("react ns");
        let backend = lt
            .vhosts()
            .into_iter()
            .find(|v| v.hostname == HOST)
            .and_then(|v| v.entries.first())
            .map(|e| e.rule.backends[0].name.clone())
            .expect("the benchmarked host's backend");
        ingress_tests::tlsbench::run(
            &topo,
            &bin,
            &openchoreo_dir(),
            &openchoreo_listens(VM_IP),
            &envoy,
            (react_ns, react.ip),
            c.secs,
            c.rounds,
            HOST,
            &backend,
        )
    };
    // the join mode: the mechanisms of joined connections side by side
    let splice_md = if l4_only || tls_only || rss_only {
        String::new()
    } else {
        ingress_tests::splicebench::run(
            &topo,
            &bin,
            &openchoreo_dir(),
            &openchoreo_listens(VM_IP),
            WS_HOST,
            HOST,
            c.secs,
            c.rounds,
            c.ws_bytes,
        )
    };
    drop(nginx);
    drop(topo);
    let bind_md = |selected: bool| {
        let ctx = BindContext {
            command: &command,
            load_before: &load_before,
            unsupported: bind_unsupported,
            selected,
            pod_time_wait,
        };
        bind_report(&c, &samples, &ctx)
    };
    if sel.on() {
        print!("{}", sel.report(&c, &samples));
        if sel.path(Path::KernelBound) {
            let md = bind_md(true);
            print!("{md}");
            if let Some(f) = &bind_out {
                std::fs::write(f, &md).expect("write the kernel-binding section");
                eprintln!("netbench: wrote {}", f.display());
            }
        }
        return;
    }
    if splice_only {
        print!("{splice_md}");
        return;
    }
    if rss_only {
        for (pi, m) in memory.iter().enumerate() {
            if !m.idle.is_empty() {
                println!("{}: {} holding {IDLE} idle connections", PATHS[pi].name(), megabytes(peak(&m.idle)));
            }
        }
        return;
    }
    if l4_only {
        print!("{l4_md}");
        return;
    }
    if tls_only {
        print!("{tls_md}");
        return;
    }
    let (mut md, js) = report(&c, quick, &samples, &memory);
    md += &l4_md;
    md += &tls_md;
    md += &splice_md;
    let bind = bind_md(false);
    md += "\n";
    md += &bind;
    print!("{md}");
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let bind_out = bind_out.unwrap_or_else(|| out.with_file_name("bind-latest.md"));
    std::fs::write(&bind_out, &bind).expect("write the kernel-binding section");
    eprintln!("netbench: wrote {}", bind_out.display());
    std::fs::write(&out, &md).expect("write the benchmark table");
    std::fs::write(out.with_extension("json"), serde_json::to_string_pretty(&js).unwrap()).expect("write the results");
    eprintln!("netbench: wrote {} and {}", out.display(), out.with_extension("json").display());
}

/// `--rss-only`: VmRSS and where it is (`/proc/PID/smaps`), on stderr.
fn rss_report(path: &str, when: &str, a: &Agent) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.pid())).unwrap_or_default();
    let field = |f: &str| status.lines().find(|l| l.starts_with(f)).map(|l| l[f.len()..].trim().to_string());
    eprintln!(
        "rss {path} {when}: VmRSS {} (RssAnon {}, RssFile {}), threads {}",
        field("VmRSS:").unwrap_or_default(),
        field("RssAnon:").unwrap_or_default(),
        field("RssFile:").unwrap_or_default(),
        field("Threads:").unwrap_or_default()
    );
    match ingress_tests::rss::of_pid(a.pid()) {
        Ok(b) => eprint!("{}", b.format()),
        Err(e) => eprintln!("  smaps: {e}"),
    }
    // a diagnostic of your own at this moment (a heap dump, `gdb -p`): NETBENCH_RSS_HOOK
    // is run by sh with AGENT_PID, RSS_PATH and RSS_WHEN set, bounded to 60 s
    if let Ok(hook) = std::env::var("NETBENCH_RSS_HOOK") {
        let run = std::process::Command::new("timeout")
            .args(["60", "sh", "-c", &hook])
            .env("AGENT_PID", a.pid().to_string())
            .env("RSS_PATH", path)
            .env("RSS_WHEN", when)
            .status();
        if !run.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("  NETBENCH_RSS_HOOK failed: {run:?}");
        }
    }
}

fn machine() -> (String, String, String) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    (format!("{cpus} CPUs ({model})"), kernel, date)
}

/// A median as a table cell: `*` marks one that left non-finite samples out (listed
/// under the tables); none finite at all is "n/a".
fn cell(m: Median, decimals: usize, unit: &str) -> String {
    if !m.value.is_finite() {
        return "n/a".into();
    }
    format!("{:.*}{unit}{}", decimals, m.value, if m.non_finite > 0 { "*" } else { "" })
}

fn report(c: &Cfg, quick: bool, samples: &[Vec<Vec<Sample>>], memory: &[Memory]) -> (String, serde_json::Value) {
    let (machine, kernel, date) = machine();
    let mut md = String::new();
    writeln!(md, "# Benchmark: today's path vs this ingress vs a direct connection\n").unwrap();
    writeln!(
        md,
        "Machine: {machine}, kernel {kernel}, {date}. Command: `cargo xtask bench{}`: the k3d-shaped topology in network namespaces; load from the client namespace (wrk, 2 threads; the WebSocket echo by the test client); {} s per run, {} interleaved round(s), the path order rotating from round to round (A B N C C C Ck, then B N C C C Ck A, ...); figures are medians over rounds, ratios are medians of each round's paired ratio. Backend: nginx in the Service's two pods (`/`: 18 bytes, `/1m`: 1 MiB; B connects to the first, A, N and C balance over both); the WebSocket pod runs the test echo server. CPU: the whole machine (user + system + irq + softirq from /proc/stat) per request, load generator and backend included. Everything shares the same {} CPUs. TIME_WAIT: every bench namespace caps it at {TIME_WAIT_BUCKETS} sockets (`net.ipv4.tcp_max_tw_buckets`), so a `Connection: close` run does not inherit the TIME_WAIT sockets of the runs before it.\n",
        if quick { " --quick" } else { "" },
        c.secs,
        c.rounds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    )
    .unwrap();
    if quick || c.rounds == 1 {
        writeln!(
            md,
            "**One round (`--quick`): every figure is a single sample, not a median; not for comparisons.**\n"
        )
        .unwrap();
    }
    writeln!(md, "Peak RSS of the proxies (VmHWM, max over rounds; nginx: master + workers):\n").unwrap();
    for (pi, p) in PATHS.iter().enumerate() {
        let m = &memory[pi];
        match p {
            Path::Direct => {}
            Path::Nginx => {
                writeln!(md, "- {}: nginx {} (master + workers)", p.name(), megabytes(peak(&m.main))).unwrap()
            }
            Path::Legacy => {
                writeln!(md, "- {}: nginx {} + Envoy {}", p.name(), megabytes(peak(&m.main)), megabytes(peak(&m.envoy)))
                    .unwrap()
            }
            _ => writeln!(
                md,
                "- {}: agent {} under load; {} with {IDLE} idle keep-alive connections open{}",
                p.name(),
                megabytes(peak(&m.main)),
                megabytes(peak(&m.idle)),
                if *p == Path::KernelBound { " (bound in the kernel: the pods hold them, not the agent)" } else { "" }
            )
            .unwrap(),
        }
    }
    writeln!(md).unwrap();
    // per round, in round order (each path ran once a round)
    let vals =
        |pi: usize, wi: usize, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> { samples[pi][wi].iter().map(f).collect() };
    let mut non_finite = Vec::new();
    let mut med = |pi: usize, wi: usize, what: &str, f: &dyn Fn(&Sample) -> f64| -> Median {
        let m = bench::median(&vals(pi, wi, f));
        if m.non_finite > 0 {
            non_finite.push(format!(
                "- {}, {}, {what}: {} of {} samples",
                PATHS[pi].short(),
                WORKLOADS[wi].key(),
                m.non_finite,
                m.samples
            ));
        }
        m
    };
    let ratio = |pi: usize, base: usize, wi: usize, f: &dyn Fn(&Sample) -> f64| -> Median {
        paired_ratio(&vals(pi, wi, f), &vals(base, wi, f))
    };
    let a = PATHS.iter().position(|p| *p == Path::Legacy).unwrap();
    let b = PATHS.iter().position(|p| *p == Path::Direct).unwrap();
    let n = PATHS.iter().position(|p| *p == Path::Nginx).unwrap();
    let mut js_workloads = vec![];
    for (wi, w) in WORKLOADS.iter().enumerate() {
        // the latency workload has its own table (`bind_report`)
        if *w == Workload::Latency {
            continue;
        }
        writeln!(md, "## {}\n", w.title(c)).unwrap();
        let by_bytes = *w == Workload::WebSocket || *w == Workload::OneMiB;
        let rate = |s: &Sample| if by_bytes { s.mbps } else { s.rps };
        let cpu = |s: &Sample| s.cpu_us;
        if *w == Workload::WebSocket {
            writeln!(md, "| path | MB/s (both directions) | CPU seconds | vs B | vs A | vs N |").unwrap();
            writeln!(md, "|---|---:|---:|---:|---:|---:|").unwrap();
        } else {
            writeln!(md, "| path | requests/s | MB/s | p50 | p99 | CPU per request | errors / non-2xx | vs B | vs A | vs N | CPU vs B | CPU vs A | CPU vs N |").unwrap();
            writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
        }
        let mut js_paths = vec![];
        for (pi, p) in PATHS.iter().enumerate() {
            let (v, c_us) = (med(pi, wi, "rate", &rate), med(pi, wi, "CPU", &cpu));
            let x = |m: Median| cell(m, 2, "x");
            if *w == Workload::WebSocket {
                let secs = Median { value: c_us.value / 1e6, ..c_us };
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    p.name(),
                    cell(v, 0, ""),
                    cell(secs, 2, ""),
                    x(ratio(pi, b, wi, &rate)),
                    x(ratio(pi, a, wi, &rate)),
                    x(ratio(pi, n, wi, &rate))
                )
                .unwrap();
            } else {
                let faults = samples[pi][wi].iter().fold(Faults::default(), |mut f, s| {
                    f.add(s.faults());
                    f
                });
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
                    p.name(),
                    cell(med(pi, wi, "requests/s", &|s| s.rps), 0, ""),
                    cell(med(pi, wi, "MB/s", &|s| s.mbps), 1, ""),
                    cell(med(pi, wi, "p50", &|s| s.p50_us), 0, " us"),
                    cell(med(pi, wi, "p99", &|s| s.p99_us), 0, " us"),
                    cell(c_us, 1, " us"),
                    faults.errors,
                    faults.non_2xx,
                    x(ratio(pi, b, wi, &rate)),
                    x(ratio(pi, a, wi, &rate)),
                    x(ratio(pi, n, wi, &rate)),
                    x(ratio(pi, b, wi, &cpu)),
                    x(ratio(pi, a, wi, &cpu)),
                    x(ratio(pi, n, wi, &cpu)),
                )
                .unwrap();
            }
            js_paths.push(json!({"path": p.short(), "value": v.value, "cpu_us": c_us.value}));
        }
        writeln!(md).unwrap();
        let unit = if by_bytes { "MB/s" } else { "requests/s" };
        js_workloads.push(json!({"workload": w.key(), "unit": unit, "paths": js_paths}));
    }
    // the targets, on keep-alive; judged only on a clean run (no socket errors,
    // no non-2xx answers in the samples compared) with baselines above zero
    writeln!(md, "## Targets (keep-alive)\n").unwrap();
    writeln!(md, "| C mode | req/s vs A (>= 3x) | req/s vs B (>= 0.8x) | CPU per request vs A (<= 0.4x) |").unwrap();
    writeln!(md, "|---|---:|---:|---:|").unwrap();
    let ka = WORKLOADS.iter().position(|w| *w == Workload::KeepAlive).unwrap();
    // faults over the samples of workload `wi` on paths `pis`
    let faults = |wi: usize, pis: &[usize]| {
        let mut f = Faults::default();
        for s in pis.iter().flat_map(|pi| &samples[*pi][wi]) {
            f.add(s.faults());
        }
        f
    };
    let rps = |s: &Sample| s.rps;
    let cpu = |s: &Sample| s.cpu_us;
    let (base_a, base_b, base_cpu) =
        (med(a, ka, "requests/s", &rps), med(b, ka, "requests/s", &rps), med(a, ka, "CPU", &cpu));
    let agent_paths =
        || PATHS.iter().enumerate().filter(|(_, p)| !matches!(p, Path::Legacy | Path::Direct | Path::Nginx));
    for (pi, p) in agent_paths() {
        let judged = |r: Median, base: Median, target: Target, with: usize| {
            format!("{} {}", cell(r, 2, "x"), bench::verdict(target, r, base, faults(ka, &[pi, with])))
        };
        writeln!(
            md,
            "| {} | {} | {} | {} |",
            p.name(),
            judged(ratio(pi, a, ka, &rps), base_a, Target { at_least: true, threshold: 3.0 }, a),
            judged(ratio(pi, b, ka, &rps), base_b, Target { at_least: true, threshold: 0.8 }, b),
            judged(ratio(pi, a, ka, &cpu), base_cpu, Target { at_least: false, threshold: 0.4 }, a),
        )
        .unwrap();
    }
    // issue 11's targets against nginx on the same path
    writeln!(md, "\n## Targets against nginx (N)\n").unwrap();
    writeln!(
        md,
        "| C mode | keep-alive req/s (>= 1.1x) | keep-alive CPU per request (<= 0.9x) | new connection req/s (>= 1.0x) | 1 MiB MB/s (>= 2x) |"
    )
    .unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|").unwrap();
    let nc = WORKLOADS.iter().position(|w| *w == Workload::NewConnection).unwrap();
    let big = WORKLOADS.iter().position(|w| *w == Workload::OneMiB).unwrap();
    let mbps = |s: &Sample| s.mbps;
    for (pi, p) in agent_paths() {
        let mut judged = |wi: usize, f: &dyn Fn(&Sample) -> f64, at_least: bool, threshold: f64| {
            let (r, base) = (ratio(pi, n, wi, f), med(n, wi, "nginx", f));
            format!(
                "{} {}",
                cell(r, 2, "x"),
                bench::verdict(Target { at_least, threshold }, r, base, faults(wi, &[pi, n]))
            )
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            p.name(),
            judged(ka, &rps, true, 1.1),
            judged(ka, &cpu, false, 0.9),
            judged(nc, &rps, true, 1.0),
            judged(big, &mbps, true, 2.0),
        )
        .unwrap();
    }
    writeln!(md, "\n## Non-finite samples (left out of the medians, cells marked *)\n").unwrap();
    non_finite.sort();
    non_finite.dedup();
    if non_finite.is_empty() {
        writeln!(md, "None.").unwrap();
    }
    for l in &non_finite {
        writeln!(md, "{l}").unwrap();
    }
    let js = json!({"machine": machine, "kernel": kernel, "date": date, "quick": quick, "rounds": c.rounds, "workloads": js_workloads});
    (md, js)
}

/// The measurement loop (h-perf, issue 11): only some paths and workloads, a short table
/// of ratios, and optionally the proxies profiled while each workload runs.
///
/// `--paths A,B,N,C,Ce,Cs,Ck` (C: userspace, Ce: eBPF, Cs: eBPF + splice-safe joined,
/// Ck: eBPF + eligible hosts bound in the kernel), `--workloads
/// keepalive,close,1m,ws,latency`, `--secs N` (seconds per run), `--agent-arg ARG`
/// (repeatable: passed to the agent, e.g. `--agent-arg --workers --agent-arg 1`),
/// `--profile record|syscalls|system --profile-dir DIR`: while each workload runs on N or
/// a C path, `perf record -F 999 --call-graph dwarf` (record) or `perf stat -e
/// 'syscalls:sys_enter_*'` (syscalls) on every process of the VM namespace (the proxy:
/// the agent, or nginx's master and workers), into DIR/<path>-<workload>.{data,txt};
/// `system`: `perf record -a -g` of the whole machine on every path (where Ck's time
/// goes: it is in softirq, not in a process). With Ck selected the kernel-binding
/// section is printed too (and written to `--bind-out FILE` when given).
#[derive(Default)]
struct Selection {
    paths: Option<Vec<Path>>,
    workloads: Option<Vec<Workload>>,
    secs: Option<u64>,
    agent_args: Vec<String>,
    profile: Option<String>,
    profile_dir: Option<PathBuf>,
    /// the path being run: its short name and the pids to profile
    current: Option<(String, String)>,
    running: Option<std::process::Child>,
}

impl Selection {
    /// Takes `a` (and its value) if it is one of the selection's flags.
    fn flag(&mut self, a: &str, args: &mut impl Iterator<Item = String>) -> bool {
        let mut val = |what: &str| args.next().unwrap_or_else(|| panic!("netbench: {a} needs {what}"));
        match a {
            "--paths" => {
                let v = val("a list like B,N,C");
                self.paths = Some(
                    v.split(',')
                        .map(|p| match p.trim() {
                            "A" => Path::Legacy,
                            "B" => Path::Direct,
                            "N" => Path::Nginx,
                            "C" => Path::Userspace,
                            "Ce" => Path::Ebpf,
                            "Cs" => Path::EbpfSplice,
                            "Ck" => Path::KernelBound,
                            other => panic!("netbench: --paths: unknown path {other:?} (A, B, N, C, Ce, Cs, Ck)"),
                        })
                        .collect(),
                )
            }
            "--workloads" => {
                let v = val("a list like keepalive,close");
                self.workloads = Some(
                    v.split(',')
                        .map(|w| match w.trim() {
                            "keepalive" => Workload::KeepAlive,
                            "close" => Workload::NewConnection,
                            "1m" => Workload::OneMiB,
                            "ws" => Workload::WebSocket,
                            "latency" => Workload::Latency,
                            other => panic!(
                                "netbench: --workloads: unknown workload {other:?} (keepalive, close, 1m, ws, latency)"
                            ),
                        })
                        .collect(),
                )
            }
            "--secs" => self.secs = Some(val("seconds").parse().expect("netbench: --secs N")),
            "--agent-arg" => self.agent_args.push(val("an argument")),
            "--profile" => {
                let v = val("record, syscalls or system");
                assert!(
                    ["record", "syscalls", "system"].contains(&v.as_str()),
                    "netbench: --profile record|syscalls|system, not {v:?}"
                );
                self.profile = Some(v)
            }
            "--profile-dir" => self.profile_dir = Some(PathBuf::from(val("a directory"))),
            _ => return false,
        }
        true
    }

    fn on(&self) -> bool {
        self.paths.is_some() || self.workloads.is_some()
    }
    fn path(&self, p: Path) -> bool {
        self.paths.as_ref().is_none_or(|ps| ps.contains(&p))
    }
    fn workload(&self, w: Workload) -> bool {
        self.workloads.as_ref().is_none_or(|ws| ws.contains(&w))
    }

    /// The path about to run: its proxy's pids are every process of the VM namespace
    /// `vm_ns` (only N and the C paths run a proxy there).
    fn profile_start(&mut self, vm_ns: &str, path: Path) {
        self.current = None;
        let short = path.short();
        if self.profile.as_deref() == Some("system") {
            self.current = Some((short.replace([' ', '+'], "_"), String::new()));
            return;
        }
        if self.profile.is_none() || matches!(path, Path::Legacy | Path::Direct) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
        let out = std::process::Command::new("ip").args(["netns", "pids", vm_ns]).output();
        let pids: Vec<String> = out
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if !pids.is_empty() {
            self.current = Some((short.replace([' ', '+'], "_"), pids.join(",")));
        }
    }

    /// Starts the profiler for workload `key` of the current path (bounded: it stops
    /// itself a little after the run, or at [`Selection::profile_stop`]).
    fn profile_workload(&mut self, key: &str) {
        let (Some(mode), Some((short, pids))) = (&self.profile, &self.current) else { return };
        let dir = self.profile_dir.clone().unwrap_or_else(|| PathBuf::from("/tmp/netbench-profile"));
        let _ = std::fs::create_dir_all(&dir);
        let name = format!("{short}-{}", key.replace(' ', "_"));
        let secs = (self.secs.unwrap_or(2)).max(1).to_string();
        let mut cmd = std::process::Command::new("perf");
        if mode == "record" {
            let data = dir.join(format!("{name}.data"));
            cmd.args(["record", "-F", "999", "--call-graph", "dwarf", "-q", "-o"]).arg(data);
        } else if mode == "system" {
            let data = dir.join(format!("{name}.data"));
            cmd.args(["record", "-a", "-g", "-F", "999", "-q", "-o"]).arg(data);
        } else {
            let txt = dir.join(format!("{name}.txt"));
            cmd.args(["stat", "-e", "syscalls:sys_enter_*", "-o"]).arg(txt);
        }
        if !pids.is_empty() {
            cmd.args(["-p", pids]);
        }
        cmd.args(["--", "sleep", &secs]);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        self.running = cmd.spawn().ok();
        if self.running.is_none() {
            eprintln!("netbench: perf did not start; no profile for {name}");
        }
    }

    fn profile_stop(&mut self) {
        if let Some(mut c) = self.running.take() {
            let _ = c.wait();
        }
    }

    /// The selected workloads' table: per path its figures (medians) and the paired
    /// ratios to N and to B.
    fn report(&self, c: &Cfg, samples: &[Vec<Vec<Sample>>]) -> String {
        let mut md = String::new();
        let (_, _, date) = machine();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        writeln!(
            md,
            "netbench selection, {date}, {} s per run, {} round(s), load average after: {} (the machine is shared: compare ratios from this run only)\n",
            c.secs,
            c.rounds,
            load.join(" ")
        )
        .unwrap();
        let n = PATHS.iter().position(|p| *p == Path::Nginx).unwrap();
        let b = PATHS.iter().position(|p| *p == Path::Direct).unwrap();
        for (wi, w) in WORKLOADS.iter().enumerate() {
            // the latency workload has its own table (`bind_report`)
            if !self.workload(*w) || *w == Workload::Latency {
                continue;
            }
            let by_bytes = *w == Workload::WebSocket || *w == Workload::OneMiB;
            let rate = |s: &Sample| if by_bytes { s.mbps } else { s.rps };
            let cpu = |s: &Sample| s.cpu_us;
            let vals = |pi: usize, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> { samples[pi][wi].iter().map(f).collect() };
            let r = |pi: usize, base: usize, f: &dyn Fn(&Sample) -> f64| {
                if samples[base][wi].is_empty() {
                    "-".to_string()
                } else {
                    cell(paired_ratio(&vals(pi, f), &vals(base, f)), 2, "x")
                }
            };
            writeln!(md, "## {}\n", w.title(c)).unwrap();
            writeln!(
                md,
                "| path | {} | CPU us/req | p99 | errors | vs N | CPU vs N | vs B | CPU vs B |",
                if by_bytes { "MB/s" } else { "req/s" }
            )
            .unwrap();
            writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
            for (pi, p) in PATHS.iter().enumerate() {
                if !self.path(*p) || samples[pi][wi].is_empty() {
                    continue;
                }
                let errors: u64 = samples[pi][wi].iter().map(|s| s.errors + s.non_2xx).sum();
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {errors} | {} | {} | {} | {} |",
                    p.short(),
                    cell(bench::median(&vals(pi, &rate)), if by_bytes { 1 } else { 0 }, ""),
                    cell(bench::median(&vals(pi, &cpu)), 1, ""),
                    cell(bench::median(&vals(pi, &|s| s.p99_us)), 0, " us"),
                    r(pi, n, &rate),
                    r(pi, n, &cpu),
                    r(pi, b, &rate),
                    r(pi, b, &cpu),
                )
                .unwrap();
            }
            writeln!(md).unwrap();
        }
        md
    }
}

/// `/proc/loadavg`'s three averages.
fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// What the kernel-binding section says besides the samples.
struct BindContext<'a> {
    command: &'a str,
    load_before: &'a str,
    /// Why Ck did not run (this kernel cannot bind).
    unsupported: Option<&'static str>,
    /// A selection run (`--paths ...`), not `cargo xtask bench`.
    selected: bool,
    /// `--pod-time-wait N`: the pods' TIME_WAIT cap (None: TIME_WAIT_BUCKETS).
    pod_time_wait: Option<u32>,
}

/// The kernel-binding section (issue 14, item 5; `docs/bench/bind-latest.md`): Ck beside
/// direct, nginx, the proxy and the join, per workload with ratios to direct; connection
/// setup and time to first byte; every Ck run's binding check; the targets.
fn bind_report(c: &Cfg, samples: &[Vec<Vec<Sample>>], ctx: &BindContext) -> String {
    let (machine, kernel, date) = machine();
    let mut md = String::new();
    let pos = |p: Path| PATHS.iter().position(|x| *x == p).unwrap();
    let (b, k) = (pos(Path::Direct), pos(Path::KernelBound));
    let wpos = |w: Workload| WORKLOADS.iter().position(|x| *x == w).unwrap();
    let vals =
        |pi: usize, wi: usize, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> { samples[pi][wi].iter().map(f).collect() };
    let ratio = |pi: usize, wi: usize, f: &dyn Fn(&Sample) -> f64| -> Median {
        if samples[pi][wi].len() != samples[b][wi].len() || samples[b][wi].is_empty() {
            return Median { value: f64::NAN, non_finite: 0, samples: 0 };
        }
        paired_ratio(&vals(pi, wi, f), &vals(b, wi, f))
    };
    let med = |pi: usize, wi: usize, f: &dyn Fn(&Sample) -> f64| bench::median(&vals(pi, wi, f));
    let faults = |wi: usize, pis: &[usize]| {
        let mut f = Faults::default();
        for s in pis.iter().flat_map(|pi| &samples[*pi][wi]) {
            f.add(s.faults());
        }
        f
    };
    let is_agent = |p: Path| matches!(p, Path::Userspace | Path::Ebpf | Path::EbpfSplice | Path::KernelBound);
    writeln!(md, "# Kernel-bound L7 (delayed binding) beside direct, nginx, the proxy and the join\n").unwrap();
    writeln!(
        md,
        "Machine: {machine}, kernel {kernel}, {date}; load average before {}, after {} (the machine may be shared: compare ratios of this run only). Command: `{}`{}. {} s per wrk run, {} interleaved round(s), the path order rotating from round to round; figures are medians over rounds, ratios medians of each round's paired ratio to B (direct).\n",
        ctx.load_before,
        loadavg(),
        ctx.command,
        if ctx.selected { "" } else { " (part of `cargo xtask bench`)" },
        c.secs,
        c.rounds
    )
    .unwrap();
    writeln!(
        md,
        "TIME_WAIT: every namespace keeps at most {TIME_WAIT_BUCKETS} sockets{}. A pod that closes first (it answers `Connection: close`) keeps the tuple in TIME_WAIT; a direct client's SYN recycles it, a bound connection's first segment meets it and hangs until it ends (the pod never sees the SYN: `docs/delayed-binding.md`).\n",
        match ctx.pod_time_wait {
            Some(n) => format!(", the pods at most {n} (`--pod-time-wait {n}`, a diagnostic)"),
            None => String::new(),
        }
    )
    .unwrap();
    if let Some(why) = ctx.unsupported {
        writeln!(md, "**Ck was not run: {why}.** The tables below have no Ck row.\n").unwrap();
    }
    writeln!(
        md,
        "Ck is the agent with `{}` on the k3d-shaped topology: the benchmarked host `{HOST}` (one backendRef, no filters, an exact hostname) is bound to a pod in the kernel: the SYN answered by the edge SYN cookie (XDP), the first segment's Host read by `bind_first` (tc on the NIC), the pod's socket made by `pod_bind` in the pod's namespace, every later packet NATed in tc; the agent's proxy sees none of it. Every path requests the same host with the same `Host` header; B connects to the first of the Service's two nginx pods, N, C, Cs and Ck balance over both (Ck by flow hash). Every Ck run is checked: `BIND_FIRST_COUNTS` \"bound\" must grow by at least the connections the run opened and the agent's proxy may serve at most {:.1} % of its requests, else netbench fails (the WebSocket host is not eligible and is not checked). One connection per request is the exception: wrk reuses its source ports within seconds, and a new connection on the tuple of a bound flow that closed with a FIN in the last 130 s goes to the agent (the pod may still hold the tuple in TIME_WAIT: `docs/delayed-binding.md`), so there bound plus proxied must cover the connections, and the bound share is what the row shows.\n",
        kbind::BIND_ARGS.join(" "),
        MAX_PROXIED_SHARE * 100.0
    )
    .unwrap();
    writeln!(
        md,
        "CPU per request: the whole machine's busy time (user + system + irq + softirq of every CPU, from /proc/stat) over the run, divided by the requests: load generator, pods and the path between them included, as for every path. For Ck the agent does no per-request work; the cost is the softirq of the XDP and tc programs (cookie, first segment, NAT on the NIC, the bridge and the pod's veth) and the forwarding, which /proc/stat counts as softirq (or as system time of the process whose send ran them). The agent process's own CPU (user + system, /proc/PID/stat) per request is shown apart.\n"
    )
    .unwrap();
    let shown: Vec<usize> = (0..PATHS.len())
        .filter(|pi| WORKLOADS.iter().enumerate().any(|(wi, _)| !samples[*pi][wi].is_empty()))
        .collect();
    for w in [Workload::KeepAlive, Workload::NewConnection, Workload::OneMiB] {
        let wi = wpos(w);
        if shown.iter().all(|pi| samples[*pi][wi].is_empty()) {
            continue;
        }
        let by_bytes = w == Workload::OneMiB;
        let rate = |s: &Sample| if by_bytes { s.mbps } else { s.rps };
        writeln!(md, "## {}\n", w.title(c)).unwrap();
        writeln!(
            md,
            "| path | {} | p50 | p99 | CPU per request | agent process CPU per request | errors / non-2xx | vs B | CPU vs B |",
            if by_bytes { "MB/s" } else { "requests/s" }
        )
        .unwrap();
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
        for &pi in &shown {
            if samples[pi][wi].is_empty() {
                continue;
            }
            let f = faults(wi, &[pi]);
            let agent_cpu =
                if is_agent(PATHS[pi]) { cell(med(pi, wi, &|s| s.agent_cpu_us), 2, " us") } else { "-".into() };
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {agent_cpu} | {} / {} | {} | {} |",
                PATHS[pi].name(),
                cell(med(pi, wi, &rate), if by_bytes { 1 } else { 0 }, ""),
                cell(med(pi, wi, &|s| s.p50_us), 0, " us"),
                cell(med(pi, wi, &|s| s.p99_us), 0, " us"),
                cell(med(pi, wi, &|s| s.cpu_us), 1, " us"),
                f.errors,
                f.non_2xx,
                cell(ratio(pi, wi, &rate), 2, "x"),
                cell(ratio(pi, wi, &|s| s.cpu_us), 2, "x"),
            )
            .unwrap();
        }
        writeln!(md).unwrap();
    }
    let li = wpos(Workload::Latency);
    if shown.iter().any(|pi| !samples[*pi][li].is_empty()) {
        writeln!(md, "## {}\n", Workload::Latency.title(c)).unwrap();
        writeln!(
            md,
            "One connection at a time from the client namespace (`ingress_tests::latency`): connect time is `connect()` until it returns (the SYN / SYN-ACK exchange as the client sees it; for Ck the SYN-ACK is the edge's cookie), time to first byte from writing `GET /` to the first byte of the answer (for Ck: the first segment's binding, the pod's socket made from it, nginx's answer). Medians and p99 per round, then the median over rounds.\n"
        )
        .unwrap();
        writeln!(md, "| path | connections | connect p50 | connect p99 | first byte p50 | first byte p99 | failures | connect p50 vs B | first byte p50 vs B |").unwrap();
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
        for &pi in &shown {
            if samples[pi][li].is_empty() {
                continue;
            }
            let failures: u64 = samples[pi][li].iter().map(|s| s.errors).sum();
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {failures} | {} | {} |",
                PATHS[pi].name(),
                cell(med(pi, li, &|s| s.requests as f64), 0, ""),
                cell(med(pi, li, &|s| s.connect_p50_us), 0, " us"),
                cell(med(pi, li, &|s| s.connect_p99_us), 0, " us"),
                cell(med(pi, li, &|s| s.first_byte_p50_us), 0, " us"),
                cell(med(pi, li, &|s| s.first_byte_p99_us), 0, " us"),
                cell(ratio(pi, li, &|s| s.connect_p50_us), 2, "x"),
                cell(ratio(pi, li, &|s| s.first_byte_p50_us), 2, "x"),
            )
            .unwrap();
        }
        writeln!(md).unwrap();
    }
    writeln!(md, "## Binding check (every Ck run)\n").unwrap();
    writeln!(
        md,
        "| workload | round | connections opened | requests | bound | fallback | served by the agent's proxy |"
    )
    .unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for (wi, w) in WORKLOADS.iter().enumerate() {
        for (round, s) in samples[k][wi].iter().enumerate() {
            if let Some(ch) = &s.bind {
                let opened =
                    if *w == Workload::WebSocket { "1 (not eligible)".to_string() } else { ch.connections.to_string() };
                writeln!(
                    md,
                    "| {} | {round} | {opened} | {} | {} | {} | {} |",
                    w.key(),
                    ch.requests,
                    ch.bound,
                    ch.fallback,
                    ch.proxied
                )
                .unwrap();
            }
        }
    }
    writeln!(md, "\n## Targets (issue 14: Ck against B, direct)\n").unwrap();
    writeln!(md, "| target | Ck vs B | verdict |").unwrap();
    writeln!(md, "|---|---:|---|").unwrap();
    let rps = |s: &Sample| s.rps;
    let mbps = |s: &Sample| s.mbps;
    let cpu = |s: &Sample| s.cpu_us;
    type Metric<'a> = &'a dyn Fn(&Sample) -> f64;
    let targets: [(&str, Workload, Metric, Target); 6] = [
        ("keep-alive requests/s >= 0.85x", Workload::KeepAlive, &rps, Target { at_least: true, threshold: 0.85 }),
        (
            "new connection per request, requests/s >= 0.85x",
            Workload::NewConnection,
            &rps,
            Target { at_least: true, threshold: 0.85 },
        ),
        ("1 MiB responses, MB/s >= 0.9x", Workload::OneMiB, &mbps, Target { at_least: true, threshold: 0.9 }),
        ("CPU per request, keep-alive <= 1.2x", Workload::KeepAlive, &cpu, Target { at_least: false, threshold: 1.2 }),
        (
            "CPU per request, new connection <= 1.2x",
            Workload::NewConnection,
            &cpu,
            Target { at_least: false, threshold: 1.2 },
        ),
        ("CPU per request, 1 MiB <= 1.2x", Workload::OneMiB, &cpu, Target { at_least: false, threshold: 1.2 }),
    ];
    for (what, w, f, t) in targets {
        let wi = wpos(w);
        let (r, base) = (ratio(k, wi, f), med(b, wi, f));
        let v = if samples[k][wi].is_empty() || samples[b][wi].is_empty() {
            "not judged (not run)".to_string()
        } else {
            bench::verdict(t, r, base, faults(wi, &[k, b])).to_string()
        };
        writeln!(md, "| {what} | {} | {v} |", cell(r, 2, "x")).unwrap();
    }
    md
}

#[cfg(test)]
mod tests {
    use super::BindCheck;

    #[test]
    fn the_binding_check_fails_unbound_runs_and_lets_reused_tuples_go_to_the_agent() {
        let c = BindCheck { connections: 64, requests: 10_000, bound: 64, proxied: 0, ..Default::default() };
        assert_eq!(c.failure(), None);
        let c = BindCheck { bound: 63, ..c };
        assert!(c.failure().is_some_and(|w| w.contains("bound grew by 63 for 64")));
        let c = BindCheck { bound: 64, proxied: 11, ..c };
        assert!(c.failure().is_some_and(|w| w.contains("proxy served 11 of 10000")));
        let close = BindCheck { connections: 1000, requests: 1000, bound: 300, proxied: 700, reuses_tuples: true, ..c };
        assert_eq!(close.failure(), None, "reused tuples served by the agent");
        assert!(BindCheck { proxied: 699, ..close.clone() }.failure().is_some(), "a connection unaccounted for");
        assert!(BindCheck { bound: 0, proxied: 1000, ..close }.failure().is_some(), "nothing bound at all");
    }
}
