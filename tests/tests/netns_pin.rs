//! Network-namespace tier (root): pinned state across agent restarts and `ingress
//! detach`. Agents start with `nsenter --net` so their pins (under a per-test
//! directory in /sys/fs/bpf) outlive them.

use std::time::Duration;

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::client::{Request, send};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::in_ns;
use ingress_tests::pinned::{PinDir, pin_map_by_hand, run_in, tc_filters, xdp_programs};
use ingress_tests::topology::{Topology, VM_IP, VM_NIC};

fn start(topo: &Topology, pins: &PinDir) -> Agent {
    let pin = pins.arg();
    Agent::start_keeping_pins(
        &ingress_bin(),
        &topo.vm_ns(),
        &openchoreo_dir(),
        &openchoreo_listens(VM_IP),
        &["--interface", VM_NIC, "--pin-path", &pin],
    )
}

/// TCP packets to `port` the XDP program counted (the pinned map, read by the agent).
fn xdp_packets(agent: &Agent, port: u16) -> u64 {
    agent.stats().xdp_counters.iter().filter(|c| c.port == port && c.proto == "tcp").map(|c| c.packets).sum()
}

fn request(topo: &Topology) -> u16 {
    let addr = format!("{VM_IP}:8080").parse().unwrap();
    let req = Request::get("api.openchoreovm.localhost:8080", "/");
    in_ns(&topo.client_ns(), move || send(addr, &req, Duration::from_secs(5))).expect("request through the NIC").status
}

/// `n` connection attempts to the VM's 8080 with no agent listening: each SYN passes
/// XDP (and is counted) and is refused by the VM's stack.
fn refused_connects(topo: &Topology, n: usize) {
    in_ns(&topo.client_ns(), || {
        for _ in 0..n {
            let e =
                std::net::TcpStream::connect_timeout(&format!("{VM_IP}:8080").parse().unwrap(), Duration::from_secs(2))
                    .expect_err("nothing listens on 8080 while the agent is down");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        }
    });
}

fn detach(topo: &Topology, pins: &PinDir) -> ingress_tests::pinned::Ran {
    let pin = pins.arg();
    run_in(
        &topo.vm_ns(),
        &ingress_bin(),
        &["detach", "--pin-path", &pin, "--interface", VM_NIC],
        Duration::from_secs(20),
    )
}

