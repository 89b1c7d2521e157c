//! The ABI between the kernel programs and the agent: map names and sizes, and the
//! `#[repr(C)]` keys and values stored in those maps. Every type has explicit padding
//! and a compile-time size check, so both sides agree byte for byte.
//!
//! One module per concern: [`maps`] names every map and program and sizes the maps;
//! the other modules hold the keys and values of one kind of map each. The keys and
//! values of the L4 forwarding maps (services, backends, connection tracking, NAT) go
//! in modules of their own next to these, with their names and sizes in [`maps`].
#![cfg_attr(not(test), no_std)]
// inline asm on BPF (syncookie::opt_index); the eBPF build runs with RUSTC_BOOTSTRAP=1
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod guard;
// delayed binding: the first request head scanner and the bindable hosts' keys
pub mod bind;
pub mod head;
pub mod l4;
pub mod local;
pub mod maps;
pub mod proto;
pub mod splice;
pub mod stats;
// delayed binding: the edge's SYN cookie (pure, built for BPF and the host)
pub mod syncookie;
// delayed binding: the pod side's admitted flows and the kfunc's attributes
pub mod pod_bind;
// delayed binding: the edge's first-segment program (cookie ACK -> bind or the agent)
pub mod first_segment;
pub mod pod_leg;
