//! Delayed binding at the edge, the client's first segments after a cookie SYN-ACK (the
//! study's step 3; docs/delayed-binding.md): pure parts of the tc program `bind_first`
//! on the NIC, built for BPF and the host (the host's unit tests check what the kernel
//! runs).
//!
//! For an ACK (no SYN/RST) to a cookie frontend with no conntrack entry the program:
//! finds the segment's timestamps ([`ts_step`], in `bpf_loop`), validates the cookie
//! (`syncookie::check`: seq - 1 is the client's ISN, ack - 1 the cookie), then
//! [`action`] decides: a pure ACK is dropped (the data segment repeats the same ack),
//! a segment whose head binds goes to a pod of the host's backend ([`endpoint`]: the
//! flow's L4 conntrack entries, the pod side's [`PodAdmit`] from [`admit`], DNAT), and
//! everything else is handed to the agent's listener: the kernel function
//! `bpf_sk_assign_tcp_reqsk` with [`reqsk_attrs`] turns this very segment into the
//! agent's socket (ISN = the cookie), so the agent serves it as today and no byte is lost.

use core::mem::size_of;

use crate::bind::{BIND_MAX_ENDPOINTS, BindBackend, BindEndpoint};
use crate::head::VERDICT_BIND;
use crate::pod_bind::{PodAdmit, TcpReqAttrs};
use crate::syncookie::{
    Decoded, MAX_WSCALE, OPT_EOL, OPT_NOP, OPT_TIMESTAMP, PARSE_BAD_LENGTH, PARSE_MORE, PARSE_OK, SEEN_TS, SynParse,
    TCP_FIN, at_index,
};

/// The `service` of the L4 conntrack entries of a bound flow: no L4 service (out of
/// `L4_STATS`' range, so the L4 programs count nothing for it).
pub const BIND_CT_SERVICE: u32 = u32::MAX;

/// Indexes of `BIND_FIRST_COUNTS` (per-CPU `u64`s): what the program did with a segment.
/// Appended only.
pub const FIRST_CT_HIT: u32 = 0;
/// Not a cookie's first segment: the cookie did not validate (a later segment of a
/// connection the agent owns, a forged or expired cookie): passed to the stack.
pub const FIRST_NO_COOKIE: u32 = 1;
/// A valid pure ACK: dropped (the first data segment carries the same ack).
pub const FIRST_PURE_ACK: u32 = 2;
/// Bound to a pod: conntrack + admitted-flow entries written, DNATed, forwarded.
pub const FIRST_BOUND: u32 = 3;
/// Handed to the agent's listener (`bpf_sk_assign_tcp_reqsk` returned 0).
pub const FIRST_FALLBACK: u32 = 4;
/// Fallback wanted but no listener on the frontend: passed (the kernel answers a RST).
pub const FIRST_NO_LISTENER: u32 = 5;
/// Fallback wanted, the kernel function refused (its error in `BIND_FIRST_LAST`): passed.
pub const FIRST_ASSIGN_FAILED: u32 = 6;
/// The segment's options are malformed: passed untouched.
pub const FIRST_BAD_OPTIONS: u32 = 7;
/// Bindable, but the backend has no endpoint: handed to the agent (which answers 503).
pub const FIRST_NO_ENDPOINT: u32 = 8;
/// Bindable, but a map insert failed: handed to the agent.
pub const FIRST_MAP_ERROR: u32 = 9;
/// Fallback wanted, and the lookup found a connected socket (a retransmitted first
/// segment of a connection the agent already took over): passed to it.
pub const FIRST_AGENT_SOCKET: u32 = 10;
/// Not a cookie's first segment, and the frontend has only a listener for the tuple (no
/// connection): dropped rather than passed, because the stack would answer it with a RST
/// that kills a connection whose first segment is still on its way (a segment reordered
/// before the first one); the client retransmits it once the flow is bound.
pub const FIRST_EARLY_DROPPED: u32 = 11;
/// A segment of a bound flow whose endpoint left (`l4::CT_ENDPOINT_GONE`): passed to the
/// stack un-NATed, which answers it with a RST.
pub const FIRST_ENDPOINT_GONE: u32 = 12;
pub const FIRST_COUNTS: u32 = 13;

