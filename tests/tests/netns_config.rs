//! Network-namespace tier (root): the config file with the eBPF dataplane, in the
//! k3d-shaped topology (namespaces `hcf-*`). The guard's deny list changed by SIGHUP
//! drops the client's SYNs at the NIC, and taken out again lets them through; SIGINT
//! with `detach_on_exit` leaves no XDP program and no pin.

use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::client::{Request, send};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::in_ns;
use ingress_tests::pinned::{PinDir, xdp_programs};
use ingress_tests::topology::{CLIENT_IP, Topology, VM_IP, VM_NIC};

/// One request from the client namespace to the VM's 8080: Some(status), None when
/// the connection is not answered within a second (SYNs dropped).
fn request(topo: &Topology) -> Option<u16> {
    let addr = format!("{VM_IP}:8080").parse().unwrap();
    let req = Request::get("api.openchoreovm.localhost:8080", "/");
    in_ns(&topo.client_ns(), move || send(addr, &req, Duration::from_secs(1))).ok().map(|r| r.status)
}

/// Waits (bounded) until the agent's log has `n` lines containing `what`.
fn wait_log(agent: &Agent, what: &str, n: usize) {
    let start = Instant::now();
    while agent.log_text().matches(what).count() < n {
        assert!(start.elapsed() < Duration::from_secs(10), "no {n}x `{what}` in the log:\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(agent: &Agent, sig: i32) {
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, sig) }, 0);
}

#[test]
fn guard_reloads_live_and_sigint_with_detach_on_exit_leaves_nothing() {
    let test = "netns_config_guard_reload";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("hcf", &openchoreo_pods());
    let pins = PinDir::new("hcf-config");
    let dir = std::env::temp_dir().join(format!("ingress-netns-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let base = format!("interface = {VM_NIC:?}\npin_path = {:?}\ndetach_on_exit = true\n", pins.arg());
    std::fs::write(&config, &base).unwrap();
    let config_arg = config.display().to_string();
    let mut agent = Agent::start_keeping_pins(
        &ingress_bin(),
        &topo.vm_ns(),
        &openchoreo_dir(),
        &openchoreo_listens(VM_IP),
        &["--config", &config_arg],
    );
    assert_eq!(request(&topo), Some(200), "served through the NIC");
    assert!(!pins.names().is_empty(), "the agent pinned its state");

    std::fs::write(&config, format!("{base}deny = [\"8080={CLIENT_IP}/32\"]\n")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_log(&agent, "config reloaded: guard", 1);
    assert_eq!(request(&topo), None, "the reloaded deny list drops the client at the NIC");

    std::fs::write(&config, &base).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_log(&agent, "config reloaded: guard", 2);
    assert_eq!(request(&topo), Some(200), "the removed rule no longer drops");

    signal(&agent, libc::SIGINT);
    let status = agent.wait_exit(Duration::from_secs(20)).expect("the agent exits on SIGINT");
    let log = agent.log_text();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("detach on exit: removed"), "{log}");
    assert_eq!(pins.names(), Vec::<String>::new(), "no pin left: {log}");
    assert!(!pins.path.exists(), "the pin directory is gone");
    assert!(xdp_programs(&topo.vm_ns(), VM_NIC).is_empty(), "no XDP program left on {VM_NIC}");
    let _ = std::fs::remove_dir_all(&dir);
}
