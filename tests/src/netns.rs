//! Network-namespace primitives: `ip` commands, and running code on a thread that
//! has joined a named namespace (sockets it creates stay in that namespace).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running `ip` (iproute2 installed?)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// Runs `ip ARGS`, ignoring failure (for idempotent cleanup).
pub fn ip_quiet(args: &[&str]) -> bool {
    Command::new("ip").args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

/// Writes a sysctl of namespace `ns` (e.g. `net/ipv4/ip_forward`).
pub fn sysctl(ns: &str, key: &str, value: &str) {
    in_ns(ns, || std::fs::write(format!("/proc/sys/{key}"), value))
        .unwrap_or_else(|e| panic!("sysctl {key} in {ns}: {e}"));
}

/// Caps the TIME_WAIT sockets of namespace `ns` at `buckets` (the sysctl is per
/// namespace): past it a closing socket skips TIME_WAIT. Keeps a benchmark run of
/// `Connection: close` from inheriting the previous runs' TIME_WAIT sockets (a
/// fuller port space and connection table).
pub fn cap_time_wait(ns: &str, buckets: u32) {
    sysctl(ns, "net/ipv4/tcp_max_tw_buckets", &buckets.to_string());
}

/// Runs `f` on a new thread that joined network namespace `ns`, and returns its result.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&path);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Moves the calling thread into the network namespace at `path`. Threads, not
/// processes: other threads of the test keep their namespace.
pub fn enter(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd affects only the calling thread's netns.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}