/// `BIND_FIRST_LAST` (an array of one, for tests and debugging): the last segment the
/// program decided on without a conntrack hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstResult {
    /// One of the `FIRST_*` codes.
    pub outcome: u32,
    /// The head scanner's verdict (0: bind, else `head::Fallback`; 0xff: not scanned).
    pub scan: u32,
    /// The kernel function's return value (fallbacks), else 0.
    pub assign_ret: i32,
    /// The chosen pod (bound): address in network byte order, port in host byte order.
    pub pod_addr: u32,
    pub pod_port: u16,
    pub _pad: u16,
    /// Segments decided so far (to tell a new result from an old one).
    pub runs: u32,
}
const _: () = assert!(size_of::<FirstResult>() == 24);

/// What to do with a segment whose cookie validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A pure ACK: drop it.
    Drop,
    /// Scan the head (then bind or fall back).
    Scan,
    /// Hand it to the agent without scanning (a FIN without data: no head to read).
    Fallback,
}

/// The action for a validated segment with `payload` bytes and TCP `flags`.
#[inline(always)]
pub fn action(payload: usize, flags: u8) -> Action {
    if payload > 0 {
        Action::Scan
    } else if flags & TCP_FIN != 0 {
        Action::Fallback
    } else {
        Action::Drop
    }
}

/// Whether a scan verdict binds (else the agent serves the connection).
#[inline(always)]
pub fn binds(verdict: u32) -> bool {
    verdict == VERDICT_BIND as u32
}

/// The backend's endpoint for a flow with hash `hash` (`l4::flow_hash` of the client's
/// tuple): `endpoints[hash * count >> 32]`, so every endpoint gets an equal share
/// without a division. `None` when the backend has none (or claims more than fit).
#[inline(always)]
pub fn endpoint(b: &BindBackend, hash: u32) -> Option<BindEndpoint> {
    let count = b.count;
    if count == 0 || count as usize > BIND_MAX_ENDPOINTS {
        return None;
    }
    let i = endpoint_index((((hash as u64) * (count as u64)) >> 32) as usize);
    // SAFETY: endpoint_index masks to BIND_MAX_ENDPOINTS - 1.
    Some(unsafe { *b.endpoints.get_unchecked(i) })
}

/// `i & (BIND_MAX_ENDPOINTS - 1)`; on BPF an inline-asm AND, because LLVM drops a mask it
/// proves redundant (here: i < count <= 16) and the verifier, which does not follow
/// that proof, then refuses the variable offset into the map value.
#[inline(always)]
fn endpoint_index(i: usize) -> usize {
    const _: () = assert!(BIND_MAX_ENDPOINTS == 16);
    #[cfg(target_arch = "bpf")]
    {
        let mut v = i;
        // SAFETY: a register-only AND.
        unsafe { core::arch::asm!("{0} &= 15", inout(reg) v, options(pure, nomem, nostack)) };
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        i & (BIND_MAX_ENDPOINTS - 1)
    }
}

/// The pod side's entry for a connection the cookie `d` validated: the client's ISN
/// (`seq - 1` of the validated segment) and the attributes, with our window shift as
/// the SYN-ACK advertised it (`rcv_wscale`, clamped like the SYN-ACK's).
#[inline(always)]
pub fn admit(d: &Decoded, client_isn: u32, rcv_wscale: u8) -> PodAdmit {
    let (wscale_ok, snd) = match d.snd_wscale {
        Some(w) => (1, w),
        None => (0, 0),
    };
    PodAdmit {
        client_isn,
        mss: d.mss,
        snd_wscale: snd,
        rcv_wscale: if rcv_wscale > MAX_WSCALE { MAX_WSCALE } else { rcv_wscale },
        wscale_ok,
        sack_ok: d.sack as u8,
        ecn_ok: d.ecn as u8,
        tstamp_ok: d.tstamp as u8,
    }
}

/// The attributes `bpf_sk_assign_tcp_reqsk` gets for a fallback to the agent's
/// listener: the same as the pod side would get, with this segment's timestamps.
#[inline(always)]
pub fn reqsk_attrs(d: &Decoded, client_isn: u32, rcv_wscale: u8, ts: Option<(u32, u32)>) -> TcpReqAttrs {
    TcpReqAttrs::from_admit(&admit(d, client_isn, rcv_wscale), ts)
}

