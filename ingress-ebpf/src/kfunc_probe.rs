//! tc program that proves a kfunc call loads, passes the verifier and runs: it builds a
//! dynptr over the packet with `bpf_dynptr_from_skb` and returns TC_ACT_OK when that
//! succeeded, TC_ACT_SHOT otherwise (the packet tier runs it with BPF_PROG_TEST_RUN;
//! a kernel without the kfunc has the call replaced by `r0 = -EOPNOTSUPP`, which makes
//! it answer TC_ACT_SHOT, and the agent does not load it there). Never attached.

use core::mem::MaybeUninit;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT, bpf_dynptr};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;

use crate::kfunc::bpf_dynptr_from_skb;

#[classifier]
pub fn kfunc_probe(ctx: TcContext) -> i32 {
    let mut d = MaybeUninit::<bpf_dynptr>::uninit();
    // SAFETY: the context is the program's __sk_buff; the kfunc initialises `d`.
    let rc = unsafe { bpf_dynptr_from_skb(ctx.as_ptr() as *mut _, 0, d.as_mut_ptr()) };
    if rc == 0 { TC_ACT_OK as i32 } else { TC_ACT_SHOT as i32 }
}
