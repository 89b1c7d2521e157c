//! TLS passthrough: on a listen address with `protocol: TLS` / `tls.mode: Passthrough`
//! listeners, read the ClientHello (bounded by `--head-timeout` and
//! [`client_hello::MAX_CLIENT_HELLO`]), pick the TLSRoute by its SNI and a backend by
//! weight, connect to a ready pod endpoint, hand it the bytes read so far, and join
//! the two sockets with the [`Joiner`](crate::datapath::Joiner): in the kernel when
//! the sockmap program is loaded, else copied in user space. The TLS session is the
//! client's and the pod's: nothing is decrypted. No SNI, no matching hostname, no
//! usable backend: the connection is closed and no byte reaches any pod. Each outcome
//! is counted ([`Outcome`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::client_hello::{self, Hello, HelloError};
use super::conn::ClientIo;
use super::{Proxy, sources};
use crate::datapath::splice::JoinPath;
use crate::routing::BackendTarget;
use crate::routing::passthrough::{self, SniChoice};
use crate::telemetry::passthrough::Outcome;

/// Time to connect to a pod endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Endpoints tried per connection before it is closed.
const CONNECT_ATTEMPTS: usize = 3;

/// Logged once per path, the first time a passthrough connection takes it.
static SAID_KERNEL: AtomicBool = AtomicBool::new(false);
static SAID_USERSPACE: AtomicBool = AtomicBool::new(false);

impl Proxy {
    /// Whether listen mapping `index` serves TLS passthrough listeners.
    pub(super) fn passthrough_served(&self, index: usize) -> bool {
        self.table.load().listeners.get(index).is_some_and(|l| l.passthrough.is_some())
    }

