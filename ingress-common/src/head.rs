//! The head scanner of delayed binding: from the bytes of a connection's first TCP
//! segment, either the host key its first request is routed by (the lowercase Host,
//! port and one trailing dot stripped, as the agent's router does) or a reason to leave
//! the connection to the agent's proxy ([`Fallback`]). One source for both sides: the
//! kernel program feeds it byte by byte from a `bpf_loop` callback (bounded, no
//! recursion, every index masked), the agent and its tests call [`scan`].
//!
//! It accepts only a strict subset of what the agent serves, so that a head it binds is
//! one the agent would route by the same host and would not refuse:
//! - the request line `METHOD SP /origin-form SP HTTP/1.1 CRLF`: a method of 1-16
//!   letters `A-Z` other than `CONNECT` (the proxy refuses it) and `PRI` (the HTTP/2
//!   preface); a target that starts with `/` (absolute-form and asterisk-form fall
//!   back) and is already normal (no `%`, `\`, `//`, `.` or `..` segment in the path; the
//!   proxy would normalize it), with a query of URI characters and no fragment; exactly
//!   `HTTP/1.1` (HTTP/1.0 needs no Host and closes);
//! - field lines `name: value CRLF`, at most [`MAX_FIELDS`]: names of letters, digits,
//!   `-` and `_`; values of visible ASCII, space and tab only (NUL, control characters,
//!   DEL, bytes over 0x7f and bare CR fall back); a line starting with space or tab
//!   (obs-fold) falls back; lines end in CRLF only (LF alone falls back);
//! - exactly one `Host`: `name[:port]` with a name of letters, digits, `-`, `.`, `_`
//!   (an IPv6 literal `[..]` or anything else falls back), a port of 1-5 digits up to
//!   65535 (an empty or bad port falls back), at most [`HOST_KEY_MAX`] - 1 bytes once
//!   port and trailing dot are removed;
//! - no `Transfer-Encoding` at all (`proxy/refuse.rs` judges those), at most one
//!   `Content-Length` of 1-18 digits, no `HTTP2-Settings` and no `Upgrade` naming `h2c`
//!   (the agent serves those requests as HTTP/1.1; a pod could switch to HTTP/2). Other
//!   upgrades (WebSocket) bind: the agent routes them like any request;
//! - the empty line that ends the head within the first [`SCAN_MAX`] bytes of the
//!   segment: a head not complete there falls back ([`Fallback::Incomplete`],
//!   [`Fallback::TooLong`]). Bytes after the head (a body, pipelined requests) are not
//!   looked at.

use core::mem::size_of;

/// Bytes of the first segment scanned at most: the head must end within them.
pub const SCAN_MAX: usize = 1460;
/// Size of the host field of [`BindHostKey`]: hosts of this many bytes or more fall back.
pub const HOST_KEY_MAX: usize = 64;
/// Field lines at most (hyper refuses more than 100).
pub const MAX_FIELDS: u16 = 64;
/// Letters in a method at most.
pub const MAX_METHOD: u8 = 16;
/// Digits in a Content-Length at most.
const MAX_LENGTH_DIGITS: u8 = 18;

/// Why a connection is left to the agent. The discriminants are the kernel's verdict
/// codes (0 is [`VERDICT_BIND`]); appended only.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fallback {
    /// The segment ended before the head did.
    Incomplete = 1,
    /// The head did not end within [`SCAN_MAX`] bytes.
    TooLong = 2,
    /// `PRI * HTTP/2.0`: the HTTP/2 connection preface (h2c carries no Host).
    H2Preface = 3,
    /// Not 1-16 letters A-Z, or `CONNECT`.
    Method = 4,
    /// Not origin-form (absolute-form, asterisk-form, ...), or characters outside the URI's.
    Target = 5,
    /// A path the proxy normalizes: `%`, `\`, `//`, `.` or `..` segments.
    PathNotNormal = 6,
    /// Not `HTTP/1.1`.
    Version = 7,
    /// A bare CR or LF, or a missing space.
    LineEnding = 8,
    /// A field name with a character outside letters, digits, `-`, `_`, or empty.
    FieldName = 9,
    /// NUL, control characters, DEL or bytes over 0x7f in a field value.
    FieldValue = 10,
    /// A field line starting with space or tab (obs-fold, RFC 9112 5.2).
    ObsFold = 11,
    /// More than [`MAX_FIELDS`] field lines.
    TooManyFields = 12,
    /// No Host field.
    NoHost = 13,
    /// More than one Host field.
    DuplicateHost = 14,
    /// A Host value that is not `name[:port]` of the accepted characters.
    BadHost = 15,
    /// A host of [`HOST_KEY_MAX`] bytes or more.
    HostTooLong = 16,
    /// An IP literal (`[::1]`).
    IpLiteral = 17,
    /// An empty port, or one that is not 1-5 digits up to 65535.
    Port = 18,
    /// A Transfer-Encoding field.
    TransferEncoding = 19,
    /// A Content-Length that is not 1-18 digits, or more than one.
    ContentLength = 20,
    /// `Upgrade: h2c` or `HTTP2-Settings`.
    H2cUpgrade = 21,
    /// (kernel) the host key is not in the bindable hosts' map.
    NotBindable = 22,
    /// (kernel) not an IPv4 TCP segment with a payload the program can read.
    NoPayload = 23,
}

