//! The benchmark's TLS mode (`cargo xtask bench`, run by `netbench`): HTTPS keep-alive
//! requests, TLS handshakes (a new connection per request) and HTTP/2 over TLS, through
//! this ingress terminating TLS vs today's path with Envoy terminating it vs a direct
//! TLS connection to the pod, interleaved in one run (the path order rotating each
//! round).
//!
//! - A, today's path: Docker DNAT -> the serverlb's nginx passing TCP -> servicelb DNAT
//!   -> Envoy terminating TLS with the same routes -> ClusterIP DNAT -> pod (`legacy.rs`);
//! - B, direct: TLS to nginx in the pod (`nginx.rs`, `start_tls`);
//! - C, this ingress: an HTTPS listener (`tls.mode: Terminate`) on VM port 8443, then
//!   plain HTTP to the pod.
//!
//! The certificate is one self-signed ECDSA P-256 certificate (rcgen) for the
//! benchmarked host, the same on every path. The bench's Gateway, Secret and route are
//! written beside a copy of the OpenChoreo fixtures (the fixtures' own HTTPS listener
//! does not match the generated routes' hostnames). Clients resolve the host through
//! `/etc/netns/CLIENT/hosts` (what `ip netns exec` reads), so SNI and Host are the
//! host's name. wrk does not resume TLS sessions: every new connection is a full
//! handshake on every path.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::Agent;
use crate::bench::{Median, median, paired_ratio, rotation};
use crate::h2load::H2load;
use crate::legacy::{EnvoyTls, LegacyPath};
use crate::load::LoadResult;
use crate::nginx::PodNginx;
use crate::topology::{Topology, VM_IP, VM_NIC};
use crate::wrk::Wrk;

/// The VM port of the HTTPS listener (OpenChoreo's k3d config publishes 8443).
pub const TLS_PORT: u16 = 8443;
/// The pod's TLS port on the direct path.
const POD_TLS_PORT: u16 = 8443;
const GATEWAY: &str = "openchoreo-data-plane/bench-tls";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TlsPath {
    Legacy,
    Direct,
    Ingress,
}

const PATHS: [TlsPath; 3] = [TlsPath::Legacy, TlsPath::Direct, TlsPath::Ingress];

impl TlsPath {
    fn name(self) -> &'static str {
        match self {
            TlsPath::Legacy => "A today's path (serverlb TCP + Envoy terminating TLS)",
            TlsPath::Direct => "B direct TLS to the pod (nginx)",
            TlsPath::Ingress => "C ingress terminating TLS",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    KeepAlive,
    Handshake,
    H2,
}

const WORKLOADS: [Workload; 3] = [Workload::KeepAlive, Workload::Handshake, Workload::H2];

impl Workload {
    fn key(self) -> &'static str {
        match self {
            Workload::KeepAlive => "HTTPS keep-alive",
            Workload::Handshake => "TLS handshake/request",
            Workload::H2 => "h2 small requests",
        }
    }
}

/// The bench's certificate and manifests, in a directory removed on drop.
struct Setup {
    dir: PathBuf,
    manifests: PathBuf,
    tls: EnvoyTls,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name a client namespace resolves the host to, in `/etc/netns/NS/hosts`; the
/// file (and the directory, when made here) removed on drop, by name.
struct NetnsHosts {
    file: PathBuf,
    made_dir: Option<PathBuf>,
}

impl NetnsHosts {
    fn new(ns: &str) -> Self {
        let dir = Path::new("/etc/netns").join(ns);
        let made_dir = (!dir.exists()).then(|| dir.clone());
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        let file = dir.join("hosts");
        assert!(!file.exists(), "{} exists: not ours to overwrite", file.display());
        Self { file, made_dir }
    }

    fn point(&self, host: &str, ip: std::net::IpAddr) {
        std::fs::write(&self.file, format!("127.0.0.1 localhost\n{ip} {host}\n")).expect("netns hosts file");
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if let Some(d) = &self.made_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A Gateway with one HTTPS listener for `*.<parent domain of host>`, its Secret, and
/// an HTTPRoute for `host` to `backend` (`ns/service:port`, the backend the plain
/// table routes `host` to).
fn bench_manifests(host: &str, backend: &str, cert_pem: &str, key_pem: &str) -> String {
    let (ns_svc, port) = backend.rsplit_once(':').expect("backend ns/svc:port");
    let (ns, svc) = ns_svc.split_once('/').expect("backend ns/svc");
    let (gw_ns, gw) = GATEWAY.split_once('/').unwrap();
    let wildcard = format!("*.{}", host.split_once('.').expect("a host with a domain").1);
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {gw}, namespace: {gw_ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{crt}  tls.key: |\n{key}---\n\
apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {gw}, namespace: {gw_ns}}}\nspec:\n  gatewayClassName: kgateway\n  listeners:\n  - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: \"{wildcard}\"\n    allowedRoutes: {{namespaces: {{from: All}}}}\n    tls:\n      mode: Terminate\n      certificateRefs: [{{kind: Secret, name: {gw}}}]\n---\n\
apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {gw}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: {gw}, namespace: {gw_ns}}}]\n  hostnames: [\"{host}\"]\n  rules:\n  - backendRefs: [{{name: {svc}, port: {port}}}]\n",
        crt = indent(cert_pem),
        key = indent(key_pem),
    )
}

fn setup(fixtures: &Path, host: &str, backend: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("ingress-tlsbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    for e in std::fs::read_dir(fixtures).expect("fixtures").flatten() {
        if e.path().extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(e.path(), manifests.join(e.file_name())).unwrap();
        }
    }
    let wildcard = format!("*.{}", host.split_once('.').unwrap().1);
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string(), wildcard]).expect("rcgen certificate");
    let (cert_pem, key_pem) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    std::fs::write(manifests.join("zz-bench-tls.yaml"), bench_manifests(host, backend, &cert_pem, &key_pem)).unwrap();
    let tls = EnvoyTls { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
    std::fs::write(&tls.cert, &cert_pem).unwrap();
    std::fs::write(&tls.key, &key_pem).unwrap();
    Setup { dir, manifests, tls }
}

