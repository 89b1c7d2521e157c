//! A link impairment for the netns tier, without netem (this kernel has none): the
//! TCP packets a namespace sends out of one interface go through an NFQUEUE, and a
//! thread in that namespace decides each one from a seeded random stream: drop it
//! (loss), hold its verdict for a delay (so later packets overtake it: reordering),
//! or let it through and send a copy of it again (duplication).
//!
//! ```text
//! iptables -t mangle -A POSTROUTING -o IFACE -p tcp -m mark ! --mark 0x1d
//!          -j NFQUEUE --queue-num Q --queue-bypass
//! ```
//!
//! Copies are sent through a raw socket marked 0x1d, so they skip the queue. Besides the
//! random [`Impairment`], a link can pick packets ([`target`]: the first SYN-ACK, pure ACK
//! or data segment, once per connection or per link) or only observe them ([`Plan`]), on
//! egress as above or on ingress (`PREROUTING -i IFACE`: what XDP_TX sends a namespace is
//! seen only there). The rule
//! is removed by its exact text and the thread stopped (held packets released) when
//! the [`ImpairedLink`] is dropped; `--queue-bypass` lets packets through if the
//! thread is gone. Every run is bounded: the thread ends by itself after
//! [`MAX_LIFETIME`].

use std::collections::BinaryHeap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod target;
pub use target::{Action, Kind, Scope, Segment, Target, classify};

/// The mark of the copies this harness sends itself (never queued again).
const COPY_MARK: u32 = 0x1d;
/// A link's thread stops on its own after this long, whatever the test does.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// What happens to the packets on the link, each decided on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairment {
    /// Fraction of packets dropped.
    pub loss: f64,
    /// Fraction of packets held back by `delay` +- `jitter` (the rest overtake them).
    pub reorder: f64,
    pub delay: Duration,
    pub jitter: Duration,
    /// Fraction of packets sent twice.
    pub duplicate: f64,
    /// Seed of the decisions, so a run can be repeated.
    pub seed: u64,
}

impl Impairment {
    /// 25 % of segments held 2 +- 1 ms.
    pub fn reordering(seed: u64) -> Self {
        Self {
            loss: 0.0,
            reorder: 0.25,
            delay: Duration::from_millis(2),
            jitter: Duration::from_millis(1),
            duplicate: 0.0,
            seed,
        }
    }
    /// 3 % loss.
    pub fn loss(seed: u64) -> Self {
        Self { loss: 0.03, reorder: 0.0, delay: Duration::ZERO, jitter: Duration::ZERO, duplicate: 0.0, seed }
    }
    /// 1 % duplicates.
    pub fn duplicates(seed: u64) -> Self {
        Self { loss: 0.0, reorder: 0.0, delay: Duration::ZERO, jitter: Duration::ZERO, duplicate: 0.01, seed }
    }
    /// All three at once: 3 % loss, 25 % reordered by 2 +- 1 ms, 1 % duplicates.
    pub fn everything(seed: u64) -> Self {
        Self { loss: 0.03, duplicate: 0.01, ..Self::reordering(seed) }
    }
    /// The presets above, named, for tests that run each.
    pub fn presets(seed: u64) -> [(&'static str, Self); 4] {
        [
            ("reordering", Self::reordering(seed)),
            ("loss", Self::loss(seed)),
            ("duplicates", Self::duplicates(seed)),
            ("loss+reordering+duplicates", Self::everything(seed)),
        ]
    }

    /// The fate of one packet, from a uniform draw in [0, 1) and a second one for the
    /// delay. Pure, so its proportions are unit-tested.
    pub fn decide(&self, draw: f64, second: f64) -> Fate {
        if draw < self.loss {
            return Fate::Drop;
        }
        let d = draw - self.loss;
        if d < self.duplicate {
            return Fate::Duplicate;
        }
        if d - self.duplicate < self.reorder {
            let jitter = self.jitter.as_secs_f64() * (2.0 * second - 1.0);
            return Fate::Delay(Duration::from_secs_f64((self.delay.as_secs_f64() + jitter).max(0.0)));
        }
        Fate::Pass
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fate {
    Pass,
    Drop,
    Duplicate,
    Delay(Duration),
}

/// What a link does with its packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// Each packet decided at random.
    Random(Impairment),
    /// Picked packets dropped or duplicated, the rest passed.
    Pick(Target),
    /// Everything passed (the counts say what went by).
    Observe,
}

/// Where on the interface the packets are queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// What the namespace sends out of it (mangle POSTROUTING -o).
    Egress,
    /// What arrives on it (mangle PREROUTING -i). Packets are queued as the stack has
    /// them (GRO'd ones whole, so [`ImpairCounts::largest_payload`] is not a segment size).
    Ingress,
}

/// What a link did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairCounts {
    pub seen: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub duplicated: u64,
    /// The largest TCP payload of a segment seen.
    pub largest_payload: u64,
    /// Segments seen with payload and FIN.
    pub data_with_fin: u64,
    /// Segments seen with RST.
    pub resets: u64,
}

