//! `cargo xtask bench` (L4 part, root): the L4 path of issue 10 against a direct
//! connection and against the nginx stream proxy k3d's serverlb runs, on the
//! k3d-shaped topology, interleaved over rounds with the order rotating; ratios are
//! medians of per-round paired ratios (`ingress_tests::bench`).
//!
//! - direct: client -> pod IP through the VM's routing;
//! - L4: client -> VM:6550 -> tc DNAT on the NIC -> pod, replies reverse-NATed on the
//!   bridge (the agent with `--l4`);
//! - nginx stream: client -> VM:7550 -> nginx `proxy_pass` (like the serverlb) -> pod.
//!
//! Workloads (bounded in time): new connections per second (connect, read the pod's
//! 6-byte greeting to EOF, close; nginx `return` in the pod) and bulk TCP from the pod
//! (one stream read for a fixed time). Writes `docs/bench/l4-latest.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::bench::{Faults, Target, median, paired_ratio, rotation, verdict};
use ingress_tests::cgroup::TestCgroup;
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens};
use ingress_tests::l4load::{bulk, connect_rate};
use ingress_tests::netns::cap_time_wait;
use ingress_tests::nginx::PodNginx;
use ingress_tests::stream::SourceServer;
use ingress_tests::topology::{PodSpec, Topology, VM_IP, VM_NIC};