/// Runs the TLS mode on `topo` (direct path enabled) against `pod` (nginx there on
/// 8443 for B), with the agent `bin` serving the fixtures in `fixtures` plus the bench's
/// HTTPS Gateway on VM port 8443 beside `listens`; `envoy` is path A's Envoy. Returns
/// the Markdown section of the report.
#[allow(clippy::too_many_arguments)]
pub fn run(
    topo: &Topology,
    bin: &Path,
    fixtures: &Path,
    listens: &[String],
    envoy: &Path,
    pod: (String, std::net::Ipv4Addr),
    secs: u64,
    rounds: usize,
    host: &str,
    backend: &str,
) -> String {
    let s = setup(fixtures, host, backend);
    let res = ingress::sources::manifest::load_dir(&s.manifests).expect("bench manifests");
    let mapping: ingress::config::ListenMapping = format!("{VM_IP}:{TLS_PORT}={GATEWAY}:443").parse().unwrap();
    let table = ingress::routing::compile(&res, std::slice::from_ref(&mapping));
    let lt = &table.listeners[0];
    assert!(
        lt.vhosts().iter().any(|v| v.hostname == host),
        "the bench's HTTPS listener does not route {host}: {:?} {:?}",
        lt.problems,
        table.routes
    );
    let mut agent_listens = listens.to_vec();
    agent_listens.push(format!("{VM_IP}:{TLS_PORT}={GATEWAY}:443"));
    let pod_tls: SocketAddr = (pod.1, POD_TLS_PORT).into();
    let pod_nginx = PodNginx::start_tls(&pod.0, pod_tls, &s.tls.cert, &s.tls.key);
    let hosts = NetnsHosts::new(&topo.client_ns());

    // [path][workload][round]
    let mut samples: Vec<Vec<Vec<LoadResult>>> = vec![vec![Vec::new(); WORKLOADS.len()]; PATHS.len()];
    let mut faults = 0u64;
    for round in 0..rounds {
        for pi in rotation(&(0..PATHS.len()).collect::<Vec<_>>(), round) {
            let path = PATHS[pi];
            let mut agent = None;
            let mut legacy = None;
            let port = match path {
                TlsPath::Direct => {
                    hosts.point(host, pod.1.into());
                    POD_TLS_PORT
                }
                TlsPath::Legacy => {
                    hosts.point(host, VM_IP.parse().unwrap());
                    let l = LegacyPath::create_tls(topo, lt, TLS_PORT, envoy, &s.tls);
                    for ns in l.namespaces() {
                        crate::netns::cap_time_wait(ns, 256);
                    }
                    legacy = Some(l);
                    TLS_PORT
                }
                TlsPath::Ingress => {
                    hosts.point(host, VM_IP.parse().unwrap());
                    agent =
                        Some(Agent::start(bin, &topo.vm_ns(), &s.manifests, &agent_listens, &["--interface", VM_NIC]));
                    TLS_PORT
                }
            };
            let url = format!("https://{host}:{port}/");
            for (wi, w) in WORKLOADS.iter().enumerate() {
                let load = match w {
                    Workload::H2 => {
                        H2load {
                            ns: &topo.client_ns(),
                            url: url.clone(),
                            clients: 16,
                            streams: 16,
                            threads: 2,
                            duration: Duration::from_secs(secs),
                        }
                        .run()
                        .0
                    }
                    _ => {
                        let (conns, headers) = match w {
                            Workload::KeepAlive => (64, vec![]),
                            _ => (16, vec!["Connection: close"]),
                        };
                        Wrk {
                            ns: &topo.client_ns(),
                            url: url.clone(),
                            host,
                            connections: conns,
                            threads: 2,
                            duration: Duration::from_secs(secs),
                            headers,
                        }
                        .run()
                        .0
                    }
                };
                faults += load.errors + load.non_2xx;
                eprintln!(
                    "tls round {round} {:<52} {:<22} {:>9.0} req/s cpu {:>7.1} us/req errors {} non-2xx {}",
                    path.name(),
                    w.key(),
                    load.rps(),
                    load.cpu_us_per_request(),
                    load.errors,
                    load.non_2xx
                );
                samples[pi][wi].push(load);
            }
            if let Some(a) = agent {
                a.stop();
            }
            drop(legacy);
        }
    }
    drop(hosts);
    drop(pod_nginx);
    report(&samples, faults, secs, rounds)
}

