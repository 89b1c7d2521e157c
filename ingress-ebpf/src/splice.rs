//! sk_skb stream verdict for in-kernel splicing: data arriving on a joined socket is
//! redirected to the egress of its peer socket (client <-> pod), so the bytes never
//! reach user space. Sockets without a peer entry pass (the agent reads them).
//!
//! Overlapping segments. Without a stream parser the kernel feeds this program from
//! `tcp_read_skb()`, which hands over every skb of the receive queue whole. TCP queues
//! a segment that starts before `rcv_nxt` without trimming it (a retransmission cut on
//! other boundaries, or an out-of-order segment that partly covers what came before:
//! `tcp_data_queue`'s partial-packet case, `tcp_ofo_queue`), and `tcp_recvmsg` skips
//! such a prefix by its sequence number, but `tcp_read_skb` does not: the prefix would
//! reach the peer a second time. So the program keeps, per joined socket, the
//! sequence number after the last byte it handed on, reads each skb's range from its
//! TCP control block (`__sk_buff.cb[0..2]` = `TCP_SKB_CB(skb)->seq, end_seq` for
//! sk_skb programs; checked against the length on every skb), and cuts the overlap
//! off before the redirect.

use aya_ebpf::bindings::sk_action;
use aya_ebpf::helpers::{bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes};
use aya_ebpf::macros::{map, stream_verdict};
use aya_ebpf::maps::{HashMap, PerCpuArray, SockHash};
use aya_ebpf::programs::SkBuffContext;
use ingress_common::{SPLICE_MAX_ENTRIES, SPLICE_PASSING, SPLICE_SEQ_KNOWN, SpliceKey, SplicePeer, SpliceStats};

#[map(name = "SPLICE_SOCKS")]
static SPLICE_SOCKS: SockHash<SpliceKey> = SockHash::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_PEERS")]
static SPLICE_PEERS: HashMap<SpliceKey, SplicePeer> = HashMap::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_USER_PASS")]
static SPLICE_USER_PASS: HashMap<SpliceKey, u32> = HashMap::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_STATS")]
static SPLICE_STATS: PerCpuArray<SpliceStats> = PerCpuArray::with_max_entries(1, 0);

const TCP_FIN: u32 = 0x01;
/// `bpf_skb_adjust_room` moves at most this many bytes per call.
const ADJUST_STEP: u32 = 0xfff;
/// A shrink by `bpf_skb_adjust_room` must leave at least an IPv4 header's worth.
const ADJUST_MIN_LEFT: u32 = 20;

enum Event {
    Unmatched,
    Redirected(u64),
    Trimmed(u64),
    Passed,
    LayoutMismatch,
}

#[stream_verdict]
pub fn splice_verdict(ctx: SkBuffContext) -> u32 {
    let own = SpliceKey {
        local_ip4: ctx.skb.local_ipv4(),
        remote_ip4: ctx.skb.remote_ipv4(),
        local_port: ctx.skb.local_port(),
        remote_port: normalize_remote_port(ctx.skb.remote_port()),
    };
    let Some(entry) = SPLICE_PEERS.get_ptr_mut(&own) else {
        count(Event::Unmatched);
        // Not joined: the agent reads it like any socket (fail open).
        return sk_action::SK_PASS;
    };
    // SAFETY: a valid map value pointer; only this socket's verdict runs write it, one
    // at a time (the socket is locked); the agent only reads it.
    let e = unsafe { &mut *entry };
    let len = ctx.len();
    let (seq, end, tcp_flags) = {
        let cb = ctx.skb.cb();
        (cb[0], cb[1], cb[3] & 0xff)
    };
    let fin = tcp_flags & TCP_FIN;
    if end.wrapping_sub(seq) != len.wrapping_add(fin) {
        // Not the control block this program knows: never guess, hand it to the agent.
        count(Event::LayoutMismatch);
        e.flags |= SPLICE_PASSING;
        return sk_action::SK_PASS;
    }
    if e.flags & SPLICE_SEQ_KNOWN != 0 {
        let overlap = e.next_seq.wrapping_sub(seq) as i32;
        if overlap > 0 {
            let overlap = overlap as u32;
            if overlap >= len || trim_front(&ctx, overlap, len).is_err() {
                // (a segment all of whose bytes were handed on is never queued by TCP)
                count(Event::LayoutMismatch);
                e.flags |= SPLICE_PASSING;
                return sk_action::SK_PASS;
            }
            count(Event::Trimmed(overlap as u64));
        }
    }
    e.next_seq = end.wrapping_sub(fin);
    e.flags |= SPLICE_SEQ_KNOWN;
    if e.flags & SPLICE_PASSING != 0 || SPLICE_USER_PASS.get_ptr(&own).is_some() {
        count(Event::Passed);
        return sk_action::SK_PASS;
    }
    let peer = e.key;
    let len = ctx.len() as u64;
    // Flags 0: out through the peer's egress. SK_PASS on success, SK_DROP when the
    // peer is not in the SOCKHASH (being joined or parted): then this socket's bytes go
    // to the agent from now on, which copies them after what the kernel moved.
    if SPLICE_SOCKS.redirect_skb(&ctx, peer, 0) as u32 != sk_action::SK_PASS {
        e.flags |= SPLICE_PASSING;
        count(Event::Passed);
        return sk_action::SK_PASS;
    }
    count(Event::Redirected(len));
    // It tells the agent how much it must see written to the peer before it passes
    // on a close or copies bytes of its own.
    e.redirected_bytes += len;
    sk_action::SK_PASS
}

