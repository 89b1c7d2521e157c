//! A throwaway Debian 12 machine for the install tier: a copy of a cached debootstrap
//! root (`xtask/scripts/install-root.sh`, once per machine), booted with
//! `systemd-nspawn --boot` in a network namespace the test created, commands run
//! inside with `nsenter` (the host has no systemd to ask machinectl through). The
//! machine is powered off and killed by pid, and its directory removed, on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The cached root: `~/.cache/ingress/install-root-bookworm`, made on first use.
pub fn cached_root() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let root = home.join(".cache/ingress/install-root-bookworm");
    let script = workspace().join("xtask/scripts/install-root.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&root)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(root)
}

/// The workspace root (the parent of `tests/`).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace").to_path_buf()
}

/// What the install tier needs on the host, or what to install.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> =
        [("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"), ("nsenter", "util-linux")]
            .into_iter()
            .filter(|(bin, _)| {
                !["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().any(|d| Path::new(d).join(bin).exists())
            })
            .map(|(_, pkg)| pkg)
            .collect();
    (!missing.is_empty()).then(|| format!("needs the Debian packages {} (`cargo xtask setup`)", missing.join(" ")))
}

pub struct Machine {
    pub name: String,
    /// The machine's root directory on the host (a copy of the cached root).
    pub dir: PathBuf,
    nspawn: Child,
    /// The machine's PID 1 as the host sees it.
    leader: u32,
    pub console: PathBuf,
}

/// Options for [`Machine::boot`].
pub struct Boot<'a> {
    pub name: &'a str,
    /// The network namespace (by name, under /run/netns) the machine runs in.
    pub netns: &'a str,
    /// Host paths bound read-only inside: (host path, path in the machine).
    pub bind_ro: Vec<(PathBuf, PathBuf)>,
}

impl Machine {
    /// Copies `template` to a fresh directory, lets `prepare` write into it, boots it
    /// and waits (bounded) until systemd reports the system running.
    pub fn boot(template: &Path, opts: Boot<'_>, prepare: impl FnOnce(&Path)) -> Machine {
        let dir = PathBuf::from("/var/tmp").join(opts.name);
        remove_tree(&dir);
        let st = Command::new("cp").args(["-a", "--reflink=auto"]).arg(template).arg(&dir).status().expect("cp");
        assert!(st.success(), "copying {} to {}", template.display(), dir.display());
        prepare(&dir);
        let console = std::env::temp_dir().join(format!("{}.console", opts.name));
        let log = std::fs::File::create(&console).expect("console log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("--boot")
            .arg("--directory")
            .arg(&dir)
            .args(["--machine", opts.name])
            // no systemd on the host to register with or to make a scope unit
            .args(["--register=no", "--keep-unit"])
            .arg(format!("--network-namespace-path=/run/netns/{}", opts.netns))
            // what the agent's unit may ask for (nspawn's default set has SYS_ADMIN)
            .arg("--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN")
            // nspawn's seccomp filter refuses bpf(2) (EPERM on every map and program,
            // the capabilities notwithstanding: systemd 252); the agent needs it
            .arg("--system-call-filter=bpf perf_event_open")
            .arg("--console=read-only");
        for (host, inside) in &opts.bind_ro {
            cmd.arg(format!("--bind-ro={}:{}", host.display(), inside.display()));
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        // SAFETY: prctl is async-signal-safe; the machine's nspawn dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let nspawn = cmd.spawn().expect("starting systemd-nspawn");
        let mut m = Machine { name: opts.name.to_string(), dir, nspawn, leader: 0, console };
        let deadline = Instant::now() + Duration::from_secs(60);
        while m.leader == 0 {
            if let Some(st) = m.nspawn.try_wait().expect("waitpid") {
                panic!("systemd-nspawn exited ({st}) before the boot:\n{}", m.console_text());
            }
            assert!(Instant::now() < deadline, "no container PID 1 after 60 s:\n{}", m.console_text());
            m.leader = children(m.nspawn.id()).into_iter().next().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(100));
        }
        let state = loop {
            // the first child seen may be nspawn's short-lived outer child
            m.leader = children(m.nspawn.id()).into_iter().next().unwrap_or(m.leader);
            let out = m.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break state;
            }
            assert!(Instant::now() < deadline, "machine not up after 60 s (state {state:?}):\n{}", m.console_text());
            std::thread::sleep(Duration::from_millis(250));
        };
        if state == "degraded" {
            let failed = m.sh("systemctl --failed --no-legend");
            eprintln!("machine {} booted degraded: {}", m.name, String::from_utf8_lossy(&failed.stdout));
        }
        m
    }

    /// Runs `argv` inside the machine (its mount, UTS, IPC, network, PID and cgroup
    /// namespaces), with a plain PATH.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let pid = self.leader.to_string();
        Command::new("nsenter")
            .args(["--target", &pid, "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// `sh -c SCRIPT` inside.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// `sh -c SCRIPT` inside; panics with its output unless it exits 0. Returns stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in machine {}: `{script}` failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// The journal of `unit` inside (for failure messages).
    pub fn journal(&self, unit: &str) -> String {
        String::from_utf8_lossy(&self.sh(&format!("journalctl -u {unit} --no-pager -n 80")).stdout).into_owned()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM makes nspawn power the machine off (SIGRTMIN+3 to its systemd); then
        // by pid, if it does not go in time.
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.nspawn.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                // SAFETY: the container's PID 1 and nspawn, both by the pids we started.
                unsafe {
                    if self.leader != 0 {
                        libc::kill(self.leader as i32, libc::SIGKILL);
                    }
                    libc::kill(self.nspawn.id() as i32, libc::SIGKILL);
                }
                let _ = self.nspawn.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for d in ["/run/systemd/nspawn/propagate", "/run/systemd/nspawn/unix-export"] {
            let _ = std::fs::remove_dir_all(Path::new(d).join(&self.name));
        }
        remove_tree(&self.dir);
    }
}

/// Removes a machine directory, unless something is still mounted under it (then the
/// mount is reported and the tree left alone).
fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    if let Some(m) = mounts.lines().find(|l| l.split(' ').nth(1).is_some_and(|p| p.starts_with(&prefix))) {
        eprintln!("not removing {prefix}: still mounted: {m}");
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The children of `pid` (nspawn's only child is the container's PID 1).
fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
}