/// The kernel's verdict code of a head that binds.
pub const VERDICT_BIND: u8 = 0;
/// Verdict codes: 0 and every [`Fallback`].
pub const VERDICT_CODES: u32 = 24;

impl Fallback {
    pub const ALL: [Fallback; 23] = [
        Self::Incomplete,
        Self::TooLong,
        Self::H2Preface,
        Self::Method,
        Self::Target,
        Self::PathNotNormal,
        Self::Version,
        Self::LineEnding,
        Self::FieldName,
        Self::FieldValue,
        Self::ObsFold,
        Self::TooManyFields,
        Self::NoHost,
        Self::DuplicateHost,
        Self::BadHost,
        Self::HostTooLong,
        Self::IpLiteral,
        Self::Port,
        Self::TransferEncoding,
        Self::ContentLength,
        Self::H2cUpgrade,
        Self::NotBindable,
        Self::NoPayload,
    ];

    /// The reason for a verdict code; None for [`VERDICT_BIND`] and unknown codes.
    pub fn from_code(code: u8) -> Option<Self> {
        let i = code as usize;
        if i == 0 || i > Self::ALL.len() { None } else { Some(Self::ALL[i - 1]) }
    }

    /// A short name for counters and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::TooLong => "too_long",
            Self::H2Preface => "h2_preface",
            Self::Method => "method",
            Self::Target => "target",
            Self::PathNotNormal => "path_not_normal",
            Self::Version => "version",
            Self::LineEnding => "line_ending",
            Self::FieldName => "field_name",
            Self::FieldValue => "field_value",
            Self::ObsFold => "obs_fold",
            Self::TooManyFields => "too_many_fields",
            Self::NoHost => "no_host",
            Self::DuplicateHost => "duplicate_host",
            Self::BadHost => "bad_host",
            Self::HostTooLong => "host_too_long",
            Self::IpLiteral => "ip_literal",
            Self::Port => "port",
            Self::TransferEncoding => "transfer_encoding",
            Self::ContentLength => "content_length",
            Self::H2cUpgrade => "h2c_upgrade",
            Self::NotBindable => "not_bindable",
            Self::NoPayload => "no_payload",
        }
    }
}

/// The key of the bindable hosts' map: the listen port (the segment's destination
/// port) and the host as the router looks it up, zero-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BindHostKey {
    /// Host byte order.
    pub port: u16,
    /// Bytes of `host` used (1..HOST_KEY_MAX).
    pub len: u8,
    pub _pad: u8,
    pub host: [u8; HOST_KEY_MAX],
}
const _: () = assert!(size_of::<BindHostKey>() == 4 + HOST_KEY_MAX);

impl BindHostKey {
    pub const EMPTY: Self = Self { port: 0, len: 0, _pad: 0, host: [0; HOST_KEY_MAX] };

    /// The key of `host` (already lowercase, no port) on `port`; None when it cannot be
    /// a key (empty or too long).
    pub fn new(port: u16, host: &[u8]) -> Option<Self> {
        if host.is_empty() || host.len() >= HOST_KEY_MAX {
            return None;
        }
        let mut k = Self { port, len: host.len() as u8, ..Self::EMPTY };
        k.host[..host.len()].copy_from_slice(host);
        Some(k)
    }

    pub fn host(&self) -> &[u8] {
        &self.host[..(self.len as usize).min(HOST_KEY_MAX)]
    }
}

