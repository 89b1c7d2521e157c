//! The L7 data path's runtime (issue 11): thread per core, as nginx and pingora run.
//!
//! [`Workers`] is `--workers N` threads (default: the CPUs this process may use), each
//! running a `current_thread` tokio runtime with
//! - its own listening socket per listen address: the sockets of one address form a
//!   SO_REUSEPORT group, and the kernel spreads new connections over the workers by
//!   their 4-tuple hash; a connection stays on the worker that accepted it;
//! - its own idle pod connections (the HTTP/1.1 and h2c pools, thread-local: a checkout
//!   never meets another thread's lock, and a pod connection is driven by the worker
//!   whose requests use it), its own timers and I/O driver.
//!
//! Shared, read-mostly: the routing table (ArcSwap), the config, the metrics, the
//! per-source connection registry (`sources.rs`: `--max-connections-per-source` counts
//! a source's connections over every worker). Route sources, the admin server, reloads
//! and signals stay on the control runtime (`app.rs`).
//!
//! Binding: an address is first bound once without SO_REUSEPORT (so a port another
//! process holds, even with SO_REUSEPORT of its own, fails the start as before and no
//! other agent can share it unnoticed), and port 0 is resolved; then the group is bound.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::Proxy;
use super::h1_client::H1Pool;
use super::h2_client::H2Pool;

/// Backlog of each worker's listening socket (tokio's `TcpListener::bind` uses 1024).
const BACKLOG: u32 = 1024;

/// The most workers `--workers` accepts.
pub const MAX_WORKERS: usize = 256;

/// The default of `--workers`: the CPUs this process may run on (1 if unknown).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS)
}

/// Why a `--workers` value is refused (pure; None: valid).
pub fn check_count(n: usize) -> Option<String> {
    match n {
        0 => Some(format!(
            "--workers 0 would leave nobody to accept connections: give at least 1 (default: the CPUs available, {} here)",
            default_count()
        )),
        n if n > MAX_WORKERS => Some(format!("--workers {n}: at most {MAX_WORKERS}")),
        _ => None,
    }
}

/// What a worker thread keeps for the proxy it serves.
struct Local {
    /// [`Proxy`]'s address: a thread serves one proxy, checked on every use.
    proxy: usize,
    index: usize,
    h1: Arc<H1Pool>,
    h2c: Arc<H2Pool>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

fn id(proxy: &Proxy) -> usize {
    proxy as *const Proxy as usize
}

/// This worker thread's HTTP/1.1 pool for `proxy` (None off the worker threads).
pub fn local_h1(proxy: &Proxy) -> Option<Arc<H1Pool>> {
    LOCAL.with_borrow(|l| l.as_ref().filter(|l| l.proxy == id(proxy)).map(|l| l.h1.clone()))
}

/// This worker thread's h2c pool for `proxy` (None off the worker threads).
pub fn local_h2c(proxy: &Proxy) -> Option<Arc<H2Pool>> {
    LOCAL.with_borrow(|l| l.as_ref().filter(|l| l.proxy == id(proxy)).map(|l| l.h2c.clone()))
}

/// The number of the worker running this thread for `proxy`.
pub fn current(proxy: &Proxy) -> Option<usize> {
    LOCAL.with_borrow(|l| l.as_ref().filter(|l| l.proxy == id(proxy)).map(|l| l.index))
}

/// Connections accepted per worker (`/stats` `proxy.workers`).
#[derive(Default)]
pub struct WorkerStats {
    accepted: OnceLock<Box<[Padded]>>,
}

/// One counter per cache line: workers never write the same line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

impl WorkerStats {
    fn init(&self, n: usize) {
        let _ = self.accepted.set((0..n).map(|_| Padded::default()).collect());
    }

