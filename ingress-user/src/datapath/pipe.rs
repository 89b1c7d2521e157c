//! `splice(2)` through a pipe: one direction of a joined pair moved socket -> pipe ->
//! socket, so the agent hands page references on instead of copying bytes through a
//! buffer (bulk: the kernel join is slow for it on this kernel, see
//! [`super::join_choice`]). Each read is reported to a [`Watch`], which may ask the
//! direction to stop (with its pipe empty) so the pair can be joined in the kernel.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::join_choice::{ChoiceTally, Chooser, Dir, JoinClass, Mechanism, Reason, Verdict};

/// What a pipe is asked to hold (the kernel may give less; default 64 KiB).
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// A non-blocking pipe, both ends.
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both were just created and are owned by nothing else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // best effort: a larger pipe moves more per call
        // SAFETY: fcntl on a descriptor we own.
        let set = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // SAFETY: as above.
        let cap = if set > 0 { set } else { unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) } };
        Ok(Pipe { r, w, cap: if cap > 0 { cap as usize } else { 64 * 1024 } })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors, no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WayEnd {
    /// The sender half-closed; the receiver was half-closed after every byte.
    Eof,
    /// The watch chose the kernel join or the copy; nothing is left in the pipe.
    Stopped,
}

/// The watch over a pair's first exchanges (auto): the [`Chooser`], the signal that
/// stops both directions for the kernel join, and the pair's count in the tally
/// (once: on the pipe when the watch settles there, the kernel join counts its own).
pub struct Watch<'a> {
    chooser: Mutex<Chooser>,
    stop: watch::Sender<bool>,
    /// Settled on the pipe: the directions stop watching.
    on_pipe: AtomicBool,
    counted: AtomicBool,
    class: JoinClass,
    tally: &'a ChoiceTally,
}

impl<'a> Watch<'a> {
    pub fn new(class: JoinClass, tally: &'a ChoiceTally) -> Self {
        Self {
            chooser: Mutex::new(Chooser::new(class)),
            stop: watch::channel(false).0,
            on_pipe: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            class,
            tally,
        }
    }

    /// Records a read; true when the pair is to leave the pipe now (for the kernel
    /// join or the plain copy: [`Watch::settled`] says which).
    pub fn saw(&self, dir: Dir, n: usize) -> bool {
        if !self.watching() {
            return false;
        }
        let v = self.chooser.lock().expect("chooser").saw(dir, n as u64);
        self.apply(v)
    }

    /// A direction ended before the choice (or after: the choice stands).
    pub fn ended(&self) {
        let v = self.chooser.lock().expect("chooser").ended();
        self.apply(v);
    }

    fn apply(&self, v: Verdict) -> bool {
        match v {
            Verdict::Undecided => false,
            Verdict::Pipe(r) => {
                self.count_pipe(r);
                false
            }
            Verdict::Kernel(_) | Verdict::Copy(_) => {
                self.stop.send_replace(true);
                true
            }
        }
    }

    /// What the watch settled on, if it has.
    pub fn settled(&self) -> Option<Verdict> {
        self.chooser.lock().expect("chooser").settled()
    }

    /// Settles the pair on the pipe (the directions stop watching) and counts it with
    /// `r`, unless it was counted already.
    pub fn count_pipe(&self, r: Reason) {
        self.on_pipe.store(true, Ordering::Relaxed);
        if !self.counted.swap(true, Ordering::Relaxed) {
            self.tally.count(self.class, Mechanism::SplicedPipe, r);
        }
    }

    /// Marks the pair as counted elsewhere (the kernel join counts its outcome).
    pub fn counted_elsewhere(&self) {
        self.counted.store(true, Ordering::Relaxed);
    }

    fn watching(&self) -> bool {
        !self.on_pipe.load(Ordering::Relaxed)
    }
}

