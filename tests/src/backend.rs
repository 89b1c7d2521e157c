//! The pods' HTTP backend: answers every request with JSON saying which pod it is
//! and what it received (method, path, Host, headers, body length). HTTP/1.1 with
//! keep-alive; Content-Length and chunked request bodies. Runs on threads whose
//! listening sockets live in the pod's namespace; stopped and joined on drop.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::netns::in_ns;

/// What the backend answers (the body of every response).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Echo {
    pub pod: String,
    pub port: u16,
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: BTreeMap<String, String>,
    pub body_len: usize,
    /// FNV-1a of the request body as it arrived (`crate::pattern::Fnv`).
    #[serde(default)]
    pub body_hash: u64,
    /// Trailer fields of a chunked request body.
    #[serde(default)]
    pub trailers: BTreeMap<String, String>,
}

pub struct Backend {
    listeners: Vec<TcpListener>,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    accepting: Vec<JoinHandle<()>>,
    connections: Connections,
}

/// The connections being served: a handle to shut each open one down (removed, so
/// closing the socket, when its thread is done with it), and the threads.
#[derive(Default)]
struct Open {
    next: u64,
    sockets: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

type Connections = Arc<Mutex<Open>>;

impl Backend {
    /// Binds `0.0.0.0:port` for each port inside namespace `ns` and serves.
    pub fn start(ns: &str, pod: &str, ports: &[u16]) -> Self {
        let ports = ports.to_vec();
        let listeners: Vec<TcpListener> = in_ns(ns, move || {
            ports
                .iter()
                .map(|p| TcpListener::bind(("0.0.0.0", *p)).unwrap_or_else(|e| panic!("bind :{p}: {e}")))
                .collect()
        });
        Self::serve(listeners, pod)
    }

    /// Binds 127.0.0.1 on an ephemeral port in this namespace; returns the port too.
    pub fn start_local(pod: &str) -> (Self, u16) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        (Self::serve(vec![l], pod), port)
    }

    fn serve(listeners: Vec<TcpListener>, pod: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Connections::default();
        let accepting = listeners
            .iter()
            .map(|l| {
                let l = l.try_clone().expect("clone listener");
                let pod = pod.to_string();
                let (stop, requests, connections) = (stop.clone(), requests.clone(), connections.clone());
                std::thread::spawn(move || accept_loop(l, pod, stop, requests, connections))
            })
            .collect();
        Self { listeners, stop, requests, accepting, connections }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops the backend and joins its threads (what dropping it does).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Backend {
    /// Stops accepting (shutdown() wakes the blocked accept() on Linux), shuts every
    /// open connection down, and joins the threads. A thread inside an
    /// `x-echo-sleep-ms` delay finishes it first (at most 10 s).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for l in &self.listeners {
            // SAFETY: shutting down a listening socket we own.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for t in self.accepting.drain(..) {
            let _ = t.join();
        }
        // the accept loops have ended: no connection is added after this
        let threads = {
            let mut open = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            for s in open.sockets.values() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            std::mem::take(&mut open.threads)
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    l: TcpListener,
    pod: String,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    connections: Connections,
) {
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let Ok(handle) = s.try_clone() else { continue };
                let mut open = connections.lock().unwrap_or_else(|e| e.into_inner());
                let id = open.next;
                open.next += 1;
                open.sockets.insert(id, handle);
                let (pod, requests, connections) = (pod.clone(), requests.clone(), connections.clone());
                let thread = std::thread::spawn(move || {
                    let _ = serve_connection(s, &pod, port, &requests);
                    // the last handle: the socket closes here (a pod "dying" is this close)
                    connections.lock().unwrap_or_else(|e| e.into_inner()).sockets.remove(&id);
                });
                open.threads.retain(|t| !t.is_finished());
                open.threads.push(thread);
            }
            Err(_) => return,
        }
    }
}

