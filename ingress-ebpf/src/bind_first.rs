//! tc ingress on the VM NIC (delayed binding, the study's step 3): the client's segments
//! to a cookie frontend (`SYNCOOKIE_TARGETS`) after `syncookie_xdp` answered its SYN.
//! - A flow already bound (its L4 conntrack entry): DNAT to its pod, forward (the L4
//!   path's helpers; replies go through `l4_reply` on the pod side's interface). One
//!   whose pod left (the agent marked it `CT_ENDPOINT_GONE`) passes to the stack
//!   untouched, which answers with a RST: the client learns at once, never hangs. A
//!   closing or closed flow's entry gives way to a new connection on the same tuple
//!   whose cookie ACK validates (a client reusing its port right after a close). A RST
//!   follows a bound flow's entry (it used to pass to the VM's stack: the pod never saw
//!   the client's reset); without an entry it passes untouched.
//! - Otherwise an ACK whose cookie validates (`syncookie::check` with the segment's
//!   TSecr, found by a `bpf_loop` walk over its options) and then, per
//!   `first_segment::action`: a pure ACK is dropped (the data segment repeats its ack);
//!   a head that names a host in `BIND_HOSTS` whose backend has an endpoint is bound
//!   (pod side's `POD_ADMITTED`, the flow's two conntrack entries, DNAT, forward); any
//!   other segment is handed to the agent's listener: `bpf_sk_lookup_tcp` and the kfunc
//!   `bpf_sk_assign_tcp_reqsk` with the attributes the cookie encoded, so the kernel makes
//!   the agent's socket from this very segment (no byte lost, ISN = the cookie).
//! - A segment whose cookie does not validate passes untouched to a connection the
//!   stack has for it (the agent's) or when nothing listens, and is dropped when only
//!   the frontend's listener would get it (its RST would kill a connection whose first
//!   segment is still on the way). Everything else (no cookie frontend, SYN/RST,
//!   malformed options) passes untouched. Outcomes are counted (`BIND_FIRST_COUNTS`) and
//!   the last kept (`BIND_FIRST_LAST`). The agent does not attach it yet.

use core::ffi::c_void;
use core::mem::size_of;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{BPF_F_CURRENT_NETNS, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC, bpf_sock_tuple};
use aya_ebpf::helpers::{bpf_loop, bpf_sk_lookup_tcp, bpf_sk_release, bpf_skb_load_bytes, bpf_skc_lookup_tcp};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use ingress_common::first_segment::{
    self, Action, BIND_CT_SERVICE, FIRST_AGENT_SOCKET, FIRST_ASSIGN_FAILED, FIRST_BAD_OPTIONS, FIRST_BOUND,
    FIRST_CT_HIT, FIRST_EARLY_DROPPED, FIRST_ENDPOINT_GONE, FIRST_FALLBACK, FIRST_MAP_ERROR, FIRST_NO_COOKIE,
    FIRST_NO_ENDPOINT, FIRST_NO_LISTENER, FIRST_PURE_ACK, FirstResult,
};
use ingress_common::head::Fallback;
use ingress_common::l4::{
    CT_AGENT, CT_CLOSED, CT_CLOSING, CT_DIR_REPLY, CT_ENDPOINT_GONE, L4CtEntry, L4CtKey, flow_hash,
};
use ingress_common::pod_bind::PodFlowKey;
use ingress_common::proto;
use ingress_common::syncookie::{self, Decoded, MAX_OPTIONS, PARSE_OK, SEEN_TS, SynCookieTarget, SynParse, Tuple};

use crate::conntrack::{initial_state, lookup_orig, now_ns, orig_key, touch};
use crate::head_scan::scan_payload;
use crate::kfunc::bpf_sk_assign_tcp_reqsk;
use crate::maps::{
    BIND_BACKENDS, BIND_FIRST_COUNTS, BIND_FIRST_LAST, BIND_FIRST_SCRATCH, BIND_HOSTS, L4_CT, POD_ADMITTED,
    SYNCOOKIE_CONFIG, SYNCOOKIE_TARGETS,
};
use crate::nat::{TCP_ACK, TCP_RST, TCP_SYN, Tcp4, forward, local_or_zero, parse_tcp4, rewrite};

