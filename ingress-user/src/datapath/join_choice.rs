//! Which mechanism carries a joined pair's bytes (pure: no sockets, no aya).
//!
//! Three mechanisms: the kernel join (sockmap + sk_skb redirect, no syscall per
//! message but, on this kernel, the redirect is completed from a work queue, so bulk
//! crawls), `splice(2)` through a pipe (the agent moves page references, never the
//! bytes: good for bulk) and the plain copy (read/write through a 64 KiB buffer).
//!
//! `--join-mode auto` (the default) starts every upgraded or splice-safe connection
//! spliced through a pipe and watches what the first exchanges carry: a single read of
//! [`LARGE_READ`] or more, or [`BULK_BURST`] bytes one way before the other side
//! answers, settles it on the pipe for good. When the bytes turn direction
//! [`SMALL_TURNS`] times in messages that are all small, the class decides
//! ([`small_messages`]): an upgraded pair (WebSocket) is joined in the kernel, a
//! splice-safe host's HTTP keep-alive pair goes on as the plain copy. Measured side by
//! side (`netbench --splice-only`, `docs/bench/splice-latest.md`), the kernel join wins
//! for small WebSocket messages (1.24x the copy) but loses for HTTP keep-alive over many
//! connections (0.88x-1.02x the copy, where the copy is 1.30x-1.44x the userspace
//! dataplane's). A connection that ends first stays on the pipe. Without the sockmap
//! program (the userspace dataplane) auto copies, as before.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A single read this large means bulk.
pub const LARGE_READ: u64 = 32 * 1024;
/// This many bytes in one direction before the other side sends means bulk.
pub const BULK_BURST: u64 = 64 * 1024;
/// Direction changes, all in small messages, before a pair is joined in the kernel
/// (request, answer, request, answer: 3 turns).
pub const SMALL_TURNS: u32 = 3;

/// `--join-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinMode {
    /// Pipe first; the kernel join once the first exchanges show small messages.
    #[default]
    Auto,
    /// Always the kernel join (sockmap), where it is available.
    Kernel,
    /// Always splice(2) through a pipe.
    Pipe,
    /// Always the plain copy.
    Copy,
}

/// The kind of connection pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinClass {
    /// After an Upgrade's 101 (WebSocket).
    Upgraded,
    /// A splice-safe host's whole connection.
    SpliceSafe,
    /// TLS passthrough: always joined in the kernel where it can be (not chosen here).
    Passthrough,
}

impl JoinClass {
    pub const ALL: [JoinClass; 3] = [Self::Upgraded, Self::SpliceSafe, Self::Passthrough];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upgraded => "upgraded",
            Self::SpliceSafe => "splice_safe",
            Self::Passthrough => "passthrough",
        }
    }
}

/// What carries the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    JoinedKernel,
    SplicedPipe,
    Copied,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Self::JoinedKernel, Self::SplicedPipe, Self::Copied];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JoinedKernel => "joined_kernel",
            Self::SplicedPipe => "spliced_pipe",
            Self::Copied => "copied",
        }
    }
}

/// Why a pair got its mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// auto: the first exchanges were small messages.
    SmallMessages,
    /// auto: a large read or a long burst one way.
    Bulk,
    /// auto: the connection ended (or half-closed) before a choice.
    EndedFirst,
    /// `--join-mode kernel|pipe|copy`.
    Forced,
    /// TLS passthrough is joined in the kernel whenever it can be.
    Passthrough,
    /// No sockmap program (userspace dataplane, or it failed to load).
    NoSockmap,
    /// IPv6 sockets are not joined in the kernel.
    Ipv6,
    /// Entering the sockets in the maps failed.
    JoinFailed,
    /// No pipe could be made (descriptor limit).
    NoPipe,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Self::SmallMessages,
        Self::Bulk,
        Self::EndedFirst,
        Self::Forced,
        Self::Passthrough,
        Self::NoSockmap,
        Self::Ipv6,
        Self::JoinFailed,
        Self::NoPipe,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SmallMessages => "small_messages",
            Self::Bulk => "bulk",
            Self::EndedFirst => "ended_first",
            Self::Forced => "forced",
            Self::Passthrough => "passthrough",
            Self::NoSockmap => "no_sockmap",
            Self::Ipv6 => "ipv6",
            Self::JoinFailed => "join_failed",
            Self::NoPipe => "no_pipe",
        }
    }
}

/// How a pair starts, from the mode, its class and what the host offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Join in the kernel now (a failure falls back to the copy, reason JoinFailed).
    Kernel(Reason),
    /// Splice through a pipe and watch the first exchanges (auto).
    Watch,
    /// Splice through a pipe to the end.
    Pipe(Reason),
    /// Copy to the end.
    Copy(Reason),
}

