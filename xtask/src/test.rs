//! `cargo xtask test`: set up, build, run every test tier this machine supports, print
//! a summary with counts. Non-zero exit on any failure, and on a run that proves
//! less than it claims: an invocation or tier in which no test ran (a renamed test
//! program or filter), a test binary whose every test was filtered away, and under
//! `CI=true` a tier that could not run or a test that skipped itself.
//!
//! Tests that skip themselves (no root, no eBPF object, no API server) still pass in
//! libtest's eyes; they append a `SKIPPED: ` line (`ingress_tests::skip`) to the file
//! named by `INGRESS_TEST_SKIP_LOG`, which the runner reads after each invocation
//! and counts as skipped, not passed. A file, not stdout: libtest captures a passing
//! test's output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::build::{self, host_cargo};
use crate::{is_root, setup};

/// The environment variable and line prefix of `ingress_tests::skip` (tests/src/lib.rs).
const SKIP_LOG_ENV: &str = "INGRESS_TEST_SKIP_LOG";
const SKIP_MARKER: &str = "SKIPPED: ";

#[derive(Default, Debug, Clone, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Tests that skipped themselves (counted by libtest as passed; moved here).
    skipped: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
        self.skipped += o.skipped;
    }
    fn ran(&self) -> u64 {
        self.passed + self.failed + self.skipped
    }
}

