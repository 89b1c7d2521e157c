//! sk_skb stream verdict for in-kernel splicing: data arriving on a joined socket is
//! redirected to the egress of its peer socket (client <-> pod), so the bytes never
//! reach user space. Sockets without a peer entry pass (the agent reads them).

use aya_ebpf::bindings::sk_action;
use aya_ebpf::macros::{map, stream_verdict};
use aya_ebpf::maps::{HashMap, PerCpuArray, SockHash};
use aya_ebpf::programs::SkBuffContext;
use ingress_common::{SPLICE_MAX_ENTRIES, SpliceKey, SplicePeer, SpliceStats};

#[map(name = "SPLICE_SOCKS")]
static SPLICE_SOCKS: SockHash<SpliceKey> = SockHash::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_PEERS")]
static SPLICE_PEERS: HashMap<SpliceKey, SplicePeer> = HashMap::with_max_entries(SPLICE_MAX_ENTRIES, 0);

#[map(name = "SPLICE_STATS")]
static SPLICE_STATS: PerCpuArray<SpliceStats> = PerCpuArray::with_max_entries(1, 0);

#[stream_verdict]
pub fn splice_verdict(ctx: SkBuffContext) -> u32 {
    let own = SpliceKey {
        local_ip4: ctx.skb.local_ipv4(),
        remote_ip4: ctx.skb.remote_ipv4(),
        local_port: ctx.skb.local_port(),
        remote_port: normalize_remote_port(ctx.skb.remote_port()),
    };
    let len = ctx.skb.len() as u64;
    let Some(entry) = SPLICE_PEERS.get_ptr_mut(&own) else {
        count(0, false);
        // Not joined (yet): the agent reads it like any socket (fail open).
        return sk_action::SK_PASS;
    };
    // SAFETY: a valid map value pointer; the key is copied out before the redirect.
    let peer = unsafe { (*entry).key };
    // Flags 0: out through the peer's egress. Returns SK_PASS on success, SK_DROP when
    // the peer is gone (the agent then tears the pair down).
    let verdict = SPLICE_SOCKS.redirect_skb(&ctx, peer, 0) as u32;
    if verdict == sk_action::SK_PASS {
        count(len, true);
        // SAFETY: only this socket's verdict runs update its entry, one at a time
        // (the socket is locked); the agent only reads it. It tells the agent how
        // much it must see written to the peer before passing on a close.
        unsafe { (*entry).redirected_bytes += len };
    }
    verdict
}

/// `__sk_buff.remote_port` holds the network-order port shifted into the upper 16
/// bits on little-endian hosts (net/core/filter.c, `bpf_convert_ctx_access`, since
/// 4.14); the key carries it in the low 16 bits on every host.
#[inline(always)]
fn normalize_remote_port(raw: u32) -> u32 {
    if raw > 0xffff { raw >> 16 } else { raw }
}

#[inline(always)]
fn count(bytes: u64, redirected: bool) {
    if let Some(s) = SPLICE_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            if redirected {
                (*s).redirected_bytes += bytes;
                (*s).redirected_skbs += 1;
            } else {
                (*s).unmatched_skbs += 1;
            }
        }
    }
}