/// Moves `from`'s bytes to `to` through `pipe` until `from` ends (then half-closes
/// `to`) or, with a `watch`, until it asks to leave the pipe (then returns with the
/// pipe empty).
pub async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    dir: Dir,
    watch: Option<&Watch<'_>>,
) -> io::Result<WayEnd> {
    let (src, dst) = (from.as_raw_fd(), to.as_raw_fd());
    let mut stop = watch.map(|w| w.stop.subscribe());
    loop {
        match (&mut stop, watch) {
            (Some(rx), Some(w)) if w.watching() => {
                if *rx.borrow() {
                    return Ok(WayEnd::Stopped);
                }
                tokio::select! {
                    _ = rx.wait_for(|s| *s) => return Ok(WayEnd::Stopped),
                    r = from.readable() => r?,
                }
            }
            _ => from.readable().await?,
        }
        let n = match from.try_io(Interest::READABLE, || splice(src, pipe.w.as_raw_fd(), pipe.cap)) {
            Ok(0) => {
                if let Some(w) = watch {
                    w.ended();
                }
                // SAFETY: shutdown on a socket we hold.
                if unsafe { libc::shutdown(dst, libc::SHUT_WR) } != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ENOTCONN) {
                        return Err(e);
                    }
                }
                return Ok(WayEnd::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let join_now = watch.is_some_and(|w| w.saw(dir, n));
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(pipe.r.as_raw_fd(), dst, left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if join_now {
            return Ok(WayEnd::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn a_pipe_moves_every_byte_in_order_and_passes_the_half_close() {
        let (mut client, a) = pair().await;
        let (b, mut pod) = pair().await;
        let pipe = Pipe::new().unwrap();
        assert!(pipe.cap >= 64 * 1024, "{}", pipe.cap);
        let task = tokio::spawn(async move {
            let end = one_way(&a, &b, &pipe, Dir::Forward, None).await;
            (end, a, b)
        });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                client.write_all(&data).await.unwrap();
                client.shutdown().await.unwrap();
                client
            })
        };
        let mut got = Vec::new();
        pod.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "{} of {} bytes, equal: {}", got.len(), data.len(), got == data);
        let (end, _a, _b) = task.await.unwrap();
        assert_eq!(end.unwrap(), WayEnd::Eof);
        drop(writer.await.unwrap());
    }

    /// Two small request/answer exchanges through a watch of `class` over two pipes,
    /// which must stop both directions; gives back what the watch settled on and the
    /// pipes.
    async fn small_exchanges_stop(class: JoinClass, tally: &ChoiceTally) -> (Option<Verdict>, Pipe, Pipe) {
        let (mut client, a) = pair().await;
        let (b, mut pod) = pair().await;
        let watch = Watch::new(class, tally);
        let (pa, pb) = (Pipe::new().unwrap(), Pipe::new().unwrap());
        let talk = async {
            let mut buf = [0u8; 5];
            for _ in 0..2 {
                client.write_all(b"ping!").await.unwrap();
                pod.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"ping!");
                pod.write_all(b"pong!").await.unwrap();
                client.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"pong!");
            }
        };
        let ways = async {
            tokio::try_join!(
                one_way(&a, &b, &pa, Dir::Forward, Some(&watch)),
                one_way(&b, &a, &pb, Dir::Back, Some(&watch))
            )
        };
        let (ends, ()) = tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(ways, talk) })
            .await
            .expect("both directions stop");
        assert_eq!(ends.unwrap(), (WayEnd::Stopped, WayEnd::Stopped));
        (watch.settled(), pa, pb)
    }

    #[tokio::test]
    async fn a_watch_stops_both_ways_once_small_messages_show() {
        let tally = ChoiceTally::default();
        let (settled, _, _) = small_exchanges_stop(JoinClass::Upgraded, &tally).await;
        // the pipe side counts nothing: the kernel join counts its own outcome
        assert_eq!(tally.view().upgraded.spliced_pipe, 0);
        assert_eq!(settled, Some(Verdict::Kernel(Reason::SmallMessages)));
    }

    #[tokio::test]
    async fn a_splice_safe_watch_stops_both_ways_for_the_copy_with_nothing_left_behind() {
        let tally = ChoiceTally::default();
        let (settled, pa, pb) = small_exchanges_stop(JoinClass::SpliceSafe, &tally).await;
        assert_eq!(settled, Some(Verdict::Copy(Reason::SmallMessages)));
        // nothing counted on the pipe; every byte already went on (both pipes are empty)
        assert_eq!(tally.view().splice_safe.spliced_pipe, 0);
        let mut probe = [0u8; 1];
        for p in [&pa, &pb] {
            // SAFETY: a read of at most 1 byte into a local buffer, non-blocking pipe.
            let n = unsafe { libc::read(p.r.as_raw_fd(), probe.as_mut_ptr().cast(), 1) };
            assert_eq!(n, -1, "the pipe is empty (EAGAIN)");
        }
    }

    #[tokio::test]
    async fn a_pair_settled_on_the_pipe_never_stops_for_the_kernel() {
        let (mut client, a) = pair().await;
        let (b, mut pod) = pair().await;
        let tally = ChoiceTally::default();
        let watch = Watch::new(JoinClass::Upgraded, &tally);
        watch.count_pipe(Reason::Forced);
        let (pa, pb) = (Pipe::new().unwrap(), Pipe::new().unwrap());
        let talk = async {
            let mut buf = [0u8; 5];
            for _ in 0..4 {
                client.write_all(b"ping!").await.unwrap();
                pod.read_exact(&mut buf).await.unwrap();
                pod.write_all(b"pong!").await.unwrap();
                client.read_exact(&mut buf).await.unwrap();
            }
            client.shutdown().await.unwrap();
            pod.shutdown().await.unwrap();
        };
        let ways = async {
            tokio::try_join!(
                one_way(&a, &b, &pa, Dir::Forward, Some(&watch)),
                one_way(&b, &a, &pb, Dir::Back, Some(&watch))
            )
        };
        let (ends, ()) = tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(ways, talk) })
            .await
            .expect("both directions end");
        assert_eq!(ends.unwrap(), (WayEnd::Eof, WayEnd::Eof), "small messages, but forced onto the pipe");
        let v = tally.view().upgraded;
        assert_eq!((v.spliced_pipe, v.reasons.get("spliced_pipe:forced")), (1, Some(&1)), "{v:?}");
    }

    #[tokio::test]
    async fn a_watch_that_sees_bulk_keeps_the_pipe_and_counts_it() {
        let (mut client, a) = pair().await;
        let (b, mut pod) = pair().await;
        let tally = ChoiceTally::default();
        let watch = Watch::new(JoinClass::SpliceSafe, &tally);
        let pa = Pipe::new().unwrap();
        let data = vec![7u8; 1 << 20];
        let w = {
            let data = data.clone();
            tokio::spawn(async move {
                client.write_all(&data).await.unwrap();
                client.shutdown().await.unwrap();
                client
            })
        };
        let read = async {
            let mut got = Vec::new();
            pod.read_to_end(&mut got).await.unwrap();
            got
        };
        let (end, got) = tokio::join!(one_way(&a, &b, &pa, Dir::Forward, Some(&watch)), read);
        assert_eq!(end.unwrap(), WayEnd::Eof);
        assert_eq!(got.len(), data.len());
        let v = tally.view().splice_safe;
        assert_eq!((v.spliced_pipe, v.reasons.get("spliced_pipe:bulk")), (1, Some(&1)), "{v:?}");
        drop(w.await.unwrap());
    }
}
