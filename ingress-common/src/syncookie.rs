//! The edge's SYN cookie (delayed binding, docs/delayed-binding.md): pure code built
//! for the XDP program and for the host, so the host's unit tests check exactly what
//! the kernel runs. No allocation, no slices whose length the verifier cannot follow:
//! fixed-size arrays and constant-bounded loops only.
//!
//! Layout (after the kernel's custom SYN cookie selftest, test_tcp_custom_syncookie.c,
//! with one MAC bit spent on the key slot):
//!
//! ```text
//! ISN   bit 31: key slot | bits 30..8: 23 MAC bits | 7..6: MSS index | 5: ECN | 4: SACK | 3..0: client wscale (15: none)
//! TSval bits 31..8: random                          | 7..0: 8 more MAC bits      (only when the client sent timestamps)
//! ```
//!
//! The MAC is SipHash-2-4 keyed with the slot's key over (saddr, daddr) and (client
//! ISN, sport, dport), so a later ACK validates only when its `seq - 1` is the client's
//! ISN and its `ack - 1` is our ISN. Rotation: the agent writes a new key into the
//! other slot and makes it current; cookies of the previous slot keep validating until
//! the slot is overwritten at the next rotation (a cookie lives one to two periods).
//!
//! Addresses and ports are the packet's bytes read as big-endian numbers (host order
//! values of the wire fields).

use core::mem::size_of;

/// The MSS values a cookie can carry (2 bits): the largest one not above the client's.
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];
/// RFC 9293: the MSS a peer that sends no MSS option can receive.
pub const DEFAULT_MSS: u16 = 536;
/// Largest window shift (RFC 7323 §2.3); larger values are used as 14.
pub const MAX_WSCALE: u8 = 14;
/// Cookie wscale field meaning "the client sent no window scale option".
pub const WSCALE_NONE: u8 = 0x0f;

const WSCALE_MASK: u32 = 0x0f;
const SACK_BIT: u32 = 1 << 4;
const ECN_BIT: u32 = 1 << 5;
const MSS_SHIFT: u32 = 6;
const ATTR_MASK: u32 = 0xff;
const MAC_MASK: u32 = 0x7fff_ff00;
const TS_MAC_MASK: u32 = 0xff;

/// TCP option kinds.
pub const OPT_EOL: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WSCALE: u8 = 3;
pub const OPT_SACK_PERM: u8 = 4;
pub const OPT_TIMESTAMP: u8 = 8;

/// TCP flags.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// The most TCP option bytes a header carries.
pub const MAX_OPTIONS: usize = 40;
/// Size of the buffer the options are copied into: a power of two, so that an index
/// masked with `OPT_BUF - 1` is provably inside it (the verifier follows masks, not
/// divisions). Bytes past the option length are zero.
pub const OPT_BUF: usize = 64;
#[cfg_attr(target_arch = "bpf", allow(dead_code))]
const OPT_MASK: usize = OPT_BUF - 1;

/// `i & (OPT_BUF - 1)`: an index into the option buffer the verifier can bound. On BPF
/// the AND is inline asm, because LLVM drops a plain mask it can prove redundant (the
/// index is below the option length), and the verifier, which cannot follow that
/// proof, then refuses the variable-offset stack read.
#[inline(always)]
pub fn opt_index(i: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        let mut v = i;
        // SAFETY: a register-only AND.
        unsafe { core::arch::asm!("{0} &= 63", inout(reg) v, options(pure, nomem, nostack)) };
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        i & OPT_MASK
    }
}

/// `opts[opt_index(i)]` without a bounds check: the index is below [`OPT_BUF`] by
/// construction, and a bounds check's panic path would end the program without an
/// exit (the verifier refuses that).
#[inline(always)]
pub fn at_index(opts: &[u8; OPT_BUF], i: usize) -> u8 {
    // SAFETY: opt_index(i) < OPT_BUF (an AND with OPT_BUF - 1).
    unsafe { *opts.get_unchecked(opt_index(i)) }
}