#[derive(Default)]
struct Counters {
    seen: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
    duplicated: AtomicU64,
    largest_payload: AtomicU64,
    data_with_fin: AtomicU64,
    resets: AtomicU64,
}

impl Counters {
    fn get(&self) -> ImpairCounts {
        ImpairCounts {
            seen: self.seen.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            largest_payload: self.largest_payload.load(Ordering::Relaxed),
            data_with_fin: self.data_with_fin.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }

    fn segment(&self, s: &Segment) {
        self.largest_payload.fetch_max(s.payload as u64, Ordering::Relaxed);
        if s.payload > 0 && s.flags & target::TCP_FIN != 0 {
            self.data_with_fin.fetch_add(1, Ordering::Relaxed);
        }
        if s.flags & target::TCP_RST != 0 {
            self.resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An impaired egress: the TCP packets namespace `ns` sends out of `iface`.
pub struct ImpairedLink {
    ns: String,
    rule: Vec<String>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl ImpairedLink {
    /// Starts impairing (queue number `queue`, unique per namespace). Panics with the
    /// reason when NFQUEUE or iptables is not usable.
    pub fn start(ns: &str, iface: &str, queue: u16, imp: Impairment) -> Self {
        Self::start_plan(ns, iface, Hook::Egress, queue, Plan::Random(imp))
    }

    /// Starts `plan` on the packets `hook` of `iface` in `ns` sees (queue number `queue`,
    /// unique per namespace). Panics with the reason when NFQUEUE or iptables is not
    /// usable, or when copies are asked for on ingress (they would be sent out, the
    /// wrong way).
    pub fn start_plan(ns: &str, iface: &str, hook: Hook, queue: u16, plan: Plan) -> Self {
        let duplicates = match plan {
            Plan::Random(i) => i.duplicate > 0.0,
            Plan::Pick(t) => t.action == Action::Duplicate,
            Plan::Observe => false,
        };
        assert!(
            hook == Hook::Egress || !duplicates,
            "impairment in {ns}: duplicates only on egress (a copy of an arriving packet would be sent out of {iface})"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (ns, stop, counters) = (ns.to_string(), stop.clone(), counters.clone());
            std::thread::spawn(move || {
                crate::netns::enter(&format!("/run/netns/{ns}"));
                run_queue(queue, plan, hook, &stop, &counters, ready_tx)
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("impairment in {ns}: {e}"),
            Err(_) => panic!("impairment in {ns}: the queue thread did not start: {:?}", thread.join()),
        }
        let (chain, dir) = match hook {
            Hook::Egress => ("POSTROUTING", "-o"),
            Hook::Ingress => ("PREROUTING", "-i"),
        };
        let rule: Vec<String> = [
            chain,
            dir,
            iface,
            "-p",
            "tcp",
            "-m",
            "mark",
            "!",
            "--mark",
            &COPY_MARK.to_string(),
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue.to_string(),
            "--queue-bypass",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let link = Self { ns: ns.to_string(), rule, stop, counters, thread: Some(thread) };
        link.iptables("-A").unwrap_or_else(|e| panic!("impairment in {ns}: {e}"));
        link
    }

    fn iptables(&self, op: &str) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "iptables", "-w", "-t", "mangle", op])
            .args(&self.rule)
            .output()
            .map_err(|e| format!("running iptables (Debian package iptables; `cargo xtask setup`): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "iptables {op} {}: {}",
                self.rule.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    pub fn counts(&self) -> ImpairCounts {
        self.counters.get()
    }

    /// Removes the rule, releases held packets, and returns what the link did.
    pub fn stop(mut self) -> ImpairCounts {
        self.shutdown();
        self.counters.get()
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            let removed = self.iptables("-D");
            self.stop.store(true, Ordering::SeqCst);
            let ended = t.join();
            if let Err(e) = removed {
                eprintln!("impairment in {}: {e}", self.ns);
            }
            match ended {
                Ok(Err(e)) => eprintln!("impairment in {}: {e}", self.ns),
                Err(_) => eprintln!("impairment in {}: the queue thread panicked", self.ns),
                Ok(Ok(())) => {}
            }
        }
    }
}

impl Drop for ImpairedLink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A held packet, ordered by the time it is due (earliest first in the heap).
struct Held {
    due: Instant,
    msg: nfq::Message,
}
impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.due.cmp(&self.due)
    }
}

fn run_queue(
    num: u16,
    plan: Plan,
    hook: Hook,
    stop: &AtomicBool,
    counters: &Counters,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    let setup = || -> std::io::Result<(nfq::Queue, RawSender)> {
        let mut q = nfq::Queue::open()?;
        q.bind(num)?;
        q.set_queue_max_len(num, 16384)?;
        q.set_fail_open(num, true)?;
        // On ingress the packets are taken as they are (NFQA_CFG_F_GSO), unsegmented and
        // with a partial checksum left partial: otherwise the queue resolves one, and a
        // frame whose checksum field was rewritten whole after it was marked partial
        // (a SYN-ACK that generic-mode XDP_TX made of the client's SYN on a veth, which
        // keeps the SYN's CHECKSUM_PARTIAL) comes out with a wrong checksum the receiver
        // would never have computed (TcpInCsumErrors).
        if hook == Hook::Ingress {
            q.set_recv_gso(num, true)?;
        }
        q.set_nonblocking(true);
        Ok((q, RawSender::open()?))
    };
    let (mut q, raw) = match setup() {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let e = format!("NFQUEUE {num}: {e} (needs CONFIG_NETFILTER_NETLINK_QUEUE and root)");
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let mut rng = fastrand::Rng::with_seed(if let Plan::Random(imp) = plan { imp.seed } else { 0 });
    let mut picker = if let Plan::Pick(t) = plan { Some(target::Picker::new(t)) } else { None };
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let started = Instant::now();
    let mut result = Ok(());
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LIFETIME {
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.due <= now) {
            let mut h = held.pop().expect("peeked");
            h.msg.set_verdict(nfq::Verdict::Accept);
            let _ = q.verdict(h.msg);
        }
        match q.recv() {
            Ok(mut msg) => {
                counters.seen.fetch_add(1, Ordering::Relaxed);
                let seg = classify(msg.get_payload());
                if let Some(s) = &seg {
                    counters.segment(s);
                }
                let fate = match (plan, &mut picker) {
                    (Plan::Random(imp), _) => imp.decide(rng.f64(), rng.f64()),
                    (_, Some(p)) => p.fate(seg.as_ref()),
                    _ => Fate::Pass,
                };
                match fate {
                    Fate::Drop => {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        msg.set_verdict(nfq::Verdict::Drop);
                        let _ = q.verdict(msg);
                    }
                    Fate::Duplicate => {
                        counters.duplicated.fetch_add(1, Ordering::Relaxed);
                        let copy = msg.get_payload().to_vec();
                        msg.set_verdict(nfq::Verdict::Accept);
                        let _ = q.verdict(msg);
                        raw.send(&copy);
                    }
                    Fate::Delay(d) => {
                        counters.delayed.fetch_add(1, Ordering::Relaxed);
                        held.push(Held { due: Instant::now() + d, msg });
                    }
                    Fate::Pass => {
                        msg.set_verdict(nfq::Verdict::Accept);
                        let _ = q.verdict(msg);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // nfq gives no descriptor to poll: nap until the next packet is due
                let nap = held.peek().map(|h| h.due.saturating_duration_since(Instant::now())).unwrap_or(Duration::MAX);
                std::thread::sleep(nap.min(Duration::from_micros(100)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                result = Err(format!("NFQUEUE {num}: {e}"));
                break;
            }
        }
    }
    // release what is still held, then let the kernel pass packets by itself
    for mut h in held.into_vec() {
        h.msg.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(h.msg);
    }
    let _ = q.unbind(num);
    result
}

/// Sends whole IPv4 packets again (the duplicates), marked so they skip the queue.
struct RawSender(std::os::fd::OwnedFd);

impl RawSender {
    fn open() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let mark = COPY_MARK;
        // SAFETY: setsockopt reads a u32 from a valid pointer.
        let rc = unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK, (&mark as *const u32).cast(), 4)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// Best effort, like the link it models.
    fn send(&self, packet: &[u8]) {
        use std::os::fd::AsRawFd;
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return;
        }
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]);
        // SAFETY: sendto reads `packet` and `to`, both valid for their lengths.
        unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_follow_the_proportions() {
        let imp = Impairment::everything(7);
        let mut rng = fastrand::Rng::with_seed(imp.seed);
        let n = 200_000;
        let (mut drop, mut dup, mut delay, mut pass) = (0, 0, 0, 0);
        for _ in 0..n {
            match imp.decide(rng.f64(), rng.f64()) {
                Fate::Drop => drop += 1,
                Fate::Duplicate => dup += 1,
                Fate::Delay(d) => {
                    assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(3), "{d:?}");
                    delay += 1
                }
                Fate::Pass => pass += 1,
            }
        }
        let share = |k: i32| k as f64 / n as f64;
        assert!((share(drop) - 0.03).abs() < 0.005, "loss {}", share(drop));
        assert!((share(dup) - 0.01).abs() < 0.003, "duplicates {}", share(dup));
        assert!((share(delay) - 0.25).abs() < 0.01, "reordered {}", share(delay));
        assert_eq!(drop + dup + delay + pass, n);
        // a link without impairment passes everything
        let none = Impairment { loss: 0.0, reorder: 0.0, duplicate: 0.0, ..imp };
        assert_eq!(none.decide(0.0, 0.5), Fate::Pass);
    }
}
