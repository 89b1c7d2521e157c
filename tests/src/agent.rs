//! The `ingress` agent as a child process inside the topology's vm namespace:
//! started with `ip netns exec`, killed with its parent (PR_SET_PDEATHSIG) and on
//! drop, by pid. Its log goes to a file the test can read.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Request, send};
use crate::netns::in_ns;

pub const ADMIN: &str = "127.0.0.1:9901";

pub struct Agent {
    child: Child,
    /// The namespace the agent runs in; None: the caller's (root) namespace.
    pub ns: Option<String>,
    pub admin: String,
    pub log: PathBuf,
}

/// The agent binary: `INGRESS_BIN` (set by `cargo xtask test`), else the debug build.
pub fn ingress_bin() -> PathBuf {
    std::env::var_os("INGRESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/ingress"))
}

impl Agent {
    /// Starts `ingress run` in namespace `ns` and waits (bounded) until /readyz answers.
    pub fn start(bin: &Path, ns: &str, manifests: &Path, listens: &[String], extra: &[&str]) -> Self {
        let mut args = vec!["--manifests".to_string(), manifests.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_with(bin, Some(ns), ADMIN, listens, &args)
    }

    /// Starts `ingress run LISTENS ARGS --admin ADMIN`, in `ns` or in this namespace.
    pub fn start_with(bin: &Path, ns: Option<&str>, admin: &str, listens: &[String], args: &[String]) -> Self {
        Self::launch(bin, ns, admin, listens, args, Launch::IpNetnsExec)
    }

    /// Like [`Agent::start`], but entering `ns` with `nsenter --net` only: the agent
    /// shares this process's /sys, so what it pins on bpffs outlives it (`ip netns
    /// exec` mounts a private /sys, and pins made under it die with the agent).
    pub fn start_keeping_pins(bin: &Path, ns: &str, manifests: &Path, listens: &[String], extra: &[&str]) -> Self {
        let mut args = vec!["--manifests".to_string(), manifests.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::launch(bin, Some(ns), ADMIN, listens, &args, Launch::Nsenter)
    }

    fn launch(bin: &Path, ns: Option<&str>, admin: &str, listens: &[String], args: &[String], how: Launch) -> Self {
        assert!(bin.is_file(), "agent binary {} missing: run `cargo xtask build`", bin.display());
        let tag = ns.unwrap_or("local");
        let log =
            std::env::temp_dir().join(format!("ingress-{tag}-{}-{}.log", std::process::id(), admin.replace(':', "_")));
        let file = std::fs::File::create(&log).expect("agent log file");
        let mut cmd = match (ns, how) {
            (Some(ns), Launch::IpNetnsExec) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            (Some(ns), Launch::Nsenter) => nsenter_net(ns, bin),
            (None, _) => Command::new(bin),
        };
        cmd.arg("run");
        for l in listens {
            cmd.arg("--listen").arg(l);
        }
        cmd.args(["--admin", admin]).args(args);
        // Tests read the eBPF programs' debug records (TCP SYN lines); the benchmark
        // sets AGENT_RUST_LOG=info so the kernel side does not log per connection.
        let log_filter = std::env::var("AGENT_RUST_LOG").unwrap_or_else(|_| "info,ingress_ebpf=debug".into());
        cmd.env("RUST_LOG", log_filter).stdout(Stdio::null()).stderr(file);
        // SAFETY: prctl and pthread_sigmask are async-signal-safe; the agent dies with the
        // thread that started it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // The demo blocks SIGINT/SIGTERM for its signal thread; the agent must not inherit that.
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start ip netns exec ingress");
        let mut agent = Agent { child, ns: ns.map(str::to_string), admin: admin.to_string(), log };
        agent.wait_ready(Duration::from_secs(15));
        agent
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited ({status}) before it was ready; its log:\n{}", self.log_text());
            }
            if self.admin_get("/readyz").is_some_and(|(s, _)| s == 200) {
                return;
            }
            assert!(start.elapsed() < limit, "agent not ready after {limit:?}; its log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on the admin endpoint (inside the vm namespace): (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let get = || {
            send(self.admin.parse().unwrap(), &Request::get(&self.admin, path), Duration::from_secs(2))
                .ok()
                .map(|r| (r.status, String::from_utf8_lossy(&r.body).to_string()))
        };
        match &self.ns {
            Some(ns) => in_ns(ns, get),
            None => get(),
        }
    }

    /// The agent's pid (`ip netns exec` execs it in place).
    /// `ingress stats --admin ADMIN` run as a user would, in the agent's namespace: its
    /// table as printed.
    pub fn stats_table(&self) -> String {
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(ingress_bin());
                c
            }
            None => Command::new(ingress_bin()),
        };
        let out = cmd.args(["stats", "--admin", &self.admin]).output().expect("ingress stats");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `GET /stats`, parsed.
    pub fn stats(&self) -> ingress::telemetry::StatsView {
        serde_json::from_str(&self.admin_get("/stats").expect("admin /stats").1).expect("stats json")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Resident set now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM (the agent then drains) without waiting.
    pub fn terminate_async(&self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits (bounded) for the agent to exit; its exit status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Stops the agent (SIGTERM, then SIGKILL after 3 s) and returns its log.
    pub fn stop(mut self) -> String {
        self.terminate();
        let log = self.log_text();
        let _ = std::fs::remove_file(&self.log);
        log
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// SIGKILL, as a crash would: no drain, no cleanup; waits (bounded) for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait_exit(Duration::from_secs(5));
    }
}

/// How the agent enters its namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Launch {
    IpNetnsExec,
    Nsenter,
}

/// `nsenter --net=/run/netns/NS BIN`: the network namespace only (same mounts).
pub fn nsenter_net(ns: &str, bin: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(bin);
    c
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}
