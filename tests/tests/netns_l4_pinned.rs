//! Network-namespace tier (root): the L4 path with pinned state. The agent starts with
//! `nsenter --net`, so its pins under a per-test directory in /sys/fs/bpf outlive it
//! and it sees the host's cgroup v2 tree; its connect hooks go on a cgroup this test
//! creates, and only the test's own client processes are put there.
//!
//! - local clients: a process in the vm namespace (the VM) and in the test cgroup
//!   dials 127.0.0.1, 0.0.0.0 and the VM's address on the L4 port and reaches the API
//!   server stand-in in the node namespace, bytes intact; getpeername says what it
//!   dialled; a process outside the cgroup is not rewritten;
//! - restart: connections through the NIC carry bytes while the agent is SIGKILLed and
//!   a new one adopts the pinned maps and links; every byte comes back, both ends
//!   hashed; afterwards `ingress detach` leaves no pin and no hook.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin, nsenter_net};
use ingress_tests::cgroup::{Dialled, TestCgroup, run_dial};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::sysctl;
use ingress_tests::pattern::{Fnv, bytes};
use ingress_tests::pinned::{PinDir, run_in, tc_filters};
use ingress_tests::tcp_echo::{Server, exchange};
use ingress_tests::topology::{NODE_IP, Topology, VM_IP, VM_NIC};

const STANDIN: &str = "apiserver-standin";

fn start(topo: &Topology, pins: &PinDir, cg: &TestCgroup) -> Agent {
    // Docker turns IPv4 forwarding on; so does the VM this stands for.
    sysctl(&topo.vm_ns(), "net/ipv4/ip_forward", "1");
    let (pin, cgroup) = (pins.arg(), cg.path().display().to_string());
    let l4 = format!("6550={NODE_IP}:6443");
    Agent::start_keeping_pins(
        &ingress_bin(),
        &topo.vm_ns(),
        &openchoreo_dir(),
        &openchoreo_listens(VM_IP),
        &["--interface", VM_NIC, "--l4", &l4, "--pin-path", &pin, "--cgroup", &cgroup],
    )
}

/// `dial ADDR SEND` in the vm namespace, in `cg` if given.
fn dial(topo: &Topology, cg: Option<&TestCgroup>, addr: &str, send: usize) -> Dialled {
    let mut cmd: Command = nsenter_net(&topo.vm_ns(), &PathBuf::from(env!("CARGO_BIN_EXE_dial")));
    cmd.arg(addr).arg(send.to_string());
    run_dial(cmd, cg)
}

fn echo_of(send: usize) -> (usize, u64) {
    let mut reply = format!("{STANDIN}\n").into_bytes();
    reply.extend(bytes(7, send));
    (reply.len(), Fnv::of(&reply))
}

fn detach(topo: &Topology, pins: &PinDir, cg: &TestCgroup) -> ingress_tests::pinned::Ran {
    let (pin, cgroup) = (pins.arg(), cg.path().display().to_string());
    run_in(
        &topo.vm_ns(),
        &ingress_bin(),
        &["detach", "--pin-path", &pin, "--interface", VM_NIC, "--cgroup", &cgroup],
        Duration::from_secs(20),
    )
}