    /// A connection accepted by worker `worker` (ignored outside the worker set).
    pub fn accepted(&self, worker: Option<usize>) {
        if let (Some(w), Some(all)) = (worker, self.accepted.get()) {
            if let Some(c) = all.get(w) {
                c.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Accepted connections, by worker (empty when the proxy runs without a worker set).
    pub fn snapshot(&self) -> Vec<u64> {
        self.accepted.get().map_or_else(Vec::new, |a| a.iter().map(|c| c.0.load(Ordering::Relaxed)).collect())
    }
}

struct Thread {
    stop: tokio::sync::oneshot::Sender<()>,
    join: std::thread::JoinHandle<()>,
}

/// The worker threads; [`Workers::stop`] ends them.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Mutex<Vec<Thread>>,
}

/// One listen address served by every worker: the accept task and a duplicate of the
/// socket of each (kept to hand the same sockets to a new mapping on the address).
pub struct Serving {
    tasks: Vec<JoinHandle<()>>,
    sockets: Vec<std::net::TcpListener>,
}

impl Serving {
    /// Duplicates of the group's sockets (a new mapping on the same address).
    pub fn sockets(&self) -> std::io::Result<Vec<std::net::TcpListener>> {
        self.sockets.iter().map(std::net::TcpListener::try_clone).collect()
    }

    /// Stops every worker's accept task; open connections go on.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl Workers {
    /// Starts `n` worker threads serving `proxy`.
    pub fn start(proxy: &Arc<Proxy>, n: usize) -> std::io::Result<Self> {
        proxy.worker_stats.init(n);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for index in 0..n {
            let (up_tx, up_rx) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let proxy_id = id(proxy);
            let join = std::thread::Builder::new().name(format!("ingress-w{index}")).spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = up_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    // inside the runtime: the pool's idle sweeper runs on this worker
                    let local = Local {
                        proxy: proxy_id,
                        index,
                        h1: H1Pool::new(super::POOL_MAX_IDLE),
                        h2c: Arc::new(H2Pool::default()),
                    };
                    LOCAL.set(Some(local));
                    let _ = up_tx.send(Ok(Handle::current()));
                    let _ = stopped.await;
                });
                // the pools' connections first, then every task left on this worker
                LOCAL.take();
                drop(rt);
            })?;
            let handle = up_rx
                .recv()
                .map_err(|_| std::io::Error::other(format!("worker {index} ended before it started")))??;
            handles.push(handle);
            threads.push(Thread { stop, join });
        }
        tracing::info!(
            workers = n,
            "L7 workers started (one current-thread runtime per worker, SO_REUSEPORT listeners)"
        );
        Ok(Self { handles, threads: Mutex::new(threads) })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Binds `addr` once per worker (see the module text).
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<Vec<std::net::TcpListener>> {
        bind_group(addr, self.len())
    }

    /// Serves listen mapping `index` on `sockets` (one per worker, from [`Workers::bind`]).
    pub fn serve(
        &self,
        proxy: &Arc<Proxy>,
        sockets: Vec<std::net::TcpListener>,
        index: usize,
    ) -> std::io::Result<Serving> {
        assert_eq!(sockets.len(), self.len(), "one socket per worker");
        let mut tasks = Vec::with_capacity(sockets.len());
        let mut dups = Vec::with_capacity(sockets.len());
        for (sock, handle) in sockets.into_iter().zip(&self.handles) {
            dups.push(sock.try_clone()?);
            sock.set_nonblocking(true)?;
            // registered with the worker's own I/O driver
            let listener = {
                let _in = handle.enter();
                tokio::net::TcpListener::from_std(sock)?
            };
            tasks.push(handle.spawn(proxy.clone().serve(listener, index)));
        }
        Ok(Serving { tasks, sockets: dups })
    }

    /// Ends every worker thread: the tasks still on them (connections past the drain)
    /// are dropped, which closes their sockets.
    pub fn stop(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().expect("workers"));
        // all told first, then joined: they wind down side by side
        let joins: Vec<_> = threads
            .into_iter()
            .map(|t| {
                let _ = t.stop.send(());
                t.join
            })
            .collect();
        for j in joins {
            if j.join().is_err() {
                tracing::warn!("an L7 worker thread panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` listening sockets on `addr` in one SO_REUSEPORT group (see the module text).
/// Called inside a tokio runtime (the listen step registers each socket until it is
/// handed out as a std socket for its worker).
pub fn bind_group(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    // alone first: fails as a plain bind would when anyone holds the address
    let probe = socket(addr)?;
    probe.set_reuseaddr(true)?;
    probe.bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    (0..n)
        .map(|_| {
            let s = socket(addr)?;
            s.set_reuseaddr(true)?;
            s.set_reuseport(true)?;
            s.bind(addr)?;
            let l = s.listen(BACKLOG)?;
            l.into_std()
        })
        .collect()
}

fn socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_are_checked() {
        assert!(check_count(0).is_some_and(|e| e.contains("at least 1")));
        assert!(check_count(MAX_WORKERS + 1).is_some_and(|e| e.contains("at most")));
        assert_eq!(check_count(1), None);
        assert!((1..=MAX_WORKERS).contains(&default_count()));
    }

    // (inside a runtime, as the agent binds: tokio's listen registers the socket first)
    #[tokio::test]
    async fn a_group_shares_one_port_and_a_held_port_is_refused() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).expect("bind");
        let port = group[0].local_addr().unwrap().port();
        assert_ne!(port, 0, "port 0 resolved once for the whole group");
        assert!(group.iter().all(|s| s.local_addr().unwrap().port() == port));
        // another bind of the same address, SO_REUSEPORT or not, fails as before
        let again = bind_group(format!("127.0.0.1:{port}").parse().unwrap(), 2);
        assert_eq!(again.map(|_| ()).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        let plain = std::net::TcpListener::bind(("127.0.0.1", port));
        assert!(plain.is_err());
    }
}
