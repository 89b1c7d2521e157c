//! Network-namespace tier (root) for `ingress check`, `--pod-route` and the removal of
//! the agent's routes: a namespace with a veth named eth0 and an address, the agent's
//! commands run inside it. Namespaces are named `chk*` and deleted by name.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens};
use ingress_tests::netns::{exists, ip, ip_quiet};

/// `vm` with `eth0` (198.19.0.2/24) whose veth peer is in `peer`; lo up in both.
struct Namespaces {
    vm: String,
    peer: String,
}

impl Namespaces {
    fn create(tag: &str) -> Self {
        let n = Namespaces { vm: format!("chk{tag}-vm"), peer: format!("chk{tag}-peer") };
        n.delete();
        ip(&["netns", "add", &n.vm]);
        ip(&["netns", "add", &n.peer]);
        ip(&["-n", &n.vm, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", &n.peer]);
        ip(&["-n", &n.vm, "addr", "add", "198.19.0.2/24", "dev", "eth0"]);
        ip(&["-n", &n.peer, "addr", "add", "198.19.0.1/24", "dev", "eth1"]);
        ip(&["-n", &n.vm, "addr", "add", "fd00:19::2/64", "dev", "eth0", "nodad"]);
        ip(&["-n", &n.peer, "addr", "add", "fd00:19::1/64", "dev", "eth1", "nodad"]);
        for (ns, dev) in [(&n.vm, "eth0"), (&n.vm, "lo"), (&n.peer, "eth1"), (&n.peer, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        n
    }

    fn delete(&self) {
        for ns in [&self.vm, &self.peer] {
            if exists(ns) {
                ip_quiet(&["netns", "del", ns]);
            }
        }
    }

    /// `ip route show` (IPv4 and IPv6) of the vm namespace's main table, one route per line.
    fn routes(&self) -> Vec<String> {
        let mut all = Vec::new();
        for family in ["-4", "-6"] {
            let out =
                Command::new("ip").args([family, "-n", &self.vm, "route", "show"]).output().expect("ip route show");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            all.extend(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()));
        }
        all
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Runs `ingress ARGS` in network namespace `ns` only (setns in the child; unlike `ip
/// netns exec` the mounts stay the host's, so bpffs and cgroup2 are seen as they are).
fn ingress_in(ns: &str, args: &[&str]) -> Output {
    let nsfile = File::open(format!("/run/netns/{ns}")).expect("open the namespace");
    let fd = nsfile.as_raw_fd();
    let mut cmd = Command::new(ingress_bin());
    cmd.args(args);
    // SAFETY: setns is async-signal-safe; the fd stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run ingress");
    drop(nsfile);
    out
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`ingress check --json` printed no JSON ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn row<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {report:#}"))
}

#[test]
fn check_in_a_namespace_reports_the_veth_nic_and_fails_on_a_missing_interface() {
    let test = "check_in_a_namespace_reports_the_veth_nic_and_fails_on_a_missing_interface";
    if !ingress_tests::require_root(test) {
        return;
    }
    let ns = Namespaces::create("c");
    let pins = std::env::temp_dir().join(format!("chk-no-pins-{}", std::process::id()));
    let pins = pins.to_str().unwrap();

    let out = ingress_in(&ns.vm, &["check", "--interface", "eth0", "--json", "--pin-path", pins]);
    let r = report(&out);
    for name in [
        "kernel",
        "btf",
        "bpffs",
        "cgroup2",
        "cap_bpf",
        "cap_net_admin",
        "cap_sys_admin",
        "cap_perfmon",
        "xdp",
        "tc",
        "sockmap",
        "pinned",
    ] {
        let s = row(&r, name)["status"].as_str().unwrap();
        assert!(["ok", "fallback", "blocker"].contains(&s), "{name}: {s}");
    }
    // root on this kernel: every capability is there, and the veth with MTU 1500 takes
    // XDP (generic mode, by choice)
    for cap in ["cap_bpf", "cap_net_admin", "cap_sys_admin", "cap_perfmon"] {
        assert_eq!(row(&r, cap)["status"], "ok", "{cap}: {:#}", row(&r, cap));
    }
    let xdp = row(&r, "xdp");
    assert_eq!(xdp["status"], "ok", "{xdp:#}");
    assert!(xdp["detail"].as_str().unwrap().contains("--interface eth0: veth, MTU 1500"), "{xdp:#}");
    assert_eq!(row(&r, "pinned")["status"], "ok", "nothing under {pins}");
    // the exit status follows the blockers
    let blockers = r["blockers"].as_array().unwrap();
    assert_eq!(out.status.success(), blockers.is_empty(), "exit {:?} with blockers {blockers:?}", out.status);

    // a table without --json, the same verdict
    let table = ingress_in(&ns.vm, &["check", "--interface", "eth0", "--pin-path", pins]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("xdp") && l.contains(" ok ")), "{text}");
    assert_eq!(table.status.success(), out.status.success());

    // a veth gets generic XDP by choice, a jumbo MTU too (driver mode would be refused)
    assert!(xdp["detail"].as_str().unwrap().contains("generic (skb) XDP by choice"), "{xdp:#}");
    ip(&["-n", &ns.vm, "link", "set", "eth0", "mtu", "9000"]);
    let r = report(&ingress_in(&ns.vm, &["check", "--interface", "eth0", "--json", "--pin-path", pins]));
    assert_eq!(row(&r, "xdp")["status"], "ok", "{:#}", row(&r, "xdp"));
    assert!(row(&r, "xdp")["detail"].as_str().unwrap().contains("MTU 9000"), "{:#}", row(&r, "xdp"));

    // a missing interface is a blocker and the command fails
    let out = ingress_in(&ns.vm, &["check", "--interface", "chknosuch0", "--json", "--pin-path", pins]);
    let r = report(&out);
    let xdp = row(&r, "xdp");
    assert_eq!(xdp["status"], "blocker", "{xdp:#}");
    assert!(xdp["detail"].as_str().unwrap().contains("no such interface"), "{xdp:#}");
    assert!(r["blockers"].as_array().unwrap().iter().any(|b| b == "xdp"));
    assert!(!out.status.success(), "a blocker gives a non-zero exit");
    assert!(String::from_utf8_lossy(&out.stderr).contains("blocker"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn pod_routes_are_installed_with_our_protocol_and_only_ours_are_removed() {
    let test = "pod_routes_are_installed_with_our_protocol_and_only_ours_are_removed";
    if !ingress_tests::require_root(test) {
        return;
    }
    let ns = Namespaces::create("r");
    // someone else's routes: one identical to a wanted one, one the agent never wants
    ip(&["-n", &ns.vm, "route", "add", "10.201.1.0/24", "via", "198.19.0.1"]);
    ip(&["-n", &ns.vm, "route", "add", "10.202.0.0/24", "via", "198.19.0.1", "proto", "static"]);

    let agent = Agent::start(
        &ingress_bin(),
        &ns.vm,
        &openchoreo_dir(),
        &openchoreo_listens("127.0.0.1"),
        &[
            "--dataplane",
            "userspace",
            "--pod-route",
            "10.201.0.0/24=198.19.0.3",
            "--pod-route",
            "10.201.1.0/24=198.19.0.1",
            "--pod-route",
            "fd00:201::/64=fd00:19::1",
        ],
    );
    let routes = ns.routes();
    assert!(
        routes.iter().any(|r| r.starts_with("10.201.0.0/24 via 198.19.0.3") && r.contains("proto 207")),
        "{routes:?}"
    );
    let theirs = routes.iter().find(|r| r.starts_with("10.201.1.0/24")).expect("the identical route stays");
    assert!(!theirs.contains("proto 207"), "the pre-existing identical route is not taken over: {theirs}");
    assert!(
        routes.iter().any(|r| r.starts_with("fd00:201::/64 via fd00:19::1") && r.contains("proto 207")),
        "{routes:?}"
    );
    let log = agent.stop();
    assert!(log.contains("host route installed"), "{log}");
    assert!(log.contains("exists already (not ours)"), "{log}");

    // routes outlive the agent (the pinned data path keeps using them)
    let routes = ns.routes();
    assert!(routes.iter().any(|r| r.starts_with("10.201.0.0/24") && r.contains("proto 207")), "{routes:?}");

    // detach removes ours and nothing else
    let out = ingress_in(&ns.vm, &["detach", "--pin-path", "/nonexistent/chk-pins"]);
    assert!(out.status.success(), "detach: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("removed route 10.201.0.0/24 via 198.19.0.3 proto 207"), "{said}");
    assert!(said.contains("removed route fd00:201::/64 via fd00:19::1 proto 207"), "{said}");
    assert_eq!(said.lines().count(), 2, "only ours: {said}");
    let routes = ns.routes();
    assert!(!routes.iter().any(|r| r.contains("proto 207")), "none of ours left: {routes:?}");
    assert!(routes.iter().any(|r| r.starts_with("10.201.1.0/24 via 198.19.0.1")), "{routes:?}");
    assert!(
        routes.iter().any(|r| r.starts_with("10.202.0.0/24 via 198.19.0.1") && r.contains("proto static")),
        "{routes:?}"
    );
    assert!(routes.iter().any(|r| r.starts_with("198.19.0.0/24 dev eth0 proto kernel")), "{routes:?}");
    // a second detach finds nothing of ours (the same pin path: the host's default one
    // is not this test's to look at)
    let out = ingress_in(&ns.vm, &["detach", "--pin-path", "/nonexistent/chk-pins"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.starts_with("nothing to remove"), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
}

#[test]
fn a_pod_route_that_cannot_be_installed_stops_the_start_with_its_name() {
    let test = "a_pod_route_that_cannot_be_installed_stops_the_start_with_its_name";
    if !ingress_tests::require_root(test) {
        return;
    }
    let ns = Namespaces::create("e");
    // 203.0.113.9 is on no connected network of the namespace
    let listens = openchoreo_listens("127.0.0.1");
    let mut args = vec!["run".to_string()];
    for l in &listens {
        args.extend(["--listen".to_string(), l.clone()]);
    }
    args.extend([
        "--manifests".into(),
        openchoreo_dir().display().to_string(),
        "--dataplane".into(),
        "userspace".into(),
    ]);
    args.extend(["--pod-route".into(), "10.203.0.0/24=203.0.113.9".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ingress_in(&ns.vm, &args);
    assert!(!out.status.success(), "the agent must not start without its route");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot add route 10.203.0.0/24 via 203.0.113.9"), "{err}");
    assert!(err.contains("directly connected network"), "{err}");
    assert!(!ns.routes().iter().any(|r| r.contains("10.203.0.0")), "nothing half-installed");
}