#[test]
fn a_local_client_in_the_cgroup_reaches_the_l4_target_and_sees_what_it_dialled() {
    let test = "a_local_client_in_the_cgroup_reaches_the_l4_target_and_sees_what_it_dialled";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("l4p-local", &openchoreo_pods());
    let _standin = Server::start(&topo.node_ns(), &format!("{NODE_IP}:6443"), STANDIN);
    let pins = PinDir::new("l4-local");
    let cg = TestCgroup::create(&format!("ingress-test-l4local-{}", std::process::id())).expect("test cgroup");
    let agent = start(&topo, &pins, &cg);

    // outside the cgroup: the VM's own 127.0.0.1:6550 has no listener
    let outside = dial(&topo, None, "127.0.0.1:6550", 0);
    assert!(outside.out.contains("error="), "a process outside the cgroup is not rewritten: {}", outside.out);
    for (i, dialled) in ["127.0.0.1:6550", "0.0.0.0:6550", &format!("{VM_IP}:6550"), "[::1]:6550"].iter().enumerate() {
        let send = 10_000 + i * 70_001;
        let r = dial(&topo, Some(&cg), dialled, send);
        assert_eq!((r.got, r.fnv), echo_of(send), "{dialled}: the stand-in's greeting and every byte back: {}", r.out);
        assert_eq!(
            r.peer.parse::<std::net::SocketAddr>().ok(),
            dialled.parse::<std::net::SocketAddr>().ok(),
            "{dialled}: getpeername gives back what was dialled: {}",
            r.out
        );
    }
    // the local flows are counted with the port's
    let l4 = agent.stats().l4.expect("/stats has an l4 part");
    let json = serde_json::to_string(&l4).unwrap();
    assert!(json.contains("6550"), "{json}");
    drop(agent);
    let ran = detach(&topo, &pins, &cg);
    assert_eq!(ran.code, Some(0), "detach: {}{}", ran.stdout, ran.stderr);
    assert!(pins.names().is_empty(), "no pin left: {:?}", pins.names());
    let after = dial(&topo, Some(&cg), "127.0.0.1:6550", 0);
    assert!(after.out.contains("error="), "no hook left on the cgroup after detach: {}", after.out);
    assert_no_links_of_ours();
}

#[test]
fn l4_connections_keep_every_byte_across_a_killed_agent_and_its_successor() {
    let test = "l4_connections_keep_every_byte_across_a_killed_agent_and_its_successor";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("l4p-restart", &openchoreo_pods());
    let _standin = Server::start(&topo.node_ns(), &format!("{NODE_IP}:6443"), STANDIN);
    let pins = PinDir::new("l4-restart");
    let cg = TestCgroup::create(&format!("ingress-test-l4restart-{}", std::process::id())).expect("test cgroup");
    let mut first = start(&topo, &pins, &cg);
    let names = pins.names();
    assert!(names.iter().any(|n| n.contains("tc-l4_nic")), "the NIC's tc link pinned: {names:?}");
    assert!(names.iter().any(|n| n == "L4_CT"), "conntrack pinned: {names:?}");

    // 6 connections, each sending 1 MiB in 8 KiB pieces 20 ms apart (about 2.6 s) and
    // reading it back, while the agent is killed and another one started
    let client = topo.client_ns();
    let second = std::thread::scope(|s| {
        let flows: Vec<_> = (0..6u64)
            .map(|i| {
                let client = client.clone();
                s.spawn(move || exchange(&client, 6550, 1 << 20, 100 + i, Duration::from_millis(20)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(600));
        first.kill();
        // no agent: the pinned programs and maps carry the flows
        std::thread::sleep(Duration::from_millis(500));
        let second = start(&topo, &pins, &cg);
        for f in flows {
            assert_eq!(f.join().expect("flow intact across the restart"), STANDIN);
        }
        second
    });
    let log = second.log_text();
    assert!(log.contains("no gap") || log.contains("earlier agent"), "the new agent adopted the pinned links: {log}");
    // a new connection through the adopted path
    assert_eq!(exchange(&client, 6550, 64 << 10, 7, Duration::ZERO), STANDIN);
    drop(second);
    let ran = detach(&topo, &pins, &cg);
    assert_eq!(ran.code, Some(0), "detach: {}{}", ran.stdout, ran.stderr);
    assert!(pins.names().is_empty(), "no pin left: {:?}", pins.names());
    let filters = tc_filters(&topo.vm_ns(), VM_NIC);
    assert!(!filters.contains("l4_nic"), "no legacy tc filter of ours on the NIC: {filters}");
    assert_no_links_of_ours();
}

/// No BPF link of the L4 or local-client programs is left on the machine (the tier
/// runs one test at a time, so any would be this test's).
fn assert_no_links_of_ours() {
    use ingress_common::maps::{ATTACHED_PROGRAMS, XDP_PROGRAM};
    // every program of ours but XDP (the topology's NIC goes with the test's namespaces)
    let ours: Vec<&str> = ATTACHED_PROGRAMS.iter().copied().filter(|p| *p != XDP_PROGRAM).collect();
    let left = ingress::datapath::bpf_links::links_of(&ours).expect("list links");
    let left: Vec<String> = left.into_iter().map(|(_, facts, name)| format!("{name} ({facts:?})")).collect();
    assert!(left.is_empty(), "links of ours left after detach: {left:?}");
}