// ---- SipHash-2-4 (Aumasson & Bernstein), on two u64 words, as the kernel's siphash_2u64 ----

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of the 16-byte message `first || second` (each word little-endian, as the
/// kernel's `siphash_2u64`), keyed with `key` (k0, k1).
#[inline(always)]
pub fn siphash_2u64(first: u64, second: u64, key: &[u64; 2]) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ key[0],
        0x646f_7261_6e64_6f6d ^ key[1],
        0x6c79_6765_6e65_7261 ^ key[0],
        0x7465_6462_7974_6573 ^ key[1],
    ];
    for m in [first, second] {
        v[3] ^= m;
        sipround(&mut v);
        sipround(&mut v);
        v[0] ^= m;
    }
    let b: u64 = 16 << 56;
    v[3] ^= b;
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

// ---- the connection's identity and the client's SYN options ----

/// The 4-tuple as seen on the client's packets (client -> frontend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}

/// What the client's SYN asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynOptions {
    /// The MSS option's value; `None`: no MSS option.
    pub mss: Option<u16>,
    /// The window scale option's shift (as sent, maybe > 14); `None`: no option.
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    /// (TSval, TSecr) of the timestamps option.
    pub timestamp: Option<(u32, u32)>,
}

/// Why a SYN is not answered with a cookie (it is passed to the stack untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusual {
    /// An option other than EOL, NOP, MSS, window scale, SACK permitted, timestamps
    /// (TFO, MPTCP, MD5, AO, experimental...).
    Option(u8),
    /// An option's length byte is wrong for its kind, or runs past the header.
    BadLength(u8),
    /// The same option twice.
    Duplicate(u8),
    /// MSS 0.
    ZeroMss,
}

/// The SYN option walk as a state machine, one option per [`parse_step`], so that a
/// BPF program can run the steps in `bpf_loop` (one verified body) from a map value
/// (its fields are then unknown to the verifier, which checks one step, not every
/// combination of options per position). The host runs the same steps in a plain loop
/// ([`parse_syn_options`]). `#[repr(C)]`: it is the value of a per-CPU map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynParse {
    /// The option bytes (`opts[..len]`; the rest is never read).
    pub opts: [u8; OPT_BUF],
    /// Option bytes in the header (clamped to [`MAX_OPTIONS`]).
    pub len: u32,
    /// The next option's offset.
    pub at: u32,
    /// TSval, TSecr of the timestamps option (when `seen & SEEN_TS`).
    pub tsval: u32,
    pub tsecr: u32,
    pub mss: u16,
    pub wscale: u8,
    /// `SEEN_*` bits: the options found so far.
    pub seen: u8,
    /// [`PARSE_MORE`], [`PARSE_OK`] or one of the `PARSE_*` errors.
    pub state: u8,
    /// The option kind an error is about.
    pub kind: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<SynParse>() == OPT_BUF + 24);

pub const SEEN_MSS: u8 = 1;
pub const SEEN_WSCALE: u8 = 2;
pub const SEEN_SACK: u8 = 4;
pub const SEEN_TS: u8 = 8;

/// [`SynParse::state`]: not done yet.
pub const PARSE_MORE: u8 = 0;
/// Done: the options parsed.
pub const PARSE_OK: u8 = 1;
/// Done with an error ([`Unusual`]; the kind in [`SynParse::kind`]).
pub const PARSE_OPTION: u8 = 2;
pub const PARSE_BAD_LENGTH: u8 = 3;
pub const PARSE_DUPLICATE: u8 = 4;
pub const PARSE_ZERO_MSS: u8 = 5;

impl SynParse {
    pub const EMPTY: Self = Self {
        opts: [0; OPT_BUF],
        len: 0,
        at: 0,
        tsval: 0,
        tsecr: 0,
        mss: 0,
        wscale: 0,
        seen: 0,
        state: PARSE_MORE,
        kind: 0,
        _pad: [0; 2],
    };

    /// Starts a walk over `opts[..len]` (the bytes already in `self.opts`).
    #[inline(always)]
    pub fn start(&mut self, len: usize) {
        self.len = if len > MAX_OPTIONS { MAX_OPTIONS as u32 } else { len as u32 };
        self.at = 0;
        self.tsval = 0;
        self.tsecr = 0;
        self.mss = 0;
        self.wscale = 0;
        self.seen = 0;
        self.state = PARSE_MORE;
        self.kind = 0;
    }

