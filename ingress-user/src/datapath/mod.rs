//! The eBPF side of the agent: [`loader`] (load, attach), [`maps`] (typed access to
//! every map the agent reads or writes), [`translate`] (pure: map entries <-> the
//! agent's model, and the order of map updates), [`splice`] (joining connections in
//! the kernel, or copying in user space), [`interface`] (facts about the NIC),
//! [`guard`] (pure: the XDP guard's flags -> map entries) and [`guard_maps`] (its maps).

pub mod cgroup;
pub mod guard;
pub mod guard_maps;
pub mod interface;
pub mod loader;
pub mod maps;
pub mod slots;
pub mod splice;
// The pod leg in the kernel (`--pod-cgroup`).
pub mod pod_leg;
// which mechanism carries a joined pair (pure), and splice(2) through a pipe
pub mod join_choice;
pub mod pipe;
pub mod translate;

// L4 forwarding: pure model/translation/diff, Maglev, the maps.
pub mod l4;
pub mod l4_maps;
pub mod maglev;

pub use guard_maps::GuardMaps;
// host routes and mounts (`--pod-route`, `--cgroup`)
pub mod mounts;
pub mod pod_routes;
pub mod route_sync;
pub mod routes;
// Pinned state: rules (pure), bpffs and pins, links across restarts, `ingress detach`.
mod adopt;
pub mod bpf_links;
pub mod detach;
pub mod pinning;
pub mod pins;
// delayed binding: the bindable hosts' map entries (pure; not loaded yet)
pub mod bind;

// kfunc calls: resolved against the running kernel's BTF before aya loads the object.
pub mod kfunc;
// delayed binding: the edge SYN cookie's maps and program (not attached)
pub mod syncookie;
// delayed binding: the edge's first-segment program, its fd and counters (not attached)
pub mod bind_first;
// delayed binding driven by the agent (--bind-in-kernel on): the pure plan, the pod
// namespaces, the runtime that attaches the pieces and syncs their maps
pub mod bind_links;
pub mod bind_plan;
pub mod bind_runtime;
pub mod pod_netns;

pub use loader::{Dataplane, load, load_from};
pub use loader::{load_pinned, load_with};
pub use maps::{Splicer, StatsMap};
pub use pins::Pins;
pub use splice::Joiner;

/// The eBPF object built by `cargo xtask build`, if this binary embeds one.
#[cfg(ebpf_object)]
pub static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("INGRESS_EBPF_OBJECT_PATH")));
#[cfg(not(ebpf_object))]
pub static OBJECT: Option<&[u8]> = None;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this `ingress` was built without its eBPF programs: build it with `cargo xtask build`, or run with `--dataplane userspace`"
    )]
    NotEmbedded,
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error(
        "the kernel rejected XDP program {program} (needs BPF and XDP support, and CAP_BPF + CAP_NET_ADMIN or root): {source}"
    )]
    Load { program: &'static str, source: aya::programs::ProgramError },
    #[error(
        "cannot attach XDP to {interface}: driver mode: {driver}; generic (skb) mode: {generic}. Check that the interface exists and that this process has CAP_NET_ADMIN"
    )]
    Attach { interface: String, driver: aya::programs::ProgramError, generic: aya::programs::ProgramError },
    #[error("cannot count possible CPUs for the per-CPU maps: {0}")]
    Cpus(std::io::Error),
    #[error("cannot read aya-log records from the programs: {0}")]
    Logger(String),
    #[error("cannot open cgroup directory {path} for the connect hooks (--cgroup): {source}")]
    Cgroup { path: String, source: std::io::Error },
    #[error(
        "cannot attach {program} to cgroup {path} (needs cgroup v2 and CAP_BPF + CAP_NET_ADMIN or root; --cgroup names a cgroup v2 directory): {source}"
    )]
    CgroupAttach { program: &'static str, path: String, source: aya::programs::ProgramError },
    #[error("eBPF map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error(
        "cannot attach tc program {program} to the ingress of {interface} (needs TCX, kernel >= 6.6, or clsact/cls_bpf, and CAP_NET_ADMIN; check that the interface exists): {source}"
    )]
    TcAttach { program: &'static str, interface: String, source: aya::programs::ProgramError },
    #[error(transparent)]
    Pin(#[from] pins::PinError),
    #[error(transparent)]
    Kfunc(#[from] kfunc::KfuncError),
    #[error(
        "eBPF program {program} calls kernel functions this kernel does not have ({missing}): it needs Linux {since} or later with BTF (/sys/kernel/btf/vmlinux)"
    )]
    KfuncMissing { program: &'static str, missing: String, since: &'static str },
    #[error(
        "cannot put the XDP program into the link pinned for {interface} under {dir}: {source}; remove the pinned state with `ingress detach --pin-path {dir} --interface {interface}`",
        dir = dir.display()
    )]
    Adopt { interface: String, dir: std::path::PathBuf, source: aya::programs::ProgramError },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::load;

    #[test]
    fn embedded_object_or_a_message_saying_how_to_get_it() {
        match OBJECT {
            // built by `cargo xtask build`: a BPF ELF object
            Some(obj) => {
                assert_eq!(&obj[..4], b"\x7fELF");
                assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 247, "e_machine EM_BPF");
            }
            // plain `cargo build`: the agent says what to do
            None => {
                let e = load().err().expect("no object, no load");
                assert!(e.to_string().contains("cargo xtask build"), "{e}");
                assert!(e.to_string().contains("--dataplane userspace"), "{e}");
            }
        }
    }
}
