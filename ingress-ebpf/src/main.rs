//! Kernel programs of the ingress: thin program files ([`xdp`], [`splice`]) over every
//! map in [`maps`] and shared helpers (packet parsing in [`parse`], the counters in
//! [`counters`], the splice verdict's segment handling in [`segment`]). Built for
//! `bpfel-unknown-none` by `cargo xtask build`.
#![no_std]
#![no_main]

mod counters;
mod guard;
mod l4_local;
mod maps;
mod parse;
mod segment;
mod service;
mod splice;
// The pod leg in the kernel (`--pod-cgroup`): sock_ops on the pods' cgroup, sk_msg on its SOCKHASH.
mod pod_leg;
mod xdp;

// L4 forwarding: shared NAT/forwarding and conntrack helpers, one file per program.
mod conntrack;
mod l4_nic;
mod l4_reply;
mod nat;

// Delayed binding: the head scanner on a segment (not attached by the agent yet).
mod bind_scan;
// Kernel functions (kfuncs) and the program that proves their calls load.
mod kfunc;
mod kfunc_probe;
// Delayed binding: the edge's SYN cookie in XDP (not attached by the agent yet).
mod syncookie;
// Delayed binding: the head scan shared by bind_scan and bind_first.
mod head_scan;
// Delayed binding at the edge: the client's first segment after the cookie -> pod or agent (not attached).
mod bind_first;
// Delayed binding, pod side: the first segment of an admitted flow -> the pod's socket (not attached).
mod pod_bind;
// Delayed binding driven by the agent: the guard's tail call of a SYN into the cookie.
mod bind_syn;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program whose code can reach a real panic; this is
    // never executed.
    loop {}
}

/// Program license: GPL is required for the helpers aya-log uses (bpf_ringbuf_*
/// are GPL-only).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