    /// The walk's outcome; a walk that has not ended (more than [`MAX_OPTIONS`] steps
    /// cannot happen: each consumes a byte) reads as a bad length.
    #[inline(always)]
    pub fn result(&self) -> Result<SynOptions, Unusual> {
        match self.state {
            PARSE_OK => Ok(SynOptions {
                mss: if self.seen & SEEN_MSS != 0 { Some(self.mss) } else { None },
                wscale: if self.seen & SEEN_WSCALE != 0 { Some(self.wscale) } else { None },
                sack_perm: self.seen & SEEN_SACK != 0,
                timestamp: if self.seen & SEEN_TS != 0 { Some((self.tsval, self.tsecr)) } else { None },
            }),
            PARSE_OPTION => Err(Unusual::Option(self.kind)),
            PARSE_DUPLICATE => Err(Unusual::Duplicate(self.kind)),
            PARSE_ZERO_MSS => Err(Unusual::ZeroMss),
            _ => Err(Unusual::BadLength(self.kind)),
        }
    }

    #[inline(always)]
    fn fail(&mut self, state: u8, kind: u8) -> bool {
        self.state = state;
        self.kind = kind;
        true
    }
}

/// One step of the walk: one option (or one NOP) at `s.at`. Returns true when the walk
/// has ended (`s.state` is then not [`PARSE_MORE`]).
#[inline(always)]
pub fn parse_step(s: &mut SynParse) -> bool {
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
        return s.fail(PARSE_BAD_LENGTH, kind);
    }
    let olen = at_index(&s.opts, i + 1) as usize;
    if olen < 2 || i + olen > len {
        return s.fail(PARSE_BAD_LENGTH, kind);
    }
    let at = |k: usize| at_index(&s.opts, i + k);
    match kind {
        OPT_MSS => {
            if olen != 4 {
                return s.fail(PARSE_BAD_LENGTH, kind);
            }
            if s.seen & SEEN_MSS != 0 {
                return s.fail(PARSE_DUPLICATE, kind);
            }
            let mss = u16::from_be_bytes([at(2), at(3)]);
            if mss == 0 {
                return s.fail(PARSE_ZERO_MSS, kind);
            }
            s.mss = mss;
            s.seen |= SEEN_MSS;
        }
        OPT_WSCALE => {
            if olen != 3 {
                return s.fail(PARSE_BAD_LENGTH, kind);
            }
            if s.seen & SEEN_WSCALE != 0 {
                return s.fail(PARSE_DUPLICATE, kind);
            }
            s.wscale = at(2);
            s.seen |= SEEN_WSCALE;
        }
        OPT_SACK_PERM => {
            if olen != 2 {
                return s.fail(PARSE_BAD_LENGTH, kind);
            }
            if s.seen & SEEN_SACK != 0 {
                return s.fail(PARSE_DUPLICATE, kind);
            }
            s.seen |= SEEN_SACK;
        }
        OPT_TIMESTAMP => {
            if olen != 10 {
                return s.fail(PARSE_BAD_LENGTH, kind);
            }
            if s.seen & SEEN_TS != 0 {
                return s.fail(PARSE_DUPLICATE, kind);
            }
            s.tsval = u32::from_be_bytes([at(2), at(3), at(4), at(5)]);
            s.tsecr = u32::from_be_bytes([at(6), at(7), at(8), at(9)]);
            s.seen |= SEEN_TS;
        }
        other => return s.fail(PARSE_OPTION, other),
    }
    s.at = (i + olen) as u32;
    false
}

/// Parses the option bytes `opts[..len]` of a SYN (`len` <= [`MAX_OPTIONS`]). Only the
/// five options a plain SYN carries are accepted; anything else is [`Unusual`]. The
/// host's walk over [`parse_step`] (the BPF program runs the same steps in `bpf_loop`).
pub fn parse_syn_options(opts: &[u8; OPT_BUF], len: usize) -> Result<SynOptions, Unusual> {
    let mut s = SynParse { opts: *opts, ..SynParse::EMPTY };
    s.start(len);
    // every step but the last consumes at least one byte
    let mut n = 0;
    while n <= MAX_OPTIONS {
        n += 1;
        if parse_step(&mut s) {
            break;
        }
    }
    s.result()
}

// ---- the cookie ----