    /// Serves one connection on a passthrough address. Returns it (with the bytes
    /// read, to be replayed) when it is not TLS and the address also serves HTTP
    /// listeners, or when its SNI is for an HTTPS listener of the address
    /// ([`passthrough::choose`]); None once it has been passed through or closed.
    pub(super) async fn serve_passthrough(
        self: &Arc<Self>,
        mut stream: TcpStream,
        index: usize,
        limit: Duration,
        tracked: &Arc<sources::Tracked>,
    ) -> Option<Handoff> {
        // busy for its whole life, as a spliced connection: never evicted as idle
        let _busy = tracked.activity.begin();
        let metrics = &self.prom.passthrough;
        let mut buf = Vec::with_capacity(2048);
        let read = async {
            loop {
                match client_hello::parse(&buf) {
                    Ok(Hello::NeedMore) => {}
                    done => return Ok::<_, io::Error>(done),
                }
                buf.reserve(4096);
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        let sni = match tokio::time::timeout(limit, read).await {
            Ok(Ok(Ok(Hello::Done { sni }))) => sni,
            Ok(Ok(Ok(Hello::NeedMore))) => unreachable!("the loop reads on"),
            Ok(Ok(Err(HelloError::NotTls))) if self.serves_http_too(index) => {
                return Some(Handoff::Http(ClientIo::new(stream, Bytes::from(buf))));
            }
            Ok(Ok(Err(e))) => {
                tracing::debug!(error = %e, "TLS passthrough: connection closed");
                metrics.count(Outcome::Rejected);
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS passthrough: closed before a whole ClientHello");
                metrics.count(Outcome::Rejected);
                return None;
            }
            Err(_) => {
                tracing::debug!(limit = ?limit, "TLS passthrough: no ClientHello within --head-timeout");
                metrics.count(Outcome::Rejected);
                return None;
            }
        };
        // the candidates, in the order they are tried; the table is not held across awaits
        let (sni, backend, endpoints) = {
            let table = self.table.load();
            let l = table.listeners.get(index)?;
            let pt = l.passthrough.as_ref()?;
            let host = match passthrough::choose(pt, l.tls.as_ref(), sni.as_deref()) {
                SniChoice::Passthrough(host) => host.clone(),
                SniChoice::Terminate => {
                    // an HTTPS listener of this address: rustls reads the ClientHello again
                    tracing::trace!(?sni, "TLS passthrough: the name is an HTTPS listener's, terminated");
                    return Some(Handoff::Tls(ClientIo::new(stream, Bytes::from(buf))));
                }
                SniChoice::NoSni => {
                    tracing::debug!("TLS passthrough: a ClientHello without server_name, closed");
                    metrics.count(Outcome::NoSni);
                    return None;
                }
                SniChoice::NoRoute => {
                    tracing::debug!(?sni, "TLS passthrough: no TLSRoute for this server_name, closed");
                    metrics.count(Outcome::NoRoute);
                    return None;
                }
            };
            let sni = sni.unwrap_or_default();
            // weights count invalid backends too: their share of connections is closed
            let picked = host.rule.pick_backend(fastrand::u64(..));
            let usable = picked.filter(|b| matches!(&b.target, BackendTarget::Endpoints(e) if !e.is_empty()));
            let Some(b) = usable else {
                tracing::debug!(%sni, backend = ?picked.map(|b| &b.name), "TLS passthrough: no usable backend, closed");
                metrics.count(Outcome::NoBackend);
                return None;
            };
            let n = match &b.target {
                BackendTarget::Endpoints(e) => e.len().min(CONNECT_ATTEMPTS),
                BackendTarget::Invalid(_) => 0,
            };
            let eps: Vec<_> = (0..n).filter_map(|_| self.endpoints.pick(b)).collect();
            (sni, b.name.clone(), eps)
        };
        let mut upstream = None;
        for ep in &endpoints {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(*ep)).await {
                Ok(Ok(s)) => {
                    upstream = Some((s, *ep));
                    break;
                }
                Ok(Err(e)) => tracing::debug!(endpoint = %ep, error = %e, "TLS passthrough: connect failed"),
                Err(_) => tracing::debug!(endpoint = %ep, "TLS passthrough: connect timed out"),
            }
        }
        let Some((upstream, endpoint)) = upstream else {
            tracing::warn!(%sni, %backend, "TLS passthrough: no endpoint accepted the connection, closed");
            metrics.count(Outcome::BackendConnectFailed);
            return None;
        };
        let _ = upstream.set_nodelay(true);
        let _passing = metrics.passing();
        let mut joined = false;
        let on_path = |p: JoinPath| {
            joined = true;
            let (outcome, said, how) = match p {
                JoinPath::Kernel => (Outcome::Kernel, &SAID_KERNEL, "joined to the pod in the kernel (sockmap)"),
                JoinPath::Userspace => (Outcome::Userspace, &SAID_USERSPACE, "copied to the pod in user space"),
            };
            metrics.count(outcome);
            if !said.swap(true, Ordering::Relaxed) {
                tracing::info!(%sni, %endpoint, "TLS passthrough: connections are {how} (counted in /stats passthrough.{})", outcome.as_str());
            }
        };
        self.joiner().run_then(stream, Bytes::from(buf), upstream, Bytes::new(), on_path).await;
        if !joined {
            // the pod closed before taking the ClientHello
            metrics.count(Outcome::BackendConnectFailed);
        }
        None
    }

    /// Whether listen mapping `index` also serves plain HTTP listeners (a plain request
    /// on it is then served as HTTP, not closed). Not when it serves HTTPS ones: on one
    /// port HTTPS wins over HTTP (ProtocolConflict), and a plain request is closed.
    fn serves_http_too(&self, index: usize) -> bool {
        let table = self.table.load();
        table.listeners.get(index).is_some_and(|l| {
            let tls = l.passthrough.as_ref().map_or(0, |p| p.listeners.len());
            l.tls.is_none() && l.listeners.len() > tls
        })
    }
}

/// A connection a passthrough address does not pass through, with the bytes read from
/// it put back in front.
pub(super) enum Handoff {
    /// Not TLS, on an address that also serves HTTP listeners.
    Http(ClientIo),
    /// TLS for an HTTPS listener of the address: terminated ([`Proxy::serve_tls_io`]).
    Tls(ClientIo),
}