/// What [`scan`] makes of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Route by this host (lowercase, no port, no trailing dot; `port` 0).
    Host(BindHostKey),
    Fallback(Fallback),
}

/// Scans the first segment's bytes on the host: the same steps as the kernel program.
pub fn scan(segment: &[u8]) -> Verdict {
    let mut s = HeadScanner::new();
    let n = segment.len().min(SCAN_MAX);
    let mut i = 0;
    while i < n {
        let step = s.feed(segment[i]);
        if step != STEP_MORE {
            return s.verdict(step);
        }
        i += 1;
    }
    s.verdict(s.finish(segment.len()))
}

/// [`HeadScanner::feed`]: read the next byte.
pub const STEP_MORE: u8 = 0xff;
/// [`HeadScanner::feed`]: the head ended and names a host (its key is in the scanner).
pub const STEP_HOST: u8 = VERDICT_BIND;

// Where the scanner is.
const S_METHOD: u8 = 0;
const S_TARGET_START: u8 = 1;
const S_PATH: u8 = 2;
const S_QUERY: u8 = 3;
const S_VERSION: u8 = 4;
const S_LINE_LF: u8 = 5;
/// At the start of a field line (or the empty line).
const S_LINE_START: u8 = 6;
const S_NAME: u8 = 7;
const S_VALUE: u8 = 8;
const S_END_LF: u8 = 9;
const S_HOST: u8 = 10;
const S_PORT: u8 = 11;
/// Whitespace after a Host value: only more whitespace or the CR may follow.
const S_HOST_TAIL: u8 = 12;

// The field names (and methods) recognised, one bit each in `cand`.
const W_HOST: u8 = 0;
const W_TE: u8 = 1;
const W_CL: u8 = 2;
const W_UPGRADE: u8 = 3;
const W_H2SETTINGS: u8 = 4;
const W_CONNECT: u8 = 5;
const W_PRI: u8 = 6;
const WORDS: usize = 7;
/// The words, lowercase, back to back; [`WORD_AT`] and [`WORD_LEN`] say where each is.
const WORD_BYTES: &[u8; 66] = b"hosttransfer-encodingcontent-lengthupgradehttp2-settingsconnectpri";
const WORD_AT: [u8; WORDS] = [0, 4, 21, 35, 42, 56, 63];
const WORD_LEN: [u8; WORDS] = [4, 17, 14, 7, 14, 7, 3];
const NAME_WORDS: u8 = (1 << W_HOST) | (1 << W_TE) | (1 << W_CL) | (1 << W_UPGRADE) | (1 << W_H2SETTINGS);
const METHOD_WORDS: u8 = (1 << W_CONNECT) | (1 << W_PRI);

const VERSION: &[u8; 8] = b"HTTP/1.1";

/// The scanner's state, `#[repr(C)]` so the kernel program keeps it in a map value.
/// Start from [`HeadScanner::new`], [`HeadScanner::feed`] each byte until it returns
/// something other than [`STEP_MORE`], or [`HeadScanner::finish`] when the bytes end.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeadScanner {
    state: u8,
    /// Candidate words still matching the name or method being read (bits `W_*`).
    cand: u8,
    /// The word the current field's name was (`W_*`), or 0xff.
    field: u8,
    /// Hosts seen.
    hosts: u8,
    /// Bytes of the method, name, version or value read so far (the meaning per state).
    len: u16,
    fields: u16,
    /// Path segment: bytes, and whether all of them are dots.
    seg_len: u16,
    seg_dots: u8,
    /// Content-Lengths seen; `h2c` matcher state for an Upgrade value (3: found).
    lengths: u8,
    h2c: u8,
    /// The Host value: its port so far, whether the port had a digit.
    port_digits: u8,
    _pad: [u8; 2],
    port: u32,
    /// The host bytes so far, lowercase; `key.len` counts them.
    pub key: BindHostKey,
}
const _: () = assert!(size_of::<HeadScanner>() == 20 + size_of::<BindHostKey>());

impl Default for HeadScanner {
    fn default() -> Self {
        Self::new()
    }
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    if b.is_ascii_uppercase() { b | 0x20 } else { b }
}

/// Path characters accepted (RFC 3986 pchar without `%`, and `/`).
#[inline(always)]
fn path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',')
        || matches!(b, b';' | b'=' | b':' | b'@' | b'/')
}

