//! Test support: a packet builder and BPF_PROG_TEST_RUN, the k3d-shaped
//! network-namespace topology, an echo backend for the pods, a small HTTP client,
//! the OpenChoreo fixture set, the proxy tests' setup and the scenarios run in both
//! the loopback and the topology tier. Used by the test programs in `tests/`, the
//! demo and the benchmark (`src/bin/`).

pub mod agent;
pub mod backend;
pub mod bench;
pub mod cgroup;
pub mod client;
pub mod fixtures;
pub mod impair;
// delayed binding driven by the agent: the netns tier's shared topology, waits and exchanges
pub mod kbind;
pub mod kubeapi;
pub mod legacy;
pub mod load;
pub mod netns;
pub mod nginx;
pub mod nginx_l7;
pub mod packet;
pub mod pattern;
pub mod pinned;
pub mod proxy_setup;
pub mod scenarios;
// HTTPS listeners: a test CA, Secret manifests, a rustls client
pub mod tls;
pub mod topology;
pub mod wrk;
// L4 forwarding tests and demo: a named TCP echo server and its client.
pub mod tcp_echo;
// The benchmark's L4 mode.
pub mod l4bench;
// delayed binding: the agent's flags, kernel support, the client side's XDP, waiting
// the benchmark's connection setup time and time to first byte
pub mod latency;
// the benchmark's join mode: copy vs kernel join vs splice(2) pipe vs auto
pub mod splicebench;
// The framing tests' "bad pod": a backend that writes exact bytes.
pub mod raw_backend;
// HTTP/2: h2c and gRPC test pods, an h2 client helper (tests/tests/h2.rs, netns_h2.rs).
pub mod h2_backend;
// The install tier: a debootstrap root booted with systemd-nspawn.
pub mod machine;
// TLS passthrough: a rustls server as a pod, a rustls client (large ClientHellos too);
// re-exported by `tls`
pub mod tls_pod;
// Where a process's resident memory is (/proc/PID/smaps): `netbench --rss-only`.
pub mod rss;

/// The line a test that skips itself prints (and appends to the file named by
/// [`SKIP_LOG_ENV`]), so that `cargo xtask test` counts it as skipped, not passed.
pub const SKIP_MARKER: &str = "SKIPPED: ";

/// Names the file `cargo xtask test` reads skip lines from after each invocation
/// (libtest captures a passing test's output, so the runner does not see stderr).
pub const SKIP_LOG_ENV: &str = "INGRESS_TEST_SKIP_LOG";

/// Whether this run is CI (`CI=true` or `CI=1`), where nothing may skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Records that `test` skips itself because of `reason`: a panic under CI (CI is
/// root and has everything: a skip there would hide a missing test), otherwise a
/// printed `SKIPPED:` line, also appended to the runner's skip log.
pub fn skip(test: &str, reason: &str) {
    assert!(!ci(), "{test}: {reason}; CI must run it");
    let line = format!("{SKIP_MARKER}{test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        use std::io::Write;
        // One write per line with O_APPEND: lines of parallel tests do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            panic!("{test}: cannot record the skip in {}: {e}", std::path::Path::new(&path).display());
        }
    }
}

/// True when running as root. Otherwise records why the caller skips ([`skip`]).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, "needs root (CAP_BPF, CAP_NET_ADMIN, ip netns); run `sudo cargo xtask test`");
    false
}

/// The embedded eBPF object, or a recorded skip ([`skip`]).
pub fn require_ebpf_object(test: &str) -> bool {
    if ingress::datapath::OBJECT.is_some() {
        return true;
    }
    skip(test, "built without the eBPF object; run through `cargo xtask test`");
    false
}

/// A 127.0.0.1 port that was free a moment ago, for a listener the caller (or a
/// child it starts) binds next. Another process may take it in between; for a port
/// that must stay unanswered, hold a [`RefusedPort`] instead. Never the same port twice
/// in one test process: the kernel may hand a just-released port out again, and two
/// calls for one agent (say its listen and `--admin` ports) must not collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .expect("local addr")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("free_port: 1000 binds to 127.0.0.1:0 gave only ports handed out before ({} of them)", given.len());
}

/// A 127.0.0.1 port held by a bound socket that never listens: connections to it are
/// refused (RST), and no other socket can bind it while this lives.
pub struct RefusedPort {
    _socket: socket2::Socket,
    pub addr: std::net::SocketAddr,
}

impl RefusedPort {
    pub fn new() -> Self {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local addr").as_socket().expect("an IPv4 address");
        Self { _socket: socket, addr }
    }
}

impl Default for RefusedPort {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_port_refuses_and_stays_taken() {
        let p = RefusedPort::new();
        let e = std::net::TcpStream::connect(p.addr).expect_err("nothing listens");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(std::net::TcpListener::bind(p.addr).is_err(), "the port stays bound while held");
    }
}

// the TLS mode of the benchmark (issue 12): h2load and the HTTPS paths
pub mod h2load;
pub mod tlsbench;