const TCP_LISTEN: u32 = 10;
/// `FirstResult::scan` of a segment that was not scanned.
const NOT_SCANNED: u32 = 0xff;

#[classifier]
pub fn bind_first(ctx: TcContext) -> i32 {
    try_bind_first(&ctx).unwrap_or(TC_ACT_UNSPEC)
}

/// The context `bpf_loop` hands the callback: the option walk's map value.
#[repr(C)]
struct LoopCtx {
    parse: *mut SynParse,
}

/// One option of the timestamp walk; stops the loop (returns 1) when it has ended.
#[inline(never)]
extern "C" fn ts_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the LoopCtx of try_bind_first; its pointer is a valid
    // map value.
    let s = unsafe { &mut *(*(ctx as *mut LoopCtx)).parse };
    if first_segment::ts_step(s) { 1 } else { 0 }
}

#[inline(always)]
fn try_bind_first(ctx: &TcContext) -> Option<i32> {
    let p = parse_tcp4(ctx)?;
    // a RST only ever follows a bound flow's entry (to its pod); the rest needs an ACK
    let rst = p.flags & TCP_RST != 0;
    if p.flags & TCP_SYN != 0 || (!rst && p.flags & TCP_ACK == 0) {
        return None;
    }
    if local_or_zero(p.daddr) || local_or_zero(p.saddr) {
        return None;
    }
    let target = SynCookieTarget { addr: p.daddr, port: p.dport, _pad: 0 };
    // SAFETY: read-only lookup.
    unsafe { SYNCOOKIE_TARGETS.get(&target) }?;
    let now = now_ns();
    // a bound flow: forward like the L4 path. A closing or closed one's tuple may
    // already be a new connection's (the client reused the port): the edge answered
    // that SYN in XDP, so tc first sees the new connection at its ACK, which must not
    // go to the old flow's pod (no socket there: a RST). Its cookie decides. One whose
    // pod left passes to the stack untouched (the mark stays, so a retransmission gets
    // its RST too).
    let stale = match lookup_orig(&orig_key(&p), p.flags, now) {
        // SAFETY: valid map value pointer.
        Some(e) if unsafe { (*e).state } == CT_ENDPOINT_GONE => {
            count(FIRST_ENDPOINT_GONE);
            return Some(TC_ACT_OK as i32);
        }
        // SAFETY: valid map value pointer.
        Some(e)
            if rst && unsafe { (*e).state } != CT_AGENT
                || !matches!(unsafe { (*e).state }, CT_CLOSING | CT_CLOSED | CT_AGENT) =>
        {
            return Some(ct_forward(ctx, &p, e, now));
        }
        other => other,
    };
    if rst {
        return None;
    }
    // SAFETY: valid map value pointer (a copy).
    let old = stale.map(|e| unsafe { *e });
    if let Some(verdict) = first_of_connection(ctx, &p, now, old) {
        return Some(verdict);
    }
    // not a new connection's: the closing flow's own segment, or the agent's connection's
    match stale {
        // SAFETY: valid map value pointer.
        Some(e) if unsafe { (*e).state } != CT_AGENT => Some(ct_forward(ctx, &p, e, now)),
        _ => None,
    }
}

/// Forwards a segment of a bound flow through its conntrack entry `e`.
#[inline(always)]
fn ct_forward(ctx: &TcContext, p: &Tcp4, e: *mut L4CtEntry, now: u64) -> i32 {
    touch(e, p.flags, now);
    // SAFETY: valid map value pointer.
    let (addr, port) = unsafe { ((*e).nat_addr, (*e).nat_port) };
    count(FIRST_CT_HIT);
    dnat(ctx, p, addr, port)
}