/// The start for a pair of `class` under `mode`; `kernel` says whether the sockmap
/// program is loaded, `ipv4` whether both sockets are IPv4 (the program's keys).
pub fn start(mode: JoinMode, class: JoinClass, kernel: bool, ipv4: bool) -> Start {
    let no_kernel = if !kernel { Reason::NoSockmap } else { Reason::Ipv6 };
    if class == JoinClass::Passthrough {
        // unchanged: in the kernel when it can, else the copy
        return if kernel && ipv4 { Start::Kernel(Reason::Passthrough) } else { Start::Copy(no_kernel) };
    }
    match mode {
        JoinMode::Copy => Start::Copy(Reason::Forced),
        JoinMode::Pipe => Start::Pipe(Reason::Forced),
        JoinMode::Kernel if kernel && ipv4 => Start::Kernel(Reason::Forced),
        // forced to the kernel where it cannot be: the copy, as without this mode
        JoinMode::Kernel => Start::Copy(no_kernel),
        // the userspace dataplane copies (its figures are the yardstick)
        JoinMode::Auto if !kernel => Start::Copy(Reason::NoSockmap),
        JoinMode::Auto if !ipv4 => Start::Pipe(Reason::Ipv6),
        JoinMode::Auto => Start::Watch,
    }
}

/// A direction of a pair: `Forward` is the one the first request took (client to pod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Forward,
    Back,
}

/// What the watch says after a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Undecided,
    Kernel(Reason),
    Pipe(Reason),
    /// Leave the pipe for the plain copy (both directions stop with their pipes empty).
    Copy(Reason),
}

/// Where small messages go, per class: upgraded pairs are joined in the kernel, a
/// splice-safe host's keep-alive pairs are copied (see the module's measurements).
pub fn small_messages(class: JoinClass) -> Verdict {
    match class {
        JoinClass::SpliceSafe => Verdict::Copy(Reason::SmallMessages),
        JoinClass::Upgraded | JoinClass::Passthrough => Verdict::Kernel(Reason::SmallMessages),
    }
}

/// The watch over a pair's first exchanges.
#[derive(Clone, Debug)]
pub struct Chooser {
    class: JoinClass,
    last: Option<Dir>,
    burst: u64,
    turns: u32,
    settled: Option<Verdict>,
}

impl Chooser {
    /// The watch for a pair of `class` (what small messages lead to).
    pub fn new(class: JoinClass) -> Self {
        Self { class, last: None, burst: 0, turns: 0, settled: None }
    }

    /// Records a read of `n` bytes going `dir` (in the order they happened).
    pub fn saw(&mut self, dir: Dir, n: u64) -> Verdict {
        if let Some(v) = self.settled {
            return v;
        }
        if n == 0 {
            return Verdict::Undecided;
        }
        if self.last == Some(dir) {
            self.burst += n;
        } else {
            if self.last.is_some() {
                self.turns += 1;
            }
            self.last = Some(dir);
            self.burst = n;
        }
        let v = if n >= LARGE_READ || self.burst >= BULK_BURST {
            Verdict::Pipe(Reason::Bulk)
        } else if self.turns >= SMALL_TURNS {
            small_messages(self.class)
        } else {
            return Verdict::Undecided;
        };
        self.settled = Some(v);
        v
    }

    /// A direction ended (EOF) before a choice: the pair stays on the pipe.
    pub fn ended(&mut self) -> Verdict {
        *self.settled.get_or_insert(Verdict::Pipe(Reason::EndedFirst))
    }

    pub fn settled(&self) -> Option<Verdict> {
        self.settled
    }
}

/// Pairs per (class, mechanism, reason), counted once per pair when its mechanism is
/// settled.
pub struct ChoiceTally {
    counts: [[[AtomicU64; Reason::ALL.len()]; Mechanism::ALL.len()]; JoinClass::ALL.len()],
}

impl Default for ChoiceTally {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))) }
    }
}

fn index<T: PartialEq + Copy>(all: &[T], v: T) -> usize {
    all.iter().position(|x| *x == v).expect("listed")
}

