//! Root-only test support: a packet builder and BPF_PROG_TEST_RUN, the k3d-shaped
//! network-namespace topology, an echo backend for the pods, a small HTTP client,
//! and the OpenChoreo fixture set. Used by `tests/packet.rs`, `tests/netns.rs` and
//! the demo (`src/bin/demo.rs`).

pub mod agent;
pub mod backend;
pub mod client;
pub mod fixtures;
pub mod impair;
pub mod kubeapi;
pub mod legacy;
pub mod load;
pub mod netns;
pub mod nginx;
pub mod packet;
pub mod pattern;
pub mod topology;
pub mod wrk;

/// True when running as root. Otherwise prints why the caller skips, and panics
/// under `CI=true` (CI is root: a skip there would hide a missing test).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{test}: needs root, and CI must run it");
    eprintln!("SKIP {test}: needs root (CAP_BPF, CAP_NET_ADMIN, ip netns); run `sudo cargo xtask test`");
    false
}

/// The embedded eBPF object, or a printed skip (a panic under CI).
pub fn require_ebpf_object(test: &str) -> bool {
    if ingress::datapath::OBJECT.is_some() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{test}: built without the eBPF object; CI must build it (cargo xtask test)");
    eprintln!("SKIP {test}: built without the eBPF object; run through `cargo xtask test`");
    false
}
