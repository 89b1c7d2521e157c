//! `ingress check`: the preflight. [`gather`] reads the facts (the I/O edge, changing
//! nothing), [`report`] turns them into rows (pure: ok / fallback / blocker, each with
//! what to do), printed as a table or JSON; a blocker makes the command fail.

use std::path::Path;

pub mod config;
pub mod gather;
// delayed binding: the kernel pieces --bind-in-kernel needs
pub mod kernel_bind;
pub mod report;

pub use report::{Report, Row, Status};

/// Where the agent pins its maps and links by default (`--pin-path`).
pub use crate::datapath::pinning::DEFAULT_PIN_PATH;

/// Gathers the facts in this network namespace and builds the report.
pub async fn check(interface: Option<&str>, pin_path: &Path) -> Report {
    report::build(&gather::gather(interface, pin_path).await)
}

#[cfg(test)]
mod flag_tests {
    use clap::Parser;

    use crate::cli::{Cli, Cmd};

    fn parse(args: &[&str]) -> Result<Cmd, String> {
        Cli::try_parse_from(args).map(|c| c.cmd).map_err(|e| e.to_string())
    }

    #[test]
    fn check_takes_interface_json_and_pin_path() {
        let Ok(Cmd::Check { interface, pin_path, json, .. }) = parse(&["ingress", "check"]) else { panic!() };
        assert_eq!((interface, json), (None, false));
        assert_eq!(pin_path, std::path::Path::new(super::DEFAULT_PIN_PATH));
        let Ok(Cmd::Check { interface, json, .. }) = parse(&["ingress", "check", "--interface", "eth0", "--json"])
        else {
            panic!()
        };
        assert_eq!((interface.as_deref(), json), (Some("eth0"), true));
    }

    #[test]
    fn run_takes_repeated_pod_routes_and_a_cgroup_and_rejects_bad_ones() {
        let base = ["ingress", "run", "--listen", "127.0.0.1:8080=ns/gw", "--manifests", "/m"];
        let args: Vec<&str> = base
            .iter()
            .copied()
            .chain(["--pod-route", "10.42.0.0/24=172.18.0.2", "--pod-route", "10.42.1.0/24=172.18.0.3"])
            .chain(["--cgroup", "/sys/fs/cgroup/unified"])
            .collect();
        let Ok(Cmd::Run { pod_route, cgroup, .. }) = parse(&args) else { panic!() };
        let routes: Vec<String> = pod_route.iter().map(ToString::to_string).collect();
        assert_eq!(routes, ["10.42.0.0/24 via 172.18.0.2", "10.42.1.0/24 via 172.18.0.3"]);
        assert_eq!(cgroup.as_deref(), Some(std::path::Path::new("/sys/fs/cgroup/unified")));

        let bad: Vec<&str> = base.iter().copied().chain(["--pod-route", "10.42.0.0/24"]).collect();
        let e = parse(&bad).err().expect("rejected");
        assert!(e.contains("invalid --pod-route `10.42.0.0/24`: missing `=`"), "{e}");
    }

    #[test]
    fn detach_takes_pin_path_interface_and_cgroup() {
        let Ok(Cmd::Detach { pin_path, interface, cgroup }) =
            parse(&["ingress", "detach", "--pin-path", "/sys/fs/bpf/x", "--interface", "eth0", "--cgroup", "/cg"])
        else {
            panic!()
        };
        assert_eq!(pin_path, std::path::Path::new("/sys/fs/bpf/x"));
        assert_eq!(interface.as_deref(), Some("eth0"));
        assert_eq!(cgroup.as_deref(), Some(std::path::Path::new("/cg")));
    }
}