/// A segment that is not a live bound flow's: bound, handed to the agent or dropped when
/// its cookie validates (always `Some` then). Otherwise `None` when `stale` (a closing
/// flow has the tuple: the caller forwards it there), else as `not_first` says.
///
/// `old`: the stale entry. One that closed with a FIN (or is already the agent's): the
/// pod may still hold the tuple in TIME_WAIT (it closed first), and a first segment
/// bound to it would meet that socket and hang (the pod never sees the SYN that would
/// recycle it), so the new connection goes to the agent, whose own connection to the pod
/// has a port of its own. When a stale tuple's new connection goes to the agent, its
/// entry becomes `CT_AGENT`: later segments pass to the agent's socket, not the old pod.
#[inline(always)]
fn first_of_connection(ctx: &TcContext, p: &Tcp4, now: u64, old: Option<L4CtEntry>) -> Option<i32> {
    let p = *p;
    let stale = old.is_some();
    let after_fin = old.is_some_and(|e| e.state == CT_CLOSING || e.state == CT_AGENT);
    let cfg = SYNCOOKIE_CONFIG.get(0)?;
    if cfg.path_mss == 0 {
        return None;
    }
    let seq = u32::from_be(ctx.load::<u32>(p.l4 + 4).ok()?);
    let ack = u32::from_be(ctx.load::<u32>(p.l4 + 8).ok()?);
    let doff = ((ctx.load::<u8>(p.l4 + 12).ok()? >> 4) as usize) * 4;
    let s = BIND_FIRST_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a valid per-CPU map value, used by this program alone, to the end of this
    // run on this CPU.
    let s = unsafe { &mut *s };
    // the segment's timestamps (any option layout), walked in bpf_loop
    let optlen = doff - 20; // parse_tcp4 checked doff >= 20
    if optlen > 0 {
        // SAFETY: a read of a local (a value the compiler cannot fold: the verifier must
        // see the bound checked on the register it is given).
        let len: u32 = unsafe { core::ptr::read_volatile(&(optlen as u32)) };
        if len == 0 || len > MAX_OPTIONS as u32 {
            return None;
        }
        // SAFETY: `len` <= MAX_OPTIONS < OPT_BUF bytes, which `opts` holds.
        let ret = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb as *const c_void,
                (p.l4 + 20) as u32,
                s.opts.opts.as_mut_ptr() as *mut c_void,
                len,
            )
        };
        if ret != 0 {
            return None;
        }
    }
    s.opts.start(optlen);
    let mut lctx = LoopCtx { parse: &mut s.opts as *mut SynParse };
    // SAFETY: the callback and its context follow bpf_loop's contract.
    unsafe { bpf_loop(MAX_OPTIONS as u32 + 1, ts_step as *mut c_void, &mut lctx as *mut LoopCtx as *mut c_void, 0) };
    if s.opts.state != PARSE_OK {
        if !stale {
            record(FIRST_BAD_OPTIONS, NOT_SCANNED, 0, 0, 0);
        }
        return None;
    }
    let ts = if s.opts.seen & SEEN_TS != 0 { Some((s.opts.tsval, s.opts.tsecr)) } else { None };
    let t = Tuple {
        saddr: u32::from_be(p.saddr),
        daddr: u32::from_be(p.daddr),
        sport: u16::from_be(p.sport),
        dport: u16::from_be(p.dport),
    };
    let Some(d) = syncookie::check(cfg, &t, seq, ack, ts.map(|(_, ecr)| ecr)) else {
        return if stale { None } else { not_first(ctx, &p) };
    };
    let client_isn = seq.wrapping_sub(1);
    let rcv_wscale = cfg.rcv_wscale;
    let end = p.l3 + p.tot_len as usize;
    let payload = end.saturating_sub(p.l4 + doff);
    match first_segment::action(payload, p.flags) {
        Action::Drop => {
            record(FIRST_PURE_ACK, NOT_SCANNED, 0, 0, 0);
            return Some(TC_ACT_SHOT as i32);
        }
        action => {
            if let Some(e) = old {
                // a bind below overwrites it; any handoff to the agent leaves it so
                let _ = L4_CT.insert(&orig_key(&p), &L4CtEntry { state: CT_AGENT, last_seen_ns: now, ..e }, 0);
            }
            if after_fin || matches!(action, Action::Fallback) {
                return Some(to_agent(ctx, &p, &d, client_isn, rcv_wscale, ts, NOT_SCANNED));
            }
        }
    }
    let (code, key) = scan_payload(ctx, &p, &mut s.head);
    if !first_segment::binds(code) {
        return Some(to_agent(ctx, &p, &d, client_isn, rcv_wscale, ts, code));
    }
    // SAFETY: read-only copy of the value.
    let Some(host) = (unsafe { BIND_HOSTS.get(&key) }).copied() else {
        return Some(to_agent(ctx, &p, &d, client_isn, rcv_wscale, ts, Fallback::NotBindable as u32));
    };
    // SAFETY: as above.
    let ep = unsafe { BIND_BACKENDS.get(&host.backend) }
        .and_then(|b| first_segment::endpoint(b, flow_hash(p.saddr, p.daddr, p.sport, p.dport)));
    let Some(ep) = ep else {
        count(FIRST_NO_ENDPOINT);
        return Some(to_agent(ctx, &p, &d, client_isn, rcv_wscale, ts, code));
    };
    let (ep_addr, ep_port) = (ep.addr, ep.port.to_be());
    // The pod side's entry first, then the reply entry, then the original one (which
    // makes later segments take the bound path): each can only be needed after the last.
    let pod_key = PodFlowKey { saddr: p.saddr, daddr: ep_addr, sport: p.sport, dport: ep_port };
    let entry = L4CtEntry {
        nat_addr: ep_addr,
        nat_port: ep_port,
        state: initial_state(p.flags),
        _pad0: 0,
        service: BIND_CT_SERVICE,
        _pad1: 0,
        last_seen_ns: now,
    };
    let back = L4CtKey {
        src_addr: ep_addr,
        dst_addr: p.saddr,
        src_port: ep_port,
        dst_port: p.sport,
        proto: proto::TCP,
        dir: CT_DIR_REPLY,
        _pad: 0,
    };
    let back_entry = L4CtEntry { nat_addr: p.daddr, nat_port: p.dport, ..entry };
    if POD_ADMITTED.insert(&pod_key, &first_segment::admit(&d, client_isn, rcv_wscale), 0).is_err()
        || L4_CT.insert(&back, &back_entry, 0).is_err()
        || L4_CT.insert(&orig_key(&p), &entry, 0).is_err()
    {
        let _ = POD_ADMITTED.remove(&pod_key);
        let _ = L4_CT.remove(&back);
        count(FIRST_MAP_ERROR);
        return Some(to_agent(ctx, &p, &d, client_isn, rcv_wscale, ts, code));
    }
    record(FIRST_BOUND, code, 0, ep_addr, ep.port);
    Some(dnat(ctx, &p, ep_addr, ep_port))
}

