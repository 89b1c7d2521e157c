//! Kube tier (root, a real kube-apiserver): the Node watcher turns each Node's podCIDR
//! and InternalIP into a host route with the agent's protocol, skips a Node that is
//! this host, removes the route when the Node goes, and never touches someone else's
//! route. Everything runs in a `chkk-vm` network namespace of the test's own (the API
//! server too, on its loopback), so no route is ever added outside it.

use ingress_tests::pinned::PinDir;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ingress_tests::agent::ingress_bin;
use ingress_tests::kubeapi::{self, KubeApiServer};
use ingress_tests::netns::{enter, exists, in_ns, ip, ip_quiet};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const VM: &str = "chkk-vm";
const PEER: &str = "chkk-peer";
const WITHIN: Duration = Duration::from_secs(15);

struct Namespaces;

impl Namespaces {
    fn create() -> Self {
        Self::delete();
        ip(&["netns", "add", VM]);
        ip(&["netns", "add", PEER]);
        ip(&["-n", VM, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", PEER]);
        ip(&["-n", VM, "addr", "add", "198.19.0.2/24", "dev", "eth0"]);
        ip(&["-n", PEER, "addr", "add", "198.19.0.1/24", "dev", "eth1"]);
        for (ns, dev) in [(VM, "eth0"), (VM, "lo"), (PEER, "eth1"), (PEER, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        Namespaces
    }

    fn delete() {
        for ns in [VM, PEER] {
            if exists(ns) {
                ip_quiet(&["netns", "del", ns]);
            }
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        Self::delete();
    }
}

fn routes() -> Vec<String> {
    let out = Command::new("ip").args(["-n", VM, "route", "show"]).output().expect("ip route show");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).collect()
}

fn wait_routes(what: &str, log: &std::path::Path, cond: impl Fn(&[String]) -> bool) {
    let start = Instant::now();
    while !cond(&routes()) {
        assert!(
            start.elapsed() < WITHIN,
            "{what}: not within {WITHIN:?}; routes {:?}; agent log:\n{}",
            routes(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent (`ingress run --kubeconfig .. --interface eth0`) in the vm namespace only.
/// Its pins go to `pins` (the test's own directory, removed by name on drop), never
/// the host's default one.
fn start_agent(kubeconfig: &std::path::Path, log: &std::path::Path, pins: &PinDir) -> Child {
    let nsfile = File::open(format!("/run/netns/{VM}")).unwrap();
    let fd = nsfile.as_raw_fd();
    let mut cmd = Command::new(ingress_bin());
    cmd.args(["run", "--listen", "127.0.0.1:18080=infra/gw:80", "--interface", "eth0", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--pin-path", &pins.arg()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap());
    // SAFETY: setns and prctl are async-signal-safe; the fd is open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("start the agent")
}

fn node(name: &str, cidr: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    }))
    .unwrap()
}

#[test]
fn node_pod_cidrs_become_host_routes_and_go_with_their_node() {
    let test = "node_pod_cidrs_become_host_routes_and_go_with_their_node";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let Some(bin) = kubeapi::binary(test) else { return };
    let _ns = Namespaces::create();
    let pins = PinDir::new("kube-nodes");
    // someone else's route, which must survive everything below
    ip(&["-n", VM, "route", "add", "10.204.9.0/24", "via", "198.19.0.1"]);

    // The API server lives in the namespace, on a thread that stays there (its
    // processes die with the thread that started them) until the test is done.
    let (tx_api, rx_api) = mpsc::channel();
    let (tx_done, rx_done) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        enter(&format!("/run/netns/{VM}"));
        let api = KubeApiServer::start(&bin, "chk-nodes");
        tx_api.send(api.kubeconfig.clone()).unwrap();
        let _ = rx_done.recv();
        drop(api);
    });
    let kubeconfig = rx_api.recv_timeout(Duration::from_secs(90)).expect("API server started in the namespace");
    let kubeconfig2 = kubeconfig.clone();
    let nodes = move |f: &'static str| {
        let kubeconfig = kubeconfig2.clone();
        in_ns(VM, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
                let api: Api<Node> = Api::all(Client::try_from(config).unwrap());
                match f {
                    "create" => {
                        for (name, cidr, internal) in
                            [("node-a", "10.204.0.0/24", "198.19.0.1"), ("node-self", "10.204.1.0/24", "198.19.0.2")]
                        {
                            api.create(&PostParams::default(), &node(name, cidr)).await.unwrap();
                            let status = json!({"status": {"addresses": [
                                {"type": "Hostname", "address": name}, {"type": "InternalIP", "address": internal},
                            ]}});
                            api.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
                        }
                    }
                    "delete" => {
                        api.delete("node-a", &DeleteParams::default()).await.unwrap();
                    }
                    _ => unreachable!(),
                }
            })
        })
    };

    let log = std::env::temp_dir().join(format!("chk-kube-nodes-{}.log", std::process::id()));
    let mut agent = start_agent(&kubeconfig, &log, &pins);
    nodes("create");
    wait_routes("node-a's podCIDR routed via its InternalIP", &log, |r| {
        r.iter().any(|l| l.starts_with("10.204.0.0/24 via 198.19.0.1") && l.contains("proto 207"))
    });
    let now = routes();
    assert!(!now.iter().any(|l| l.starts_with("10.204.1.0/24")), "the node that is this host gets no route: {now:?}");

    nodes("delete");
    wait_routes("node-a's route removed with the node", &log, |r| !r.iter().any(|l| l.starts_with("10.204.0.0/24")));
    assert!(routes().iter().any(|l| l.starts_with("10.204.9.0/24 via 198.19.0.1")), "someone else's route stays");

    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    let _ = tx_done.send(());
    holder.join().unwrap();
    let _ = std::fs::remove_file(&log);
}
