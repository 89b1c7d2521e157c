//! Socket reads that remember a drained socket (issue 11, syscalls per request).
//!
//! tokio clears a socket's read readiness only when a read returns `EAGAIN`, so after
//! each request both legs of the proxy asked the kernel once more and got nothing: a
//! keep-alive request cost two `recv` calls returning `EAGAIN` (one on the client
//! socket, one on the pod's). A TCP read that returns less than it asked for has
//! emptied the receive queue at that moment, so its readiness can be cleared then,
//! as nginx does with `EPOLLRDHUP`: the next poll waits for epoll instead of asking.
//! Bytes or a FIN that arrive after the read raise a new edge-triggered event, and
//! tokio's readiness tick keeps a readiness set by an event that raced the read (it
//! clears only the readiness it saw before the read), so nothing is missed.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll, ready};

use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;

/// Reads into `spare` once the socket is readable. Returns the bytes read (0: end of
/// stream); the first `n` bytes of `spare` are initialized then.
pub fn poll_read_uninit(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    spare: &mut [MaybeUninit<u8>],
) -> Poll<io::Result<usize>> {
    if spare.is_empty() {
        return Poll::Ready(Ok(0));
    }
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let mut short = None;
        let fd = stream.as_raw_fd();
        let r = stream.try_io(Interest::READABLE, || {
            // SAFETY: `spare` is valid for writes of its length; recv writes at most that.
            let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n > 0 && n < spare.len() {
                // drained: report "would block" so tokio clears the readiness it saw
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match r {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(n) = short {
                    return Poll::Ready(Ok(n));
                }
                // really nothing there: readiness cleared, poll again (registers the waker)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// [`poll_read_uninit`] into a `ReadBuf`, as `AsyncRead::poll_read`.
pub fn poll_read(stream: &TcpStream, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    // SAFETY: only initialized bytes are reported to `buf` (assume_init of what recv wrote).
    let spare = unsafe { buf.unfilled_mut() };
    let n = ready!(poll_read_uninit(stream, cx, spare))?;
    // SAFETY: recv initialized the first n bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(()))
}

/// [`poll_read_uninit`] into the spare capacity of `buf` (at least `reserve` bytes of it).
pub fn poll_read_bytes(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut bytes::BytesMut,
    reserve: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < reserve {
        buf.reserve(reserve);
    }
    let n = ready!(poll_read_uninit(stream, cx, buf.spare_capacity_mut()))?;
    // SAFETY: recv initialized the first n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_short_read_clears_readiness_and_later_bytes_still_wake() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut buf = bytes::BytesMut::new();
        let n = poll_fn(|cx| poll_read_bytes(&server, cx, &mut buf, 4096)).await.unwrap();
        assert_eq!((&buf[..], n), (&b"hello"[..], 5));
        // drained: the next poll is pending without asking the kernel (no readiness left)
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(server.poll_read_ready(&mut cx).is_pending(), "readiness cleared after a short read");
        // bytes sent later are read, and the end of stream too
        client.write_all(b" world").await.unwrap();
        client.shutdown().await.unwrap();
        let n = poll_fn(|cx| poll_read_bytes(&server, cx, &mut buf, 4096)).await.unwrap();
        assert_eq!((&buf[..], n), (&b"hello world"[..], 6));
        let n = poll_fn(|cx| poll_read_bytes(&server, cx, &mut buf, 4096)).await.unwrap();
        assert_eq!(n, 0, "end of stream");
    }

    #[tokio::test]
    async fn a_full_read_keeps_readiness_for_the_rest() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        client.write_all(&[7u8; 100]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut small = [MaybeUninit::<u8>::uninit(); 60];
        let n = poll_fn(|cx| poll_read_uninit(&server, cx, &mut small)).await.unwrap();
        assert_eq!(n, 60);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(server.poll_read_ready(&mut cx).is_ready(), "a full read may have left bytes: still ready");
        let n = poll_fn(|cx| poll_read_uninit(&server, cx, &mut small)).await.unwrap();
        assert_eq!(n, 40);
    }
}
