//! `cargo xtask vm up|test|down`: the test VM of `vagrant/` (Debian 12, k3d,
//! OpenChoreo's single-cluster quick start, this project installed and the k3d
//! takeover applied), driven through `vagrant` in that directory.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};
use clap::{Subcommand, ValueEnum};

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum VmCmd {
    /// Create and provision the VM (`vagrant up`): Docker, k3d, kubectl, OpenChoreo,
    /// this project built and installed, the k3d takeover, then the smoke test.
    Up {
        /// The Vagrant provider (default: libvirt when vagrant-libvirt is installed,
        /// else VirtualBox; Vagrant's own choice when unset).
        #[arg(long, value_enum)]
        provider: Option<Provider>,
    },
    /// Run the smoke test in the VM again: every OpenChoreo hostname through 8080/9080
    /// with status and backend, kubectl through 6550, `ingress stats`.
    Test,
    /// Destroy the VM (`vagrant destroy -f`).
    Down,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Provider {
    Libvirt,
    Virtualbox,
}

/// The `vagrant` arguments for `cmd` (pure, for the tests).
pub fn vagrant_args(cmd: &VmCmd) -> Vec<String> {
    let v: Vec<&str> = match cmd {
        VmCmd::Up { provider: None } => vec!["up"],
        VmCmd::Up { provider: Some(Provider::Libvirt) } => vec!["up", "--provider", "libvirt"],
        VmCmd::Up { provider: Some(Provider::Virtualbox) } => vec!["up", "--provider", "virtualbox"],
        // the smoke provisioner (last of `vagrant up`, `run: "always"`) on its own
        VmCmd::Test => vec!["provision", "--provision-with", "smoke"],
        VmCmd::Down => vec!["destroy", "--force"],
    };
    v.into_iter().map(String::from).collect()
}

/// What to tell a user without vagrant.
pub const NO_VAGRANT: &str = "vagrant is not installed (or not on PATH). Install it and a provider:\n\
    \x20 Debian 12: apt-get install vagrant vagrant-libvirt libvirt-daemon-system   (or VirtualBox from virtualbox.org)\n\
    \x20 elsewhere: https://developer.hashicorp.com/vagrant/install\n\
    then run `cargo xtask vm up` again. (CI machines have no hypervisor: CI checks the VM's scripts\n\
    with `cargo xtask test`'s scripts tier instead.)";

pub fn run(cmd: VmCmd) -> Result<()> {
    let Some(vagrant) = crate::setup::which("vagrant") else { bail!("{NO_VAGRANT}") };
    let dir = crate::workspace_root().join("vagrant");
    run_vagrant(&vagrant, &dir, &vagrant_args(&cmd))
}

fn run_vagrant(vagrant: &Path, dir: &Path, args: &[String]) -> Result<()> {
    println!("xtask vm: vagrant {} (in {})", args.join(" "), dir.display());
    let status = Command::new(vagrant).args(args).current_dir(dir).status()?;
    if !status.success() {
        bail!("vagrant {} failed ({status}); `vagrant status` in {} shows the machine", args.join(" "), dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_maps_to_its_vagrant_call() {
        assert_eq!(vagrant_args(&VmCmd::Up { provider: None }), ["up"]);
        assert_eq!(vagrant_args(&VmCmd::Up { provider: Some(Provider::Libvirt) }), ["up", "--provider", "libvirt"]);
        assert_eq!(
            vagrant_args(&VmCmd::Up { provider: Some(Provider::Virtualbox) }),
            ["up", "--provider", "virtualbox"]
        );
        assert_eq!(vagrant_args(&VmCmd::Test), ["provision", "--provision-with", "smoke"]);
        assert_eq!(vagrant_args(&VmCmd::Down), ["destroy", "--force"]);
    }

    #[test]
    fn the_smoke_provisioner_the_test_command_names_exists() {
        let vf = std::fs::read_to_string(crate::workspace_root().join("vagrant/Vagrantfile")).unwrap();
        assert!(vf.contains("provision \"smoke\""), "vagrant/Vagrantfile has no provisioner named smoke");
    }
}
