//! `cargo xtask demo`: the k3d-shaped topology with OpenChoreo v0.12's real routes,
//! the agent with XDP on the VM NIC, requests from the client namespace to every
//! hostname, the pod that answered each, the XDP counters, then teardown. Exits
//! non-zero if any request did not reach its expected pod.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ingress_tests::agent::{ADMIN, Agent};
use ingress_tests::backend::Echo;
use ingress_tests::client::{Request, send};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_expectations, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::in_ns;
use ingress_tests::topology::{self, Topology, VM_IP, VM_NIC};

const PREFIX: &str = "ocdemo";
const REQUESTS_PER_HOST: usize = 3;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut bin = ingress_tests::agent::ingress_bin();
    let mut userspace = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ingress" => bin = PathBuf::from(args.next().expect("--ingress PATH")),
            "--userspace" => userspace = true,
            other => {
                eprintln!("demo: unknown argument {other} (usage: demo [--ingress PATH] [--userspace])");
                std::process::exit(2);
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("demo: needs root (network namespaces, XDP): run `sudo cargo xtask demo`");
        std::process::exit(2);
    }
    let pods = openchoreo_pods();
    install_teardown_on_signal(pods.len());

    let started = Instant::now();
    println!(
        "== topology: client 198.18.0.1 -> vm {VM_IP} ({VM_NIC}, XDP) -> k3d bridge 172.18.0.0/16 -> node 172.18.0.2 -> {} pods in 10.42.0.0/24",
        pods.len()
    );
    let topo = Topology::create(PREFIX, &pods);
    for (p, ns) in &topo.pods {
        println!("   pod {:<62} {:<12} ports {:?}  (ns {ns})", p.name, p.ip, p.ports);
    }
    let listens = openchoreo_listens(VM_IP);
    let mut dataplane: Vec<&str> =
        if userspace { vec!["--dataplane", "userspace"] } else { vec!["--interface", VM_NIC] };
    // L4: VM 6550 -> an API-server stand-in (plain TCP) in the node namespace, in the kernel.
    let _api = (!userspace).then(|| {
        ingress_tests::netns::sysctl(&topo.vm_ns(), "net/ipv4/ip_forward", "1");
        ingress_tests::tcp_echo::Server::start(&topo.node_ns(), "172.18.0.2:6443", "apiserver-stand-in")
    });
    if !userspace {
        dataplane.extend(["--l4", "6550=172.18.0.2:6443"]);
    }
    println!(
        "== agent: {} run --manifests {} --listen {} --listen {} {}",
        bin.display(),
        openchoreo_dir().display(),
        listens[0],
        listens[1],
        dataplane.join(" ")
    );
    let agent = Agent::start(&bin, &topo.vm_ns(), &openchoreo_dir(), &listens, &dataplane);

    println!("== requests from the client namespace");
    println!("   {:<60} {:>6}  {:<58} {}", "URL (Host header)", "STATUS", "ANSWERED BY", "PATH AT POD");
    let mut failures = 0;
    let mut sent = 0;
    for exp in openchoreo_expectations() {
        for _ in 0..REQUESTS_PER_HOST {
            sent += 1;
            let host = format!("{}:{}", exp.host, exp.port);
            let addr = format!("{VM_IP}:{}", exp.port).parse().unwrap();
            let req = Request::get(&host, exp.path);
            let result = in_ns(&topo.client_ns(), move || send(addr, &req, Duration::from_secs(5)));
            let url = format!("http://{host}{}", exp.path);
            let (ok, status, who, seen) = match result {
                Err(e) => (false, "ERR".to_string(), e.to_string(), String::new()),
                Ok(r) if exp.pod_prefix.is_none() => {
                    (r.status == exp.status, r.status.to_string(), "(the ingress)".into(), String::new())
                }
                Ok(r) => match serde_json::from_slice::<Echo>(&r.body) {
                    Ok(echo) => {
                        let ok = r.status == exp.status
                            && exp.pod_prefix.is_some_and(|p| echo.pod.starts_with(p))
                            && exp.pod_path.is_none_or(|p| p == echo.path);
                        (ok, r.status.to_string(), echo.pod, echo.path)
                    }
                    Err(_) => (
                        false,
                        r.status.to_string(),
                        String::from_utf8_lossy(&r.body).trim().to_string(),
                        String::new(),
                    ),
                },
            };
            if !ok {
                failures += 1;
            }
            println!("{} {url:<60} {status:>6}  {who:<58} {seen}", if ok { "  " } else { "✗ " });
        }
    }

    if !userspace {
        println!(
            "== L4: a TCP connection from the client namespace to {VM_IP}:6550 (tc DNAT to 172.18.0.2:6443, no socket on the VM)"
        );
        let client = topo.client_ns();
        match std::panic::catch_unwind(|| ingress_tests::tcp_echo::exchange(&client, 6550, 1 << 20, 1, Duration::ZERO))
        {
            Ok(who) => println!("   1 MiB sent and echoed back intact by {who}"),
            Err(_) => {
                failures += 1;
                println!("✗  the L4 connection to 6550 failed");
            }
        }
    }
    println!("== ingress stats (XDP counters on {VM_NIC}, proxy counters)");
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.vm_ns()])
        .arg(&bin)
        .args(["stats", "--admin", ADMIN])
        .output()
        .expect("ingress stats");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        failures += 1;
        eprintln!("ingress stats failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let log = agent.stop();
    let ebpf_lines: Vec<&str> = log.lines().filter(|l| l.contains("ingress_ebpf")).collect();
    if !userspace {
        println!(
            "== eBPF log records in the agent's log: {} (first: {})",
            ebpf_lines.len(),
            ebpf_lines.first().map(|l| l.trim()).unwrap_or("none")
        );
    }
    drop(topo);
    println!(
        "== {} of {sent} requests reached the expected pod or status; torn down in {:.1}s total",
        sent - failures,
        started.elapsed().as_secs_f64()
    );
    if failures > 0 {
        eprintln!("demo: {failures} request(s) did not reach the expected pod; agent log:\n{log}");
        std::process::exit(1);
    }
}

/// Ctrl-C / SIGTERM: remove the namespaces (by name) before exiting. The signals are
/// blocked in every thread and taken by one thread with sigwait.
fn install_teardown_on_signal(pods: usize) {
    // SAFETY: plain libc signal-mask calls on a zeroed sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            eprintln!("demo: signal {sig}, tearing down");
            let mut names = vec![format!("{PREFIX}-client"), format!("{PREFIX}-vm"), format!("{PREFIX}-node")];
            names.extend((0..pods).map(|i| format!("{PREFIX}-p{i}")));
            // The agent dies with us (PR_SET_PDEATHSIG).
            topology::remove_namespaces(&names);
            std::process::exit(130);
        });
    }
}
