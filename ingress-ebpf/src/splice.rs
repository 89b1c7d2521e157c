//! sk_skb stream verdict for in-kernel splicing: data arriving on a joined socket is
//! redirected to the egress of its peer socket (client <-> pod), so the bytes never
//! reach user space. Sockets without a peer entry pass (the agent reads them). Bytes a
//! segment repeats are cut off first ([`crate::segment`] says why TCP hands them on).

use aya_ebpf::bindings::sk_action;
use aya_ebpf::macros::stream_verdict;
use aya_ebpf::programs::SkBuffContext;
use ingress_common::splice::SPLICE_PASSING;

use crate::counters::{SpliceEvent, count_splice};
use crate::maps::{SPLICE_PEERS, SPLICE_SOCKS, SPLICE_USER_PASS};
use crate::segment::{skip_handed_on, socket_key};

#[stream_verdict]
pub fn splice_verdict(ctx: SkBuffContext) -> u32 {
    let own = socket_key(&ctx);
    let Some(entry) = SPLICE_PEERS.get_ptr_mut(&own) else {
        count_splice(SpliceEvent::Unmatched);
        // Not joined: the agent reads it like any socket (fail open).
        return sk_action::SK_PASS;
    };
    // SAFETY: a valid map value pointer; only this socket's verdict runs write it, one
    // at a time (the socket is locked); the agent only reads it.
    let e = unsafe { &mut *entry };
    if skip_handed_on(&ctx, e).is_err() {
        // A control block this program does not know, or an overlap it cannot cut:
        // hand the socket to the agent.
        count_splice(SpliceEvent::LayoutMismatch);
        e.flags |= SPLICE_PASSING;
        return sk_action::SK_PASS;
    }
    if e.flags & SPLICE_PASSING != 0 || SPLICE_USER_PASS.get_ptr(&own).is_some() {
        count_splice(SpliceEvent::Passed);
        return sk_action::SK_PASS;
    }
    let peer = e.key;
    let len = ctx.len() as u64;
    // Flags 0: out through the peer's egress. SK_PASS on success, SK_DROP when the
    // peer is not in the SOCKHASH (being joined or parted): then this socket's bytes go
    // to the agent from now on, which copies them after what the kernel moved.
    if SPLICE_SOCKS.redirect_skb(&ctx, peer, 0) as u32 != sk_action::SK_PASS {
        e.flags |= SPLICE_PASSING;
        count_splice(SpliceEvent::Passed);
        return sk_action::SK_PASS;
    }
    count_splice(SpliceEvent::Redirected(len));
    // It tells the agent how much it must see written to the peer before it passes
    // on a close or copies bytes of its own.
    e.redirected_bytes += len;
    sk_action::SK_PASS
}
