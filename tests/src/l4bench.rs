//! The benchmark's L4 mode (`cargo xtask bench`, run by `netbench`): new connections
//! per second and bulk TCP through the L4 path (`--l4`, tc DNAT in the kernel) vs a
//! direct connection to the pod vs an nginx stream proxy configured like k3d's
//! serverlb, interleaved in one run (the path order rotating each round). The load is
//! wrk from the client namespace against the nginx pod: `Connection: close` requests
//! (a new TCP connection each) and 1 MiB responses over keep-alive connections.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::agent::Agent;
use crate::bench::{median, paired_ratio, rotation};
use crate::topology::{Topology, VM_IP, VM_NIC};
use crate::wrk::Wrk;

/// The VM ports of the L4 path and of the nginx stream proxy.
pub const L4_PORT: u16 = 10080;
pub const NGINX_PORT: u16 = 10081;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum L4Path {
    L4,
    Direct,
    /// Direct, with the agent running and its programs on the NIC (the XDP guard and
    /// tc `l4_nic`), which this traffic only passes through: what the hooks cost a
    /// forwarded connection, apart from the L4 path's own work.
    DirectHooked,
    NginxStream,
}

const PATHS: [L4Path; 4] = [L4Path::L4, L4Path::Direct, L4Path::DirectHooked, L4Path::NginxStream];

impl L4Path {
    fn name(self) -> &'static str {
        match self {
            L4Path::L4 => "L4 (tc DNAT, conntrack, Maglev)",
            L4Path::Direct => "direct to the pod",
            L4Path::DirectHooked => "direct, the agent's hooks on the NIC",
            L4Path::NginxStream => "nginx stream proxy (k3d serverlb)",
        }
    }
}

/// Runs the L4 mode on `topo` (direct path enabled, nginx serving `pod`), with the
/// agent `bin` serving `manifests`/`listens` plus `--l4 10080=POD`; returns the
/// Markdown section of the report.
pub fn run(
    topo: &Topology,
    bin: &Path,
    manifests: &Path,
    listens: &[String],
    pod: SocketAddr,
    secs: u64,
    rounds: usize,
    host: &str,
) -> String {
    let nginx =
        crate::nginx::PodNginx::stream_proxy(&topo.vm_ns(), format!("{VM_IP}:{NGINX_PORT}").parse().unwrap(), pod);
    // [path][workload][round]: requests/s, MB/s, faults
    let mut rps = vec![vec![Vec::new(); 2]; PATHS.len()];
    let mut mbps = vec![vec![Vec::new(); 2]; PATHS.len()];
    let mut faults = 0u64;
    let l4 = format!("{L4_PORT}={pod}");
    let start_agent =
        || Some(Agent::start(bin, &topo.vm_ns(), manifests, listens, &["--interface", VM_NIC, "--l4", &l4]));
    for round in 0..rounds {
        for pi in rotation(&(0..PATHS.len()).collect::<Vec<_>>(), round) {
            let path = PATHS[pi];
            let mut agent = None;
            let addr = match path {
                L4Path::Direct => pod.to_string(),
                L4Path::DirectHooked => {
                    agent = start_agent();
                    pod.to_string()
                }
                L4Path::NginxStream => format!("{VM_IP}:{NGINX_PORT}"),
                L4Path::L4 => {
                    agent = start_agent();
                    format!("{VM_IP}:{L4_PORT}")
                }
            };
            for (wi, (conns, url_path, headers)) in
                [(16usize, "/", vec!["Connection: close"]), (8, "/1m", vec![])].into_iter().enumerate()
            {
                let (load, rep) = Wrk {
                    ns: &topo.client_ns(),
                    url: format!("http://{addr}{url_path}"),
                    host,
                    connections: conns,
                    threads: 2,
                    duration: Duration::from_secs(secs),
                    headers,
                }
                .run();
                faults += load.errors + load.non_2xx;
                eprintln!(
                    "l4 round {round} {:<36} {:<22} {:>9.0} req/s {:>8.1} MB/s errors {} non-2xx {}",
                    path.name(),
                    if wi == 0 { "new connection/request" } else { "1 MiB responses" },
                    load.rps(),
                    rep.bytes_per_sec / 1e6,
                    load.errors,
                    load.non_2xx
                );
                rps[pi][wi].push(load.rps());
                mbps[pi][wi].push(rep.bytes_per_sec / 1e6);
            }
            if let Some(a) = agent {
                let s = a.stats();
                if path == L4Path::L4
                    && let Some(l4) = &s.l4
                {
                    eprintln!(
                        "l4 round {round} L4 counters: {} flows, {} fib fallbacks",
                        l4.ports[0].flows, l4.ports[0].fib_fallback
                    );
                }
                a.stop();
            }
        }
    }
    drop(nginx);
    let (l4, direct, hooked, nginx) = (0, 1, 2, 3);
    let mut md = String::new();
    writeln!(md, "\n## L4 mode: the L4 path vs direct vs an nginx stream proxy\n").unwrap();
    writeln!(
        md,
        "wrk from the client namespace to nginx in one pod, {secs} s per run, {rounds} interleaved round(s): the L4 path (`--l4 {L4_PORT}={pod}`: tc DNAT on the NIC, redirect into the bridge, reverse NAT on the bridge), a direct connection to the pod through the VM's routing (without the agent, and with the agent's XDP guard and tc program on the NIC, which this traffic only passes through: the hooks' own cost), and nginx's stream proxy in the vm namespace with k3d's serverlb settings. Medians; ratios are medians of per-round ratios. Faults (socket errors + non-2xx) over the whole run: {faults}.\n"
    )
    .unwrap();
    writeln!(md, "| path | new connections/s | 1 MiB responses MB/s |").unwrap();
    writeln!(md, "|---|---:|---:|").unwrap();
    for (pi, p) in PATHS.iter().enumerate() {
        writeln!(md, "| {} | {:.0} | {:.1} |", p.name(), median(&rps[pi][0]).value, median(&mbps[pi][1]).value)
            .unwrap();
    }
    let targets = [
        ("L4 new connections/s vs direct", paired_ratio(&rps[l4][0], &rps[direct][0]), 0.9),
        ("L4 new connections/s vs nginx stream proxy", paired_ratio(&rps[l4][0], &rps[nginx][0]), 2.0),
        ("L4 bulk (1 MiB responses) vs direct", paired_ratio(&mbps[l4][1], &mbps[direct][1]), 0.95),
    ];
    let h = paired_ratio(&rps[hooked][0], &rps[direct][0]);
    let hb = paired_ratio(&mbps[hooked][1], &mbps[direct][1]);
    writeln!(
        md,
        "\nThe hooks alone (direct with the agent's programs on the NIC vs without): new connections/s {:.2}x, bulk {:.2}x; the L4 path vs direct with the hooks: new connections/s {:.2}x.",
        h.value,
        hb.value,
        paired_ratio(&rps[l4][0], &rps[hooked][0]).value
    )
    .unwrap();
    writeln!(md, "\n| target | ratio | wanted | verdict |").unwrap();
    writeln!(md, "|---|---:|---:|---|").unwrap();
    for (what, r, want) in targets {
        let verdict = if faults > 0 || !r.complete() {
            "not judged (faults or missing samples)"
        } else if r.value >= want {
            "met"
        } else {
            "missed"
        };
        writeln!(md, "| {what} | {:.2}x | >= {want}x | {verdict} |", r.value).unwrap();
    }
    md
}
