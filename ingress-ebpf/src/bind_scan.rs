//! tc classifier: the delayed-binding head scanner on a TCP segment's payload (the
//! scanner of `ingress_common::head`, the same source the agent's tests run). It only
//! reads: the segment's verdict is counted per code and the last one kept
//! (`BIND_SCAN_COUNTS`, `BIND_SCAN_LAST`), and the packet always passes unchanged. The
//! agent does not attach it yet; the packet tier runs it through BPF_PROG_TEST_RUN.
//!
//! The scan itself is `head_scan::scan_payload` (shared with `bind_first`). A head that binds is looked up
//! by (destination port, host) in `BIND_HOSTS`.

use aya_ebpf::bindings::TC_ACT_UNSPEC;
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use ingress_common::bind::BindScanResult;
use ingress_common::head::{BindHostKey, Fallback, VERDICT_BIND, VERDICT_CODES};

use crate::head_scan::scan_payload;
use crate::maps::{BIND_HOSTS, BIND_SCAN_COUNTS, BIND_SCAN_LAST, BIND_SCAN_SCRATCH};
use crate::nat::parse_tcp4;

#[classifier]
pub fn bind_scan(ctx: TcContext) -> i32 {
    let (verdict, backend, key) = scan(&ctx);
    record(verdict, backend, &key);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn scan(ctx: &TcContext) -> (u32, u32, BindHostKey) {
    let none = |f: Fallback| (f as u32, 0, BindHostKey::EMPTY);
    let Some(p) = parse_tcp4(ctx) else { return none(Fallback::NoPayload) };
    let Some(s) = BIND_SCAN_SCRATCH.get_ptr_mut(0) else { return none(Fallback::NoPayload) };
    // SAFETY: a valid per-CPU map value; this program alone uses it, and runs to the end
    // on this CPU before it runs again here.
    let s = unsafe { &mut *s };
    let (code, key) = scan_payload(ctx, &p, s);
    if code != VERDICT_BIND as u32 {
        return (code, 0, key);
    }
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
