//! Joined connections: after an Upgrade, the client and pod sockets are put in the
//! SOCKHASH and the kernel moves their bytes (see `ingress-ebpf/src/splice.rs`); the
//! agent only relays what arrived before the join, and propagates half-closes and
//! closes. Without sockmap (no eBPF dataplane, IPv6, a map error) it copies in user
//! space, and says why once. Upgraded and splice-safe pairs get their mechanism from
//! `--join-mode` ([`super::join_choice`]): by default they start spliced through a
//! pipe ([`super::pipe`]); once their first exchanges show small messages, upgraded
//! pairs are joined in the kernel and splice-safe pairs go on as the plain copy.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ingress_common::splice::{SpliceKey, SpliceStats};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Splicer;
use super::join_choice::{ChoiceTally, Dir, JoinClass, JoinMode, Mechanism, Reason, Start, Verdict};
use super::pipe::{Pipe, Watch, WayEnd};
use crate::telemetry::SpliceCounters;

/// The key the verdict program computes for a socket (see [`SpliceKey`]).
pub fn key_of(local: SocketAddr, remote: SocketAddr) -> Option<SpliceKey> {
    match (local, remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => Some(SpliceKey {
            local_ip4: u32::from_ne_bytes(l.ip().octets()),
            remote_ip4: u32::from_ne_bytes(r.ip().octets()),
            local_port: l.port() as u32,
            remote_port: r.port().to_be() as u32,
        }),
        _ => None,
    }
}

/// Which path carries a joined pair's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinPath {
    /// The sockmap verdict program redirects them (the agent only relays leftovers).
    Kernel,
    /// The agent copies them.
    Userspace,
}

/// Joins connections in the kernel when it can.
#[derive(Default)]
pub struct Joiner {
    splicer: Option<Mutex<Splicer>>,
    warned: AtomicBool,
    active: Arc<AtomicU64>,
    kernel_active: AtomicU64,
    total: AtomicU64,
    copied: AtomicU64,
    taken_over: AtomicU64,
    /// Pairs by class, mechanism and reason.
    choices: ChoiceTally,
}

impl Joiner {
    pub fn new(splicer: Option<Splicer>) -> Self {
        Self { splicer: splicer.map(Mutex::new), ..Default::default() }
    }

    /// Whether connections are joined in the kernel (the splice program is loaded).
    pub fn available(&self) -> bool {
        self.splicer.is_some()
    }

    pub fn counters(&self) -> SpliceCounters {
        let k: SpliceStats = self.splicer.as_ref().map(|s| s.lock().expect("splicer").stats()).unwrap_or_default();
        SpliceCounters {
            available: self.splicer.is_some(),
            joined_active: self.active.load(Ordering::Relaxed),
            joined_total: self.total.load(Ordering::Relaxed),
            kernel_active: self.kernel_active.load(Ordering::Relaxed),
            copied_in_userspace: self.copied.load(Ordering::Relaxed),
            kernel_redirected_bytes: k.redirected_bytes,
            kernel_redirected_skbs: k.redirected_skbs,
            kernel_unmatched_skbs: k.unmatched_skbs,
            kernel_trimmed_bytes: k.trimmed_bytes,
            kernel_passed_skbs: k.passed_skbs,
            kernel_layout_mismatches: k.layout_mismatches,
            taken_over: self.taken_over.load(Ordering::Relaxed),
            choice: self.choices.view(),
        }
    }

