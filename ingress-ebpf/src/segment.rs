//! A TCP segment as the splice verdict gets it: the key of the socket it arrived on,
//! its sequence range, and cutting off the bytes of it that were handed on already.
//!
//! Overlapping segments. Without a stream parser the kernel feeds the verdict from
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

use aya_ebpf::helpers::{bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes};
use aya_ebpf::programs::SkBuffContext;
use ingress_common::splice::{SPLICE_SEQ_KNOWN, SpliceKey, SplicePeer};

use crate::counters::{SpliceEvent, count_splice};
use crate::parse::TCP_FIN;

/// `bpf_skb_adjust_room` moves at most this many bytes per call.
const ADJUST_STEP: u32 = 0xfff;
/// A shrink by `bpf_skb_adjust_room` must leave at least an IPv4 header's worth.
const ADJUST_MIN_LEFT: u32 = 20;

/// The key of the socket the segment arrived on.
#[inline(always)]
pub fn socket_key(ctx: &SkBuffContext) -> SpliceKey {
    SpliceKey {
        local_ip4: ctx.skb.local_ipv4(),
        remote_ip4: ctx.skb.remote_ipv4(),
        local_port: ctx.skb.local_port(),
        remote_port: normalize_remote_port(ctx.skb.remote_port()),
    }
}

/// Cuts off (and counts) the front of the segment that `peer` says was handed on
/// already, and moves `peer.next_seq` past the segment. `Err` (with `peer` unchanged)
/// when the control block does not hold the segment's range, or the overlap cannot be
/// cut.
#[inline(always)]
pub fn skip_handed_on(ctx: &SkBuffContext, peer: &mut SplicePeer) -> Result<(), ()> {
    let len = ctx.len();
    let (seq, end, tcp_flags) = {
        let cb = ctx.skb.cb();
        (cb[0], cb[1], cb[3] & 0xff)
    };
    let fin = tcp_flags & TCP_FIN as u32;
    if end.wrapping_sub(seq) != len.wrapping_add(fin) {
        // Not the control block this program knows: never guess.
        return Err(());
    }
    if peer.flags & SPLICE_SEQ_KNOWN != 0 {
        let overlap = peer.next_seq.wrapping_sub(seq) as i32;
        if overlap > 0 {
            let overlap = overlap as u32;
            // (a segment all of whose bytes were handed on is never queued by TCP)
            if overlap >= len || trim_front(ctx, overlap, len).is_err() {
                return Err(());
            }
            count_splice(SpliceEvent::Trimmed(overlap as u64));
        }
    }
    peer.next_seq = end.wrapping_sub(fin);
    peer.flags |= SPLICE_SEQ_KNOWN;
    Ok(())
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
pub fn normalize_remote_port(raw: u32) -> u32 {
    if raw > 0xffff { raw >> 16 } else { raw }
}
