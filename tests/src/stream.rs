//! A plain TCP server for the L4 tests (the stand-in of a k3d node's API server, or a
//! pod behind an L4 port): each connection gets `<name>\n`, then every byte it sends
//! echoed, and is closed once the client has shut down its side. Counts connections.
//! Runs on its own thread, in the namespace it was started in; stops on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct StreamServer {
    pub addr: SocketAddr,
    pub name: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamServer {
    /// Listens on `addr` (port 0: any) in namespace `ns` (None: this one).
    pub fn start(ns: Option<&str>, addr: &str, name: &str) -> Self {
        let addr: SocketAddr = addr.parse().expect("server address");
        let listener = match ns {
            Some(ns) => crate::netns::in_ns(ns, || TcpListener::bind(addr)),
            None => TcpListener::bind(addr),
        }
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, n) = (connections.clone(), stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || accept_loop(listener, &n, &c, &s));
        Self { addr, name: name.into(), connections, stop, thread: Some(thread) }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, name: &str, connections: &AtomicUsize, stop: &AtomicBool) {
    let mut workers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                connections.fetch_add(1, Ordering::SeqCst);
                let name = name.to_string();
                workers.push(std::thread::spawn(move || {
                    let _ = serve(s, &name);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        workers.retain(|w| !w.is_finished());
    }
    for w in workers {
        let _ = w.join();
    }
}

fn serve(mut s: TcpStream, name: &str) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    // bounded: a client that stops sending is dropped after this long
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(format!("{name}\n").as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}