/// One step of the walk for the timestamps option among any options of a (non-SYN)
/// segment (SACK blocks, unknown kinds are skipped): on [`SynParse`] as the SYN walk,
/// so the program runs it in `bpf_loop` from the same kind of map value. Returns true
/// when the walk has ended: [`PARSE_OK`] (the option in `tsval`/`tsecr` when `seen &
/// SEEN_TS`) or [`PARSE_BAD_LENGTH`] (a malformed list).
#[inline(always)]
pub fn ts_step(s: &mut SynParse) -> bool {
    if s.state != PARSE_MORE {
        return true;
    }
    let len = s.len as usize;
    let i = s.at as usize;
    if i >= len {
        s.state = PARSE_OK;
        return true;
    }
    let kind = at_index(&s.opts, i);
    if kind == OPT_EOL {
        s.state = PARSE_OK;
        return true;
    }
    if kind == OPT_NOP {
        s.at = (i + 1) as u32;
        return false;
    }
    if i + 1 >= len {
        s.state = PARSE_BAD_LENGTH;
        s.kind = kind;
        return true;
    }
    let olen = at_index(&s.opts, i + 1) as usize;
    if olen < 2 || i + olen > len || (kind == OPT_TIMESTAMP && olen != 10) {
        s.state = PARSE_BAD_LENGTH;
        s.kind = kind;
        return true;
    }
    if kind == OPT_TIMESTAMP {
        let at = |k: usize| at_index(&s.opts, i + k);
        s.tsval = u32::from_be_bytes([at(2), at(3), at(4), at(5)]);
        s.tsecr = u32::from_be_bytes([at(6), at(7), at(8), at(9)]);
        s.seen |= SEEN_TS;
        s.state = PARSE_OK;
        return true;
    }
    s.at = (i + olen) as u32;
    false
}

/// The host's walk over [`ts_step`]: `Ok(Some((TSval, TSecr)))`, `Ok(None)` without the
/// option, `Err(())` for a malformed list.
pub fn find_timestamp(opts: &[u8; crate::syncookie::OPT_BUF], len: usize) -> Result<Option<(u32, u32)>, ()> {
    let mut s = SynParse { opts: *opts, ..SynParse::EMPTY };
    s.start(len);
    let mut n = 0;
    while n <= crate::syncookie::MAX_OPTIONS {
        n += 1;
        if ts_step(&mut s) {
            break;
        }
    }
    match s.state {
        PARSE_OK if s.seen & SEEN_TS != 0 => Ok(Some((s.tsval, s.tsecr))),
        PARSE_OK => Ok(None),
        _ => Err(()),
    }
}