    fn fallback(&self, why: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("upgraded connections are copied in user space: {why} (logged once)");
        }
        self.copied.fetch_add(1, Ordering::Relaxed);
    }

    /// Relays two connections until both sides are closed. `a_pending` arrived on
    /// `a` before the join (it goes to `b` first), and the other way round. In the
    /// kernel when it can (the TLS passthrough's way).
    pub async fn run(&self, a: TcpStream, a_pending: Bytes, b: TcpStream, b_pending: Bytes) {
        self.run_then(a, a_pending, b, b_pending, |_| {}).await
    }

    /// [`Joiner::run`], telling `on_path` which path carries the bytes as soon as that
    /// is decided (not called when the pending bytes cannot be written).
    pub async fn run_then(
        &self,
        a: TcpStream,
        a_pending: Bytes,
        b: TcpStream,
        b_pending: Bytes,
        on_path: impl FnOnce(JoinPath),
    ) {
        self.kernel(JoinClass::Passthrough, Reason::Passthrough, a, a_pending, b, b_pending, on_path, None).await
    }

    /// Relays a pair of `class` (`a`: the client side) by the mechanism `mode` picks
    /// for it (see [`super::join_choice`]) until both sides are closed.
    pub async fn run_chosen(
        &self,
        class: JoinClass,
        mode: JoinMode,
        mut a: TcpStream,
        a_pending: Bytes,
        mut b: TcpStream,
        b_pending: Bytes,
    ) {
        let v4 = |s: &TcpStream| matches!(s.peer_addr(), Ok(SocketAddr::V4(_)));
        let start = super::join_choice::start(mode, class, self.splicer.is_some(), v4(&a) && v4(&b));
        let pipes = match start {
            Start::Kernel(r) => return self.kernel(class, r, a, a_pending, b, b_pending, |_| {}, None).await,
            Start::Copy(r) => return self.copy(class, r, a, a_pending, b, b_pending).await,
            Start::Pipe(_) | Start::Watch => match (Pipe::new(), Pipe::new()) {
                (Ok(x), Ok(y)) => (x, y),
                _ => return self.copy(class, Reason::NoPipe, a, a_pending, b, b_pending).await,
            },
        };
        if b.write_all(&a_pending).await.is_err() || a.write_all(&b_pending).await.is_err() {
            return;
        }
        // what was read before (the first request's head buffer) is not held for the
        // pair's life
        let pending = (a_pending.len(), b_pending.len());
        drop((a_pending, b_pending));
        let _active = self.enter();
        let watch = Watch::new(class, &self.choices);
        match start {
            Start::Pipe(r) => watch.count_pipe(r),
            _ => {
                // the bytes read before (a splice-safe host's first request) count too
                let _ = watch.saw(Dir::Forward, pending.0) || watch.saw(Dir::Back, pending.1);
            }
        }
        let (pa, pb) = &pipes;
        let ends = tokio::try_join!(
            super::pipe::one_way(&a, &b, pa, Dir::Forward, Some(&watch)),
            super::pipe::one_way(&b, &a, pb, Dir::Back, Some(&watch)),
        );
        match ends {
            Ok((WayEnd::Stopped, WayEnd::Stopped)) => {
                watch.counted_elsewhere();
                drop(pipes);
                if let Some(Verdict::Copy(r)) = watch.settled() {
                    // a splice-safe host's small messages: the plain copy from here on
                    // (both pipes are empty, nothing is queued in user space)
                    self.choices.count(class, Mechanism::Copied, r);
                    self.copied.fetch_add(1, Ordering::Relaxed);
                    relay(&mut a, &mut b, None).await;
                    return;
                }
                // small messages: from here on in the kernel (what is queued now is
                // drained and relayed first)
                self.kernel(class, Reason::SmallMessages, a, Bytes::new(), b, Bytes::new(), |_| {}, Some(_active))
                    .await;
            }
            Ok((ea, eb)) => {
                // one side ended while the other stopped for the join: no join for a
                // closing pair, the stopped side goes on through its pipe
                watch.count_pipe(Reason::EndedFirst);
                let rest = tokio::try_join!(
                    async {
                        if ea == WayEnd::Stopped {
                            super::pipe::one_way(&a, &b, pa, Dir::Forward, None).await
                        } else {
                            Ok(ea)
                        }
                    },
                    async {
                        if eb == WayEnd::Stopped {
                            super::pipe::one_way(&b, &a, pb, Dir::Back, None).await
                        } else {
                            Ok(eb)
                        }
                    },
                );
                if let Err(e) = rest {
                    tracing::debug!(error = %e, "spliced connection ended with an error");
                }
            }
            Err(e) => {
                watch.count_pipe(Reason::EndedFirst);
                tracing::debug!(error = %e, "spliced connection ended with an error");
            }
        }
    }

    /// Counts a pair as open (and in the total) until the guard is dropped.
    fn enter(&self) -> Active<'_> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(&self.active)
    }

    /// The plain copy, to the end.
    async fn copy(&self, class: JoinClass, why: Reason, mut a: TcpStream, ap: Bytes, mut b: TcpStream, bp: Bytes) {
        if b.write_all(&ap).await.is_err() || a.write_all(&bp).await.is_err() {
            return;
        }
        drop((ap, bp));
        let _active = self.enter();
        self.choices.count(class, Mechanism::Copied, why);
        match why {
            Reason::Forced => {
                self.copied.fetch_add(1, Ordering::Relaxed);
            }
            Reason::NoPipe => self.fallback("no pipe for splice(2) (descriptor limit?)"),
            Reason::Ipv6 => self.fallback("IPv6 sockets are not spliced"),
            _ => self.fallback("the sockmap program is not loaded (userspace dataplane, or it failed to load)"),
        }
        relay(&mut a, &mut b, None).await;
    }

    /// Joins the pair in the kernel (counted as `class` with `why`), or copies it when
    /// that cannot be done. `active`: the pair was counted as open already.
    #[allow(clippy::too_many_arguments)]
    async fn kernel(
        &self,
        class: JoinClass,
        why: Reason,
        mut a: TcpStream,
        a_pending: Bytes,
        mut b: TcpStream,
        b_pending: Bytes,
        on_path: impl FnOnce(JoinPath),
        active: Option<Active<'_>>,
    ) {
        // Everything queued now is read first, so no segment is left half-read in a
        // socket when it is joined (the kernel would hand it on whole, again).
        // At most DRAIN_CAP each: a side that keeps more coming than that while we read is
        // bulk, and is copied rather than joined (what is left queued is read by the copy).
        let ((a_pending, a_all), (b_pending, b_all)) =
            (drain(&a, a_pending, DRAIN_CAP), drain(&b, b_pending, DRAIN_CAP));
        if b.write_all(&a_pending).await.is_err() || a.write_all(&b_pending).await.is_err() {
            return;
        }
        drop((a_pending, b_pending));
        let busy = !(a_all && b_all);
        let keys = match (
            a.local_addr().ok().zip(a.peer_addr().ok()).and_then(|(l, r)| key_of(l, r)),
            b.local_addr().ok().zip(b.peer_addr().ok()).and_then(|(l, r)| key_of(l, r)),
        ) {
            (Some(ka), Some(kb)) => Some((ka, kb)),
            _ => None,
        };
        let joined = match (&self.splicer, keys) {
            (Some(_), _) if busy => {
                self.choices.count(class, Mechanism::Copied, Reason::Bulk);
                None
            }
            (None, _) => {
                self.choices.count(class, Mechanism::Copied, Reason::NoSockmap);
                self.fallback("the sockmap program is not loaded (userspace dataplane, or it failed to load)");
                None
            }
            (Some(_), None) => {
                self.choices.count(class, Mechanism::Copied, Reason::Ipv6);
                self.fallback("IPv6 sockets are not spliced");
                None
            }
            (Some(s), Some((ka, kb))) => {
                match s.lock().expect("splicer").join((ka, a.as_raw_fd()), (kb, b.as_raw_fd())) {
                    Ok(()) => {
                        self.choices.count(class, Mechanism::JoinedKernel, why);
                        Some((ka, kb))
                    }
                    Err(e) => {
                        self.choices.count(class, Mechanism::Copied, Reason::JoinFailed);
                        self.fallback(&e.to_string());
                        None
                    }
                }
            }
        };
        on_path(if joined.is_some() { JoinPath::Kernel } else { JoinPath::Userspace });
        let _active = active.unwrap_or_else(|| self.enter());
        if joined.is_some() {
            self.kernel_active.fetch_add(1, Ordering::Relaxed);
        }
        // With the sockets joined, data only reaches us if it was queued before the
        // join or had no peer entry; relaying it is the same loop as a plain copy.
        // A close is passed on only once what the kernel moved has reached the socket.
        let kernel = joined.zip(self.splicer.as_ref()).map(|(keys, s)| KernelSide {
            splicer: s,
            keys,
            base: (bytes_taken(a.as_raw_fd()).unwrap_or(0), bytes_taken(b.as_raw_fd()).unwrap_or(0)),
            taken_over: &self.taken_over,
        });
        relay(&mut a, &mut b, kernel.as_ref()).await;
        if let (Some(s), Some((ka, kb))) = (&self.splicer, joined) {
            s.lock().expect("splicer").part(ka, kb);
            self.kernel_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An open pair (see [`Joiner::enter`]).
struct Active<'a>(&'a AtomicU64);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the kernel does for a joined pair: the map entries, and the bytes each socket
/// had taken to send when it was joined.
struct KernelSide<'a> {
    splicer: &'a Mutex<Splicer>,
    keys: (SpliceKey, SpliceKey),
    base: (u64, u64),
    taken_over: &'a AtomicU64,
}