impl ChoiceTally {
    pub fn count(&self, class: JoinClass, m: Mechanism, r: Reason) {
        self.counts[index(&JoinClass::ALL, class)][index(&Mechanism::ALL, m)][index(&Reason::ALL, r)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The `/stats` view: per class, pairs per mechanism and per (mechanism, reason).
    pub fn view(&self) -> JoinChoices {
        let mut out = JoinChoices::default();
        for (ci, class) in JoinClass::ALL.iter().enumerate() {
            let c = match class {
                JoinClass::Upgraded => &mut out.upgraded,
                JoinClass::SpliceSafe => &mut out.splice_safe,
                JoinClass::Passthrough => &mut out.passthrough,
            };
            for (mi, m) in Mechanism::ALL.iter().enumerate() {
                for (ri, r) in Reason::ALL.iter().enumerate() {
                    let n = self.counts[ci][mi][ri].load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    match m {
                        Mechanism::JoinedKernel => c.joined_kernel += n,
                        Mechanism::SplicedPipe => c.spliced_pipe += n,
                        Mechanism::Copied => c.copied += n,
                    }
                    *c.reasons.entry(format!("{}:{}", m.as_str(), r.as_str())).or_default() += n;
                }
            }
        }
        out
    }
}

/// One class's pairs: how many each mechanism carried, and why
/// (`"mechanism:reason"` -> pairs, zeroes left out).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClassChoices {
    pub joined_kernel: u64,
    pub spliced_pipe: u64,
    pub copied: u64,
    #[serde(default)]
    pub reasons: BTreeMap<String, u64>,
}

/// Every class's choices (`ingress stats --json`: `splice.choice`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinChoices {
    pub upgraded: ClassChoices,
    pub splice_safe: ClassChoices,
    pub passthrough: ClassChoices,
}

