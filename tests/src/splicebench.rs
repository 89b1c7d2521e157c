//! The benchmark's join mode (`netbench --splice-only`, and a section of `cargo xtask
//! bench`): the mechanisms that carry joined connections, side by side in one run on
//! the k3d-shaped topology: the plain copy (the userspace dataplane, the yardstick),
//! the kernel join (sockmap, `--join-mode kernel`), `splice(2)` through a pipe
//! (`--join-mode pipe`) and the per-connection choice (`--join-mode auto`, the
//! default), every eBPF path with `--forwarded-headers off` so splice-safe hosts are
//! joined. Workloads: WebSocket-style bulk echo (MB/s both ways), small WebSocket
//! messages echoed one at a time (messages/s over 4 connections), 1 MiB answers of a
//! splice-safe host (wrk, MB/s) and its small answers over keep-alive (wrk, req/s).
//! Ratios are each path's over the copy, medians of per-round paired ratios.

use std::fmt::Write as _;
use std::io::{BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::bench::{median, paired_ratio, rotation};
use crate::client::{Request, read_response};
use crate::load::upgrade_throughput;
use crate::netns::enter;
use crate::topology::{Topology, VM_IP, VM_NIC};
use crate::wrk::Wrk;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum JoinPath {
    Copy,
    EbpfCopy,
    Kernel,
    Pipe,
    Auto,
}

const PATHS: [JoinPath; 5] = [JoinPath::Copy, JoinPath::EbpfCopy, JoinPath::Kernel, JoinPath::Pipe, JoinPath::Auto];

impl JoinPath {
    fn name(self) -> &'static str {
        match self {
            JoinPath::Copy => "copy (userspace dataplane)",
            JoinPath::EbpfCopy => "copy, eBPF dataplane (`--join-mode copy`)",
            JoinPath::Kernel => "kernel join (`--join-mode kernel`)",
            JoinPath::Pipe => "splice(2) pipe (`--join-mode pipe`)",
            JoinPath::Auto => "auto, the default (`--join-mode auto`)",
        }
    }
    fn flags(self) -> Vec<&'static str> {
        let mut f = match self {
            JoinPath::Copy => vec!["--dataplane", "userspace"],
            _ => vec!["--interface", VM_NIC],
        };
        f.extend(["--forwarded-headers", "off"]);
        match self {
            JoinPath::EbpfCopy => f.extend(["--join-mode", "copy"]),
            JoinPath::Kernel => f.extend(["--join-mode", "kernel"]),
            JoinPath::Pipe => f.extend(["--join-mode", "pipe"]),
            _ => {}
        }
        f
    }
}

const WORKLOADS: [&str; 4] = [
    "WebSocket bulk echo (MB/s)",
    "WebSocket small messages (msg/s)",
    "1 MiB answers (MB/s)",
    "small answers, keep-alive (req/s)",
];

