//! `cargo xtask`: set up the toolchain, build the eBPF object and the agent, run every
//! test tier, run the demo. Errors are `anyhow` with context: this is the top level.

mod build;
mod install;
mod setup;
mod test;
// the test VM (vagrant/) and the scripts tier's checks
mod scripts;
mod vm;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, set up, test and demo the eBPF host ingress")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build and the tests need (Debian, as root); elsewhere,
    /// print exactly what to install.
    Setup,
    /// Build the eBPF object, then the agent (`ingress`) that embeds it.
    Build {
        /// Build the agent with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, run every test tier this machine supports, print a summary.
    Test {
        /// Do not install missing packages (only report them).
        #[arg(long)]
        no_setup: bool,
    },
    /// Benchmarks: the routing engine (1,000 HTTPRoutes x 10 rules: lookup median,
    /// recompile time, table memory; non-zero exit on a missed target), then as root
    /// the network benchmark in the netns topology (writes docs/bench/latest.md).
    Bench {
        /// Short runs, one round (development).
        #[arg(long)]
        quick: bool,
    },
    /// Build everything, create the k3d-shaped topology, load the OpenChoreo v0.12
    /// fixtures, send requests through the agent with XDP on the VM NIC, tear down.
    Demo {
        /// Run the agent without eBPF (plain user-space proxy).
        #[arg(long)]
        userspace: bool,
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Install the release agent as the systemd service ebpf-ingress.service (root):
    /// PREFIX/bin/ingress, /etc/ebpf-ingress/config.toml (never over an existing one),
    /// the unit; then enable and start it.
    Install {
        /// The config to install (default: deploy/config.toml, OpenChoreo's single VM).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = install::DEFAULT_PREFIX)]
        prefix: PathBuf,
        /// Write every file under DIR instead of / (an image or container root); the
        /// unit is then only enabled offline (`systemctl --root`), not started.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Install target/release/ingress as it is (built earlier).
        #[arg(long)]
        no_build: bool,
        /// Run no systemctl: do not enable or start the service.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop and disable the service, `ingress detach` its pinned state, remove every
    /// file install wrote.
    Uninstall {
        #[arg(long, value_name = "DIR", default_value = install::DEFAULT_PREFIX)]
        prefix: PathBuf,
        /// The --root the install used.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Build the eBPF object and the agent, run the agent in the foreground with the
    /// config (default: /etc/ebpf-ingress/config.toml if installed, else
    /// deploy/config.toml); Ctrl-C detaches everything it attached.
    Load {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
        /// More flags for `ingress run` (after `--`); they override the config's keys.
        #[arg(last = true)]
        run_args: Vec<String>,
    },
    /// The test VM of vagrant/ (Debian 12, k3d, OpenChoreo, this project installed,
    /// the k3d takeover): `up`, `test` (the smoke test again), `down`. Needs vagrant.
    Vm {
        #[command(subcommand)]
        cmd: vm::VmCmd,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::setup(true).map(|_| ()),
        Cmd::Build { release } => build::build_all(release).map(|_| ()),
        Cmd::Test { no_setup } => test::run(!no_setup),
        Cmd::Bench { quick } => {
            // A missed routing target is reported, and fails the command at the end, but
            // does not keep the network benchmark from running.
            let routing = setup::run(std::process::Command::new("cargo").current_dir(workspace_root()).args([
                "bench",
                "-p",
                "ingress-user",
                "--bench",
                "routing",
            ]));
            if !is_root() {
                println!("xtask bench: the network benchmark needs root (namespaces, XDP); skipped");
                return routing;
            }
            setup::setup(true)?;
            let tools = setup::bench_tools()?;
            let out = build::build_all(true)?;
            // the XDP guard's cost per packet (BPF_PROG_TEST_RUN), one report line
            build::build_tests_bin("guard_cost", true)?;
            setup::run(&mut std::process::Command::new(workspace_root().join("target/release/guard_cost")))?;
            build::build_tests_bin("netbench", true)?;
            let bench = workspace_root().join("target/release/netbench");
            let docs = workspace_root().join("docs/bench");
            let mut cmd = std::process::Command::new(bench);
            cmd.arg("--ingress")
                .arg(&out.agent)
                .arg("--envoy")
                .arg(&tools.envoy)
                .arg("--out")
                .arg(docs.join("latest.md"));
            if quick {
                cmd.arg("--quick");
            }
            setup::run(&mut cmd)?;
            // the chart, from the results the run wrote beside the table
            setup::run(
                std::process::Command::new(&tools.python)
                    .arg(workspace_root().join("xtask/scripts/bench_chart.py"))
                    .arg(docs.join("latest.json"))
                    .arg(docs.join("latest.png")),
            )?;
            routing.map_err(|e| e.context("the routing benchmark missed a target (see its line above)"))
        }
        Cmd::Install { config, prefix, root, no_build, no_start } => {
            install::install(&install::InstallArgs { config, prefix, root, no_build, no_start })
        }
        Cmd::Uninstall { prefix, root } => install::uninstall(&install::UninstallArgs { prefix, root }),
        Cmd::Load { config, release, run_args } => install::load(config, release, &run_args),
        Cmd::Demo { userspace, release } => {
            setup::setup(true)?;
            let out = build::build_all(release)?;
            build::build_tests_bin("demo", release)?;
            let demo = workspace_root().join("target").join(if release { "release" } else { "debug" }).join("demo");
            let mut cmd = std::process::Command::new(demo);
            cmd.arg("--ingress").arg(&out.agent);
            if userspace {
                cmd.arg("--userspace");
            }
            let status = cmd.status()?;
            anyhow::ensure!(status.success(), "demo failed ({status})");
            Ok(())
        }
        Cmd::Vm { cmd } => vm::run(cmd),
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}
