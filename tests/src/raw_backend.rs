//! A "bad pod" for the framing tests: a backend on 127.0.0.1 that reads each request
//! head and hands it, with the connection, to a handler that writes exact bytes (a
//! malformed or ambiguous answer, a stall, a close). One thread per connection, read
//! timeouts on every socket; stopped and joined on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request head as the pod read it.
#[derive(Clone, Debug)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Lowercase names; repeated ones joined with ", ".
    pub headers: BTreeMap<String, String>,
}

/// The connection a handler answers on: `r` reads what follows the head (a body),
/// `w` writes the answer.
pub struct Conn<'a> {
    pub r: &'a mut BufReader<TcpStream>,
    pub w: &'a mut TcpStream,
}

/// What the connection does after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Read the next request head.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// The connections being served: a handle to shut each down, and its thread.
type Open = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

type Handler = dyn Fn(&Head, &mut Conn<'_>) -> std::io::Result<Then> + Send + Sync;

pub struct RawBackend {
    pub port: u16,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    /// Request heads read, in order (all connections).
    seen: Arc<Mutex<Vec<Head>>>,
    connections: Arc<AtomicUsize>,
    open: Open,
    accepting: Option<JoinHandle<()>>,
}

impl RawBackend {
    /// Listens on an ephemeral 127.0.0.1 port; `handler` answers every request.
    pub fn start(handler: impl Fn(&Head, &mut Conn<'_>) -> std::io::Result<Then> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Open::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let accepting = {
            let l = listener.try_clone().expect("clone listener");
            let (stop, seen, connections, open) = (stop.clone(), seen.clone(), connections.clone(), open.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((s, _)) = l.accept() else { return };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let Ok(handle) = s.try_clone() else { continue };
                    let (handler, seen) = (handler.clone(), seen.clone());
                    let Ok(mine) = s.try_clone() else { continue };
                    let t = std::thread::spawn(move || {
                        let _ = serve(s, &*handler, &seen);
                        // the registry keeps a handle to the socket: closing ours is not a close
                        let _ = mine.shutdown(std::net::Shutdown::Both);
                    });
                    let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
                    open.retain(|(_, t): &(TcpStream, JoinHandle<()>)| !t.is_finished());
                    open.push((handle, t));
                }
            })
        };
        Self { port, listener, stop, seen, connections, open, accepting: Some(accepting) }
    }

    /// The request heads read so far.
    pub fn seen(&self) -> Vec<Head> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(s: TcpStream, handler: &Handler, seen: &Mutex<Vec<Head>>) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut raw = Vec::new();
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            raw.extend_from_slice(&line);
            if line == b"\r\n" || raw.len() > 64 * 1024 {
                break;
            }
        }
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        if !matches!(req.parse(&raw), Ok(httparse::Status::Complete(_))) {
            return Ok(());
        }
        let head = Head {
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
            headers: crate::client::header_map(req.headers),
        };
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(head.clone());
        if handler(&head, &mut Conn { r: &mut r, w: &mut w })? == Then::Close {
            return Ok(());
        }
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutting down a listening socket we own wakes the blocked accept().
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
        for (s, _) in &open {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for (_, t) in open {
            let _ = t.join();
        }
    }
}