/// What the agent configures (the only entry of `SYNCOOKIE_CONFIG`): two key slots, the
/// current one, and what the SYN-ACK advertises.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynCookieConfig {
    /// SipHash keys (k0, k1) of slot 0 and slot 1.
    pub keys: [[u64; 2]; 2],
    /// The slot new cookies are made with (0 or 1).
    pub current: u32,
    /// The MSS the pod path carries (interface MTU - 40 on the way to the pods): the
    /// SYN-ACK advertises min(client MSS, this). 0: the config is not set, SYNs pass.
    pub path_mss: u16,
    /// Our fixed receive window shift (sent when the client sent a window scale).
    pub rcv_wscale: u8,
    pub _pad: u8,
    /// The window of the SYN-ACK (never 0: the client may send its request at once).
    pub window: u16,
    pub _pad2: [u8; 6],
}
const _: () = assert!(size_of::<SynCookieConfig>() == 48);

/// Key of `SYNCOOKIE_TARGETS`: the frontend address and port SYNs are answered for
/// (network byte order, as in the packet); value: 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SynCookieTarget {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<SynCookieTarget>() == 8);

/// The cookie and what it encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    /// Our ISN (the SYN-ACK's sequence number).
    pub isn: u32,
    /// Our TSval, when the client sent timestamps.
    pub tsval: Option<u32>,
}

/// The connection attributes a valid cookie gives back (what `bpf_sk_assign_tcp_reqsk`
/// is handed later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The client's MSS as rounded down to [`MSS_TABLE`].
    pub mss: u16,
    /// The client's window shift (`None`: no window scaling on this connection).
    pub snd_wscale: Option<u8>,
    pub sack: bool,
    pub ecn: bool,
    /// Whether timestamps are on (the ACK carried a TSecr that validated).
    pub tstamp: bool,
}

#[inline(always)]
fn mac(key: &[u64; 2], t: &Tuple, client_isn: u32) -> (u32, u32) {
    let first = ((t.saddr as u64) << 32) | t.daddr as u64;
    let second = ((client_isn as u64) << 32) | ((t.sport as u64) << 16) | t.dport as u64;
    let h = siphash_2u64(first, second, key);
    // the ISN's MAC bits from the low word, the TSval's from the high word
    ((h as u32) & MAC_MASK, ((h >> 32) as u32) & TS_MAC_MASK)
}

/// The MSS index for a client MSS: the largest entry of [`MSS_TABLE`] not above it.
#[inline(always)]
pub fn mss_index(mss: u16) -> u32 {
    if mss >= MSS_TABLE[3] {
        3
    } else if mss >= MSS_TABLE[2] {
        2
    } else if mss >= MSS_TABLE[1] {
        1
    } else {
        0
    }
}

/// Whether a SYN's flags ask for ECN (RFC 3168: ECE and CWR both set).
#[inline(always)]
pub fn ecn_setup(flags: u8) -> bool {
    flags & (TCP_ECE | TCP_CWR) == (TCP_ECE | TCP_CWR)
}

/// Makes the cookie for a SYN. `random`: 32 random bits (the TSval's high 24).
#[inline(always)]
pub fn make(cfg: &SynCookieConfig, t: &Tuple, client_isn: u32, o: &SynOptions, ecn: bool, random: u32) -> Cookie {
    let slot = (cfg.current & 1) as usize;
    let (h, ts_mac) = mac(&cfg.keys[slot], t, client_isn);
    let mss = match o.mss {
        Some(m) => m,
        None => DEFAULT_MSS,
    };
    let mut attrs = mss_index(mss) << MSS_SHIFT;
    attrs |= match o.wscale {
        Some(w) if w > MAX_WSCALE => MAX_WSCALE as u32,
        Some(w) => w as u32,
        None => WSCALE_NONE as u32,
    };
    if o.sack_perm {
        attrs |= SACK_BIT;
    }
    if ecn {
        attrs |= ECN_BIT;
    }
    let isn = ((slot as u32) << 31) | h | attrs;
    let tsval = o.timestamp.map(|_| (random & !TS_MAC_MASK) | ts_mac);
    Cookie { isn, tsval }
}

