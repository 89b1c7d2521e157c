//! Pure: the `ingress check` rows of delayed binding (`--bind-in-kernel`): whether the
//! kernel has what the kernel-bound path calls (docs/delayed-binding.md), as found in
//! its BTF by [`super::gather`]. Off by default, so a missing piece is a fallback (every
//! host goes to the L7 proxy), never a blocker; `--bind-in-kernel on` then fails at
//! start naming the missing kernel function.

use super::report::{Row, Status};

/// The kfunc that turns the client's first data segment into a pod socket (Linux 6.11).
pub const SK_ASSIGN_TCP_REQSK: &str = "bpf_sk_assign_tcp_reqsk";
/// The dynptr kfuncs the head scan reads the segment with (Linux 6.4).
pub const DYNPTR: [&str; 2] = ["bpf_dynptr_from_skb", "bpf_dynptr_slice"];
/// The bounded-loop helper the SYN option and head scans run in (Linux 5.17).
pub const BPF_LOOP: &str = "bpf_loop";

/// What the kernel's BTF (`/sys/kernel/btf/vmlinux`) says; `None`: no BTF to look in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelBindFacts {
    pub sk_assign_tcp_reqsk: Option<bool>,
    pub dynptr: Option<bool>,
    pub bpf_loop: Option<bool>,
}

impl KernelBindFacts {
    /// All present (a 6.11+ kernel with BTF).
    pub fn all_present() -> Self {
        Self { sk_assign_tcp_reqsk: Some(true), dynptr: Some(true), bpf_loop: Some(true) }
    }
}

fn one(name: &str, found: Option<bool>, what: &str, since: &str) -> Row {
    let (status, detail, action) = match found {
        Some(true) => (Status::Ok, format!("{what}: in this kernel's BTF"), String::new()),
        Some(false) => (
            Status::Fallback,
            format!(
                "{what}: not in this kernel (Linux {since}+); kernel binding cannot be used, hosts use the L7 proxy"
            ),
            format!("for --bind-in-kernel, use Linux {since} or later"),
        ),
        None => (
            Status::Fallback,
            format!("{what}: unknown, no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF); hosts use the L7 proxy"),
            "for --bind-in-kernel, use a kernel with BTF".to_string(),
        ),
    };
    Row { name: name.into(), status, detail, action }
}

/// The rows, in a fixed order.
pub fn rows(f: &KernelBindFacts) -> Vec<Row> {
    vec![
        one(
            "bind:kfunc",
            f.sk_assign_tcp_reqsk,
            "bpf_sk_assign_tcp_reqsk (a pod socket from the edge's SYN cookie)",
            "6.11",
        ),
        one("bind:dynptr", f.dynptr, "bpf_dynptr_from_skb / bpf_dynptr_slice (the head scan)", "6.4"),
        one("bind:bpf_loop", f.bpf_loop, "bpf_loop (bounded scans)", "5.17"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_pieces_are_ok_and_missing_ones_fall_back_saying_which_kernel() {
        let r = rows(&KernelBindFacts::all_present());
        assert_eq!(
            r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["bind:kfunc", "bind:dynptr", "bind:bpf_loop"]
        );
        assert!(r.iter().all(|r| r.status == Status::Ok && r.action.is_empty()), "{r:#?}");
        let r = rows(&KernelBindFacts { sk_assign_tcp_reqsk: Some(false), ..KernelBindFacts::all_present() });
        assert_eq!(r[0].status, Status::Fallback);
        assert!(r[0].detail.contains("6.11") && r[0].action.contains("6.11"), "{:?}", r[0]);
        assert_eq!((r[1].status, r[2].status), (Status::Ok, Status::Ok));
        let r = rows(&KernelBindFacts::default());
        assert!(r.iter().all(|r| r.status == Status::Fallback && r.detail.contains("/sys/kernel/btf/vmlinux")));
    }
}