/// Whether word `w` has byte `b` (lowercased) at position `i`.
#[inline(always)]
fn word_has(w: u8, i: u16, b: u8) -> bool {
    let w = (w as usize) & 7;
    if w >= WORDS {
        return false;
    }
    if i >= WORD_LEN[w] as u16 {
        return false;
    }
    let at = WORD_AT[w] as usize + i as usize;
    at < WORD_BYTES.len() && WORD_BYTES[at] == b
}

/// The one word of `cand` whose length is `len`, or 0xff.
#[inline(always)]
fn word_of(cand: u8, len: u16) -> u8 {
    let mut w = 0u8;
    while (w as usize) < WORDS {
        if cand & (1 << w) != 0 && WORD_LEN[w as usize] as u16 == len {
            return w;
        }
        w += 1;
    }
    0xff
}

/// Keeps the candidates of `cand` that have `b` at `i`.
#[inline(always)]
fn narrow(cand: u8, i: u16, b: u8) -> u8 {
    let mut out = 0u8;
    let mut w = 0u8;
    while (w as usize) < WORDS {
        if cand & (1 << w) != 0 && word_has(w, i, b) {
            out |= 1 << w;
        }
        w += 1;
    }
    out
}

impl HeadScanner {
    pub const fn new() -> Self {
        Self {
            state: S_METHOD,
            cand: METHOD_WORDS,
            field: 0xff,
            hosts: 0,
            len: 0,
            fields: 0,
            seg_len: 0,
            seg_dots: 1,
            lengths: 0,
            h2c: 0,
            port_digits: 0,
            _pad: [0; 2],
            port: 0,
            key: BindHostKey::EMPTY,
        }
    }

    /// The verdict for a step that ended the scan.
    pub fn verdict(&self, step: u8) -> Verdict {
        match Fallback::from_code(step) {
            Some(f) => Verdict::Fallback(f),
            None => Verdict::Host(self.key),
        }
    }

    /// The bytes ended (`total` bytes in the segment) with the head still open.
    #[inline(always)]
    pub fn finish(&self, total: usize) -> u8 {
        if total >= SCAN_MAX { Fallback::TooLong as u8 } else { Fallback::Incomplete as u8 }
    }

    /// Reads one byte: [`STEP_MORE`], [`STEP_HOST`] (the head ended; the key is in
    /// `self.key`), or a [`Fallback`] code.
    #[inline(always)]
    pub fn feed(&mut self, b: u8) -> u8 {
        match self.state {
            S_METHOD => self.method(b),
            S_TARGET_START => {
                if b == b'/' {
                    self.state = S_PATH;
                    self.seg_len = 0;
                    self.seg_dots = 1;
                    STEP_MORE
                } else {
                    Fallback::Target as u8
                }
            }
            S_PATH => self.path(b),
            S_QUERY => {
                if b == b' ' {
                    self.state = S_VERSION;
                    self.len = 0;
                    STEP_MORE
                } else if path_char(b) || b == b'?' || b == b'%' {
                    STEP_MORE
                } else {
                    Fallback::Target as u8
                }
            }
            S_VERSION => self.version(b),
            S_LINE_LF | S_END_LF => {
                if b != b'\n' {
                    return Fallback::LineEnding as u8;
                }
                if self.state == S_END_LF {
                    return self.end();
                }
                self.state = S_LINE_START;
                STEP_MORE
            }
            S_LINE_START => self.line_start(b),
            S_NAME => self.name(b),
            S_VALUE => self.value(b),
            S_HOST => self.host(b),
            S_PORT => self.port(b),
            S_HOST_TAIL => match b {
                b' ' | b'\t' => STEP_MORE,
                b'\r' => self.host_done(),
                b'\n' => Fallback::LineEnding as u8,
                _ => Fallback::BadHost as u8,
            },
            _ => Fallback::LineEnding as u8,
        }
    }

    #[inline(always)]
    fn method(&mut self, b: u8) -> u8 {
        if b == b' ' {
            if self.len == 0 {
                return Fallback::Method as u8;
            }
            let w = word_of(self.cand, self.len);
            if w == W_PRI {
                return Fallback::H2Preface as u8;
            }
            if w == W_CONNECT {
                return Fallback::Method as u8;
            }
            self.state = S_TARGET_START;
            return STEP_MORE;
        }
        if !b.is_ascii_uppercase() || self.len >= MAX_METHOD as u16 {
            return Fallback::Method as u8;
        }
        self.cand = narrow(self.cand, self.len, lower(b));
        self.len += 1;
        STEP_MORE
    }