/// What [`drain`] reads from one socket at most before a join (then the pair is copied).
const DRAIN_CAP: usize = 4 << 20;

/// Appends what `s` has queued (without waiting) to `pending`, up to `cap` bytes read;
/// true when the socket had nothing more queued (false: the cap was reached first).
fn drain(s: &TcpStream, pending: Bytes, cap: usize) -> (Bytes, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut read = 0;
    let all = loop {
        if read >= cap {
            break false;
        }
        let want = chunk.len().min(cap - read);
        match s.try_read(&mut chunk[..want]) {
            Ok(n @ 1..) => {
                if buf.is_empty() {
                    buf.extend_from_slice(&pending);
                }
                buf.extend_from_slice(&chunk[..n]);
                read += n;
            }
            _ => break true,
        }
    };
    (if buf.is_empty() { pending } else { Bytes::from(buf) }, all)
}

/// Bytes a TCP socket has taken to send: sent once (retransmissions not counted again)
/// plus queued and not sent yet (`tcp_info`: bytes_sent - bytes_retrans + notsent_bytes).
/// None where the kernel's `tcp_info` lacks these fields (before 4.19).
fn bytes_taken(fd: std::os::fd::RawFd) -> Option<u64> {
    let mut buf = [0u64; 32];
    let mut len = std::mem::size_of_val(&buf) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf` and updates `len`.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 || (len as usize) < 216 {
        return None;
    }
    // offsets in `struct tcp_info` (linux/tcp.h): notsent_bytes 144 (u32),
    // bytes_sent 200, bytes_retrans 208 (u64)
    let word = buf[144 / 8];
    let notsent = if cfg!(target_endian = "little") { word & 0xffff_ffff } else { word >> 32 };
    Some(buf[200 / 8].saturating_sub(buf[208 / 8]) + notsent)
}

/// One direction: copies what reaches user space from `from` to `to`; at the end of
/// `from`, waits until `to` has taken every byte the kernel moved to it, then
/// half-closes `to`. On a joined pair, bytes reach user space only if they were queued
/// before the join or their direction was turned over to the agent; before copying
/// them the direction is taken over for good and the kernel's bytes are let through
/// first, so the two paths never mix their order.
async fn one_way(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    kernel: Option<&Way<'_>>,
) -> std::io::Result<()> {
    // Held only while bytes flow: taken when `from` turns readable, given back once it
    // has nothing more queued, so an idle pair holds no buffer (1,000 idle copied
    // pairs would otherwise keep 128 MiB). Joined in the kernel, most pairs never
    // need one.
    let mut copied = 0u64;
    if from.peek(&mut [0u8; 1]).await? > 0 {
        if let Some(k) = kernel {
            k.take_over();
            let (want, fd) = k.expect(0);
            wait_taken(fd, want).await;
        }
        let mut buf: Vec<u8> = Vec::new();
        loop {
            from.readable().await?;
            if buf.capacity() == 0 {
                buf = Vec::with_capacity(COPY_BUF);
            }
            buf.clear();
            match from.try_read_buf(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    to.write_all(&buf[..n]).await?;
                    copied += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => buf = Vec::new(),
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(k) = kernel {
        let (want, fd) = k.expect(copied);
        wait_taken(fd, want).await;
    }
    to.shutdown().await
}

/// Waits (bounded) until socket `fd` has taken `want` bytes to send: the redirected
/// bytes sit in the peer's psock queue until a kernel worker sends them; a FIN or a
/// copy of ours sent before that would overtake them.
async fn wait_taken(fd: std::os::fd::RawFd, want: u64) {
    let start = std::time::Instant::now();
    while bytes_taken(fd).is_some_and(|got| got < want) && start.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(std::time::Duration::from_micros(500)).await;
    }
}

/// The copy's buffer, per direction while bytes flow.
const COPY_BUF: usize = 64 * 1024;

/// How long a close waits for the kernel to hand over the bytes it redirected.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Copies both ways at once (a direction blocked on a full peer never stops the
/// other: a pod echoing back must be drained while we write to it); a read of 0
/// half-closes the other side, after the kernel's bytes; ends when both directions
/// are closed.
async fn relay(a: &mut TcpStream, b: &mut TcpStream, kernel: Option<&KernelSide<'_>>) {
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    // a -> b: b must have taken its base, what the kernel moved from a, and our copies
    let into_b = kernel.map(|k| Way { k, from: k.keys.0, to_base: k.base.1, to_fd: fb, taken: AtomicBool::new(false) });
    let into_a = kernel.map(|k| Way { k, from: k.keys.1, to_base: k.base.0, to_fd: fa, taken: AtomicBool::new(false) });
    // an error one way (a reset) ends both: the other side would otherwise wait
    // for a peer that is gone (a pod keeps an idle connection for a minute)
    if let Err(e) = tokio::try_join!(one_way(ar, bw, into_b.as_ref()), one_way(br, aw, into_a.as_ref())) {
        tracing::debug!(error = %e, "joined connection ended with an error");
    }
}

/// One direction of a pair joined in the kernel: take it over (its bytes come to the
/// agent from now on), and how many bytes the receiving socket must have taken once it
/// took the kernel's and `copied` of ours.
struct Way<'a> {
    k: &'a KernelSide<'a>,
    from: SpliceKey,
    to_base: u64,
    to_fd: std::os::fd::RawFd,
    taken: AtomicBool,
}

impl Way<'_> {
    fn take_over(&self) {
        if self.taken.swap(true, Ordering::Relaxed) {
            return;
        }
        self.k.taken_over.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.k.splicer.lock().expect("splicer").take_over(self.from) {
            // the program then still redirects: bytes keep their order, only the close waits
            tracing::warn!(error = %e, "taking a joined direction over failed");
        }
    }
    fn expect(&self, copied: u64) -> (u64, std::os::fd::RawFd) {
        let moved = self.k.splicer.lock().expect("splicer").redirected_from(&self.from);
        (self.to_base + moved + copied, self.to_fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_kernel_byte_orders() {
        let k = key_of("10.42.0.1:40000".parse().unwrap(), "10.42.0.50:8080".parse().unwrap()).unwrap();
        assert_eq!(k.local_ip4.to_ne_bytes(), [10, 42, 0, 1]);
        assert_eq!(k.remote_ip4.to_ne_bytes(), [10, 42, 0, 50]);
        assert_eq!(k.local_port, 40000, "host order");
        assert_eq!((k.remote_port as u16).to_ne_bytes(), 8080u16.to_be_bytes(), "network order");
        assert!(key_of("[::1]:1".parse().unwrap(), "[::1]:2".parse().unwrap()).is_none());
    }

    #[tokio::test]
    async fn drain_stops_at_its_cap_and_says_so() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        peer.write_all(&[7u8; 100_000]).await.unwrap();
        // wait (bounded) until all of it is queued at `s`
        for _ in 0..200 {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
            if n as usize >= 100_000 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let (got, all) = drain(&s, Bytes::from_static(b"head"), 40_000);
        assert_eq!((got.len(), all), (4 + 40_000, false), "stops at the cap, pending first");
        assert_eq!(&got[..4], b"head");
        let (got, all) = drain(&s, Bytes::new(), 1 << 20);
        assert_eq!((got.len(), all), (60_000, true), "the rest, then nothing queued");
        let (got, all) = drain(&s, Bytes::from_static(b"p"), 1 << 20);
        assert_eq!((&got[..], all), (&b"p"[..], true), "nothing queued: pending as it was");
    }

    #[tokio::test]
    async fn userspace_relay_copies_and_propagates_half_close() {
        use tokio::io::AsyncReadExt;
        let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(la.local_addr().unwrap()).await.unwrap();
        let mut pod = TcpStream::connect(lb.local_addr().unwrap()).await.unwrap();
        let (a, _) = la.accept().await.unwrap();
        let (b, _) = lb.accept().await.unwrap();
        let j = Arc::new(Joiner::new(None));
        let task = tokio::spawn({
            let j = j.clone();
            async move { j.run(a, Bytes::from_static(b"early"), b, Bytes::new()).await }
        });
        let mut got = [0u8; 5];
        pod.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early", "bytes read before the join are relayed first");
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        pod.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        pod.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(pod.read_to_end(&mut rest).await.unwrap(), 0, "half-close reaches the pod");
        drop(pod);
        tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
        let c = j.counters();
        assert_eq!((c.joined_total, c.joined_active, c.copied_in_userspace, c.available), (1, 0, 1, false));
    }
}