#[test]
fn killed_agent_leaves_xdp_and_pins_and_the_next_adopts_them_then_detach_leaves_nothing() {
    let test = "killed_agent_leaves_xdp_and_pins_and_the_next_adopts_them_then_detach_leaves_nothing";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("pin-adopt", &openchoreo_pods());
    let pins = PinDir::new("adopt");
    let mut first = start(&topo, &pins);
    for _ in 0..3 {
        assert_eq!(request(&topo), 200);
    }
    let counted = xdp_packets(&first, 8080);
    assert!(counted >= 9, "three connections counted by XDP: {counted}");
    let names = pins.names();
    assert!(names.contains(&"XDP_STATS".to_string()), "stats map pinned: {names:?}");
    let link = names.iter().find(|n| n.starts_with("link@xdp-")).cloned();
    let link = link.unwrap_or_else(|| panic!("XDP link pinned: {names:?}"));
    assert!(link.ends_with(&format!("@{VM_NIC}")), "{link}");
    let old_programs = xdp_programs(&topo.vm_ns(), VM_NIC);
    assert_eq!(old_programs.len(), 1, "one XDP program on the NIC");

    first.kill();
    // the data path outlives the agent: still attached, still counting into the pinned map
    assert_eq!(xdp_programs(&topo.vm_ns(), VM_NIC), old_programs, "XDP stays attached after SIGKILL");
    assert_eq!(pins.names(), names, "pins survive the agent");
    refused_connects(&topo, 5);

    let second = start(&topo, &pins);
    let log = second.log_text();
    assert!(log.contains("adopting pinned maps"), "{log}");
    assert!(log.contains("replaced the program of the link pinned by an earlier agent"), "{log}");
    let adopted = xdp_packets(&second, 8080);
    // a fresh map would start at 0; the adopted one holds the first agent's counts
    // plus the SYNs counted while no agent ran
    assert!(adopted >= counted + 5, "counters continue: {counted} before the kill, {adopted} after the restart");
    assert_eq!(request(&topo), 200, "the new agent serves");
    assert!(xdp_packets(&second, 8080) > adopted, "and its program counts into the same map");
    let now = xdp_programs(&topo.vm_ns(), VM_NIC);
    assert_eq!(now.len(), 1, "one XDP program, never two: {now:?}");
    assert_ne!(now, old_programs, "the link runs the new agent's program");
    assert_eq!(pins.names(), names, "the same pins, nothing added");
    drop(second);

    // stopping (SIGTERM) leaves it running too; detach removes it all
    assert_eq!(xdp_programs(&topo.vm_ns(), VM_NIC).len(), 1, "a stopped agent leaves XDP attached");
    let ran = detach(&topo, &pins);
    assert_eq!(ran.code, Some(0), "detach: {}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains(&format!("on {VM_NIC} (pin {}/{link})", pins.arg())), "{}", ran.stdout);
    assert!(ran.stdout.contains("map XDP_STATS"), "{}", ran.stdout);
    assert!(ran.stdout.contains(&format!("pin directory {}", pins.arg())), "{}", ran.stdout);
    assert!(!pins.path.exists(), "bpffs directory gone");
    assert!(xdp_programs(&topo.vm_ns(), VM_NIC).is_empty(), "no XDP left on {VM_NIC}");
    let tc = tc_filters(&topo.vm_ns(), VM_NIC);
    assert!(!tc.contains("ingress_"), "no tc filter of ours: {tc}");
    let again = detach(&topo, &pins);
    assert_eq!(again.code, Some(0), "a second detach is no error: {}\n{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("nothing to remove"), "{}", again.stdout);
}

#[test]
fn an_incompatible_pinned_map_makes_the_agent_refuse_with_the_difference() {
    let test = "an_incompatible_pinned_map_makes_the_agent_refuse_with_the_difference";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let object = ingress::datapath::OBJECT.expect("embedded object");
    let expected = ingress::datapath::pins::expected_defs(object).expect("object maps");
    let (_, stats) = expected.iter().find(|(n, _)| *n == "XDP_STATS").expect("XDP_STATS is pinned");
    let topo = Topology::create("pin-bad", &openchoreo_pods());
    let pins = PinDir::new("incompatible");
    std::fs::create_dir_all(&pins.path).expect("pin directory");
    let wrong = stats.value_size + 8;
    let map = pins.path.join("XDP_STATS");
    pin_map_by_hand(&map, "XDP_STATS", stats.map_type, stats.key_size, wrong, stats.max_entries, stats.flags);

    let pin = pins.arg();
    let mut args = vec!["run", "--manifests"];
    let dir = openchoreo_dir().display().to_string();
    args.push(&dir);
    let listens = openchoreo_listens(VM_IP);
    for l in &listens {
        args.extend(["--listen", l.as_str()]);
    }
    args.extend(["--interface", VM_NIC, "--pin-path", &pin, "--admin", "127.0.0.1:9911"]);
    let ran = run_in(&topo.vm_ns(), &ingress_bin(), &args, Duration::from_secs(20));
    assert_ne!(ran.code, Some(0), "the agent refuses to start: {}", ran.stderr);
    assert!(ran.code.is_some(), "it exits at once instead of serving: {}", ran.stderr);
    let want = format!("map XDP_STATS: value size is {wrong} bytes pinned, {} bytes expected", stats.value_size);
    assert!(ran.stderr.contains(&want), "names the map, field and both values:\n{}", ran.stderr);
    assert!(ran.stderr.contains(&format!("`ingress detach --pin-path {pin}`")), "says what to run:\n{}", ran.stderr);
    assert!(xdp_programs(&topo.vm_ns(), VM_NIC).is_empty(), "nothing attached");
    let info = aya::maps::MapInfo::from_pin(&map).expect("the pin is left as it was");
    assert_eq!(info.value_size(), wrong, "the pinned map is not replaced");
    assert_eq!(pins.names(), ["XDP_STATS"], "nothing else pinned");

    // what the message says to run clears the way, and the agent then starts
    let ran = detach(&topo, &pins);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("map XDP_STATS"), "{}", ran.stdout);
    let agent = start(&topo, &pins);
    assert_eq!(request(&topo), 200);
    assert!(xdp_packets(&agent, 8080) >= 3, "a fresh map counts");
    drop(agent);
    let ran = detach(&topo, &pins);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(xdp_programs(&topo.vm_ns(), VM_NIC).is_empty());
}

#[test]
fn detach_with_interface_removes_a_link_no_pin_holds_while_its_agent_runs() {
    let test = "detach_with_interface_removes_a_link_no_pin_holds_while_its_agent_runs";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("pin-held", &openchoreo_pods());
    let pins = PinDir::new("held");
    let mut first = start(&topo, &pins);
    first.kill();
    // the adopting agent holds the link open (the first one only pinned it)
    let second = start(&topo, &pins);
    let link = pins.names().into_iter().find(|n| n.starts_with("link@xdp-")).expect("XDP link pinned");
    std::fs::remove_file(pins.path.join(&link)).expect("lose the link's pin");
    assert_eq!(xdp_programs(&topo.vm_ns(), VM_NIC).len(), 1, "held by the running agent, still attached");

    let ran = detach(&topo, &pins);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains(&format!("of program ingress_xdp on {VM_NIC}")), "the unpinned link: {}", ran.stdout);
    assert!(ran.stdout.contains("map XDP_STATS"), "{}", ran.stdout);
    assert!(xdp_programs(&topo.vm_ns(), VM_NIC).is_empty(), "detached although the agent still holds it");
    assert!(!pins.path.exists());
    let again = detach(&topo, &pins);
    assert!(again.stdout.contains("nothing to remove"), "{}", again.stdout);
    drop(second);
}