/// The per-CPU scratch value of `bind_first`: the option walk and the head scanner's.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FirstScratch {
    pub opts: SynParse,
    pub head: crate::bind::BindScratch,
}
const _: () = assert!(size_of::<FirstScratch>() == size_of::<SynParse>() + size_of::<crate::bind::BindScratch>());

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Copy, no implicit padding (size checks above).
    unsafe impl aya::Pod for super::FirstResult {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncookie::{self, OPT_BUF, SynCookieConfig, SynOptions, Tuple};

    fn o(b: &[u8]) -> ([u8; OPT_BUF], usize) {
        let mut a = [0u8; OPT_BUF];
        a[..b.len()].copy_from_slice(b);
        (a, b.len())
    }

    #[test]
    fn the_timestamp_walk_skips_other_options_and_refuses_malformed_lists() {
        let cases: &[(&[u8], Result<Option<(u32, u32)>, ()>)] = &[
            (&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6], Ok(Some((5, 6)))),
            (&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0], Ok(Some((256, 512)))),
            (&[254, 4, 0xf9, 0x89, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], Ok(Some((1, 2)))),
            (&[], Ok(None)),
            (&[1, 1, 1, 1], Ok(None)),
            (&[0, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6], Ok(None)),
            (&[1, 1, 8, 9, 0, 0, 0, 5, 0, 0, 0], Err(())),
            (&[5, 1, 8, 10], Err(())),
            (&[5], Err(())),
            (&[5, 30, 0, 0], Err(())),
        ];
        for (bytes, want) in cases {
            let (a, n) = o(bytes);
            assert_eq!(find_timestamp(&a, n), *want, "{bytes:?}");
            // where pod_bind's walk finds one, both agree
            if let Ok(Some(ts)) = want {
                assert_eq!(crate::pod_bind::find_timestamp(&a, n), Some(*ts));
            }
        }
    }

    #[test]
    fn only_a_segment_with_data_is_scanned_a_pure_ack_is_dropped_a_bare_fin_falls_back() {
        assert_eq!(action(0, 0x10), Action::Drop);
        assert_eq!(action(0, 0x10 | TCP_FIN), Action::Fallback);
        assert_eq!(action(1, 0x10), Action::Scan);
        assert_eq!(action(100, 0x18 | TCP_FIN), Action::Scan);
        assert!(binds(0));
        assert!(!binds(1) && !binds(0xff));
    }

    fn backend(n: u32) -> BindBackend {
        let mut b = BindBackend { count: n, ..Default::default() };
        for (i, e) in b.endpoints.iter_mut().enumerate() {
            *e = BindEndpoint { addr: 10 + i as u32, port: 8000 + i as u16, _pad: 0 };
        }
        b
    }

    #[test]
    fn endpoints_get_equal_shares_and_an_empty_backend_none() {
        assert_eq!(endpoint(&backend(0), 7), None);
        assert_eq!(endpoint(&backend(17), 7), None, "more than fit");
        assert_eq!(endpoint(&backend(1), u32::MAX).unwrap().addr, 10);
        for n in [2u32, 3, 16] {
            let mut seen = vec![0u32; n as usize];
            for k in 0..(n * 1000) {
                let h = crate::l4::flow_hash(k, 0x0a2a_0001, 40000 + k as u16, 8080);
                let e = endpoint(&backend(n), h).unwrap();
                seen[(e.addr - 10) as usize] += 1;
                assert_eq!(e.port, 8000 + (e.addr - 10) as u16);
            }
            assert!(seen.iter().all(|&c| c > 700 && c < 1300), "{n}: {seen:?}");
        }
        // the last endpoint is reachable, and never one past count
        assert_eq!(endpoint(&backend(3), u32::MAX).unwrap().addr, 12);
    }

    #[test]
    fn the_admitted_flow_and_the_fallback_get_what_the_cookie_encoded() {
        let cfg = SynCookieConfig { keys: [[1, 2], [3, 4]], path_mss: 1410, rcv_wscale: 9, ..Default::default() };
        let t = Tuple { saddr: 1, daddr: 2, sport: 3, dport: 4 };
        let syn = SynOptions { mss: Some(1460), wscale: Some(7), sack_perm: true, timestamp: Some((100, 0)) };
        let c = syncookie::make(&cfg, &t, 5000, &syn, true, 0xabcd_ef00);
        let d = syncookie::check(&cfg, &t, 5001, c.isn.wrapping_add(1), c.tsval).unwrap();
        let a = admit(&d, 5000, cfg.rcv_wscale);
        assert_eq!(
            a,
            PodAdmit {
                client_isn: 5000,
                mss: 1460,
                snd_wscale: 7,
                rcv_wscale: 9,
                wscale_ok: 1,
                sack_ok: 1,
                ecn_ok: 1,
                tstamp_ok: 1
            }
        );
        let r = reqsk_attrs(&d, 5000, cfg.rcv_wscale, Some((101, c.tsval.unwrap())));
        assert_eq!((r.rcv_tsval, r.rcv_tsecr, r.tstamp_ok, r.mss), (101, c.tsval.unwrap(), 1, 1460));
        assert_eq!((r.snd_wscale, r.rcv_wscale, r.wscale_ok, r.sack_ok, r.ecn_ok), (7, 9, 1, 1, 1));
        // no options at all: no window scaling (both shifts 0), no timestamps
        let c = syncookie::make(&cfg, &t, 5000, &SynOptions::default(), false, 0);
        let d = syncookie::check(&cfg, &t, 5001, c.isn.wrapping_add(1), None).unwrap();
        let r = reqsk_attrs(&d, 5000, cfg.rcv_wscale, None);
        assert_eq!((r.mss, r.wscale_ok, r.snd_wscale, r.rcv_wscale, r.tstamp_ok, r.sack_ok), (536, 0, 0, 0, 0, 0));
        assert_eq!(admit(&d, 1, 20).rcv_wscale, MAX_WSCALE, "clamped like the SYN-ACK's");
    }
}