/// A segment whose cookie does not validate: passed to a connection the stack has for
/// the tuple (the agent's), or when there is no socket at all; dropped when only the
/// frontend's listener would get it (it would answer a RST, see `FIRST_EARLY_DROPPED`).
#[inline(always)]
fn not_first(ctx: &TcContext, p: &Tcp4) -> Option<i32> {
    // any socket: a handshake the stack answered itself (a request socket, e.g. a SYN
    // `syncookie_xdp` passed to recycle the agent's TIME_WAIT) is not the listener's,
    // though `bpf_sk_lookup_tcp` would give the listener for it
    let sk = lookup_common(ctx, p);
    if sk.is_null() {
        count(FIRST_NO_COOKIE);
        return None;
    }
    // SAFETY: a socket pointer from the lookup; `state` is readable.
    let listener = unsafe { (*sk).state } == TCP_LISTEN;
    // SAFETY: releases the lookup's reference.
    unsafe { bpf_sk_release(sk as *mut _) };
    if listener {
        count(FIRST_EARLY_DROPPED);
        return Some(TC_ACT_SHOT as i32);
    }
    count(FIRST_NO_COOKIE);
    None
}

/// `bpf_sk_lookup_tcp` for the segment's tuple in the current netns: a connection, else
/// the listener, else null. The caller releases a non-null result.
#[inline(always)]
fn lookup(ctx: &TcContext, p: &Tcp4) -> *mut aya_ebpf::bindings::bpf_sock {
    // SAFETY: all-zero is a valid bpf_sock_tuple.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // SAFETY: writing the ipv4 member of the union.
    unsafe {
        let t = &mut tuple.__bindgen_anon_1.ipv4;
        t.saddr = p.saddr;
        t.daddr = p.daddr;
        t.sport = p.sport;
        t.dport = p.dport;
    }
    let v4 = size_of::<aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    // A full socket (the kfunc takes a `struct sock`). SAFETY: valid context and tuple.
    unsafe { bpf_sk_lookup_tcp(ctx.as_ptr(), &mut tuple, v4, BPF_F_CURRENT_NETNS as u64, 0) }
}

