//! Network-namespace tier (root): the pod leg in the kernel (`--pod-cgroup`). This test
//! process moves itself into a cgroup it creates before it builds the topology, so the
//! pods' echo backends (threads of this process) own sockets of that cgroup, and the
//! agent's sock_ops program on it sees them; the agent starts with `nsenter --net`
//! (it sees the host's cgroup v2 tree) and pins under a per-test directory.
//!
//! Over one keep-alive client connection (one worker, so one pooled pod connection):
//! small GETs, then 1 MiB answers and 256 KiB uploads, each checked byte for byte
//! (the pod echoes the upload's length and hash); `/stats` must show the agent's end
//! and the pod's end in the map and sends moved in the kernel, and the pod must have
//! seen every request on one connection. Everything it made is removed by name; the
//! process moves back to the root cgroup before the test cgroup is removed.
//!
//! One test in this binary: moving the process into a cgroup would move every other
//! test running beside it.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::Echo;
use ingress_tests::cgroup::{TestCgroup, cgroup2_mount};
use ingress_tests::client::{Request, read_response};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::in_ns;
use ingress_tests::pattern::{Fnv, bytes, first_difference};
use ingress_tests::pinned::PinDir;
use ingress_tests::topology::{Topology, VM_IP, VM_NIC};

/// A host of the fixtures with one backend (two pods; one worker round-robins them).
const HOST: &str = "react-starter-development.openchoreovm-apis.localhost:9080";
const MIB: usize = 1 << 20;
const IO_LIMIT: Duration = Duration::from_secs(20);

/// Puts this whole process in the cgroup v2 directory `dir`.
fn move_self(dir: &std::path::Path) {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .unwrap_or_else(|e| panic!("move this process into {}: {e}", dir.display()));
}

/// Moves this process back to the root cgroup when dropped (before the test cgroup is).
struct BackToRoot(std::path::PathBuf);
impl Drop for BackToRoot {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.procs"), std::process::id().to_string());
    }
}

/// Requests over one keep-alive connection; returns the pods that answered.
fn exchanges(small: usize, big: usize) -> Vec<String> {
    let s = TcpStream::connect_timeout(&format!("{VM_IP}:9080").parse().unwrap(), IO_LIMIT).expect("connect");
    s.set_read_timeout(Some(IO_LIMIT)).unwrap();
    s.set_write_timeout(Some(IO_LIMIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut pods = Vec::new();
    for i in 0..small {
        w.write_all(&Request::get(HOST, &format!("/s{i}")).to_bytes()).unwrap();
        let resp = read_response(&mut r, false).expect("small answer");
        assert_eq!(resp.status, 200, "small request {i}");
        let echo: Echo = resp.json();
        assert_eq!(echo.path, format!("/s{i}"));
        pods.push(echo.pod);
    }
    for i in 0..big {
        let seed = 1000 + i as u64 * 2;
        let get = Request::get(HOST, "/download")
            .header("x-echo-bytes", &MIB.to_string())
            .header("x-echo-pattern", &seed.to_string());
        w.write_all(&get.to_bytes()).unwrap();
        let resp = read_response(&mut r, false).expect("1 MiB answer");
        assert_eq!((resp.status, resp.body.len()), (200, MIB), "download {seed}");
        assert_eq!(first_difference(seed, &resp.body), None, "download {seed} differs");
        let mut post = Request::get(HOST, "/upload").method("POST");
        post.body = bytes(seed + 1, 256 << 10);
        w.write_all(&post.to_bytes()).unwrap();
        let echo: Echo = read_response(&mut r, false).expect("upload answer").json();
        assert_eq!((echo.body_len, echo.body_hash), (post.body.len(), Fnv::of(&post.body)), "upload {}", seed + 1);
        pods.push(echo.pod);
    }
    pods
}

#[test]
fn pooled_pod_connections_are_joined_in_the_kernel_and_carry_every_byte() {
    let test = "pooled_pod_connections_are_joined_in_the_kernel_and_carry_every_byte";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let Some(root) = cgroup2_mount() else {
        // CI runs as root on a systemd host: a cgroup v2 mount is there (hybrid or unified)
        panic!("{test}: no cgroup v2 mount in /proc/mounts; the pod leg needs one");
    };
    let cg = TestCgroup::create(&format!("ingress-test-podleg-{}", std::process::id())).expect("test cgroup");
    move_self(cg.path());
    let back = BackToRoot(root);
    let topo = Topology::create("plg", &openchoreo_pods());
    let pins = PinDir::new("pod-leg");
    let (pin, cgroup) = (pins.arg(), cg.path().display().to_string());
    let agent = Agent::start_keeping_pins(
        &ingress_bin(),
        &topo.vm_ns(),
        &openchoreo_dir(),
        &openchoreo_listens(VM_IP),
        &["--interface", VM_NIC, "--pin-path", &pin, "--detach-on-exit", "--pod-cgroup", &cgroup, "--workers", "1"],
    );
    let ns = topo.client_ns();
    // first the pooled connections (the agent's address is learnt on the first one,
    // whose pod end predates it and stays on the normal path), then the checked traffic
    in_ns(&ns, || exchanges(8, 0));
    let before = agent.stats().pod_leg.expect("/stats has the pod leg");
    let pods = in_ns(&ns, || exchanges(40, 3));
    assert!(pods.len() == 43 && pods.iter().all(|p| p.starts_with("react-starter-development-")), "{pods:?}");
    let after = agent.stats().pod_leg.expect("/stats has the pod leg");
    let table = agent.stats_table();
    eprintln!("{test}: pod leg before {before:?}\nafter {after:?}\n{table}");
    assert!(after.agent_sockets >= 1, "no agent end joined: {after:?}\n{table}");
    assert!(after.pod_sockets >= 2, "the pods' ends are not in the map: {after:?}\n{table}");
    assert_eq!((after.agent_socket_errors, after.pod_socket_errors), (0, 0), "{after:?}");
    let moved = after.redirected_msgs - before.redirected_msgs;
    let moved_bytes = after.redirected_bytes - before.redirected_bytes;
    // each of the 43 exchanges sends a request head one way and an answer the other;
    // the 1 MiB answers and 256 KiB uploads alone are over 3.75 MiB
    assert!(moved >= 43, "{moved} sends moved in the kernel for 43 exchanges: {after:?}\n{table}");
    assert!(moved_bytes >= (3 * MIB + 3 * (256 << 10)) as u64, "{moved_bytes} bytes moved: {after:?}");
    assert!(table.contains("pod leg ("), "ingress stats shows the pod leg:\n{table}");
    let log = agent.stop();
    assert!(!log.contains("panicked"), "agent log:\n{log}");
    drop(topo);
    drop(pins);
    drop(back);
    drop(cg);
}
