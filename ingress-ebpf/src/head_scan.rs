//! The delayed-binding head scanner over a TCP segment's payload (shared by the tc
//! programs `bind_scan` and `bind_first`): the payload (at most `SCAN_MAX` bytes) is
//! copied into a per-CPU scratch value with `bpf_skb_load_bytes` and fed to
//! `ingress_common::head::HeadScanner` by `bpf_loop` (5.17), whose callback the verifier
//! checks once rather than once per byte.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_loop, bpf_skb_load_bytes};
use aya_ebpf::programs::TcContext;
use ingress_common::bind::{BIND_SCRATCH_BYTES, BindScratch};
use ingress_common::head::{BindHostKey, Fallback, HeadScanner, SCAN_MAX, STEP_MORE, VERDICT_BIND};

use crate::nat::Tcp4;

const TCP_DOFF: usize = 12;

/// The context `bpf_loop` hands the callback: the scratch value.
#[repr(C)]
struct LoopCtx {
    scratch: *mut BindScratch,
}

/// One byte: feeds it, stops the loop (returns 1) when the scanner has decided.
#[inline(never)]
extern "C" fn step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the LoopCtx below; its pointer is a valid map value.
    let s = unsafe { &mut *(*(ctx as *mut LoopCtx)).scratch };
    let i = (index as usize) & (BIND_SCRATCH_BYTES - 1);
    let r = s.scanner.feed(s.bytes[i]);
    if r == STEP_MORE {
        return 0;
    }
    s.step = r as u32;
    1
}

/// Scans the payload of segment `p` with scratch space `s` (a per-CPU map value the
/// caller alone uses): the verdict code (0: the head names a host, else a
/// [`Fallback`]) and, when it names one, the host's key on the segment's destination
/// port (not looked up: the caller does that).
#[inline(always)]
pub fn scan_payload(ctx: &TcContext, p: &Tcp4, s: &mut BindScratch) -> (u32, BindHostKey) {
    let none = |f: Fallback| (f as u32, BindHostKey::EMPTY);
    let Ok(doff) = ctx.load::<u8>(p.l4 + TCP_DOFF) else { return none(Fallback::NoPayload) };
    let start = p.l4 + ((doff >> 4) as usize) * 4;
    let end = p.l3 + p.tot_len as usize;
    if end <= start {
        return none(Fallback::NoPayload);
    }
    let total = end - start;
    let n = total.min(SCAN_MAX) & (BIND_SCRATCH_BYTES - 1);
    if n == 0 {
        return none(Fallback::NoPayload);
    }
    s.scanner = HeadScanner::new();
    s.step = STEP_MORE as u32;
    // Checked again on a value the compiler cannot see through (it knows `n` >= 1 from
    // `end > start` and drops the check, which the verifier cannot follow through min()).
    // SAFETY: a read of a local.
    let len: u32 = unsafe { core::ptr::read_volatile(&(n as u32)) };
    if len == 0 || len > SCAN_MAX as u32 {
        return none(Fallback::NoPayload);
    }
    // SAFETY: `len` is at most BIND_SCRATCH_BYTES, which `bytes` holds.
    let ret = unsafe {
        bpf_skb_load_bytes(ctx.skb.skb as *const c_void, start as u32, s.bytes.as_mut_ptr() as *mut c_void, len)
    };
    if ret != 0 {
        return none(Fallback::NoPayload);
    }
    let mut lctx = LoopCtx { scratch: s as *mut BindScratch };
    // SAFETY: the callback and its context follow bpf_loop's contract.
    unsafe { bpf_loop(n as u32, step as *mut c_void, &mut lctx as *mut LoopCtx as *mut c_void, 0) };
    let code = if s.step == STEP_MORE as u32 { s.scanner.finish(total) as u32 } else { s.step };
    if code != VERDICT_BIND as u32 {
        return (code, BindHostKey::EMPTY);
    }
    let mut key = s.scanner.key;
    key.port = u16::from_be(p.dport);
    (code, key)
}