/// Checks the client's ACK of a cookie SYN-ACK: `seq`/`ack` are its sequence and
/// acknowledgment numbers, `tsecr` the echoed timestamp when it carries the option.
/// `None` unless `seq - 1` is the ISN the cookie was made for, `ack - 1` is the cookie,
/// its key slot still holds the key, and (with timestamps) the TSecr's MAC bits match.
#[inline(always)]
pub fn check(cfg: &SynCookieConfig, t: &Tuple, seq: u32, ack: u32, tsecr: Option<u32>) -> Option<Decoded> {
    let isn = ack.wrapping_sub(1);
    let slot = (isn >> 31) as usize & 1;
    let (h, ts_mac) = mac(&cfg.keys[slot], t, seq.wrapping_sub(1));
    if (isn & MAC_MASK) != h {
        return None;
    }
    let tstamp = match tsecr {
        Some(ecr) => {
            if ecr & TS_MAC_MASK != ts_mac {
                return None;
            }
            true
        }
        None => false,
    };
    let attrs = isn & ATTR_MASK;
    let w = (attrs & WSCALE_MASK) as u8;
    Some(Decoded {
        mss: MSS_TABLE[((attrs >> MSS_SHIFT) & 3) as usize],
        snd_wscale: if w == WSCALE_NONE { None } else { Some(w) },
        sack: attrs & SACK_BIT != 0,
        ecn: attrs & ECN_BIT != 0,
        tstamp,
    })
}

// ---- the SYN-ACK ----

/// Length of the SYN-ACK's IPv4 + TCP headers: 20 + 20 + 20 bytes of options (EOL-padded).
pub const SYNACK_LEN: usize = 60;

/// Folds a 32-bit sum of 16-bit words (RFC 1071) and inverts it.
#[inline(always)]
fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[inline(always)]
fn sum16<const N: usize>(b: &[u8; N], start: usize, words: usize) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i < words {
        let o = start + 2 * i;
        s += u16::from_be_bytes([b[o], b[o + 1]]) as u32;
        i += 1;
    }
    s
}

/// Builds the IPv4 and TCP headers of the SYN-ACK answering a SYN of `t` with client
/// ISN `client_isn` and options `o`: addresses and ports swapped, seq = the cookie,
/// ack = client ISN + 1, MSS = min(client MSS (536 without the option), path MSS),
/// window scale (ours) only if the client sent one, SACK permitted and timestamps
/// (TSval = cookie's, TSecr = client's TSval) echoed, ECE when the client asked for
/// ECN, the configured non-zero window, both checksums. Options in Linux's order.
#[inline(always)]
pub fn synack(
    cfg: &SynCookieConfig,
    t: &Tuple,
    client_isn: u32,
    o: &SynOptions,
    c: &Cookie,
    ecn: bool,
    p: &mut [u8; SYNACK_LEN],
) {
    // written in place (the XDP program passes the packet itself): every byte is set
    *p = [0u8; SYNACK_LEN];
    // IPv4
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(SYNACK_LEN as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&t.daddr.to_be_bytes());
    p[16..20].copy_from_slice(&t.saddr.to_be_bytes());
    let ip_sum = csum_fold(sum16(p, 0, 10));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP
    p[20..22].copy_from_slice(&t.dport.to_be_bytes());
    p[22..24].copy_from_slice(&t.sport.to_be_bytes());
    p[24..28].copy_from_slice(&c.isn.to_be_bytes());
    p[28..32].copy_from_slice(&client_isn.wrapping_add(1).to_be_bytes());
    p[32] = 10 << 4; // data offset: 40 bytes
    p[33] = TCP_SYN | TCP_ACK | if ecn { TCP_ECE } else { 0 };
    let window = if cfg.window == 0 { 65535 } else { cfg.window };
    p[34..36].copy_from_slice(&window.to_be_bytes());
    // options at 40..60
    let client_mss = match o.mss {
        Some(m) => m,
        None => DEFAULT_MSS,
    };
    let mss = if client_mss < cfg.path_mss { client_mss } else { cfg.path_mss };
    p[40] = OPT_MSS;
    p[41] = 4;
    p[42..44].copy_from_slice(&mss.to_be_bytes());
    let mut at = 44;
    match (o.timestamp, c.tsval) {
        (Some((client_val, _)), Some(tsval)) => {
            if o.sack_perm {
                p[at] = OPT_SACK_PERM;
                p[at + 1] = 2;
            } else {
                p[at] = OPT_NOP;
                p[at + 1] = OPT_NOP;
            }
            p[at + 2] = OPT_TIMESTAMP;
            p[at + 3] = 10;
            p[at + 4..at + 8].copy_from_slice(&tsval.to_be_bytes());
            p[at + 8..at + 12].copy_from_slice(&client_val.to_be_bytes());
            at += 12;
        }
        _ => {
            if o.sack_perm {
                p[at] = OPT_NOP;
                p[at + 1] = OPT_NOP;
                p[at + 2] = OPT_SACK_PERM;
                p[at + 3] = 2;
                at += 4;
            }
        }
    }
    if o.wscale.is_some() {
        p[at] = OPT_NOP;
        p[at + 1] = OPT_WSCALE;
        p[at + 2] = 3;
        p[at + 3] = if cfg.rcv_wscale > MAX_WSCALE { MAX_WSCALE } else { cfg.rcv_wscale };
    }
    // the rest stays 0: EOL, then padding
    // TCP checksum over the pseudo header and the 40-byte header
    let mut s = sum16(p, 12, 4); // saddr, daddr
    s += 6 + 40; // protocol, TCP length
    s += sum16(p, 20, 20);
    let tcp_sum = csum_fold(s);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Copy, no implicit padding (size checks above).
    unsafe impl aya::Pod for super::SynCookieConfig {}
    unsafe impl aya::Pod for super::SynCookieTarget {}
    unsafe impl aya::Pod for super::SynParse {}
}

