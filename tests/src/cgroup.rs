//! A cgroup v2 directory a test creates for the processes it wants the agent's cgroup
//! connect hooks to see, and a way to start a child inside it. Removed on drop, by its
//! name (after the processes in it have exited).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cgroup v2 mount point in `/proc/mounts` (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    /// Creates `<cgroup2 mount>/<name>` (removing a leftover of the same name first).
    pub fn create(name: &str) -> Result<Self, String> {
        let root = cgroup2_mount().ok_or("no cgroup v2 mount in /proc/mounts")?;
        let path = root.join(name);
        if path.exists() {
            let _ = std::fs::remove_dir(&path);
        }
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// Makes `cmd`'s process join this cgroup before it execs.
    pub fn enter_on_exec<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let procs = self.path.join("cgroup.procs");
        // SAFETY: the closure only calls async-signal-safe functions (open, write,
        // close through std::fs::write on a pre-built path, getpid).
        unsafe {
            cmd.pre_exec(move || {
                std::fs::write(&procs, b"0")?;
                Ok(())
            })
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // rmdir succeeds once no process is left in it; give exiting children a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("cannot remove cgroup {}", self.path.display());
    }
}

/// What the `dial` program (`src/bin/dial.rs`) printed: the peer getpeername gave,
/// the bytes it read back and their FNV-1a, and everything it said (for messages).
pub struct Dialled {
    pub peer: String,
    pub got: usize,
    pub fnv: u64,
    pub out: String,
}

/// Runs `cmd` (a `dial ADDR SEND` command, prepared by the caller: namespace, args),
/// in `cgroup` if given, and parses what it printed.
pub fn run_dial(mut cmd: Command, cgroup: Option<&TestCgroup>) -> Dialled {
    if let Some(cg) = cgroup {
        cg.enter_on_exec(&mut cmd);
    }
    let out = cmd.output().expect("run dial");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| {
        text.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).map(str::to_string).unwrap_or_default()
    };
    Dialled {
        peer: field("peer"),
        got: field("got").parse().unwrap_or(0),
        fnv: u64::from_str_radix(&field("fnv"), 16).unwrap_or(0),
        out: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    }
}