    /// Ends the path segment being read: `last` when the path ends with it.
    #[inline(always)]
    fn segment_end(&self, last: bool) -> bool {
        let dots = self.seg_dots != 0 && (self.seg_len == 1 || self.seg_len == 2);
        let empty = self.seg_len == 0 && !last;
        !(dots || empty)
    }

    #[inline(always)]
    fn path(&mut self, b: u8) -> u8 {
        match b {
            b' ' | b'?' => {
                if !self.segment_end(true) {
                    return Fallback::PathNotNormal as u8;
                }
                self.len = 0;
                self.state = if b == b' ' { S_VERSION } else { S_QUERY };
                STEP_MORE
            }
            b'/' => {
                if !self.segment_end(false) {
                    return Fallback::PathNotNormal as u8;
                }
                self.seg_len = 0;
                self.seg_dots = 1;
                STEP_MORE
            }
            b'%' | b'\\' => Fallback::PathNotNormal as u8,
            _ if path_char(b) => {
                if b != b'.' {
                    self.seg_dots = 0;
                }
                self.seg_len = self.seg_len.saturating_add(1);
                STEP_MORE
            }
            _ => Fallback::Target as u8,
        }
    }

    #[inline(always)]
    fn version(&mut self, b: u8) -> u8 {
        if self.len == VERSION.len() as u16 {
            if b == b'\r' {
                self.state = S_LINE_LF;
                return STEP_MORE;
            }
            return Fallback::LineEnding as u8;
        }
        let i = (self.len as usize) & 7;
        if VERSION[i] != b {
            return Fallback::Version as u8;
        }
        self.len += 1;
        STEP_MORE
    }

    #[inline(always)]
    fn line_start(&mut self, b: u8) -> u8 {
        match b {
            b'\r' => {
                self.state = S_END_LF;
                STEP_MORE
            }
            b' ' | b'\t' => Fallback::ObsFold as u8,
            b'\n' => Fallback::LineEnding as u8,
            _ => {
                if self.fields >= MAX_FIELDS {
                    return Fallback::TooManyFields as u8;
                }
                self.fields += 1;
                self.state = S_NAME;
                self.len = 0;
                self.cand = NAME_WORDS;
                self.name(b)
            }
        }
    }