#[derive(Debug)]
enum Outcome {
    /// `ok`: every invocation exited 0. `problems`: what else made it fail.
    Ran {
        counts: Counts,
        ok: bool,
        problems: Vec<String>,
        secs: f64,
    },
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
            // the test crate's own helpers (packet builder, HTTP client, bench verdicts),
            // and the proxy end to end on 127.0.0.1 (agent binary, loopback backends; no
            // privileges), the forwarding scenarios included
            &["test", "-p", "ingress-tests", "--lib", "--bins", "--test", "proxy", "--test", "scenarios_loopback"],
            // hostile requests (RFC 9110/9112 refusals, path normalization) on 127.0.0.1
            &["test", "-p", "ingress-tests", "--test", "hostile"],
            // pod answers sanitized, the per-source cap's eviction, backpressure (loopback)
            &["test", "-p", "ingress-tests", "--test", "framing"],
            // GRPCRoute through the agent: routing by service/method, gRPC statuses (loopback)
            &["test", "-p", "ingress-tests", "--test", "grpc"],
            // the config file: --config, SIGHUP reloads, a bad file kept out, `ingress check --config`
            &["test", "-p", "ingress-tests", "--test", "config_file"],
            // TLS passthrough by SNI to rustls pods on 127.0.0.1 (TLSRoute)
            &["test", "-p", "ingress-tests", "--test", "passthrough"],
            // HTTP/2: h2c clients and pods, trailers, gRPC, rapid-reset and CONTINUATION floods
            &["test", "-p", "ingress-tests", "--test", "h2"],
            // HTTPS listeners on 127.0.0.1: TLS 1.2/1.3, SNI certificates, resumption, reload
            &["test", "-p", "ingress-tests", "--test", "tls"],
            // Gateway API retries (connection errors, backendRequest timeouts), a backendRef's redirect
            &["test", "-p", "ingress-tests", "--test", "retry"],
            // the L7 worker set (--workers): every worker accepts, the per-source cap over workers, reload
            &["test", "-p", "ingress-tests", "--test", "workers"],
        ],
    },
    Tier {
        name: "packet",
        what: "XDP program on built packets via BPF_PROG_TEST_RUN",
        needs_root: true,
        cargo_args: &[
            &["test", "-p", "ingress-tests", "--test", "packet", "--", "--test-threads=1"],
            // the L4 tc programs: DNAT, reverse NAT, conntrack, 100,000 fuzzed packets each
            &["test", "-p", "ingress-tests", "--test", "packet_l4", "--", "--test-threads=1"],
            // the XDP guard: deny/allow lists, SYN rate, malformed packets, 100,000 random ones
            &["test", "-p", "ingress-tests", "--test", "packet_guard", "--", "--test-threads=1"],
            // delayed binding's head scanner in the kernel: its verdicts equal the host build's
            &["test", "-p", "ingress-tests", "--test", "packet_bind_scan", "--", "--test-threads=1"],
            // kfunc calls from our object (resolved before aya loads it), run on built packets
            &["test", "-p", "ingress-tests", "--test", "packet_kfunc", "--", "--test-threads=1"],
            // the edge SYN cookie (XDP): the SYN option matrix answered with golden SYN-ACKs
            &["test", "-p", "ingress-tests", "--test", "packet_syncookie", "--", "--test-threads=1"],
            // delayed binding's first-segment program: bound to the pod, dropped, passed, or to the agent
            &["test", "-p", "ingress-tests", "--test", "packet_bind_first", "--", "--test-threads=1"],
        ],
    },
    Tier {
        name: "kube",
        what: "real kube-apiserver + etcd on loopback: reflectors, relist, status",
        needs_root: true,
        cargo_args: &[
            &["test", "-p", "ingress-tests", "--test", "kube", "--", "--test-threads=1"],
            // the Node watcher's host routes, API server and agent in a chk* namespace
            &["test", "-p", "ingress-tests", "--test", "kube_nodes", "--", "--test-threads=1"],
            // TLSRoutes watched and their status written, a passthrough listener served
            &["test", "-p", "ingress-tests", "--test", "kube_passthrough", "--", "--test-threads=1"],
        ],
    },
    Tier {
        name: "netns",
        what: "k3d-shaped namespaces: client -> XDP NIC -> agent -> pods",
        needs_root: true,
        cargo_args: &[
            &["test", "-p", "ingress-tests", "--test", "netns", "--", "--test-threads=1"],
            // the cgroup hooks for local clients, on loopback
            &["test", "-p", "ingress-tests", "--test", "local_hooks", "--", "--test-threads=1"],
            // the XDP guard: a bounded SYN flood rate-limited, a denied source refused
            &["test", "-p", "ingress-tests", "--test", "netns_guard", "--", "--test-threads=1"],
            // joined connections on links that lose, reorder and duplicate packets
            &["test", "-p", "ingress-tests", "--test", "impaired", "--", "--test-threads=1"],
            // the forwarding scenarios of the unit tier again, in the topology
            &["test", "-p", "ingress-tests", "--test", "scenarios_topology", "--", "--test-threads=1"],
            // L4 forwarding through the NIC to a fixed target and a two-endpoint Service
            &["test", "-p", "ingress-tests", "--test", "netns_l4", "--", "--test-threads=1"],
            // `ingress check`, --pod-route and the removal of only our routes (chk* namespaces)
            &["test", "-p", "ingress-tests", "--test", "netns_check", "--", "--test-threads=1"],
            // pinned maps and links across agent restarts, `ingress detach`
            &["test", "-p", "ingress-tests", "--test", "netns_pin", "--", "--test-threads=1"],
            // L4 with pinned state: local clients through the cgroup hooks, flows across a restart
            &["test", "-p", "ingress-tests", "--test", "netns_l4_pinned", "--", "--test-threads=1"],
            // the config file with XDP: the guard reloaded by SIGHUP, SIGINT with detach_on_exit
            &["test", "-p", "ingress-tests", "--test", "netns_config", "--", "--test-threads=1"],
            // TLS passthrough to a pod: joined in the kernel, and copied in user space (hpas-*)
            &["test", "-p", "ingress-tests", "--test", "netns_passthrough", "--", "--test-threads=1"],
            // an h2c gRPC call from the client namespace to a gRPC pod (hh2* namespaces)
            &["test", "-p", "ingress-tests", "--test", "netns_h2", "--", "--test-threads=1"],
            // HTTPS from the client namespace through the agent to a pod (htls* namespaces)
            &["test", "-p", "ingress-tests", "--test", "netns_tls", "--", "--test-threads=1"],
            // delayed binding's kernel pieces end to end: pod via the kernel, or the agent (hbd-*)
            &["test", "-p", "ingress-tests", "--test", "netns_bind_first", "--", "--test-threads=1"],
            // delayed binding driven by the agent (--bind-in-kernel on): pod via the kernel, others by the agent (hkb-*)
            &["test", "-p", "ingress-tests", "--test", "netns_kernel_bind", "--", "--test-threads=1"],
            // its fault suite: handshake segments dropped, duplicates, FIN/RST first, pod removed, MTUs, node conntrack (kbt*)
            &["test", "-p", "ingress-tests", "--test", "netns_kernel_bind_faults", "--", "--test-threads=1"],
            // the pod leg in the kernel (--pod-cgroup): pooled pod connections joined by sk_msg (plg-*)
            &["test", "-p", "ingress-tests", "--test", "netns_pod_leg", "--", "--test-threads=1"],
        ],
    },
    Tier {
        name: "install",
        what: "the service installed in a debootstrap root booted with systemd-nspawn",
        needs_root: true,
        cargo_args: &[&["test", "-p", "ingress-tests", "--test", "install", "--", "--test-threads=1"]],
    },
];