#[cfg(test)]
mod tests {
    use super::*;

    // SipHash-2-4 against the standard library's (deprecated, still SipHash-2-4)
    // `SipHasher` on the same 16 bytes: the paper's key 00..0f and other keys/messages.
    #[test]
    #[allow(deprecated)]
    fn siphash_matches_an_independent_implementation() {
        use core::hash::Hasher;
        let std_sip = |a: u64, b: u64, k: [u64; 2]| {
            let mut h = std::hash::SipHasher::new_with_keys(k[0], k[1]);
            let mut m = [0u8; 16];
            m[..8].copy_from_slice(&a.to_le_bytes());
            m[8..].copy_from_slice(&b.to_le_bytes());
            h.write(&m);
            h.finish()
        };
        let paper_key = [0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908u64];
        let cases = [
            (0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908u64, paper_key),
            (0, 0, [0, 0]),
            (u64::MAX, 1, [0xdead_beef, 0x1234_5678_9abc_def0]),
            (0xc612_0001_c612_0002, 0x0000_03e8_9c40_1f90, [1, 2]),
        ];
        for (a, b, k) in cases {
            assert_eq!(siphash_2u64(a, b, &k), std_sip(a, b, k), "{a:#x} {b:#x} {k:?}");
        }
    }

    fn opts(bytes: &[u8]) -> ([u8; OPT_BUF], usize) {
        let mut b = [0u8; OPT_BUF];
        b[..bytes.len()].copy_from_slice(bytes);
        (b, bytes.len())
    }

    fn parse(bytes: &[u8]) -> Result<SynOptions, Unusual> {
        let (b, n) = opts(bytes);
        parse_syn_options(&b, n)
    }

