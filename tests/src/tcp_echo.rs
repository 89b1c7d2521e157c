//! A plain TCP server for the L4 tests and the demo: each connection gets the server's
//! name as a first line, then every byte echoed back; and the client side, which
//! checks that every byte came back in order (hashed) and says who served it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::netns::in_ns;
use crate::topology::VM_IP;

/// A TCP server in a namespace: name line, then echo, for every connection; stops on drop.
pub struct Server {
    /// Where it listens (the port chosen when `addr` asked for port 0).
    pub addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &str, addr: &str, name: &str) -> Self {
        let l: TcpListener =
            in_ns(ns, || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}"));
        Self::serve(l, name)
    }

    /// In this process's namespace (loopback tests).
    pub fn start_here(addr: &str, name: &str) -> Self {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Self::serve(l, name)
    }

    fn serve(l: TcpListener, name: &str) -> Self {
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, n, name) = (stop.clone(), connections.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        n.fetch_add(1, Ordering::SeqCst);
                        let name = name.clone();
                        std::thread::spawn(move || serve_one(c, &name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { addr, connections, stop, thread: Some(thread) }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve_one(mut c: TcpStream, name: &str) {
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if c.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 16384];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = c.shutdown(Shutdown::Write);
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// FNV-1a of `data` ([`crate::pattern::Fnv`]).
pub fn fnv(data: &[u8]) -> u64 {
    crate::pattern::Fnv::of(data)
}

/// One connection from the client namespace to the VM's `port`: sends `n` bytes (in
/// pieces, `pause` apart), reads them back; returns the server's name. Panics unless
/// every byte came back in order (hash and length compared).
pub fn exchange(client_ns: &str, port: u16, n: usize, seed: u64, pause: Duration) -> String {
    in_ns(client_ns, || {
        let c = TcpStream::connect_timeout(&format!("{VM_IP}:{port}").parse().unwrap(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {VM_IP}:{port}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rng = fastrand::Rng::with_seed(seed);
        let data: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut name = String::new();
        r.read_line(&mut name).expect("server name line");
        let to_send = data.clone();
        let mut w = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            for chunk in to_send.chunks(8192) {
                w.write_all(chunk).expect("send");
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::with_capacity(n);
        r.read_to_end(&mut back).expect("read the echo");
        writer.join().unwrap();
        assert_eq!((back.len(), fnv(&back)), (n, fnv(&data)), "bytes came back intact via {}", name.trim());
        name.trim().to_string()
    })
}
