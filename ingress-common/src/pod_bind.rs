//! Delayed binding's pod side (docs/delayed-binding.md, step 4 of the study): the entry
//! the edge writes for a connection it admitted with a valid cookie, which the tc
//! program in the pod's network namespace reads to build the pod's socket with
//! `bpf_sk_assign_tcp_reqsk`. Maps are not namespace-scoped, so both programs share it.

use core::mem::size_of;

/// Key of `POD_ADMITTED`: the connection as the pod sees it (after the edge's DNAT), the
/// packet's bytes (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PodFlowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}
const _: () = assert!(size_of::<PodFlowKey>() == 12);

/// Value of `POD_ADMITTED`: what the cookie decoded to (`crate::syncookie::Decoded`) and
/// the client's ISN, so only the first data segment (seq = ISN + 1) creates the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PodAdmit {
    pub client_isn: u32,
    /// The client's MSS (what the pod may send).
    pub mss: u16,
    /// The client's window shift (`snd_wscale`) and ours (`rcv_wscale`, as the SYN-ACK said).
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub wscale_ok: u8,
    pub sack_ok: u8,
    pub ecn_ok: u8,
    pub tstamp_ok: u8,
}
const _: () = assert!(size_of::<PodAdmit>() == 12);

/// The kernel's `struct bpf_tcp_req_attrs` (include/net/tcp.h, Linux 6.11): the
/// attributes `bpf_sk_assign_tcp_reqsk` builds the request socket from. The kfunc
/// checks the size it is given against the kernel's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpReqAttrs {
    pub rcv_tsval: u32,
    pub rcv_tsecr: u32,
    pub mss: u16,
    pub rcv_wscale: u8,
    pub snd_wscale: u8,
    pub ecn_ok: u8,
    pub wscale_ok: u8,
    pub sack_ok: u8,
    pub tstamp_ok: u8,
    pub usec_ts_ok: u8,
    pub reserved: [u8; 3],
}
const _: () = assert!(size_of::<TcpReqAttrs>() == 20);

impl TcpReqAttrs {
    /// The attributes for an admitted connection, with the (TSval, TSecr) of the
    /// segment that creates the socket (when timestamps are on).
    #[inline(always)]
    pub fn from_admit(a: &PodAdmit, ts: Option<(u32, u32)>) -> Self {
        let (rcv_tsval, rcv_tsecr, tstamp_ok) = match ts {
            Some((val, ecr)) if a.tstamp_ok != 0 => (val, ecr, 1),
            _ => (0, 0, 0),
        };
        TcpReqAttrs {
            rcv_tsval,
            rcv_tsecr,
            mss: a.mss,
            rcv_wscale: if a.wscale_ok != 0 { a.rcv_wscale } else { 0 },
            snd_wscale: if a.wscale_ok != 0 { a.snd_wscale } else { 0 },
            ecn_ok: a.ecn_ok,
            wscale_ok: a.wscale_ok,
            sack_ok: a.sack_ok,
            tstamp_ok,
            usec_ts_ok: 0,
            reserved: [0; 3],
        }
    }
}

/// The timestamps option's (TSval, TSecr) among a segment's option bytes `opts[..len]`
/// (any options; `None` without one or when the list is malformed).
#[inline(always)]
pub fn find_timestamp(opts: &[u8; crate::syncookie::OPT_BUF], len: usize) -> Option<(u32, u32)> {
    use crate::syncookie::{MAX_OPTIONS, OPT_EOL, OPT_NOP, OPT_TIMESTAMP, at_index};
    let len = if len > MAX_OPTIONS { MAX_OPTIONS } else { len };
    let mut i = 0usize;
    let mut n = 0;
    while n < MAX_OPTIONS {
        n += 1;
        if i >= len {
            return None;
        }
        let kind = at_index(opts, i);
        if kind == OPT_EOL {
            return None;
        }
        if kind == OPT_NOP {
            i += 1;
            continue;
        }
        if i + 1 >= len {
            return None;
        }
        let olen = at_index(opts, i + 1) as usize;
        if olen < 2 || i + olen > len {
            return None;
        }
        if kind == OPT_TIMESTAMP {
            if olen != 10 {
                return None;
            }
            let at = |k: usize| at_index(opts, i + k);
            return Some((
                u32::from_be_bytes([at(2), at(3), at(4), at(5)]),
                u32::from_be_bytes([at(6), at(7), at(8), at(9)]),
            ));
        }
        i += olen;
    }
    None
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Copy, no implicit padding (size checks above).
    unsafe impl aya::Pod for super::PodFlowKey {}
    unsafe impl aya::Pod for super::PodAdmit {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncookie::OPT_BUF;

    fn o(b: &[u8]) -> ([u8; OPT_BUF], usize) {
        let mut a = [0u8; OPT_BUF];
        a[..b.len()].copy_from_slice(b);
        (a, b.len())
    }

    #[test]
    fn the_timestamp_is_found_among_any_options() {
        let (a, n) = o(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6]);
        assert_eq!(find_timestamp(&a, n), Some((5, 6)));
        let (a, n) = o(&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0]);
        assert_eq!(find_timestamp(&a, n), Some((256, 512)), "after a SACK block");
        let (a, n) = o(&[1, 1, 8, 9, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(find_timestamp(&a, n), None, "wrong length");
        let (a, n) = o(&[]);
        assert_eq!(find_timestamp(&a, n), None);
    }

    #[test]
    fn attributes_follow_the_admitted_flow() {
        let a = PodAdmit {
            client_isn: 7,
            mss: 1460,
            snd_wscale: 9,
            rcv_wscale: 7,
            wscale_ok: 1,
            sack_ok: 1,
            ecn_ok: 0,
            tstamp_ok: 1,
        };
        let r = TcpReqAttrs::from_admit(&a, Some((100, 200)));
        assert_eq!((r.rcv_tsval, r.rcv_tsecr, r.tstamp_ok), (100, 200, 1));
        assert_eq!((r.mss, r.snd_wscale, r.rcv_wscale, r.wscale_ok, r.sack_ok), (1460, 9, 7, 1, 1));
        let r = TcpReqAttrs::from_admit(&PodAdmit { tstamp_ok: 0, wscale_ok: 0, ..a }, Some((100, 200)));
        assert_eq!((r.tstamp_ok, r.rcv_tsval, r.snd_wscale, r.rcv_wscale), (0, 0, 0, 0));
    }
}