    #[inline(always)]
    fn name(&mut self, b: u8) -> u8 {
        if b == b':' {
            if self.len == 0 {
                return Fallback::FieldName as u8;
            }
            let w = word_of(self.cand, self.len);
            self.field = w;
            self.len = 0;
            self.h2c = 0;
            return match w {
                W_TE => Fallback::TransferEncoding as u8,
                W_H2SETTINGS => Fallback::H2cUpgrade as u8,
                W_HOST => {
                    if self.hosts != 0 {
                        return Fallback::DuplicateHost as u8;
                    }
                    self.hosts = 1;
                    self.state = S_HOST;
                    STEP_MORE
                }
                W_CL => {
                    if self.lengths != 0 {
                        return Fallback::ContentLength as u8;
                    }
                    self.lengths = 1;
                    self.state = S_VALUE;
                    STEP_MORE
                }
                _ => {
                    self.state = S_VALUE;
                    STEP_MORE
                }
            };
        }
        if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Fallback::FieldName as u8;
        }
        self.cand = narrow(self.cand, self.len, lower(b));
        self.len = self.len.saturating_add(1);
        STEP_MORE
    }

    /// A field value other than Host's. `len` counts its bytes after leading whitespace.
    #[inline(always)]
    fn value(&mut self, b: u8) -> u8 {
        if b == b'\n' {
            return Fallback::LineEnding as u8;
        }
        if b == b'\r' {
            if self.field == W_CL && self.lengths != 2 {
                return Fallback::ContentLength as u8; // no digit
            }
            self.state = S_LINE_LF;
            return STEP_MORE;
        }
        if !(b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Fallback::FieldValue as u8;
        }
        if self.field == W_CL {
            // 1-18 digits, whitespace around them: `lengths` 1 before, 2 in or after digits
            if b == b' ' || b == b'\t' {
                if self.lengths == 2 {
                    self.lengths = 3;
                }
                return STEP_MORE;
            }
            if !b.is_ascii_digit() || self.lengths == 3 || self.len >= MAX_LENGTH_DIGITS as u16 {
                return Fallback::ContentLength as u8;
            }
            self.lengths = 2;
            self.len += 1;
            return STEP_MORE;
        }
        if self.field == W_UPGRADE {
            let l = lower(b);
            self.h2c = match (self.h2c, l) {
                (_, b'h') => 1,
                (1, b'2') => 2,
                (2, b'c') => return Fallback::H2cUpgrade as u8,
                _ => 0,
            };
        }
        STEP_MORE
    }

    /// The Host value: leading whitespace, then name bytes into the key.
    #[inline(always)]
    fn host(&mut self, b: u8) -> u8 {
        match b {
            b' ' | b'\t' => {
                if self.key.len == 0 {
                    STEP_MORE
                } else {
                    self.state = S_HOST_TAIL;
                    STEP_MORE
                }
            }
            b'\r' => self.host_done(),
            b'\n' => Fallback::LineEnding as u8,
            b':' => {
                self.state = S_PORT;
                STEP_MORE
            }
            b'[' => Fallback::IpLiteral as u8,
            _ if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' => {
                let n = self.key.len as usize;
                if n >= HOST_KEY_MAX - 1 {
                    return Fallback::HostTooLong as u8;
                }
                self.key.host[n & (HOST_KEY_MAX - 1)] = lower(b);
                self.key.len += 1;
                STEP_MORE
            }
            _ if b == b'\t' || (0x20..0x7f).contains(&b) => Fallback::BadHost as u8,
            _ => Fallback::FieldValue as u8,
        }
    }

    #[inline(always)]
    fn port(&mut self, b: u8) -> u8 {
        match b {
            b'0'..=b'9' => {
                if self.port_digits >= 5 {
                    return Fallback::Port as u8;
                }
                self.port_digits += 1;
                self.port = self.port * 10 + (b - b'0') as u32;
                if self.port > 65535 {
                    return Fallback::Port as u8;
                }
                STEP_MORE
            }
            b'\n' => Fallback::LineEnding as u8,
            b' ' | b'\t' | b'\r' => {
                if self.port_digits == 0 {
                    return Fallback::Port as u8;
                }
                if b == b'\r' {
                    return self.host_done();
                }
                self.state = S_HOST_TAIL;
                STEP_MORE
            }
            _ if b == b'\t' || (0x20..0x7f).contains(&b) => Fallback::Port as u8,
            _ => Fallback::FieldValue as u8,
        }
    }

    /// The CR after a Host value: strip one trailing dot, as the router does.
    #[inline(always)]
    fn host_done(&mut self) -> u8 {
        let n = self.key.len as usize;
        if n > 0 && self.key.host[(n - 1) & (HOST_KEY_MAX - 1)] == b'.' {
            self.key.host[(n - 1) & (HOST_KEY_MAX - 1)] = 0;
            self.key.len -= 1;
        }
        if self.key.len == 0 {
            return Fallback::BadHost as u8;
        }
        self.state = S_LINE_LF;
        STEP_MORE
    }

    /// The empty line after the fields.
    #[inline(always)]
    fn end(&mut self) -> u8 {
        if self.hosts == 0 {
            return Fallback::NoHost as u8;
        }
        STEP_HOST
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::vec::Vec;

    fn host(h: &str) -> Verdict {
        Verdict::Host(BindHostKey::new(0, h.as_bytes()).unwrap())
    }

    fn fb(f: Fallback) -> Verdict {
        Verdict::Fallback(f)
    }

    #[test]
    fn words_are_where_the_table_says() {
        let words: [&[u8]; WORDS] =
            [b"host", b"transfer-encoding", b"content-length", b"upgrade", b"http2-settings", b"connect", b"pri"];
        for (w, word) in words.iter().enumerate() {
            let (at, len) = (WORD_AT[w] as usize, WORD_LEN[w] as usize);
            assert_eq!(&WORD_BYTES[at..at + len], *word);
        }
        for (i, f) in Fallback::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i + 1);
            assert_eq!(Fallback::from_code(*f as u8), Some(*f));
        }
        assert_eq!(Fallback::from_code(0), None);
        assert_eq!(Fallback::from_code(VERDICT_CODES as u8), None);
    }

    #[test]
    fn plain_heads_name_their_host() {
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"), host("a.test"));
        assert_eq!(scan(b"GET /x?y=1&z=%41 HTTP/1.1\r\nhOsT:A.Test:9080\r\n\r\n"), host("a.test"));
        assert_eq!(scan(b"POST /a/b/ HTTP/1.1\r\nHost: \tA.test.  \r\nContent-Length: 5\r\n\r\nhello"), host("a.test"));
        assert_eq!(scan(b"GET / HTTP/1.1\r\nX-A: \x21~ \t\r\nHost: 10.0.0.1:80\r\nhosts: x\r\n\r\n"), host("10.0.0.1"));
        let ws = b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(scan(ws), host("ws.test"));
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGET / HTTP/1.1\r\nHost: b.test\r\n\r\n"),
            host("a.test")
        );
    }

    #[test]
    fn odd_heads_fall_back() {
        let cases: &[(&[u8], Fallback)] = &[
            (b"GET / HTTP/1.1\r\nHost: a.test\r\n", Fallback::Incomplete),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Fallback::H2Preface),
            (b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::Method),
            (b"get / HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::Method),
            (b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::Target),
            (b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::Target),
            (b"GET /a//b HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::PathNotNormal),
            (b"GET /a/../b HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::PathNotNormal),
            (b"GET /. HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::PathNotNormal),
            (b"GET /%61 HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::PathNotNormal),
            (b"GET /a#f HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::Target),
            (b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n", Fallback::Version),
            (b"GET  / HTTP/1.1\r\nHost: a.test\r\n\r\n", Fallback::Target),
            (b"GET / HTTP/1.1\nHost: a.test\n\n", Fallback::LineEnding),
            (b"GET / HTTP/1.1\r\nHost: a.test\n\r\n", Fallback::LineEnding),
            (b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", Fallback::FieldName),
            (b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\x00b\r\n\r\n", Fallback::FieldValue),
            (b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\rb\r\n\r\n", Fallback::LineEnding),
            (b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n", Fallback::ObsFold),
            (b"GET / HTTP/1.1\r\n\r\n", Fallback::NoHost),
            (b"GET / HTTP/1.1\r\nHost: a.test\r\nHOST: a.test\r\n\r\n", Fallback::DuplicateHost),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Fallback::BadHost),
            (b"GET / HTTP/1.1\r\nHost: u@a.test\r\n\r\n", Fallback::BadHost),
            (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", Fallback::BadHost),
            (b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", Fallback::IpLiteral),
            (b"GET / HTTP/1.1\r\nHost: a.test:\r\n\r\n", Fallback::Port),
            (b"GET / HTTP/1.1\r\nHost: a.test:65536\r\n\r\n", Fallback::Port),
            (b"GET / HTTP/1.1\r\nHost: a.test:8:8\r\n\r\n", Fallback::Port),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Fallback::TransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", Fallback::ContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n", Fallback::ContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Fallback::ContentLength),
            (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, H2C\r\n\r\n", Fallback::H2cUpgrade),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAA\r\n\r\n", Fallback::H2cUpgrade),
        ];
        for (head, want) in cases {
            assert_eq!(scan(head), fb(*want), "{:?}", std::string::String::from_utf8_lossy(head));
        }
        let long = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "a".repeat(HOST_KEY_MAX));
        assert_eq!(scan(long.as_bytes()), fb(Fallback::HostTooLong));
        let fits = "a".repeat(HOST_KEY_MAX - 1);
        assert_eq!(scan(format!("GET / HTTP/1.1\r\nHost: {fits}\r\n\r\n").as_bytes()), host(&fits));
        let mut many = Vec::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        for _ in 0..MAX_FIELDS {
            many.extend_from_slice(b"x: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(scan(&many), fb(Fallback::TooManyFields));
        let big = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(SCAN_MAX));
        assert_eq!(scan(big.as_bytes()), fb(Fallback::TooLong));
    }

    #[test]
    fn a_head_split_anywhere_before_its_end_is_incomplete() {
        let head = b"GET /a?b HTTP/1.1\r\nHost: a.test:80\r\nX: y\r\n\r\n";
        for cut in 0..head.len() {
            assert_eq!(scan(&head[..cut]), fb(Fallback::Incomplete), "cut at {cut}");
        }
        assert_eq!(scan(head), host("a.test"));
    }
}