/// Not cargo: shellcheck on every script, `ruby -c` on the Vagrantfile ([`scripts_tier`]).
const SCRIPTS: Tier = Tier {
    name: "scripts",
    what: "shellcheck on every script, ruby -c on vagrant/Vagrantfile",
    needs_root: false,
    cargo_args: &[],
};

/// Runs the scripts tier: one count per check; skipped (a failure under CI) without the tools.
fn scripts_tier() -> Result<Outcome> {
    if let Some(why) = crate::scripts::missing_tools() {
        return Ok(Outcome::Skipped(why));
    }
    println!("\n== tier scripts");
    let started = Instant::now();
    let checks = crate::scripts::run_checks(&crate::workspace_root())?;
    let mut counts = Counts::default();
    for c in &checks {
        println!("{} {}", if c.ok { "ok    " } else { "FAILED" }, c.what);
        if c.ok {
            counts.passed += 1;
        } else {
            print!("{}", c.output);
            counts.failed += 1;
        }
    }
    let ok = counts.failed == 0;
    Ok(Outcome::Ran { counts, ok, problems: vec![], secs: started.elapsed().as_secs_f64() })
}

pub fn run(install: bool) -> Result<()> {
    let started = Instant::now();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if install {
        setup::setup(true)?;
    }
    let (report, free) = disk_report();
    println!("xtask test: {report}");
    if free.is_some_and(|f| f < NEEDS_GIB << 30) {
        println!(
            "xtask test: WARNING: less than the {NEEDS_GIB} GiB a run needs is free; a build that fills the disk fails every later tier with \"No space left on device\""
        );
    }
    let built = build::build_all(false)?;
    let skip_dir = crate::workspace_root().join("target/xtask-test");
    std::fs::create_dir_all(&skip_dir).with_context(|| format!("creating {}", skip_dir.display()))?;
    let mut results = Vec::new();
    for tier in TIERS {
        let kube = if tier.name == "kube" && is_root() { Some(kube_apiserver()) } else { None };
        let outcome = if tier.needs_root && !is_root() {
            Outcome::Skipped("needs root (CAP_BPF, CAP_NET_ADMIN, ip netns; apt for the API server)".into())
        } else if let Some(Err(e)) = &kube {
            Outcome::Skipped(format!("no kube-apiserver: {e:#}"))
        } else {
            let mut total = Counts::default();
            let (mut ok, mut secs, mut problems) = (true, 0.0, Vec::new());
            for (i, args) in tier.cargo_args.iter().enumerate() {
                let skip_log = skip_dir.join(format!("{}-{i}.skipped", tier.name));
                let _ = std::fs::remove_file(&skip_log);
                let mut cmd = host_cargo(&built.ebpf_object);
                cmd.args(*args).env("INGRESS_BIN", &built.agent).env(SKIP_LOG_ENV, &skip_log);
                // the install tier runs `cargo xtask install` inside its machine: this binary
                cmd.env("INGRESS_XTASK", std::env::current_exe().context("the xtask binary's path")?);
                if let Some(Ok(path)) = &kube {
                    cmd.env("KUBE_APISERVER", path);
                }
                let run = run_invocation(tier.name, cmd, &skip_log)?;
                if run.counts.ran() == 0 {
                    problems.push(format!("no test ran in `cargo {}`", args.join(" ")));
                }
                problems.extend(run.no_result.clone());
                problems.extend(run.all_filtered.iter().map(|b| format!("every test of {b} was filtered out")));
                total.add(&run.counts);
                ok &= run.ok;
                secs += run.secs;
            }
            Outcome::Ran { counts: total, ok, problems, secs }
        };
        results.push((tier, outcome));
    }
    results.push((&SCRIPTS, scripts_tier()?));
    println!("\n== cargo xtask test: summary ==");
    let mut total = Counts::default();
    for (tier, outcome) in &results {
        match outcome {
            Outcome::Ran { counts, ok, problems, secs } => {
                let failed = !ok || counts.failed > 0 || !problems.is_empty();
                println!(
                    "{:<8} {:>4} passed {:>3} failed {:>3} skipped {:>3} ignored  {:>6.1}s  {}{}",
                    tier.name,
                    counts.passed,
                    counts.failed,
                    counts.skipped,
                    counts.ignored,
                    secs,
                    tier.what,
                    if failed { "  << FAILED" } else { "" }
                );
                total.add(counts);
            }
            Outcome::Skipped(why) => println!("{:<8} SKIPPED: {why}  ({})", tier.name, tier.what),
        }
    }
    println!(
        "total    {:>4} passed {:>3} failed {:>3} skipped {:>3} ignored  in {:.0}s",
        total.passed,
        total.failed,
        total.skipped,
        total.ignored,
        started.elapsed().as_secs_f64()
    );
    println!("disk: {}", disk_report().0);
    let named: Vec<(&str, Outcome)> = results.into_iter().map(|(t, o)| (t.name, o)).collect();
    let failures = failures(&named, ci);
    if !failures.is_empty() {
        for f in &failures {
            println!("FAILED: {f}");
        }
        bail!("{} problem(s){}", failures.len(), if ci { " (CI=true: nothing may skip)" } else { "" });
    }
    Ok(())
}

