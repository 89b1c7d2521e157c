//! TLS termination for HTTPS listeners: accept, read the ClientHello, choose the
//! listener by SNI in the CURRENT table ([`crate::routing::tls`]), complete the
//! handshake (rustls on ring, TLS 1.2 and 1.3, session tickets and a session cache),
//! then serve the decrypted stream by its ALPN protocol ([`Proxy::dispatch_tls`]).
//!
//! The certificate is read from the table at handshake time (by the resolver), so a
//! changed Secret is served to new connections while open ones keep their session. A
//! name no listener serves gets the `unrecognized_name` alert; a name whose listener
//! has an unusable certificate gets `handshake_failure`; both are counted. The
//! ClientHello and the handshake together have `--head-timeout`.
//!
//! HTTP/1.1 over TLS runs the same request path as plain connections (the head timer
//! and its 408, the Content-Length + Transfer-Encoding refusal, the per-source cap,
//! graceful shutdown) through [`conn::ClientIo`] over the TLS stream, and is parked
//! when idle like a plain connection: taken back from hyper and waiting on the socket
//! without hyper's buffers; the TLS session's state (rustls, keys) stays with it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::{MAX_HEAD, Proxy, conn, plan, sources, stopped};
use crate::routing::TableHandle;
use crate::routing::tls::Selected;

/// Marks a request that arrived over TLS (a request extension), with the HTTPS
/// listener its handshake chose: X-Forwarded-Proto is then `https`, and a request whose
/// host belongs to another listener gets 421 ([`misdirected`]). Whatever serves
/// requests of a TLS connection (HTTP/1.1 here, HTTP/2 in `serve_h2`) inserts it.
#[derive(Clone, Debug)]
pub struct Secure {
    pub listener: Arc<str>,
}

/// `421 Misdirected Request` when the request's host selects another HTTPS listener of
/// the mapping than the connection's SNI did (RFC 9110 15.5.20; Gateway API GEP-3567):
/// a connection made for one listener's certificate never carries another listener's
/// requests (nor those of a listener whose certificate is unusable). None: serve it.
pub fn misdirected(lt: &crate::routing::ListenerTable, secure: &Secure, host: &str) -> Option<plan::Local> {
    let tls = lt.tls.as_ref()?;
    let (host, _) = crate::routing::split_host_header(host);
    let same = match tls.select(Some(&host)) {
        Selected::Serve(l, _) | Selected::Invalid(l, _) => *l.name == *secure.listener,
        Selected::NoMatch => false,
    };
    (!same).then(|| plan::Local {
        status: http::StatusCode::MISDIRECTED_REQUEST,
        body: "misdirected request: this connection's TLS name is for another listener\n",
        headers: vec![],
        close: false,
    })
}

/// The ALPN protocols offered, in preference order: HTTP/2 first ([`Proxy::serve_h2`],
/// the same limits and defences as h2c), then HTTP/1.1.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Sessions remembered per listen mapping for TLS 1.2 session-ID resumption (tickets
/// need no server state).
const SESSION_CACHE: usize = 4096;

/// TLS alert descriptions sent before any handshake message (RFC 8446 6).
const ALERT_HANDSHAKE_FAILURE: u8 = 40;
const ALERT_UNRECOGNIZED_NAME: u8 = 112;

/// One rustls configuration per listen mapping, made at its first TLS connection:
/// its resolver reads that mapping's certificates from the current table, its ticket
/// keys and session cache outlive table changes (a client resumes across a reload).
#[derive(Default)]
pub struct TlsConfigs(Mutex<HashMap<usize, Arc<ServerConfig>>>);

impl TlsConfigs {
    fn get(&self, table: &TableHandle, index: usize) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut m = self.0.lock().expect("tls configs");
        if let Some(c) = m.get(&index) {
            return Ok(c.clone());
        }
        let c = server_config(table.clone(), index)?;
        m.insert(index, c.clone());
        Ok(c)
    }
}

/// The rustls configuration of mapping `index`: TLS 1.2 and 1.3 on ring, [`ALPN`],
/// rotating session-ticket keys, a session cache.
pub fn server_config(table: TableHandle, index: usize) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = crate::routing::tls::provider();
    let mut c = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCertificate { table, index }));
    c.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    c.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    c.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(c))
}

/// Resolves the certificate from the table current at the handshake.
struct CurrentCertificate {
    table: TableHandle,
    index: usize,
}

impl std::fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CurrentCertificate(mapping {})", self.index)
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let tls = table.listeners.get(self.index)?.tls.as_ref()?;
        match tls.select(hello.server_name()) {
            Selected::Serve(_, key) => Some(key.clone()),
            _ => None,
        }
    }
}