fn serve_connection(s: TcpStream, pod: &str, port: u16, requests: &AtomicUsize) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    // Idle keep-alive connections end by themselves.
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            if head.len() > 64 * 1024 {
                return Ok(());
            }
        }
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            w.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
            return Ok(());
        }
        let headers = crate::client::header_map(req.headers);
        // `x-echo-then-close`: the pod closes after answering, unasked
        let close = headers.get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || req.version == Some(0)
            || headers.contains_key("x-echo-then-close");
        if headers.get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut trailers = BTreeMap::new();
        let mut hash = crate::pattern::Fnv::default();
        let body_len = if headers.get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            read_chunked(&mut r, &mut trailers, &mut hash)?
        } else {
            let n: usize = headers.get("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            std::io::copy(&mut (&mut r).take(n as u64), &mut hash)? as usize
        };
        // `x-echo-sleep-ms: N` delays the answer (timeout tests), bounded to 10 s.
        if let Some(ms) = headers.get("x-echo-sleep-ms").and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(Duration::from_millis(ms.min(10_000)));
        }
        requests.fetch_add(1, Ordering::SeqCst);
        // `x-echo-close: 1`: drop the connection without an answer (a pod reset).
        if headers.contains_key("x-echo-close") {
            return Ok(());
        }
        // `Upgrade: X`: switch protocols, then echo every byte back until the peer closes.
        if let Some(proto) = headers.get("upgrade").cloned() {
            write!(
                w,
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: {proto}\r\nconnection: Upgrade\r\nx-pod: {pod}\r\n\r\n"
            )?;
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                w.write_all(&buf[..n])?;
            }
        }
        // `x-echo-bytes: N` answers with N bytes (chunked with `x-echo-chunked`), streamed;
        // `x-echo-pattern: SEED` makes them the stream of `crate::pattern` (else 'x').
        if let Some(n) = headers.get("x-echo-bytes").and_then(|v| v.parse::<u64>().ok()) {
            let chunked = headers.contains_key("x-echo-chunked");
            if chunked {
                write!(w, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-pod: {pod}\r\n\r\n")?;
            } else {
                write!(w, "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nx-pod: {pod}\r\n\r\n")?;
            }
            let pattern = headers.get("x-echo-pattern").and_then(|v| v.parse::<u64>().ok());
            let mut block = vec![b'x'; 256 * 1024];
            let mut left = n;
            // `x-echo-die-after: K`: the pod dies after exactly K body bytes (connection dropped).
            let die_after = headers.get("x-echo-die-after").and_then(|v| v.parse::<u64>().ok());
            while left > 0 {
                let sent = n - left;
                if die_after.is_some_and(|d| sent >= d) {
                    return Ok(());
                }
                let k = left.min(block.len() as u64).min(die_after.map_or(u64::MAX, |d| d - sent)) as usize;
                if let Some(seed) = pattern {
                    crate::pattern::fill(seed, n - left, &mut block[..k]);
                }
                if chunked {
                    write!(w, "{k:x}\r\n")?;
                }
                w.write_all(&block[..k])?;
                if chunked {
                    w.write_all(b"\r\n")?;
                }
                left -= k as u64;
            }
            if chunked {
                w.write_all(b"0\r\n\r\n")?;
            }
            if close {
                return Ok(());
            }
            continue;
        }
        // `x-echo-malformed: 1`: an answer that is not HTTP.
        if headers.contains_key("x-echo-malformed") {
            w.write_all(b"HTTP/1.1 2x0 Fine\r\nno colon here\r\n\r\n")?;
            return Ok(());
        }
        // `x-echo-status: N` answers with that status code.
        let status: u16 = headers.get("x-echo-status").and_then(|v| v.parse().ok()).unwrap_or(200);
        let echo = Echo {
            pod: pod.to_string(),
            port,
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
            host: headers.get("host").cloned().unwrap_or_default(),
            headers,
            body_len,
            body_hash: hash.0,
            trailers,
        };
        let body = serde_json::to_vec(&echo).expect("echo json");
        // `x-echo-trailer: name=value`: a chunked answer with that trailer field.
        if let Some((name, value)) = echo.headers.get("x-echo-trailer").and_then(|t| t.split_once('=')) {
            write!(
                w,
                "HTTP/1.1 {status} Echo\r\ncontent-type: application/json\r\nx-pod: {pod}\r\ntransfer-encoding: chunked\r\ntrailer: {name}\r\n\r\n{:x}\r\n",
                body.len()
            )?;
            w.write_all(&body)?;
            write!(w, "\r\n0\r\n{name}: {value}\r\n\r\n")?;
            continue;
        }
        write!(
            w,
            "HTTP/1.1 {status} Echo\r\ncontent-type: application/json\r\nx-pod: {pod}\r\ncontent-length: {}\r\n{}\r\n",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        )?;
        if echo.method != "HEAD" {
            w.write_all(&body)?;
        }
        if close {
            return Ok(());
        }
    }
}

fn read_chunked(
    r: &mut impl BufRead,
    trailers: &mut BTreeMap<String, String>,
    hash: &mut crate::pattern::Fnv,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        // an unparsable size (or the client gone) fails the request, not ends its body
        let size = crate::client::chunk_size(&line)?;
        if size == 0 {
            // trailers until an empty line
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t == "\r\n" || t == "\n" {
                    return Ok(total);
                }
                if let Some((n, v)) = t.split_once(':') {
                    trailers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
        }
        std::io::copy(&mut r.take(size as u64), hash)?;
        total += size;
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparsable_chunk_size_fails_the_request_body() {
        let (mut trailers, mut hash) = (BTreeMap::new(), crate::pattern::Fnv::default());
        let e = read_chunked(&mut &b"zz\r\nabc\r\n0\r\n\r\n"[..], &mut trailers, &mut hash).expect_err("bad size");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let cut = read_chunked(&mut &b"3\r\nabc\r\n"[..], &mut trailers, &mut hash).expect_err("cut short");
        assert_eq!(cut.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(read_chunked(&mut &b"3\r\nabc\r\n0\r\n\r\n"[..], &mut trailers, &mut hash).unwrap(), 3);
    }

    #[test]
    fn stopping_joins_the_threads_and_closes_open_connections() {
        let (b, port) = Backend::start_local("pod-t");
        let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // one request answered, so the connection thread is running
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = crate::client::read_response(&mut BufReader::new(idle.try_clone().unwrap()), false).unwrap();
        assert_eq!(r.status, 200);
        let start = std::time::Instant::now();
        drop(b);
        assert!(start.elapsed() < Duration::from_secs(5), "stopped in {:?}", start.elapsed());
        let mut rest = Vec::new();
        assert!(idle.read_to_end(&mut rest).is_ok_and(|n| n == 0), "the open connection was closed: {rest:?}");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "no longer accepting");
    }
}