impl JoinChoices {
    pub fn classes(&self) -> [(&'static str, &ClassChoices); 3] {
        [("upgraded", &self.upgraded), ("splice_safe", &self.splice_safe), ("passthrough", &self.passthrough)]
    }

    /// The lines `ingress stats` prints (nothing for a class without pairs).
    pub fn format(&self) -> String {
        let mut out = String::new();
        for (name, c) in self.classes() {
            if c.joined_kernel + c.spliced_pipe + c.copied == 0 {
                continue;
            }
            let why: Vec<String> = c.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out += &format!(
                "joined {name}: kernel {} pipe {} copied {} ({})\n",
                c.joined_kernel,
                c.spliced_pipe,
                c.copied,
                why.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(reads: &[(Dir, u64)]) -> Verdict {
        run_as(JoinClass::Upgraded, reads)
    }

    fn run_as(class: JoinClass, reads: &[(Dir, u64)]) -> Verdict {
        let mut c = Chooser::new(class);
        let mut v = Verdict::Undecided;
        for (d, n) in reads {
            v = c.saw(*d, *n);
        }
        v
    }

    use Dir::{Back, Forward};

    #[test]
    fn small_request_answer_exchanges_join_after_three_turns() {
        let ka = [(Forward, 90), (Back, 250), (Forward, 90), (Back, 250)];
        assert_eq!(run(&ka[..3]), Verdict::Undecided, "two turns are not enough");
        assert_eq!(run(&ka), Verdict::Kernel(Reason::SmallMessages));
        // a small WebSocket echo: messages in pieces still count by direction changes
        let ws = [(Forward, 60), (Forward, 60), (Back, 120), (Forward, 60), (Back, 60), (Back, 60)];
        assert_eq!(run(&ws), Verdict::Kernel(Reason::SmallMessages));
    }

    #[test]
    fn a_splice_safe_hosts_small_messages_go_to_the_copy_and_its_bulk_to_the_pipe() {
        let ka = [(Forward, 90), (Back, 250), (Forward, 90), (Back, 250)];
        assert_eq!(run_as(JoinClass::SpliceSafe, &ka[..3]), Verdict::Undecided);
        assert_eq!(run_as(JoinClass::SpliceSafe, &ka), Verdict::Copy(Reason::SmallMessages));
        assert_eq!(run_as(JoinClass::Upgraded, &ka), Verdict::Kernel(Reason::SmallMessages));
        assert_eq!(run_as(JoinClass::SpliceSafe, &[(Forward, 90), (Back, 40_000)]), Verdict::Pipe(Reason::Bulk));
        let mut c = Chooser::new(JoinClass::SpliceSafe);
        for (d, n) in ka {
            c.saw(d, n);
        }
        assert_eq!(c.saw(Back, 1 << 20), Verdict::Copy(Reason::SmallMessages), "copied stays copied");
        assert_eq!(c.ended(), Verdict::Copy(Reason::SmallMessages));
    }

    #[test]
    fn bulk_settles_on_the_pipe() {
        // a 1 MiB answer after a small request: the first large read decides
        assert_eq!(run(&[(Forward, 90), (Back, 40_000)]), Verdict::Pipe(Reason::Bulk));
        // many small reads one way add up to a burst
        let trickle: Vec<_> = std::iter::once((Forward, 90)).chain(std::iter::repeat_n((Back, 1448), 46)).collect();
        assert_eq!(run(&trickle), Verdict::Pipe(Reason::Bulk), "{} bytes", 46 * 1448);
        assert_eq!(run(&trickle[..40]), Verdict::Undecided);
        // a bulk echo both ways at once: reads are large
        assert_eq!(run(&[(Forward, 65536), (Back, 65536)]), Verdict::Pipe(Reason::Bulk));
        // exactly below the limits is still small
        assert_eq!(run(&[(Forward, LARGE_READ - 1)]), Verdict::Undecided);
        assert_eq!(run(&[(Forward, LARGE_READ)]), Verdict::Pipe(Reason::Bulk));
    }

    #[test]
    fn a_choice_is_final() {
        let mut c = Chooser::new(JoinClass::Upgraded);
        assert_eq!(c.saw(Back, 1 << 20), Verdict::Pipe(Reason::Bulk));
        for _ in 0..10 {
            assert_eq!(c.saw(Forward, 10), Verdict::Pipe(Reason::Bulk));
            assert_eq!(c.saw(Back, 10), Verdict::Pipe(Reason::Bulk));
        }
        let mut c = Chooser::new(JoinClass::Upgraded);
        for d in [Forward, Back, Forward, Back] {
            c.saw(d, 10);
        }
        assert_eq!(c.saw(Back, 1 << 20), Verdict::Kernel(Reason::SmallMessages), "joined stays joined here");
        let mut c = Chooser::new(JoinClass::Upgraded);
        c.saw(Forward, 10);
        assert_eq!(c.ended(), Verdict::Pipe(Reason::EndedFirst));
        assert_eq!(c.saw(Back, 10), Verdict::Pipe(Reason::EndedFirst));
        assert_eq!(c.saw(Forward, 0), Verdict::Pipe(Reason::EndedFirst));
    }

    #[test]
    fn the_start_follows_mode_class_and_host() {
        use JoinClass::*;
        use JoinMode::*;
        assert_eq!(start(Auto, Upgraded, true, true), Start::Watch);
        assert_eq!(start(Auto, SpliceSafe, true, true), Start::Watch);
        assert_eq!(start(Auto, Upgraded, false, true), Start::Copy(Reason::NoSockmap), "userspace dataplane copies");
        assert_eq!(start(Auto, Upgraded, true, false), Start::Pipe(Reason::Ipv6));
        assert_eq!(start(Kernel, Upgraded, true, true), Start::Kernel(Reason::Forced));
        assert_eq!(start(Kernel, Upgraded, false, true), Start::Copy(Reason::NoSockmap));
        assert_eq!(start(Pipe, SpliceSafe, false, true), Start::Pipe(Reason::Forced), "pipe needs no eBPF");
        assert_eq!(start(Copy, SpliceSafe, true, true), Start::Copy(Reason::Forced));
        for mode in [Auto, Kernel, Pipe, Copy] {
            assert_eq!(start(mode, Passthrough, true, true), Start::Kernel(Reason::Passthrough), "{mode:?}");
            assert_eq!(start(mode, Passthrough, false, true), Start::Copy(Reason::NoSockmap));
        }
    }

    #[test]
    fn the_tally_shows_each_class_mechanism_and_reason() {
        let t = ChoiceTally::default();
        t.count(JoinClass::Upgraded, Mechanism::SplicedPipe, Reason::Bulk);
        t.count(JoinClass::Upgraded, Mechanism::SplicedPipe, Reason::Bulk);
        t.count(JoinClass::Upgraded, Mechanism::JoinedKernel, Reason::SmallMessages);
        t.count(JoinClass::SpliceSafe, Mechanism::Copied, Reason::NoSockmap);
        let v = t.view();
        assert_eq!((v.upgraded.joined_kernel, v.upgraded.spliced_pipe, v.upgraded.copied), (1, 2, 0));
        assert_eq!(v.upgraded.reasons.get("spliced_pipe:bulk"), Some(&2));
        assert_eq!(v.upgraded.reasons.get("joined_kernel:small_messages"), Some(&1));
        assert_eq!(v.splice_safe.copied, 1);
        assert_eq!(v.passthrough, ClassChoices::default());
        let text = v.format();
        assert!(
            text.contains(
                "joined upgraded: kernel 1 pipe 2 copied 0 (joined_kernel:small_messages 1, spliced_pipe:bulk 2)"
            ),
            "{text}"
        );
        assert!(text.contains("joined splice_safe: kernel 0 pipe 0 copied 1 (copied:no_sockmap 1)"), "{text}");
        assert!(!text.contains("passthrough"), "{text}");
        let back: JoinChoices = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }
}