const POD_IP: &str = "10.42.0.50";
const GREETING: &str = "hello\n";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Path {
    Direct,
    L4,
    NginxStream,
}
const PATHS: [Path; 3] = [Path::Direct, Path::L4, Path::NginxStream];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct to the pod",
            Path::L4 => "L4 (tc DNAT on the NIC)",
            Path::NginxStream => "nginx stream proxy (serverlb)",
        }
    }
    /// (connections port, bulk port) the client dials.
    fn target(self) -> (String, String) {
        match self {
            Path::Direct => (format!("{POD_IP}:5000"), format!("{POD_IP}:5001")),
            Path::L4 => (format!("{VM_IP}:6550"), format!("{VM_IP}:6551")),
            Path::NginxStream => (format!("{VM_IP}:7550"), format!("{VM_IP}:7551")),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut quick, mut out) = (ingress_bin(), false, PathBuf::from("docs/bench/l4-latest.md"));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ingress" => bin = PathBuf::from(args.next().expect("--ingress PATH")),
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(args.next().expect("--out FILE")),
            "--bench" => {}
            other => panic!("l4bench: unknown argument {other}"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("l4bench: needs root (network namespaces, tc); skipped");
        return;
    }
    let (rounds, secs, threads) = if quick { (1, 2, 4) } else { (3, 4, 4) };
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("AGENT_RUST_LOG", "info") };
    let pod = PodSpec { name: "l4-target".into(), ip: POD_IP.parse().unwrap(), ports: vec![5000, 5001] };
    let topo = Topology::create_with("l4bench", &[pod], |_| false);
    topo.enable_direct_path();
    for ns in topo.namespaces() {
        cap_time_wait(&ns, 256);
    }
    let pod_ns = topo.pods[0].1.clone();
    let greeter = PodNginx::stream(
        &pod_ns,
        "l4greeter",
        &format!("  server {{ listen {POD_IP}:5000 reuseport; return \"{}\"; }}", GREETING.escape_default()),
        format!("{POD_IP}:5000").parse().unwrap(),
    );
    let source = SourceServer::start(Some(&pod_ns), &format!("{POD_IP}:5001"));
    // the agent's local-client hooks go on a cgroup of this run only (nothing in it)
    let cg = TestCgroup::create(&format!("ingress-l4bench-{}", std::process::id())).expect("bench cgroup");

    // samples[path][workload][round]: workload 0 = connections/s, 1 = bulk bytes/s
    let mut samples = vec![vec![Vec::<f64>::new(); 2]; PATHS.len()];
    let mut faults = Faults::default();
    for round in 0..rounds {
        for pi in rotation(&(0..PATHS.len()).collect::<Vec<_>>(), round) {
            let path = PATHS[pi];
            let mut _agent = None;
            let mut _proxy = None;
            match path {
                Path::Direct => {}
                Path::L4 => {
                    let cgroup = cg.path().display().to_string();
                    let flags = [
                        "--interface",
                        VM_NIC,
                        "--l4",
                        &format!("6550={POD_IP}:5000"),
                        "--l4",
                        &format!("6551={POD_IP}:5001"),
                        "--cgroup",
                        &cgroup,
                    ]
                    .map(String::from);
                    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                    _agent =
                        Some(Agent::start(&bin, &topo.vm_ns(), &openchoreo_dir(), &openchoreo_listens(VM_IP), &flags));
                }
                Path::NginxStream => {
                    _proxy = Some(PodNginx::stream(
                        &topo.vm_ns(),
                        "l4serverlb",
                        &format!(
                            "  server {{ listen {VM_IP}:7550; proxy_pass {POD_IP}:5000; }}\n  server {{ listen {VM_IP}:7551; proxy_pass {POD_IP}:5001; }}"
                        ),
                        format!("{VM_IP}:7550").parse().unwrap(),
                    ));
                }
            }
            let (conn_addr, bulk_addr) = path.target();
            let rate = connect_rate(
                &topo.client_ns(),
                conn_addr.parse().unwrap(),
                threads,
                Duration::from_secs(secs),
                GREETING.len(),
            );
            let (bytes_per_sec, bulk_errors) =
                bulk(&topo.client_ns(), bulk_addr.parse().unwrap(), 1, Duration::from_secs(secs));
            eprintln!(
                "round {round} {:<32} {:>9.0} connections/s ({} errors) {:>9.1} MB/s bulk ({} errors)",
                path.name(),
                rate.per_sec(),
                rate.errors,
                bytes_per_sec / 1e6,
                bulk_errors
            );
            faults.add(Faults { errors: rate.errors + bulk_errors, non_2xx: 0 });
            samples[pi][0].push(rate.per_sec());
            samples[pi][1].push(bytes_per_sec);
        }
    }
    drop(greeter);
    drop(source);
    drop(topo);
    drop(cg);

    let (cpus, kernel) = machine();
    let mut md = String::new();
    let _ = writeln!(md, "# L4 benchmark (issue 10)\n");
    let _ = writeln!(
        md,
        "{cpus}, kernel {kernel}; {rounds} round(s) of {secs} s per workload, paths interleaved with the order rotating; \
         {threads} client threads for new connections, one stream for bulk. Command: `cargo xtask bench{}`.\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(md, "| path | new connections/s | bulk MB/s |\n|---|---:|---:|");
    for (pi, p) in PATHS.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} |",
            p.name(),
            median(&samples[pi][0]).value,
            median(&samples[pi][1]).value / 1e6
        );
    }
    let idx = |p: Path| PATHS.iter().position(|q| *q == p).unwrap();
    let (d, l, n) = (idx(Path::Direct), idx(Path::L4), idx(Path::NginxStream));
    let targets = [
        ("L4 new connections/s vs direct", 0, d, 0.9),
        ("L4 new connections/s vs nginx stream", 0, n, 2.0),
        ("L4 bulk vs direct", 1, d, 0.95),
    ];
    let _ = writeln!(md, "\n| target | ratio (median of paired) | threshold | verdict |\n|---|---:|---:|---|");
    let mut missed = Vec::new();
    for (what, w, base, threshold) in targets {
        let ratio = paired_ratio(&samples[l][w], &samples[base][w]);
        let v = verdict(Target { at_least: true, threshold }, ratio, median(&samples[base][w]), faults);
        let _ = writeln!(md, "| {what} | {:.2}x | >= {threshold}x | {v} |", ratio.value);
        if v != ingress_tests::bench::Verdict::Met {
            missed.push(format!("{what}: {v}"));
        }
    }
    print!("{md}");
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, &md).expect("write the L4 benchmark table");
    eprintln!("l4bench: wrote {}", out.display());
    if !missed.is_empty() {
        eprintln!("l4bench: targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}

fn machine() -> (String, String) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    (format!("{cpus} CPUs"), kernel)
}
