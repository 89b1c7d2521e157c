//! `cargo xtask bench` (network part, root): small GETs over keep-alive from the
//! client namespace, side by side and interleaved (B C C B C C ...): B = straight to
//! the pod IP through the same routers (the limit), C = through this ingress, in the
//! userspace and eBPF dataplanes. Medians of the rounds; requests/s, p50/p99, CPU
//! time per request for the whole machine, the agent's peak RSS; ratios C/B.
//! Writes a markdown table to `docs/bench/latest.md`.
//!
//! Not yet here (issue 5): today's path (serverlb nginx + Envoy + NATs), other
//! workloads (new connection per request, 1 MiB, WebSocket), a chart.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::load::{LoadResult, run, run_with, upgrade_throughput};
use ingress_tests::topology::{Topology, VM_IP, VM_NIC};

const HOST: &str = "react-starter-development.openchoreovm-apis.localhost";

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Userspace,
    Ebpf,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "B direct to pod",
            Path::Userspace => "C ingress (userspace)",
            Path::Ebpf => "C ingress (eBPF: XDP)",
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut quick, mut out) = (ingress_bin(), false, PathBuf::from("docs/bench/latest.md"));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ingress" => bin = PathBuf::from(args.next().expect("--ingress PATH")),
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(args.next().expect("--out FILE")),
            "--bench" => {}
            other => panic!("netbench: unknown argument {other}"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netbench: needs root (network namespaces, XDP); skipped");
        return;
    }
    let (rounds, secs, conns) = if quick { (1, 2, 16) } else { (3, 5, 32) };
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("AGENT_RUST_LOG", "info") };
    let pods = openchoreo_pods();
    let topo = Topology::create("bench", &pods);
    topo.enable_direct_path();
    let pod = pods.iter().find(|p| p.name.starts_with("react-starter-development-")).expect("react pod").ip;
    let echo_pod = pods.iter().find(|p| p.name.starts_with("echo-websocket-service-")).expect("echo pod").ip;
    let ws_bytes: usize = if quick { 16 << 20 } else { 128 << 20 };
    let ws_host = "development.openchoreovm-apis.localhost:9080";
    let mut ws: Vec<Vec<(f64, f64)>> = vec![vec![]; 3];
    let mut fresh: Vec<Vec<LoadResult>> = vec![vec![]; 3];
    let paths = [Path::Direct, Path::Userspace, Path::Ebpf];
    let mut results: Vec<Vec<(LoadResult, Option<u64>)>> = vec![vec![]; paths.len()];
    for round in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let (agent, addr) = match path {
                Path::Direct => (None, format!("{pod}:8080")),
                Path::Userspace | Path::Ebpf => {
                    let dp: &[&str] =
                        if *path == Path::Ebpf { &["--interface", VM_NIC] } else { &["--dataplane", "userspace"] };
                    let a = Agent::start(&bin, &topo.vm_ns(), &openchoreo_dir(), &openchoreo_listens(VM_IP), dp);
                    (Some(a), format!("{VM_IP}:9080"))
                }
            };
            let r = run(Some(&topo.client_ns()), addr.parse().unwrap(), HOST, "/", conns, Duration::from_secs(secs));
            let f = run_with(
                Some(&topo.client_ns()),
                addr.parse().unwrap(),
                HOST,
                "/",
                conns / 2,
                Duration::from_secs(secs),
                true,
            );
            eprintln!("round {round} {:<24} new connection per request {:>8.0} req/s", path.name(), f.rps());
            fresh[i].push(f);
            let ws_addr = match path {
                Path::Direct => format!("{echo_pod}:8080"),
                _ => format!("{VM_IP}:9080"),
            };
            let (mbps, cpu) = upgrade_throughput(&topo.client_ns(), ws_addr.parse().unwrap(), ws_host, ws_bytes);
            eprintln!("round {round} {:<24} upgraded echo {:>8.0} MB/s  cpu {:.2} s", path.name(), mbps, cpu);
            ws[i].push((mbps, cpu));
            let rss = agent.as_ref().and_then(|a| a.peak_rss_kib());
            eprintln!(
                "round {round} {:<24} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  cpu {:>6.1} us/req  errors {}",
                path.name(),
                r.rps(),
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.cpu_us_per_request(),
                r.errors
            );
            if let Some(a) = agent {
                a.stop();
            }
            results[i].push((r, rss));
        }
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut md = String::new();
    writeln!(md, "# Benchmark: keep-alive small GETs, direct vs this ingress\n").unwrap();
    writeln!(
        md,
        "Machine: {cpus} CPUs, kernel {kernel}, {date}. Command: `cargo xtask bench{}`. {conns} keep-alive connections from the client namespace, {secs} s per run, {rounds} interleaved round(s), medians. Backend: the test echo server in the pod (a thread per connection; it bounds every path alike). CPU: whole machine (user+system+irq+softirq) per request.\n",
        if quick { " --quick" } else { "" }
    )
    .unwrap();
    writeln!(md, "| path | requests/s | p50 | p99 | CPU per request | agent peak RSS | req/s vs B | CPU vs B |")
        .unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    let med = |i: usize, f: &dyn Fn(&LoadResult) -> f64| median(results[i].iter().map(|(r, _)| f(r)).collect());
    let b_rps = med(0, &|r| r.rps());
    let b_cpu = med(0, &|r| r.cpu_us_per_request());
    for (i, path) in paths.iter().enumerate() {
        let rps = med(i, &|r| r.rps());
        let cpu = med(i, &|r| r.cpu_us_per_request());
        let rss = results[i]
            .iter()
            .filter_map(|(_, r)| *r)
            .max()
            .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or("-".into());
        writeln!(
            md,
            "| {} | {:.0} | {:.0} us | {:.0} us | {:.1} us | {} | {:.2}x | {:.2}x |",
            path.name(),
            rps,
            med(i, &|r| r.p50.as_secs_f64() * 1e6),
            med(i, &|r| r.p99.as_secs_f64() * 1e6),
            cpu,
            rss,
            rps / b_rps,
            cpu / b_cpu
        )
        .unwrap();
    }
    writeln!(md, "\nA new connection per request ({} concurrent clients, `Connection: close`):\n", conns / 2).unwrap();
    writeln!(md, "| path | requests/s | p50 | p99 | CPU per request | req/s vs B | CPU vs B |").unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    let fmed = |i: usize, f: &dyn Fn(&LoadResult) -> f64| median(fresh[i].iter().map(f).collect());
    let (fb_rps, fb_cpu) = (fmed(0, &|r| r.rps()), fmed(0, &|r| r.cpu_us_per_request()));
    for (i, path) in paths.iter().enumerate() {
        let (rps, cpu) = (fmed(i, &|r| r.rps()), fmed(i, &|r| r.cpu_us_per_request()));
        writeln!(
            md,
            "| {} | {:.0} | {:.0} us | {:.0} us | {:.1} us | {:.2}x | {:.2}x |",
            path.name(),
            rps,
            fmed(i, &|r| r.p50.as_secs_f64() * 1e6),
            fmed(i, &|r| r.p99.as_secs_f64() * 1e6),
            cpu,
            rps / fb_rps,
            cpu / fb_cpu
        )
        .unwrap();
    }
    writeln!(
        md,
        "\nUpgraded (WebSocket-style) connection, {} MiB echoed each way after the 101 (eBPF: joined in the kernel by sockmap; userspace: copied by the agent):\n",
        ws_bytes >> 20
    )
    .unwrap();
    writeln!(md, "| path | MB/s (both directions) | CPU seconds | MB/s vs B |").unwrap();
    writeln!(md, "|---|---:|---:|---:|").unwrap();
    let b_ws = median(ws[0].iter().map(|x| x.0).collect());
    for (i, path) in paths.iter().enumerate() {
        let m = median(ws[i].iter().map(|x| x.0).collect());
        let c = median(ws[i].iter().map(|x| x.1).collect());
        writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.2}x |",
            path.name().replace("(eBPF: XDP)", "(eBPF: sockmap splice)"),
            m,
            c,
            m / b_ws
        )
        .unwrap();
    }
    drop(topo);
    print!("{md}");
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, &md).expect("write the benchmark table");
    eprintln!("netbench: wrote {}", out.display());
}