/// Small WebSocket messages: `conns` upgraded connections, each echoing 64-byte
/// messages one at a time for `secs` (at most `MAX_MESSAGES` each); messages per second.
fn ws_small_rate(ns: &str, addr: SocketAddr, host: &str, conns: usize, secs: u64) -> f64 {
    const MAX_MESSAGES: usize = 2_000_000;
    let path = format!("/run/netns/{ns}");
    let counts: Vec<(usize, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                let path = path.clone();
                s.spawn(move || {
                    enter(&path);
                    let c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let _ = c.set_nodelay(true);
                    let mut w = c.try_clone().unwrap();
                    let mut r = BufReader::new(c);
                    let up = Request::get(host, "/echo-websocket-service/ws")
                        .header("Connection", "Upgrade")
                        .header("Upgrade", "websocket");
                    w.write_all(&up.to_bytes()).unwrap();
                    assert_eq!(read_response(&mut r, true).expect("101").status, 101);
                    let msg = [0x42u8; 64];
                    let mut back = [0u8; 64];
                    let start = Instant::now();
                    let mut n = 0;
                    while n < MAX_MESSAGES && start.elapsed() < Duration::from_secs(secs) {
                        w.write_all(&msg).unwrap();
                        r.read_exact(&mut back).expect("echo");
                        n += 1;
                    }
                    (n, start.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("echo thread")).collect()
    });
    counts.iter().map(|(n, t)| *n as f64 / t).sum()
}

/// Runs the join mode; returns its Markdown section. `ws_host` routes to the WebSocket
/// echo pod, `host` is a splice-safe host whose pods answer `/` and `/1m` (nginx).
#[allow(clippy::too_many_arguments)]
pub fn run(
    topo: &Topology,
    bin: &Path,
    manifests: &Path,
    listens: &[String],
    ws_host: &str,
    host: &str,
    secs: u64,
    rounds: usize,
    ws_bytes: usize,
) -> String {
    let addr: SocketAddr = format!("{VM_IP}:9080").parse().unwrap();
    // [path][workload][round]
    let mut v = vec![vec![Vec::new(); WORKLOADS.len()]; PATHS.len()];
    let mut faults = 0;
    let mut choices = Vec::new();
    for round in 0..rounds {
        for pi in rotation(&(0..PATHS.len()).collect::<Vec<_>>(), round) {
            let p = PATHS[pi];
            let agent = Agent::start(bin, &topo.vm_ns(), manifests, listens, &p.flags());
            let ns = topo.client_ns();
            let (ws, _) = upgrade_throughput(&ns, addr, ws_host, ws_bytes);
            let small = ws_small_rate(&ns, addr, ws_host, 4, secs);
            let wrk = |path: &str, conns| {
                Wrk {
                    ns: &ns,
                    url: format!("http://{addr}{path}"),
                    host,
                    connections: conns,
                    threads: 2,
                    duration: Duration::from_secs(secs),
                    headers: vec![],
                }
                .run()
            };
            let (l1, r1) = wrk("/1m", 8);
            let (l2, _) = wrk("/", 64);
            faults += l1.errors + l1.non_2xx + l2.errors + l2.non_2xx;
            let row = [ws, small, r1.bytes_per_sec / 1e6, l2.rps()];
            eprintln!(
                "join round {round} {:<40} ws bulk {:>8.1} MB/s  ws small {:>8.0} msg/s  1 MiB {:>8.1} MB/s  keep-alive {:>8.0} req/s",
                p.name(),
                row[0],
                row[1],
                row[2],
                row[3]
            );
            for (wi, x) in row.into_iter().enumerate() {
                v[pi][wi].push(x);
            }
            let c = agent.stats().splice.choice;
            if round + 1 == rounds {
                choices.push((p, c));
            }
            agent.stop();
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Joined connections: the mechanism per connection\n\n`netbench --splice-only` (or a section of `cargo xtask bench`): {rounds} round(s) of {secs} s, the path order rotating; WebSocket bulk: {} MiB echoed each way on one connection; small messages: 64 bytes echoed one at a time on 4 connections; 1 MiB: wrk, 8 keep-alive connections; keep-alive: wrk, 64 connections, 18-byte answers. Ratios: over the copy (the userspace dataplane; it never joins a splice-safe host, so its 1 MiB and keep-alive figures are the L7 proxy's), medians of per-round paired ratios. Socket errors and non-2xx answers: {faults}. The machine is shared (2 CPUs, other builds may run): figures are noisy, ratios less so.\n",
        ws_bytes >> 20
    );
    let _ = write!(md, "| path |");
    for w in WORKLOADS {
        let _ = write!(md, " {w} | ratio |");
    }
    let _ = writeln!(md, "\n|---|{}", "---:|---:|".repeat(WORKLOADS.len()));
    for (pi, p) in PATHS.iter().enumerate() {
        let _ = write!(md, "| {} |", p.name());
        for wi in 0..WORKLOADS.len() {
            let m = median(&v[pi][wi]).value;
            let r = paired_ratio(&v[pi][wi], &v[0][wi]).value;
            let _ = write!(md, " {m:.1} | {r:.2}x |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "\nThe choices `ingress stats` showed in the last round:\n");
    for (p, c) in choices {
        let text = c.format();
        let _ = writeln!(
            md,
            "- {}: {}",
            p.name(),
            if text.is_empty() { "-".into() } else { text.trim().replace('\n', "; ") }
        );
    }
    md
}
