//! tc classifier: the delayed-binding head scanner on a TCP segment's payload (the
//! scanner of `ingress_common::head`, the same source the agent's tests run). It only
//! reads: the segment's verdict is counted per code and the last one kept
//! (`BIND_SCAN_COUNTS`, `BIND_SCAN_LAST`), and the packet always passes unchanged. The
//! agent does not attach it yet; the packet tier runs it through BPF_PROG_TEST_RUN.
//!
//! The payload (at most `SCAN_MAX` bytes) is copied into a per-CPU scratch value with
//! `bpf_skb_load_bytes` and fed to the scanner by `bpf_loop` (5.17), whose callback
//! the verifier checks once rather than once per byte. A head that binds is looked up
//! by (destination port, host) in `BIND_HOSTS`.

use core::ffi::c_void;

use aya_ebpf::bindings::TC_ACT_UNSPEC;
use aya_ebpf::helpers::{bpf_loop, bpf_skb_load_bytes};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use ingress_common::bind::{BIND_SCRATCH_BYTES, BindScanResult, BindScratch};
use ingress_common::head::{BindHostKey, Fallback, HeadScanner, SCAN_MAX, STEP_MORE, VERDICT_BIND, VERDICT_CODES};

use crate::maps::{BIND_HOSTS, BIND_SCAN_COUNTS, BIND_SCAN_LAST, BIND_SCAN_SCRATCH};
use crate::nat::parse_tcp4;

const TCP_DOFF: usize = 12;

#[classifier]
pub fn bind_scan(ctx: TcContext) -> i32 {
    let (verdict, backend, key) = scan(&ctx);
    record(verdict, backend, &key);
    TC_ACT_UNSPEC
}

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

#[inline(always)]
fn scan(ctx: &TcContext) -> (u32, u32, BindHostKey) {
    let none = |f: Fallback| (f as u32, 0, BindHostKey::EMPTY);
    let Some(p) = parse_tcp4(ctx) else { return none(Fallback::NoPayload) };
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
    let Some(s) = BIND_SCAN_SCRATCH.get_ptr_mut(0) else { return none(Fallback::NoPayload) };
    // SAFETY: a valid per-CPU map value; this program alone uses it, and runs to the end
    // on this CPU before it runs again here.
    let s = unsafe { &mut *s };
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
        return (code, 0, BindHostKey::EMPTY);
    }
    let mut key = s.scanner.key;
    key.port = u16::from_be(p.dport);
    // SAFETY: read-only copy of the value.
    match unsafe { BIND_HOSTS.get(&key) } {
        Some(t) => (VERDICT_BIND as u32, t.backend, key),
        None => (Fallback::NotBindable as u32, 0, key),
    }
}

#[inline(always)]
fn record(verdict: u32, backend: u32, key: &BindHostKey) {
    let code = if verdict < VERDICT_CODES { verdict } else { Fallback::NoPayload as u32 };
    if let Some(c) = BIND_SCAN_COUNTS.get_ptr_mut(code) {
        // SAFETY: per-CPU value.
        unsafe { *c += 1 };
    }
    if let Some(last) = BIND_SCAN_LAST.get_ptr_mut(0) {
        // SAFETY: valid map value; a plain array, so concurrent CPUs may interleave
        // (it is for tests and debugging, which run one segment at a time).
        unsafe {
            let runs = (*last).runs;
            *last = BindScanResult { verdict, backend, key: *key, runs: runs.wrapping_add(1) };
        }
    }
}