/// A fatal TLS alert record, sent in the clear before any handshake reply.
fn alert(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

impl Proxy {
    /// Whether listen mapping `index` serves HTTPS listeners now (new connections to
    /// it get TLS).
    pub(super) fn tls_mapping(&self, index: usize) -> bool {
        self.table.load().listeners.get(index).is_some_and(|l| l.tls.is_some())
    }

    /// Serves one connection to a TLS mapping: the handshake, then [`Proxy::dispatch_tls`].
    pub(super) async fn serve_tls(
        self: Arc<Self>,
        stream: TcpStream,
        index: usize,
        peer: SocketAddr,
        head_timeout: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
        tracked: Arc<sources::Tracked>,
    ) {
        let io = conn::ClientIo::new(stream, Bytes::new());
        self.serve_tls_io(io, index, peer, head_timeout, stop, tracked).await
    }

    /// [`Proxy::serve_tls`] for a connection whose first bytes were already read (a
    /// ClientHello a passthrough address peeked at, proxy/passthrough.rs): `io` replays
    /// them to rustls, which reads the ClientHello again.
    pub(super) async fn serve_tls_io(
        self: Arc<Self>,
        stream: conn::ClientIo,
        index: usize,
        peer: SocketAddr,
        head_timeout: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
        tracked: Arc<sources::Tracked>,
    ) {
        let config = match self.tls.get(&self.table, index) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot configure TLS; connection closed");
                return;
            }
        };
        // busy during the handshake: never evicted as idle by the per-source cap
        let busy = tracked.activity.begin();
        let handshake = tokio::time::timeout(head_timeout, self.handshake(stream, index, config));
        let (tls, secure) = match handshake.await {
            Ok(Some(done)) => done,
            Ok(None) => return,
            Err(_) => {
                self.metrics.tls.timed_out();
                tracing::debug!(%peer, "TLS handshake not complete within --head-timeout");
                return;
            }
        };
        drop(busy);
        self.dispatch_tls(tls, secure, index, peer, head_timeout, stop, tracked).await;
    }

    /// Reads the ClientHello, refuses a name without a usable listener, completes the
    /// handshake. None: refused or failed (counted).
    async fn handshake(
        &self,
        stream: conn::ClientIo,
        index: usize,
        config: Arc<ServerConfig>,
    ) -> Option<(TlsStream<conn::ClientIo>, Secure)> {
        let start = match LazyConfigAcceptor::new(Acceptor::default(), stream).await {
            Ok(s) => s,
            Err(e) => {
                self.metrics.tls.failed();
                tracing::debug!(error = %e, "not a TLS ClientHello");
                return None;
            }
        };
        let mut chosen = None;
        let refusal = {
            let table = self.table.load();
            let sni = start.client_hello().server_name().map(str::to_owned);
            match table.listeners.get(index).and_then(|l| l.tls.as_ref()).map(|t| t.select(sni.as_deref())) {
                Some(Selected::Serve(l, _)) => {
                    chosen = Some(Secure { listener: l.name.as_str().into() });
                    None
                }
                Some(Selected::Invalid(l, p)) => {
                    self.metrics.tls.invalid_certificate();
                    tracing::debug!(?sni, listener = %l.name, "TLS refused: {p}");
                    Some(ALERT_HANDSHAKE_FAILURE)
                }
                Some(Selected::NoMatch) | None => {
                    self.metrics.tls.unrecognized_name();
                    tracing::debug!(?sni, "TLS refused: no HTTPS listener serves this name");
                    Some(ALERT_UNRECOGNIZED_NAME)
                }
            }
        };
        if let Some(description) = refusal {
            let mut io = start.io;
            let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&alert(description))).await;
            let _ = io.shutdown().await;
            return None;
        }
        match start.into_stream(config).await {
            Ok(tls) => {
                let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                self.metrics.tls.handshake(resumed);
                chosen.map(|secure| (tls, secure))
            }
            Err(e) => {
                self.metrics.tls.failed();
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
        }
    }

    /// The one place a TLS connection is handed on by its negotiated ALPN protocol:
    /// `h2` to [`Proxy::serve_h2`]; every other connection (`http/1.1`, or no ALPN) is
    /// HTTP/1.1.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch_tls(
        self: Arc<Self>,
        tls: TlsStream<conn::ClientIo>,
        secure: Secure,
        index: usize,
        peer: SocketAddr,
        head_timeout: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
        tracked: Arc<sources::Tracked>,
    ) {
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        match alpn.as_deref() {
            Some(b"h2") => Box::pin(self.serve_h2(tls, index, peer, "https", Some(secure), tracked)).await,
            _ => self.serve_tls_http1(tls, secure, index, peer, head_timeout, stop, tracked).await,
        }
    }

    /// HTTP/1.1 over a TLS stream: [`Proxy::serve_http`]'s loop, every request marked
    /// [`Secure`]. An idle keep-alive connection is parked like a plain one: taken back
    /// from hyper (its buffers dropped) and waiting on the socket; the TLS session
    /// (rustls' state and keys) stays with it. When hyper saw `Pending`, tokio-rustls
    /// had read the socket dry and handed over every decrypted byte, so readiness of
    /// the TCP socket is what wakes a parked TLS connection.
    #[allow(clippy::too_many_arguments)]
    async fn serve_tls_http1(
        self: Arc<Self>,
        tls: TlsStream<conn::ClientIo>,
        secure: Secure,
        index: usize,
        peer: SocketAddr,
        head_timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        tracked: Arc<sources::Tracked>,
    ) {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            // ClientIo times heads out and answers 408
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD)
            .keep_alive(true);
        let park_after = (head_timeout / 2).min(super::PARK_AFTER);
        let activity = tracked.activity.clone();
        let mut io = conn::ClientIo::new(tls, Bytes::new());
        loop {
            let svc = {
                let (proxy, activity, secure) = (self.clone(), activity.clone(), secure.clone());
                hyper::service::service_fn(move |mut req| {
                    req.extensions_mut().insert(secure.clone());
                    let proxy = proxy.clone();
                    let activity = activity.clone();
                    Box::pin(async move {
                        Ok::<_, Infallible>(
                            proxy.handle(super::boxed(req), index, peer, &activity, super::Writer::Hyper).await,
                        )
                    })
                })
            };
            let watched = io.watch(activity.clone(), head_timeout);
            let mut conn = Box::pin(builder.serve_connection(TokioIo::new(watched), svc).with_upgrades());
            let result = tokio::select! {
                r = &mut conn => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = tracked.evict.notified() => {
                    tracing::debug!(%peer, "idle TLS connection closed: its source is at --max-connections-per-source");
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = super::parkable(&activity, park_after) => {
                    let Some(parts) = std::pin::Pin::into_inner(conn).into_parts() else { return };
                    self.metrics.parked();
                    let hyper::server::conn::http1::Parts { io: watched, read_buf, .. } = parts;
                    let (tls, rest) = watched.into_inner().into_parts();
                    let mut prefix = bytes::BytesMut::from(&read_buf[..]);
                    prefix.extend_from_slice(&rest);
                    drop((read_buf, rest));
                    if prefix.is_empty() {
                        let left = head_timeout.saturating_sub(activity.idle_for());
                        tokio::select! {
                            r = tokio::time::timeout(left, tls.get_ref().0.inner.readable()) => {
                                if !matches!(r, Ok(Ok(()))) {
                                    return; // idle keep-alive timeout: close quietly
                                }
                            }
                            _ = stopped(&mut stop) => return,
                            _ = tracked.evict.notified() => {
                                tracing::debug!(%peer, "parked TLS connection closed: its source is at --max-connections-per-source");
                                return;
                            }
                        }
                    }
                    activity.resumed();
                    io = conn::ClientIo::new(tls, prefix.freeze());
                    continue;
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "TLS client connection ended with an error");
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_of_another_listener_is_misdirected() {
        let c = rcgen::generate_simple_self_signed(vec!["a.test".to_string(), "x.w.test".to_string()]).unwrap();
        let (crt, key) = (c.cert.pem(), c.signing_key.serialize_pem());
        let ind = |s: &str| s.lines().map(|l| format!("      {l}\n")).collect::<String>();
        let secret = |name: &str| {
            format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: infra}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
                ind(&crt),
                ind(&key)
            )
        };
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: x\n  listeners:\n  - {{name: a, protocol: HTTPS, port: 443, hostname: a.test, tls: {{certificateRefs: [{{name: c}}]}}}}\n  - {{name: w, protocol: HTTPS, port: 443, hostname: '*.w.test', tls: {{certificateRefs: [{{name: c}}]}}}}\n{}",
            secret("c")
        );
        let res = crate::routing::tests::resources(&yaml);
        let m: crate::config::ListenMapping = "127.0.0.1:8443=infra/gw:443".parse().unwrap();
        let t = crate::routing::compile(&res, &[m]);
        let lt = &t.listeners[0];
        let on_a = Secure { listener: "a".into() };
        assert!(misdirected(lt, &on_a, "a.test").is_none());
        assert!(misdirected(lt, &on_a, "A.test:8443").is_none(), "case and port do not matter");
        let l = misdirected(lt, &on_a, "x.w.test").expect("a host of listener w on a's connection");
        assert_eq!(l.status, http::StatusCode::MISDIRECTED_REQUEST);
        assert!(misdirected(lt, &on_a, "nobody.test").is_some(), "a host no listener serves");
        assert!(misdirected(lt, &Secure { listener: "w".into() }, "y.w.test").is_none());
    }

    #[test]
    fn alerts_are_fatal_alert_records() {
        assert_eq!(alert(ALERT_UNRECOGNIZED_NAME), [21, 3, 3, 0, 2, 2, 112]);
    }

    #[test]
    fn the_config_offers_h2_then_http1_and_both_versions_and_resumption() {
        let c = server_config(TableHandle::default(), 0).unwrap();
        assert_eq!(c.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(c.ticketer.enabled(), "TLS 1.3 (and 1.2) session tickets");
        assert!(c.session_storage.can_cache(), "a session cache for TLS 1.2 session IDs");
    }
}
