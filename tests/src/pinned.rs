//! Pinned state in tests: a per-test pin directory under /sys/fs/bpf removed by name
//! on drop (even when the test fails), what is attached to an interface (`ip link`,
//! `tc filter`), `ingress` subcommands run in a namespace with bounded time, and a
//! map made by hand to stand for an incompatible pin. Reused by the restart tests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::nsenter_net;

/// `/sys/fs/bpf/ingress-test-pin-<test>`: removed with every pin in it on drop. Pins
/// are unlinked by name; a link whose pin goes and that no process holds detaches.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    /// A fresh directory name for `test` (leftovers of an interrupted run removed).
    pub fn new(test: &str) -> Self {
        let d = Self { path: PathBuf::from(format!("/sys/fs/bpf/ingress-test-pin-{test}")) };
        d.remove();
        d
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// Names pinned in the directory, sorted; empty when it does not exist.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn remove(&self) {
        for name in self.names() {
            let _ = std::fs::remove_file(self.path.join(name));
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The XDP program ids attached to `iface` in namespace `ns` (`ip -d link`: one
/// `prog/xdp id N` per attached program).
pub fn xdp_programs(ns: &str, iface: &str) -> Vec<u32> {
    let out = Command::new("ip").args(["-n", ns, "-d", "link", "show", "dev", iface]).output().expect("ip link");
    assert!(out.status.success(), "ip -n {ns} link show {iface}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(3).filter(|w| w[0] == "prog/xdp" && w[1] == "id").filter_map(|w| w[2].parse().ok()).collect()
}

/// `tc filter show` on `iface` (ingress and egress hooks) in namespace `ns`.
pub fn tc_filters(ns: &str, iface: &str) -> String {
    let mut all = String::new();
    for hook in ["ingress", "egress"] {
        let out = Command::new("tc").args(["-n", ns, "filter", "show", "dev", iface, hook]).output().expect("tc");
        all += &String::from_utf8_lossy(&out.stdout);
    }
    all
}

/// What a bounded run printed.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `BIN ARGS` in network namespace `ns` (nsenter: the same bpffs as the test),
/// killed after `limit`.
pub fn run_in(ns: &str, bin: &Path, args: &[&str], limit: Duration) -> Ran {
    let mut cmd = nsenter_net(ns, bin);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("nsenter ingress");
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut stdout));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut stderr));
    Ran { code, stdout, stderr }
}

/// Creates a map of the given definition named `name` and pins it at `path` (an
/// earlier, incompatible agent's pin). The map lives as long as the pin.
pub fn pin_map_by_hand(path: &Path, name: &str, map_type: u32, key: u32, value: u32, max_entries: u32, flags: u32) {
    let def = aya_obj::Map::new_from_params(map_type, key, value, max_entries, flags);
    let map = aya::maps::MapData::create(def, name, None).expect("BPF_MAP_CREATE");
    map.pin(path).expect("pin the map");
}
