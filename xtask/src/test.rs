//! `cargo xtask test`: set up, build, run every test tier this machine supports, print
//! a summary with counts. Non-zero exit on any failure. Under `CI=true` a tier that
//! cannot run (not root) is a failure, not a skip.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::build::{self, host_cargo};
use crate::{is_root, setup};

#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

enum Outcome {
    Ran { counts: Counts, ok: bool, secs: f64 },
    Skipped(String),
}

struct Tier {
    name: &'static str,
    what: &'static str,
    needs_root: bool,
    /// One or more cargo invocations; their counts add up.
    cargo_args: &'static [&'static [&'static str]],
}

const TIERS: &[Tier] = &[
    Tier {
        name: "unit",
        what: "routing, manifests, sources, proxy on loopback, CLI, xtask (no privileges)",
        needs_root: false,
        cargo_args: &[
            &["test", "--workspace", "--exclude", "ingress-ebpf", "--exclude", "ingress-tests"],
            // the test crate's own helpers (packet builder, HTTP client), and the proxy
            // end to end on 127.0.0.1 (agent binary, loopback backends; no privileges)
            // (its `in_topology_*` tests need root and run in the netns tier)
            &["test", "-p", "ingress-tests", "--lib", "--bins", "--test", "proxy", "--", "--skip", "in_topology"],
        ],
    },
    Tier {
        name: "packet",
        what: "XDP program on built packets via BPF_PROG_TEST_RUN",
        needs_root: true,
        cargo_args: &[&["test", "-p", "ingress-tests", "--test", "packet", "--", "--test-threads=1"]],
    },
    Tier {
        name: "kube",
        what: "real kube-apiserver + etcd on loopback: reflectors, relist, status",
        needs_root: true,
        cargo_args: &[&["test", "-p", "ingress-tests", "--test", "kube", "--", "--test-threads=1"]],
    },
    Tier {
        name: "netns",
        what: "k3d-shaped namespaces: client -> XDP NIC -> agent -> pods",
        needs_root: true,
        cargo_args: &[
            &["test", "-p", "ingress-tests", "--test", "netns", "--", "--test-threads=1"],
            // joined connections on links that lose, reorder and duplicate packets
            &["test", "-p", "ingress-tests", "--test", "impaired", "--", "--test-threads=1"],
            // the proxy's forwarding scenarios again, in the topology
            &["test", "-p", "ingress-tests", "--test", "proxy", "in_topology", "--", "--test-threads=1"],
        ],
    },
];

pub fn run(install: bool) -> Result<()> {
    let started = Instant::now();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if install {
        setup::setup(true)?;
    }
    let built = build::build_all(false)?;
    let mut results = Vec::new();
    for tier in TIERS {
        let kube = if tier.name == "kube" && is_root() { Some(kube_apiserver()) } else { None };
        let outcome = if tier.needs_root && !is_root() {
            Outcome::Skipped("needs root (CAP_BPF, CAP_NET_ADMIN, ip netns; apt for the API server)".into())
        } else if let Some(Err(e)) = &kube {
            Outcome::Skipped(format!("no kube-apiserver: {e:#}"))
        } else {
            let mut total = Counts::default();
            let (mut ok, mut secs) = (true, 0.0);
            for args in tier.cargo_args {
                let mut cmd = host_cargo(&built.ebpf_object);
                cmd.args(*args).env("INGRESS_BIN", &built.agent);
                if let Some(Ok(path)) = &kube {
                    cmd.env("KUBE_APISERVER", path);
                }
                let (c, o, s) = run_tier(tier.name, cmd)?;
                total.passed += c.passed;
                total.failed += c.failed;
                total.ignored += c.ignored;
                ok &= o;
                secs += s;
            }
            Outcome::Ran { counts: total, ok, secs }
        };
        results.push((tier, outcome));
    }
    println!("\n== cargo xtask test: summary ==");
    let mut failed = false;
    let (mut p, mut f, mut i) = (0, 0, 0);
    for (tier, outcome) in &results {
        match outcome {
            Outcome::Ran { counts, ok, secs } => {
                println!(
                    "{:<8} {:>4} passed {:>3} failed {:>3} ignored  {:>6.1}s  {}{}",
                    tier.name,
                    counts.passed,
                    counts.failed,
                    counts.ignored,
                    secs,
                    tier.what,
                    if *ok { "" } else { "  << FAILED" }
                );
                p += counts.passed;
                f += counts.failed;
                i += counts.ignored;
                failed |= !ok;
            }
            Outcome::Skipped(why) => {
                println!("{:<8} SKIPPED: {why}  ({})", tier.name, tier.what);
                failed |= ci;
            }
        }
    }
    println!("total    {p:>4} passed {f:>3} failed {i:>3} ignored  in {:.0}s", started.elapsed().as_secs_f64());
    if failed {
        bail!("some tests failed{}", if ci { " or could not run under CI" } else { "" });
    }
    Ok(())
}

/// The cached kube-apiserver binary, built on first use (Debian, root; minutes).
fn kube_apiserver() -> Result<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/root".into());
    let cache = std::env::var_os("XDG_CACHE_HOME").map(std::path::PathBuf::from).unwrap_or_else(|| home.join(".cache"));
    let path = cache.join("ingress/kube-apiserver-v1.20.2");
    if !path.is_file() {
        println!(
            "xtask test: building kube-apiserver v1.20.2 from Debian's source package into {} (several minutes, once per machine)",
            path.display()
        );
    }
    // Also installs etcd; quick when everything is there.
    let script = crate::workspace_root().join("xtask/scripts/build-kube-apiserver.sh");
    crate::setup::run(Command::new("bash").arg(script).arg(&path)).context("building kube-apiserver")?;
    Ok(path)
}

/// Runs one cargo test invocation, streaming its output and adding up the
/// `test result:` lines of every test binary it runs.
fn run_tier(name: &str, mut cmd: Command) -> Result<(Counts, bool, f64)> {
    println!("\n== tier {name}: {cmd:?}");
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("starting tier {name}"))?;
    let mut counts = Counts::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(c) = parse_result_line(&line) {
            counts.passed += c.passed;
            counts.failed += c.failed;
            counts.ignored += c.ignored;
        }
    }
    let status = child.wait()?;
    let ok = status.success() && counts.failed == 0;
    Ok((counts, ok, started.elapsed().as_secs_f64()))
}

/// Parses libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut c = Counts::default();
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let n: u64 = match n.parse() {
            Ok(n) => n,
            Err(_) => continue,
        };
        match label {
            "passed" => c.passed = n,
            "failed" => c.failed = n,
            "ignored" => c.ignored = n,
            _ => {}
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summary() {
        let c = parse_result_line(
            "test result: FAILED. 12 passed; 2 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        )
        .unwrap();
        assert_eq!((c.passed, c.failed, c.ignored), (12, 2, 3));
        assert!(parse_result_line("running 3 tests").is_none());
    }
}
