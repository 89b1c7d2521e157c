//! `cargo xtask demo`: the k3d-shaped topology with OpenChoreo v0.12's real routes,
//! the agent with XDP on the VM NIC, requests from the client namespace to every
//! hostname, the pod that answered each, OpenChoreo's HTTPS listener on 8443 (a
//! wildcard certificate for `*.openchoreovm.localhost` made here with rcgen) answering
//! over TLS, one gRPC call through 9080 to a gRPC pod (h2c, routed by a GRPCRoute), the
//! XDP counters, then teardown. Exits non-zero if any request did not reach its
//! expected pod.

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
/// The demo's gRPC pod (not in the fixtures: a GRPCRoute sample written beside them).
const GRPC_POD_IP: [u8; 4] = [10, 42, 0, 250];
const GRPC_POD_PORT: u16 = 50051;
const GRPC_HOST: &str = "grpc-greeter-development.openchoreovm-apis.localhost";
/// The control plane's HTTPS listener: VM port 8443 -> the Gateway's 443.
const HTTPS_HOST: &str = "api.openchoreovm.localhost";
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
    let mut pods = openchoreo_pods();
    pods.push(topology::PodSpec { name: "grpc-greeter-pod".into(), ip: GRPC_POD_IP.into(), ports: vec![] });
    install_teardown_on_signal(pods.len());
    // OpenChoreo's objects, plus what this demo adds beside them: the control plane's
    // HTTPS certificate (the Secret its Gateway names) and a gRPC service with its GRPCRoute
    let ca = ingress_tests::tls::TestCa::new();
    let manifests = DemoManifests::write(&ca);

    let started = Instant::now();
    println!(
        "== topology: client 198.18.0.1 -> vm {VM_IP} ({VM_NIC}, XDP) -> k3d bridge 172.18.0.0/16 -> node 172.18.0.2 -> {} pods in 10.42.0.0/24",
        pods.len()
    );
    let topo = Topology::create(PREFIX, &pods);
    for (p, ns) in &topo.pods {
        println!("   pod {:<62} {:<12} ports {:?}  (ns {ns})", p.name, p.ip, p.ports);
    }
    let mut listens = openchoreo_listens(VM_IP);
    listens.push(format!("{VM_IP}:8443=openchoreo-control-plane/gateway-default:443"));
    // the gRPC pod: an h2c gRPC server (tests/src/h2_backend.rs) in its namespace
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let grpc_ns = topo.pods.iter().find(|(p, _)| p.ip == std::net::Ipv4Addr::from(GRPC_POD_IP)).unwrap().1.clone();
    let grpc_listener =
        in_ns(&grpc_ns, || std::net::TcpListener::bind(("0.0.0.0", GRPC_POD_PORT)).expect("bind in the gRPC pod"));
    let grpc_pod = ingress_tests::h2_backend::H2Backend::serve(rt.handle(), "grpc-greeter-pod", grpc_listener);
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
        "== agent: {} run --manifests {} --listen {} --listen {} --listen {} {}",
        bin.display(),
        manifests.dir.display(),
        listens[0],
        listens[1],
        listens[2],
        dataplane.join(" ")
    );
    let agent = if userspace {
        Agent::start(&bin, &topo.vm_ns(), &manifests.dir, &listens, &dataplane)
    } else {
        Agent::start_keeping_pins(&bin, &topo.vm_ns(), &manifests.dir, &listens, &dataplane)
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

    println!("== HTTPS: https://{HTTPS_HOST}:8443/api/v1/orgs from the client namespace (TLS 1.3, SNI {HTTPS_HOST})");
    if let Err(why) = https_request(&topo.client_ns(), &ca) {
        failures += 1;
        println!("✗  {why}");
    }
    println!("== gRPC: /echo.Echo/Unary over h2c to {VM_IP}:9080 (:authority {GRPC_HOST}, routed by a GRPCRoute)");
    if let Err(why) = grpc_call(&topo.client_ns(), &rt) {
        failures += 1;
        println!("✗  {why}");
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
    drop(grpc_pod);
    drop(topo);
    drop(manifests);
    println!(
        "== {} of {} requests (HTTP, HTTPS, gRPC) reached the expected pod or status; torn down in {:.1}s total",
        sent + 2 - failures,
        sent + 2,
        started.elapsed().as_secs_f64()
    );
    if failures > 0 {
        eprintln!("demo: {failures} request(s) did not reach the expected pod; agent log:\n{log}");
        std::process::exit(1);
    }
}

/// The demo's manifests directory: a copy of the OpenChoreo fixtures, plus the control
/// plane's certificate Secret and a gRPC sample (Service, EndpointSlice, GRPCRoute on
/// the data plane's HTTP listener). Removed on drop.
struct DemoManifests {
    dir: PathBuf,
}

impl DemoManifests {
    fn write(ca: &ingress_tests::tls::TestCa) -> Self {
        let dir = std::env::temp_dir().join(format!("ingress-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("demo manifests directory");
        for e in std::fs::read_dir(openchoreo_dir()).expect("fixtures").flatten() {
            if e.path().extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy a fixture");
            }
        }
        // the Secret the control plane's HTTPS listener names (v0.12: control-plane-tls)
        let (crt, key) = ca.leaf(&["*.openchoreovm.localhost", "openchoreovm.localhost"]);
        let mut extra = ingress_tests::tls::secret_yaml("openchoreo-control-plane", "control-plane-tls", &crt, &key);
        let ip = std::net::Ipv4Addr::from(GRPC_POD_IP);
        extra += &format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: grpc-greeter, namespace: dp-default-demo-development}}
spec: {{ports: [{{name: grpc, port: 50051, targetPort: {GRPC_POD_PORT}, appProtocol: kubernetes.io/h2c}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: grpc-greeter-0, namespace: dp-default-demo-development, labels: {{kubernetes.io/service-name: grpc-greeter}}}}
addressType: IPv4
ports: [{{name: grpc, port: {GRPC_POD_PORT}, appProtocol: kubernetes.io/h2c}}]
endpoints: [{{addresses: ['{ip}'], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-greeter, namespace: dp-default-demo-development}}
spec:
  parentRefs: [{{name: gateway-default, namespace: openchoreo-data-plane, sectionName: http}}]
  hostnames: [{GRPC_HOST}]
  rules:
  - matches: [{{method: {{service: echo.Echo}}}}]
    backendRefs: [{{name: grpc-greeter, port: 50051}}]
"
        );
        std::fs::write(dir.join("zz-demo-https-grpc.yaml"), extra).expect("demo manifest");
        Self { dir }
    }
}

impl Drop for DemoManifests {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /api/v1/orgs` over TLS to the control plane's HTTPS listener (VM 8443), from
/// the client namespace; prints who answered; Err: what went wrong.
fn https_request(client_ns: &str, ca: &ingress_tests::tls::TestCa) -> Result<(), String> {
    let addr: std::net::SocketAddr = format!("{VM_IP}:8443").parse().unwrap();
    let tcp = in_ns(client_ns, || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let config = ca.client(&rustls::version::TLS13, &[b"http/1.1"]);
    let (mut conn, n) = ingress_tests::tls::TlsConn::handshake(tcp, config, HTTPS_HOST)
        .map_err(|e| format!("TLS handshake for {HTTPS_HOST}: {e}"))?;
    let r = conn
        .send(&Request::get(&format!("{HTTPS_HOST}:8443"), "/api/v1/orgs"))
        .map_err(|e| format!("request over TLS: {e}"))?;
    let echo: Echo = serde_json::from_slice(&r.body).map_err(|_| format!("status {}: not a pod's answer", r.status))?;
    println!(
        "   {:?}, certificate for {}, status {}, answered by {} (X-Forwarded-Proto {})",
        n.version.map(|v| format!("{v:?}")).unwrap_or_default(),
        n.san,
        r.status,
        echo.pod,
        echo.headers.get("x-forwarded-proto").map(String::as_str).unwrap_or("-")
    );
    if r.status != 200 || !echo.pod.starts_with("openchoreo-api-") {
        return Err(format!("expected 200 from an openchoreo-api pod, got {} from {}", r.status, echo.pod));
    }
    Ok(())
}

/// One unary gRPC call over h2c (prior knowledge) to VM 9080 from the client
/// namespace; prints the reply and its grpc-status; Err: what went wrong.
fn grpc_call(client_ns: &str, rt: &tokio::runtime::Runtime) -> Result<(), String> {
    use ingress_tests::h2_backend::{grpc_frame, grpc_messages, h2_client, h2_send};
    let addr: std::net::SocketAddr = format!("{VM_IP}:9080").parse().unwrap();
    let stream = in_ns(client_ns, || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{GRPC_HOST}:9080/echo.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let reply = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let tcp = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
            let client = h2_client(tcp).await.map_err(|e| format!("h2 handshake: {e}"))?;
            h2_send(&client, req, &grpc_frame(b"hello"), None).await.map_err(|e| format!("the call: {e}"))
        })
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
    })?;
    let status = reply.trailers.as_ref().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok());
    let msgs = grpc_messages(&reply.body).unwrap_or_default();
    let text = msgs.first().map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
    println!("   HTTP/2 {} grpc-status {} reply \"{text}\"", reply.status, status.unwrap_or("-"));
    if reply.status != 200 || status != Some("0") || !text.starts_with("grpc-greeter-pod ") {
        return Err("the gRPC call did not reach the gRPC pod with grpc-status 0".into());
    }
    Ok(())
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