/// What `target/` holds and how much room is left on its filesystem, for the run's
/// first line and its summary: a CI machine whose disk filled mid-run (2026-12-03) showed
/// only "No space left on device" in every later tier.
fn disk_report() -> (String, Option<u64>) {
    let target = crate::workspace_root().join("target");
    let probe = if target.exists() { target.clone() } else { crate::workspace_root() };
    let free = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&probe)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1)?.trim().parse::<u64>().ok());
    let used = Command::new("du")
        .args(["-sb"])
        .arg(&target)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next()?.parse::<u64>().ok());
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let report = format!(
        "{} free on the filesystem of {}; target/ holds {} (a full run from a fresh clone needs about {NEEDS_GIB} GiB)",
        free.map_or("unknown space".into(), gib),
        probe.display(),
        used.map_or("nothing yet".into(), gib),
    );
    (report, free)
}

/// What a full `cargo xtask test` from a fresh clone takes of its disk, rounded up
/// (measured 2026-12-04 with the dev profile's line tables only: `target/` 6.6 GiB, of
/// it 2.1 GiB incremental state, which `.ci/run` turns off; Debian's packages, the
/// kube-apiserver build and the debootstrap root about 1 GiB more).
const NEEDS_GIB: u64 = 8;

/// Why the run fails, one line a reason (empty: it passed).
fn failures(results: &[(&str, Outcome)], ci: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (name, outcome) in results {
        match outcome {
            Outcome::Ran { counts, ok, problems, .. } => {
                if !ok || counts.failed > 0 {
                    out.push(format!("tier {name}: {} test(s) failed or cargo exited non-zero", counts.failed));
                }
                out.extend(problems.iter().map(|p| format!("tier {name}: {p}")));
                if counts.ran() == 0 {
                    out.push(format!("tier {name}: no test ran"));
                }
                if ci && counts.skipped > 0 {
                    out.push(format!("tier {name}: {} test(s) skipped themselves under CI", counts.skipped));
                }
            }
            // CI runs as root with everything installed: a tier it could not run is
            // a hole in the results, not a pass
            Outcome::Skipped(why) if ci => out.push(format!("tier {name} could not run under CI: {why}")),
            Outcome::Skipped(_) => {}
        }
    }
    out
}

/// The cached kube-apiserver binary, built on first use (Debian, root; minutes).
fn kube_apiserver() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cache"));
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

/// What one cargo test invocation did.
struct Invocation {
    counts: Counts,
    /// Test binaries (by their `Running` line) that had tests, all filtered out.
    all_filtered: Vec<String>,
    ok: bool,
    secs: f64,
    /// How cargo ended and its last lines, when it printed no `test result:` line
    /// (a build error, a crash or a kill): the summary names it.
    no_result: Option<String>,
}

/// Runs one cargo test invocation, streaming its output, adding up the `test
/// result:` lines of every test binary it runs, then moving the tests that skipped
/// themselves (lines in `skip_log`) from passed to skipped.
fn run_invocation(name: &str, mut cmd: Command, skip_log: &Path) -> Result<Invocation> {
    println!("\n== tier {name}: {cmd:?}");
    let started = Instant::now();
    // stdout and stderr through one pipe, in order: cargo's `Running` lines (stderr)
    // name the binary whose `test result:` line (stdout) follows
    let (reader, writer) = std::io::pipe().context("pipe")?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let mut child = cmd.spawn().with_context(|| format!("starting tier {name}"))?;
    // the parent's copies of the write end go with `cmd`, or the read below never ends
    drop(cmd);
    let mut counts = Counts::default();
    let mut all_filtered = Vec::new();
    let mut binary = String::from("a test binary");
    let (mut results, mut tail) = (0usize, std::collections::VecDeque::new());
    for line in BufReader::new(reader).lines() {
        let line = line?;
        println!("{line}");
        if tail.len() == 6 {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        if let Some(b) = line.trim().strip_prefix("Running ") {
            binary = b.to_string();
        }
        if let Some(r) = parse_result_line(&line) {
            if r.counts.ran() == 0 && r.counts.ignored == 0 && r.filtered > 0 {
                all_filtered.push(binary.clone());
            }
            counts.add(&r.counts);
            results += 1;
        }
    }
    let status = child.wait()?;
    let no_result = (results == 0).then(|| {
        let tail: Vec<String> = tail.into_iter().collect();
        format!("cargo ended ({status}) with no test result; its last lines: {}", tail.join(" | "))
    });
    let skipped = count_skips(&std::fs::read_to_string(skip_log).unwrap_or_default());
    // libtest counted each as passed
    counts.skipped += skipped;
    counts.passed = counts.passed.saturating_sub(skipped);
    let ok = status.success() && counts.failed == 0;
    Ok(Invocation { counts, all_filtered, ok, secs: started.elapsed().as_secs_f64(), no_result })
}

/// The `SKIPPED: ` lines of a skip log; each is also printed.
fn count_skips(log: &str) -> u64 {
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with(SKIP_MARKER)).collect();
    for l in &lines {
        println!("{l}");
    }
    lines.len() as u64
}