/// Removes the first `n` bytes of the skb (`n < len`).
#[inline(always)]
fn trim_front(ctx: &SkBuffContext, n: u32, len: u32) -> Result<(), ()> {
    let keep = len - n;
    // adjust_room cuts from the front but must leave ADJUST_MIN_LEFT bytes: cut all
    // of the overlap, or as much as leaves that many
    let cut = if keep >= ADJUST_MIN_LEFT { n } else { len.saturating_sub(ADJUST_MIN_LEFT) };
    cut_front(ctx, cut)?;
    if keep >= ADJUST_MIN_LEFT {
        return Ok(());
    }
    // A short tail: the skb now holds `left` <= 20 bytes, the last `keep` of them new.
    // Move those to the front and cut the end.
    let left = len - cut;
    let dup = left - keep;
    let mut buf = [0u8; ADJUST_MIN_LEFT as usize];
    if left > ADJUST_MIN_LEFT || keep == 0 {
        return Err(());
    }
    // (the masks are for the verifier, which must see the lengths bounded at the call)
    let left = bounded(left);
    if left == 0 {
        return Err(());
    }
    // SAFETY: the helper writes at most `left` (<= buf.len()) bytes into buf.
    let rc = unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, buf.as_mut_ptr().cast(), left) };
    if rc != 0 {
        return Err(());
    }
    let mut out = [0u8; ADJUST_MIN_LEFT as usize];
    for (i, o) in out.iter_mut().enumerate() {
        let j = i + dup as usize;
        if j < buf.len() {
            *o = buf[j];
        }
    }
    let keep = bounded(keep);
    if keep == 0 {
        return Err(());
    }
    // SAFETY: the helper reads `keep` (<= out.len()) bytes from out; the tail change
    // takes the program's context pointer.
    let rc = unsafe { bpf_skb_store_bytes(ctx.skb.skb.cast(), 0, out.as_ptr().cast(), keep, 0) };
    if rc != 0 {
        return Err(());
    }
    let rc = unsafe { bpf_skb_change_tail(ctx.skb.skb.cast(), keep, 0) };
    if rc == 0 { Ok(()) } else { Err(()) }
}

/// `v & 0x1f`, masked where the compiler cannot see (it would drop the mask after a
/// range check, and the verifier tracks the helper length through the mask only).
#[inline(always)]
fn bounded(v: u32) -> u32 {
    // SAFETY: a read of a local.
    let v = unsafe { core::ptr::read_volatile(&v) };
    let v = v & 0x1f;
    if v > ADJUST_MIN_LEFT { 0 } else { v }
}

/// Cuts `n` bytes off the front with `bpf_skb_adjust_room`, a step at a time.
#[inline(always)]
fn cut_front(ctx: &SkBuffContext, n: u32) -> Result<(), ()> {
    let mut left = n;
    // 17 steps of 0xfff cover a 64 KiB skb
    for _ in 0..17 {
        if left == 0 {
            return Ok(());
        }
        let step = if left > ADJUST_STEP { ADJUST_STEP } else { left };
        ctx.skb.adjust_room(-(step as i32), 0, 0).map_err(|_| ())?;
        left -= step;
    }
    if left == 0 { Ok(()) } else { Err(()) }
}

/// `__sk_buff.remote_port` holds the network-order port shifted into the upper 16
/// bits on little-endian hosts (net/core/filter.c, `bpf_convert_ctx_access`, since
/// 4.14); the key carries it in the low 16 bits on every host.
#[inline(always)]
fn normalize_remote_port(raw: u32) -> u32 {
    if raw > 0xffff { raw >> 16 } else { raw }
}

#[inline(always)]
fn count(ev: Event) {
    if let Some(s) = SPLICE_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        let s = unsafe { &mut *s };
        match ev {
            Event::Unmatched => s.unmatched_skbs += 1,
            Event::Redirected(bytes) => {
                s.redirected_bytes += bytes;
                s.redirected_skbs += 1;
            }
            Event::Trimmed(bytes) => s.trimmed_bytes += bytes,
            Event::Passed => s.passed_skbs += 1,
            Event::LayoutMismatch => s.layout_mismatches += 1,
        }
    }
}