/// `bpf_skc_lookup_tcp` for the segment's tuple in the current netns: a connection,
/// request or TIME_WAIT socket, else the listener, else null. The caller releases a
/// non-null result.
#[inline(always)]
fn lookup_common(ctx: &TcContext, p: &Tcp4) -> *mut aya_ebpf::bindings::bpf_sock {
    // SAFETY: all-zero is a valid bpf_sock_tuple.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // SAFETY: writing the ipv4 member of the union.
    unsafe {
        let t = &mut tuple.__bindgen_anon_1.ipv4;
        t.saddr = p.saddr;
        t.daddr = p.daddr;
        t.sport = p.sport;
        t.dport = p.dport;
    }
    let v4 = size_of::<aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    // SAFETY: valid context and tuple.
    unsafe { bpf_skc_lookup_tcp(ctx.as_ptr(), &mut tuple, v4, BPF_F_CURRENT_NETNS as u64, 0) as *mut _ }
}

/// DNAT to the pod and forward (the L4 path's helpers). A failed rewrite drops the
/// segment (never sent half rewritten).
#[inline(always)]
fn dnat(ctx: &TcContext, p: &Tcp4, addr: u32, port: u16) -> i32 {
    if rewrite(ctx, p, true, addr, port).is_err() {
        return TC_ACT_SHOT as i32;
    }
    forward(ctx, p, p.saddr, addr, p.sport, port).verdict()
}

/// Hands the segment to the agent's listener on the frontend: the kernel builds the
/// agent's socket from it with the attributes the cookie encoded. The segment always
/// passes on to the stack (TC_ACT_OK): with the request socket assigned the kernel
/// makes the connection; without (no listener, a refusal) it answers as usual.
#[inline(always)]
fn to_agent(
    ctx: &TcContext,
    p: &Tcp4,
    d: &Decoded,
    client_isn: u32,
    rcv_wscale: u8,
    ts: Option<(u32, u32)>,
    scan: u32,
) -> i32 {
    // released below
    let sk = lookup(ctx, p);
    if sk.is_null() {
        record(FIRST_NO_LISTENER, scan, 0, 0, 0);
        return TC_ACT_OK as i32;
    }
    // SAFETY: a socket pointer from the lookup; `state` is readable.
    if unsafe { (*sk).state } == TCP_LISTEN {
        let mut attrs = first_segment::reqsk_attrs(d, client_isn, rcv_wscale, ts);
        // SAFETY: the skb of this tc program, a listener from the lookup, attributes on the stack.
        let ret = unsafe {
            bpf_sk_assign_tcp_reqsk(
                ctx.skb.skb,
                sk,
                &mut attrs,
                size_of::<ingress_common::pod_bind::TcpReqAttrs>() as i32,
            )
        };
        let outcome = if ret == 0 { FIRST_FALLBACK } else { FIRST_ASSIGN_FAILED };
        record(outcome, scan, ret, 0, 0);
    } else {
        record(FIRST_AGENT_SOCKET, scan, 0, 0, 0);
    }
    // SAFETY: releases the lookup's reference.
    unsafe { bpf_sk_release(sk as *mut _) };
    TC_ACT_OK as i32
}

#[inline(always)]
fn count(outcome: u32) {
    if let Some(c) = BIND_FIRST_COUNTS.get_ptr_mut(outcome) {
        // SAFETY: per-CPU value.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn record(outcome: u32, scan: u32, assign_ret: i32, pod_addr: u32, pod_port: u16) {
    count(outcome);
    if let Some(last) = BIND_FIRST_LAST.get_ptr_mut(0) {
        // SAFETY: valid map value; a plain array, so concurrent CPUs may interleave
        // (it is for tests and debugging).
        unsafe {
            let runs = (*last).runs;
            *last = FirstResult { outcome, scan, assign_ret, pod_addr, pod_port, _pad: 0, runs: runs.wrapping_add(1) };
        }
    }
}
