//! Kernel functions (kfuncs) the programs call. bpf-linker leaves each `extern "C"`
//! declaration here as an undefined ELF symbol and every call to it as a `call` with a
//! relocation against that symbol; aya 0.14 cannot relocate such calls, so the agent
//! rewrites them before loading (ingress-user/src/datapath/kfunc.rs): each becomes a
//! BPF_PSEUDO_KFUNC_CALL to the function's BTF id in the running kernel's vmlinux BTF.
//! Names must match the kernel's exactly (the symbol name is what is resolved).

use aya_ebpf::bindings::{__sk_buff, bpf_dynptr, bpf_sock};
use ingress_common::pod_bind::TcpReqAttrs;

unsafe extern "C" {
    /// `bpf_sk_assign_tcp_reqsk` (6.11): a request socket for `skb` on listener `sk`
    /// built from `attrs` (`attrs_sz` = the kernel's `sizeof(struct bpf_tcp_req_attrs)`);
    /// the kernel then creates the full socket from this ACK. tc ingress only.
    pub fn bpf_sk_assign_tcp_reqsk(
        skb: *mut __sk_buff,
        sk: *mut bpf_sock,
        attrs: *mut TcpReqAttrs,
        attrs_sz: i32,
    ) -> i32;

    /// `bpf_dynptr_from_skb` (6.4): a dynptr over the skb's data (linear or not).
    pub fn bpf_dynptr_from_skb(skb: *mut __sk_buff, flags: u64, ptr: *mut bpf_dynptr) -> i32;
}