fn report(samples: &[Vec<Vec<LoadResult>>], faults: u64, secs: u64, rounds: usize) -> String {
    let rps = |p: usize, w: usize| samples[p][w].iter().map(|l| l.rps()).collect::<Vec<_>>();
    let cpu = |p: usize, w: usize| samples[p][w].iter().map(|l| l.cpu_us_per_request()).collect::<Vec<_>>();
    let (a, b, c) = (0, 1, 2);
    let mut md = String::new();
    writeln!(md, "\n## TLS mode: HTTPS, TLS handshakes and HTTP/2, this ingress vs today's path vs direct TLS\n")
        .unwrap();
    writeln!(
        md,
        "wrk (HTTP/1.1 over TLS: 64 keep-alive connections; 16 clients with `Connection: close`, so each request is a new connection and a full handshake) and h2load (16 connections x 16 concurrent streams, ALPN h2) from the client namespace, {secs} s per run, {rounds} interleaved round(s); one self-signed ECDSA P-256 certificate on every path. A: the serverlb passes TCP and Envoy (2 workers) terminates TLS; B: nginx in the pod terminates TLS; C: the agent's HTTPS listener on VM port {TLS_PORT}, plain HTTP to the pod. CPU is whole-machine CPU per request. Medians; ratios are medians of per-round ratios. Faults (socket errors + non-2xx + h2load failures) over the whole run: {faults}.\n"
    )
    .unwrap();
    writeln!(md, "| path | HTTPS keep-alive req/s | CPU us/req | TLS handshakes/s | h2 req/s | h2 CPU us/req |")
        .unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|").unwrap();
    for (pi, p) in PATHS.iter().enumerate() {
        writeln!(
            md,
            "| {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} |",
            p.name(),
            median(&rps(pi, 0)).value,
            median(&cpu(pi, 0)).value,
            median(&rps(pi, 1)).value,
            median(&rps(pi, 2)).value,
            median(&cpu(pi, 2)).value
        )
        .unwrap();
    }
    // (what, ratio, wanted, higher is better)
    let targets: [(&str, Median, f64, bool); 4] = [
        ("HTTPS keep-alive req/s, C vs A", paired_ratio(&rps(c, 0), &rps(a, 0)), 1.5, true),
        ("TLS handshakes/s, C vs A (Envoy)", paired_ratio(&rps(c, 1), &rps(a, 1)), 1.2, true),
        ("h2 small requests/s, C vs A", paired_ratio(&rps(c, 2), &rps(a, 2)), 1.5, true),
        ("CPU per HTTPS keep-alive request, C vs A", paired_ratio(&cpu(c, 0), &cpu(a, 0)), 0.6, false),
    ];
    writeln!(md, "\n| target | ratio | wanted | verdict |").unwrap();
    writeln!(md, "|---|---:|---:|---|").unwrap();
    for (what, r, want, higher) in targets {
        let verdict = if faults > 0 || !r.complete() {
            "not judged (faults or missing samples)"
        } else if (higher && r.value >= want) || (!higher && r.value <= want) {
            "met"
        } else {
            "missed"
        };
        let op = if higher { ">=" } else { "<=" };
        writeln!(md, "| {what} | {:.2}x | {op} {want}x | {verdict} |", r.value).unwrap();
    }
    let vs_b = [
        ("HTTPS keep-alive", paired_ratio(&rps(c, 0), &rps(b, 0))),
        ("TLS handshakes", paired_ratio(&rps(c, 1), &rps(b, 1))),
        ("h2", paired_ratio(&rps(c, 2), &rps(b, 2))),
    ];
    let said: Vec<String> = vs_b.iter().map(|(w, r)| format!("{w} {:.2}x", r.value)).collect();
    writeln!(md, "\nC vs B (direct TLS to the pod): {}.", said.join(", ")).unwrap();
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_manifests_route_the_host_over_https() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.apps.test".to_string()]).unwrap();
        let text = bench_manifests("a.apps.test", "dp-x/web:8080", &ck.cert.pem(), &ck.signing_key.serialize_pem());
        assert!(text.contains("hostname: \"*.apps.test\""), "{text}");
        let dir = std::env::temp_dir().join(format!("tlsbench-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bench.yaml"), &text).unwrap();
        let res = ingress::sources::manifest::load_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let res = res.expect("the bench's manifests load");
        let mapping: ingress::config::ListenMapping = format!("127.0.0.1:8443={GATEWAY}:443").parse().unwrap();
        let table = ingress::routing::compile(&res, &[mapping]);
        let lt = &table.listeners[0];
        assert!(lt.problems.is_empty(), "{:?}", lt.problems);
        let vh = lt
            .vhosts()
            .into_iter()
            .find(|v| v.hostname == "a.apps.test")
            .expect("the host is routed on the HTTPS listener");
        assert_eq!(vh.entries[0].rule.backends[0].name, "dp-x/web:8080");
    }
}