/// One libtest summary line.
#[derive(Debug, PartialEq)]
struct ResultLine {
    counts: Counts,
    filtered: u64,
}

/// Parses libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; ...`.
fn parse_result_line(line: &str) -> Option<ResultLine> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut r = ResultLine { counts: Counts::default(), filtered: 0 };
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        // "ok. 3 passed" / "1 ignored" / "2 filtered out"
        let (n, label) = match words.as_slice() {
            [.., n, "filtered", "out"] => (n, "filtered"),
            [.., n, label] => (n, *label),
            _ => continue,
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match label {
            "passed" => r.counts.passed = n,
            "failed" => r.counts.failed = n,
            "ignored" => r.counts.ignored = n,
            "filtered" => r.filtered = n,
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(passed: u64, failed: u64, skipped: u64) -> Outcome {
        Outcome::Ran {
            counts: Counts { passed, failed, ignored: 0, skipped },
            ok: failed == 0,
            problems: vec![],
            secs: 1.0,
        }
    }

    #[test]
    fn parses_libtest_summary() {
        let r = parse_result_line(
            "test result: FAILED. 12 passed; 2 failed; 3 ignored; 0 measured; 4 filtered out; finished in 0.01s",
        )
        .unwrap();
        assert_eq!((r.counts.passed, r.counts.failed, r.counts.ignored, r.filtered), (12, 2, 3, 4));
        assert!(parse_result_line("running 3 tests").is_none());
    }

    #[test]
    fn a_filter_that_matches_nothing_is_a_failure() {
        // what `--test proxy in_topology` printed once the tests were renamed
        let r = parse_result_line(
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 17 filtered out; finished in 0.00s",
        )
        .unwrap();
        assert_eq!((r.counts.ran(), r.filtered), (0, 17));
        let empty = Outcome::Ran { counts: Counts::default(), ok: true, problems: vec![], secs: 0.1 };
        let f = failures(&[("netns", empty)], false);
        assert_eq!(f, ["tier netns: no test ran"]);
    }

    #[test]
    fn skips_count_as_skipped_and_fail_only_under_ci() {
        assert_eq!(count_skips("SKIPPED: a: needs root\nnoise\nSKIPPED: b: no eBPF object\n"), 2);
        assert!(failures(&[("unit", ran(10, 0, 2))], false).is_empty());
        assert_eq!(failures(&[("unit", ran(10, 0, 2))], true), ["tier unit: 2 test(s) skipped themselves under CI"]);
        // a tier that could not run: fine on a laptop, a failure in CI
        let skipped = || Outcome::Skipped("no kube-apiserver".into());
        assert!(failures(&[("kube", skipped())], false).is_empty());
        assert_eq!(failures(&[("kube", skipped())], true), ["tier kube could not run under CI: no kube-apiserver"]);
    }

    #[test]
    fn failed_tests_and_problems_fail_the_run() {
        assert!(failures(&[("unit", ran(10, 0, 0))], true).is_empty());
        assert_eq!(
            failures(&[("unit", ran(9, 1, 0))], false),
            ["tier unit: 1 test(s) failed or cargo exited non-zero"]
        );
        let with_problem = Outcome::Ran {
            counts: Counts { passed: 3, ..Default::default() },
            ok: true,
            problems: vec!["every test of tests/x.rs was filtered out".into()],
            secs: 1.0,
        };
        assert_eq!(
            failures(&[("netns", with_problem)], false),
            ["tier netns: every test of tests/x.rs was filtered out"]
        );
    }
}
