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

/// The demo's pin directory and cgroup (removed by name when it ends).
const DEMO_PINS: &str = "/sys/fs/bpf/ingress-demo";
const DEMO_CGROUP: &str = "ingress-demo";

fn main() {
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--dial-local") {
        // the local client: this program again, in the vm namespace and the demo cgroup
        std::process::exit(dial_local(&std::env::args().nth(2).expect("--dial-local ADDR")));
    }
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
    // Local clients: the connect hooks go on a cgroup of the demo's own (only its dialling
    // child joins it); pins in a directory of its own. The agent runs with `nsenter
    // --net`, so it sees the host's cgroup tree and bpffs.
    let cgroup = (!userspace).then(|| ingress_tests::cgroup::TestCgroup::create(DEMO_CGROUP).expect("demo cgroup"));
    let cgroup_arg = cgroup.as_ref().map(|c| c.path().display().to_string()).unwrap_or_default();
    if !userspace {
        dataplane.extend(["--l4", "6550=172.18.0.2:6443", "--pin-path", DEMO_PINS, "--cgroup", &cgroup_arg]);
    }
    println!(
        "== agent: {} run --manifests {} --listen {} --listen {} {}",
        bin.display(),
        openchoreo_dir().display(),
        listens[0],
        listens[1],
        dataplane.join(" ")
    );
    let agent = if userspace {
        Agent::start(&bin, &topo.vm_ns(), &openchoreo_dir(), &listens, &dataplane)
    } else {
        Agent::start_keeping_pins(&bin, &topo.vm_ns(), &openchoreo_dir(), &listens, &dataplane)
    };

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
    if let Some(cg) = &cgroup {
        println!(
            "== L4, local client: a process on the VM (in cgroup {}) dials 0.0.0.0:6550, as kubectl with k3d's kubeconfig does",
            cg.path().display()
        );
        let me = std::env::current_exe().expect("the demo's own path");
        let mut cmd = ingress_tests::agent::nsenter_net(&topo.vm_ns(), &me);
        cmd.args(["--dial-local", "0.0.0.0:6550"]);
        cg.enter_on_exec(&mut cmd);
        match cmd.output() {
            Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
            Ok(o) => {
                failures += 1;
                println!(
                    "✗  the local connection failed: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            Err(e) => {
                failures += 1;
                println!("✗  cannot start the local client: {e}");
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
    if !userspace {
        // the pinned links and maps outlive the agent: take them off
        let out = ingress_tests::agent::nsenter_net(&topo.vm_ns(), &bin)
            .args(["detach", "--pin-path", DEMO_PINS, "--cgroup", &cgroup_arg])
            .output()
            .expect("ingress detach");
        println!(
            "== ingress detach: {} lines, exit {}",
            String::from_utf8_lossy(&out.stdout).lines().count(),
            out.status
        );
        if !out.status.success() {
            failures += 1;
        }
    }
    drop(cgroup);
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
            // The agent dies with us (PR_SET_PDEATHSIG); its pinned links and maps go
            // with their pins (by the demo's own names), the cgroup once empty.
            topology::remove_namespaces(&names);
            let _ = std::fs::remove_dir_all(DEMO_PINS);
            if let Some(root) = ingress_tests::cgroup::cgroup2_mount() {
                let _ = std::fs::remove_dir(root.join(DEMO_CGROUP));
            }
            std::process::exit(130);
        });
    }
}

/// Connects to `addr`, says what getpeername gives, sends 64 KiB and checks the echo
/// (after the stand-in's name line); the exit status says whether it all came back.
fn dial_local(addr: &str) -> i32 {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let s = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            println!("   connect {addr}: {e}");
            return 1;
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    // while connected: what getpeername and getsockname say
    let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_else(|e| e.to_string());
    let local = s.local_addr().map(|p| p.to_string()).unwrap_or_default();
    let data = ingress_tests::pattern::bytes(3, 64 << 10);
    let mut w = s.try_clone().expect("socket");
    let mut r = BufReader::new(s.try_clone().expect("socket"));
    let mut name = String::new();
    let _ = r.read_line(&mut name);
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&sent);
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    let mut back = Vec::new();
    let _ = r.read_to_end(&mut back);
    let _ = writer.join();
    let ok = back == data;
    println!(
        "   connected from {local}; getpeername says {peer} (what it dialled); {} by {}",
        if ok { "64 KiB echoed back intact" } else { "the echo differs" },
        name.trim()
    );
    if ok { 0 } else { 1 }
}