    const LINUX_SYN: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 1, 3, 3, 7];

    #[test]
    fn a_linux_syn_parses() {
        let o = parse(&LINUX_SYN).unwrap();
        assert_eq!(o, SynOptions { mss: Some(1460), wscale: Some(7), sack_perm: true, timestamp: Some((7, 0)) });
        assert_eq!(parse(&[]).unwrap(), SynOptions::default());
        assert_eq!(parse(&[1, 1, 1, 0, 0xff, 0xff]).unwrap(), SynOptions::default(), "EOL ends the list");
    }

    #[test]
    fn unusual_syns_are_refused_with_the_reason() {
        assert_eq!(parse(&[34, 2]), Err(Unusual::Option(34)), "TFO cookie request");
        assert_eq!(parse(&[30, 4, 0, 0]), Err(Unusual::Option(30)), "MPTCP");
        assert_eq!(parse(&[2, 3, 5]), Err(Unusual::BadLength(2)));
        assert_eq!(parse(&[2, 4, 5]), Err(Unusual::BadLength(2)), "runs past the header");
        assert_eq!(parse(&[8, 0]), Err(Unusual::BadLength(8)), "length 0");
        assert_eq!(parse(&[3]), Err(Unusual::BadLength(3)), "no length byte");
        assert_eq!(parse(&[2, 4, 5, 0xb4, 2, 4, 5, 0xb4]), Err(Unusual::Duplicate(2)));
        assert_eq!(parse(&[4, 2, 4, 2]), Err(Unusual::Duplicate(4)));
        assert_eq!(parse(&[2, 4, 0, 0]), Err(Unusual::ZeroMss));
    }

    #[test]
    fn the_walk_takes_one_step_per_option_and_ends_within_the_bound() {
        // 40 NOPs: 40 steps, then the end of the list (the 41st)
        let (b, n) = opts(&[1; 40]);
        assert_eq!(parse_syn_options(&b, n).unwrap(), SynOptions::default());
        let mut s = SynParse { opts: b, ..SynParse::EMPTY };
        s.start(n);
        let steps = (1..=MAX_OPTIONS + 1).find(|_| parse_step(&mut s)).expect("ends");
        assert_eq!(steps, MAX_OPTIONS + 1);
        // a Linux SYN: MSS, SACK_PERM, TS, NOP, WS, then the end: 6 steps
        let (b, n) = opts(&LINUX_SYN);
        let mut s = SynParse { opts: b, ..SynParse::EMPTY };
        s.start(n);
        let steps = (1..=MAX_OPTIONS + 1).find(|_| parse_step(&mut s)).expect("ends");
        assert_eq!((steps, s.state), (6, PARSE_OK));
        // a walk cut short is never read as parsed
        let mut s = SynParse { opts: b, ..SynParse::EMPTY };
        s.start(n);
        parse_step(&mut s);
        assert_eq!(s.result(), Err(Unusual::BadLength(0)));
        // a length over the header's 40 bytes is clamped (bytes past it are not read)
        let mut b = [1u8; OPT_BUF];
        b[40] = 34;
        assert_eq!(parse_syn_options(&b, OPT_BUF), Ok(SynOptions::default()));
    }

    fn cfg() -> SynCookieConfig {
        SynCookieConfig {
            keys: [[1, 2], [3, 4]],
            current: 0,
            path_mss: 1410,
            rcv_wscale: 7,
            window: 64240,
            ..Default::default()
        }
    }

    const T: Tuple = Tuple { saddr: 0xc612_0001, daddr: 0xc612_0002, sport: 40000, dport: 8080 };

    #[test]
    fn the_cookie_round_trips_its_attributes() {
        let c = cfg();
        for (o, ecn) in [
            (parse(&LINUX_SYN).unwrap(), true),
            (SynOptions { mss: Some(1300), wscale: Some(15), sack_perm: false, timestamp: None }, false),
            (SynOptions::default(), false),
            (SynOptions { mss: Some(9000), wscale: Some(0), sack_perm: true, timestamp: Some((1, 2)) }, false),
        ] {
            let k = make(&c, &T, 1000, &o, ecn, 0xdead_beef);
            let d = check(&c, &T, 1001, k.isn.wrapping_add(1), k.tsval).expect("valid");
            assert_eq!(d.mss, MSS_TABLE[mss_index(o.mss.unwrap_or(DEFAULT_MSS)) as usize]);
            assert_eq!(d.snd_wscale, o.wscale.map(|w| w.min(MAX_WSCALE)), "{o:?}");
            assert_eq!((d.sack, d.ecn, d.tstamp), (o.sack_perm, ecn, o.timestamp.is_some()));
            assert_eq!(k.tsval.map(|v| v & 0xffff_ff00), o.timestamp.map(|_| 0xdead_be00), "random high bits");
        }
        assert_eq!(mss_index(535), 0);
        assert_eq!(mss_index(1459), 2);
        assert_eq!(mss_index(65535), 3);
    }

    #[test]
    fn an_ack_with_another_seq_or_tuple_or_tsecr_is_rejected() {
        let c = cfg();
        let o = parse(&LINUX_SYN).unwrap();
        let k = make(&c, &T, 1000, &o, false, 0);
        let ack = k.isn.wrapping_add(1);
        assert!(check(&c, &T, 1001, ack, k.tsval).is_some());
        // a later segment (seq != ISN + 1), a wrong ack, another tuple, a bad TSecr
        assert_eq!(check(&c, &T, 1001 + 1448, ack, k.tsval), None);
        assert_eq!(check(&c, &T, 1000, ack, k.tsval), None);
        assert_eq!(check(&c, &T, 1001, ack.wrapping_add(1 << 8), k.tsval), None);
        assert_eq!(check(&c, &Tuple { sport: 40001, ..T }, 1001, ack, k.tsval), None);
        assert_eq!(check(&c, &Tuple { saddr: 0xc612_0003, ..T }, 1001, ack, k.tsval), None);
        assert_eq!(check(&c, &T, 1001, ack, k.tsval.map(|v| v ^ 1)), None);
        // a forged ack: of 2^16 guesses of the 23 MAC bits, essentially none pass
        let passed =
            (0u32..65536).filter(|g| check(&c, &T, 1001, ((g << 8) | (k.isn & 0xff)).wrapping_add(1), None).is_some());
        assert!(passed.count() <= 2);
    }

    #[test]
    fn key_rotation_keeps_the_previous_slot_valid_until_it_is_overwritten() {
        let mut c = cfg();
        let o = SynOptions { mss: Some(1460), ..Default::default() };
        let k = make(&c, &T, 77, &o, false, 0);
        assert_eq!(k.isn >> 31, 0, "made with slot 0");
        // rotation 1: a new key in slot 1, now current; slot 0 untouched
        c.keys[1] = [0x1111, 0x2222];
        c.current = 1;
        assert!(check(&c, &T, 78, k.isn + 1, None).is_some(), "one rotation later: still valid");
        let k2 = make(&c, &T, 77, &o, false, 0);
        assert_eq!(k2.isn >> 31, 1);
        assert!(check(&c, &T, 78, k2.isn + 1, None).is_some());
        // rotation 2: slot 0 gets a new key: the first cookie dies, the second lives
        c.keys[0] = [0x3333, 0x4444];
        c.current = 0;
        assert_eq!(check(&c, &T, 78, k.isn + 1, None), None, "two rotations later: expired");
        assert!(check(&c, &T, 78, k2.isn + 1, None).is_some());
    }

    fn verify(p: &[u8; SYNACK_LEN]) -> bool {
        // independent of sum16/csum_fold: plain RFC 1071 over bytes
        fn rfc1071(d: &[u8]) -> u16 {
            let mut s: u64 = 0;
            for c in d.chunks(2) {
                s += u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0));
            }
            while s >> 16 != 0 {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        }
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6, 0, 40]);
        pseudo.extend_from_slice(&p[20..]);
        rfc1071(&p[..20]) == 0 && rfc1071(&pseudo) == 0
    }

    #[test]
    fn the_synack_echoes_what_the_client_asked_for() {
        let c = cfg();
        let o = parse(&LINUX_SYN).unwrap();
        let k = make(&c, &T, 1000, &o, true, 0x1234_5678);
        let mut p = [0xaa; SYNACK_LEN];
        synack(&c, &T, 1000, &o, &k, true, &mut p);
        assert!(verify(&p));
        assert_eq!(&p[12..16], &T.daddr.to_be_bytes());
        assert_eq!(&p[16..20], &T.saddr.to_be_bytes());
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 8080);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 40000);
        assert_eq!(u32::from_be_bytes([p[24], p[25], p[26], p[27]]), k.isn);
        assert_eq!(u32::from_be_bytes([p[28], p[29], p[30], p[31]]), 1001);
        assert_eq!(p[33], TCP_SYN | TCP_ACK | TCP_ECE);
        assert_eq!(u16::from_be_bytes([p[34], p[35]]), 64240);
        let tsval = k.tsval.unwrap().to_be_bytes();
        let mut want = vec![2, 4, 0x05, 0x82, 4, 2, 8, 10];
        want.extend_from_slice(&tsval);
        want.extend_from_slice(&7u32.to_be_bytes());
        want.extend_from_slice(&[1, 3, 3, 7]);
        assert_eq!(&p[40..60], &want[..], "MSS 1410, SACK_PERM + TS, NOP WS 7");
        // nothing asked: MSS only (536, the default), EOL padding
        let o = SynOptions::default();
        let k = make(&c, &T, 5, &o, false, 0);
        synack(&c, &T, 5, &o, &k, false, &mut p);
        assert!(verify(&p));
        assert_eq!(&p[40..60], &[2, 4, 2, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p[33], TCP_SYN | TCP_ACK);
    }
}
