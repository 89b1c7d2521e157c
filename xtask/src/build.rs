//! `cargo xtask build`: the eBPF object with the toolchain `setup` found, then the
//! agent with the object's path in `INGRESS_EBPF_OBJECT` (embedded by its build script).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::setup::{self, BpfToolchain, run};
use crate::workspace_root;

pub struct Built {
    pub ebpf_object: PathBuf,
    pub agent: PathBuf,
}

/// Builds `ingress-ebpf` for bpfel-unknown-none into `target/ebpf` and returns the object.
pub fn build_ebpf() -> Result<PathBuf> {
    let found = setup::setup(false)?;
    let toolchain = found.toolchain.expect("setup checked the toolchain");
    let linker = found.bpf_linker.expect("setup checked bpf-linker");
    let root = workspace_root();
    let target_dir = root.join("target/ebpf");
    let mut cmd = Command::new("cargo");
    match &toolchain {
        BpfToolchain::Debian { rustc } => {
            // aya-ebpf uses #![feature(asm_experimental_arch)]; Debian's stable rustc
            // accepts it with RUSTC_BOOTSTRAP. Its prebuilt core means no build-std.
            cmd.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
        }
        BpfToolchain::Nightly => {
            cmd.arg("+nightly");
        }
    }
    cmd.current_dir(root.join("ingress-ebpf"))
        .args(["build", "--release", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--config", &format!("target.bpfel-unknown-none.linker={:?}", linker.display().to_string())])
        // the workspace's release LTO is for the agent; bpf-linker links the object
        .args(["--config", "profile.release.lto=false"])
        .env("CARGO_ENCODED_RUSTFLAGS", ["-C", "debuginfo=2", "-C", "link-arg=--btf"].join("\x1f"))
        .env_remove("RUSTUP_TOOLCHAIN");
    if matches!(toolchain, BpfToolchain::Nightly) {
        cmd.args(["-Z", "build-std=core"]);
    }
    run(&mut cmd).context("building the eBPF programs (ingress-ebpf)")?;
    Ok(target_dir.join("bpfel-unknown-none/release/ingress-ebpf"))
}

fn profile_dir(release: bool) -> PathBuf {
    workspace_root().join("target").join(if release { "release" } else { "debug" })
}

/// Cargo command for the host side with the eBPF object's path in the environment.
pub fn host_cargo(ebpf_object: &std::path::Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).env("INGRESS_EBPF_OBJECT", ebpf_object);
    cmd
}

pub fn ebpf_object_path() -> PathBuf {
    workspace_root().join("target/ebpf/bpfel-unknown-none/release/ingress-ebpf")
}

pub fn build_all(release: bool) -> Result<Built> {
    let ebpf_object = build_ebpf()?;
    let mut cmd = host_cargo(&ebpf_object);
    cmd.args(["build", "-p", "ingress-user", "--bin", "ingress"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd).context("building the agent (ingress-user)")?;
    let agent = profile_dir(release).join("ingress");
    println!("xtask build: eBPF object {}\nxtask build: agent {}", ebpf_object.display(), agent.display());
    Ok(Built { ebpf_object, agent })
}

/// Builds one binary of the root-only `ingress-tests` crate (e.g. the demo).
pub fn build_tests_bin(name: &str, release: bool) -> Result<()> {
    let mut cmd = host_cargo(&ebpf_object_path());
    cmd.args(["build", "-p", "ingress-tests", "--bin", name]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd).with_context(|| format!("building {name}"))
}
