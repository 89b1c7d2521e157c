//! TLS for the passthrough tests (re-exported by `tls.rs`): a rustls TLS server as a pod (its own rcgen
//! certificate, on 127.0.0.1 or in a pod namespace), counting the connections it
//! accepts; and a rustls client that checks it got that pod's certificate, optionally
//! with a ClientHello the size post-quantum clients send, written in pieces.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, NamedGroup, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// A TLS server standing in for a pod that terminates TLS itself. Each connection:
/// the handshake, then every line it reads is answered `POD sni=NAME got=LINE`.
pub struct TlsPod {
    pub addr: SocketAddr,
    /// The pod's certificate (self-signed for its hostnames).
    pub cert: CertificateDer<'static>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsPod {
    /// On 127.0.0.1, a free port.
    pub fn start_local(name: &str, hosts: &[&str]) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a TLS pod");
        Self::serve(l, name, hosts)
    }

    /// Listening on `addr` inside network namespace `ns` (the socket stays there; the
    /// thread serving it does not need to).
    pub fn start_in(ns: &str, addr: SocketAddr, name: &str, hosts: &[&str]) -> Self {
        let l = crate::netns::in_ns(ns, || TcpListener::bind(addr)).expect("bind a TLS pod in its namespace");
        Self::serve(l, name, hosts)
    }

    fn serve(listener: TcpListener, name: &str, hosts: &[&str]) -> Self {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let key = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
        let cert = key.cert.der().clone();
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], private)
            .expect("the pod's certificate");
        let cfg = Arc::new(cfg);
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (accepted, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let name = name.to_string();
        let thread = std::thread::spawn({
            let (accepted, stop) = (accepted.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let (cfg, name) = (cfg.clone(), name.clone());
                            std::thread::spawn(move || serve_one(sock, cfg, &name));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        TlsPod { addr, cert, accepted, stop, thread: Some(thread) }
    }

    /// TCP connections this pod has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TlsPod {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(sock: TcpStream, cfg: Arc<ServerConfig>, name: &str) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = ServerConnection::new(cfg) else { return };
    let mut tls = StreamOwned::new(conn, sock);
    let mut line = String::new();
    loop {
        line.clear();
        let mut reader = BufReader::new(&mut tls);
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        drop(reader);
        let sni = tls.conn.server_name().unwrap_or("-").to_string();
        let answer = format!("{name} sni={sni} got={}\n", line.trim_end());
        if tls.write_all(answer.as_bytes()).and_then(|_| tls.flush()).is_err() {
            return;
        }
    }
}

/// A key exchange group the size of X25519MLKEM768 (a 1184-byte share before the
/// X25519 one) that also offers its X25519 half alone, as rustls does for the real
/// hybrid: the ClientHello grows to the ~1.8 KB post-quantum clients send, and a
/// server without ML-KEM picks the X25519 half.
#[derive(Debug)]
struct SizedLikeHybrid;

static HYBRID: SizedLikeHybrid = SizedLikeHybrid;

struct HybridShare {
    classical: Box<dyn ActiveKeyExchange>,
    combined: Vec<u8>,
}

impl SupportedKxGroup for SizedLikeHybrid {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let classical = rustls::crypto::ring::kx_group::X25519.start()?;
        let mut combined = vec![0x5a; 1184];
        combined.extend_from_slice(classical.pub_key());
        Ok(Box::new(HybridShare { classical, combined }))
    }
    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}

impl ActiveKeyExchange for HybridShare {
    fn complete(self: Box<Self>, _: &[u8]) -> Result<SharedSecret, rustls::Error> {
        Err(rustls::Error::General("this test group has no ML-KEM half".into()))
    }
    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        Some((self.classical.group(), self.classical.pub_key()))
    }
    fn complete_hybrid_component(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        self.classical.complete(peer)
    }
    fn pub_key(&self) -> &[u8] {
        &self.combined
    }
    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}

/// How the client talks.
#[derive(Clone, Default)]
pub struct ClientOpts {
    /// The server_name to send; None: no SNI at all.
    pub sni: Option<String>,
    /// A post-quantum-sized ClientHello.
    pub large_hello: bool,
    /// Write the ClientHello in pieces of this many bytes, pausing this long between them.
    pub pieces: Option<(usize, Duration)>,
}

/// What the client saw: the pod's answer and the certificate the handshake presented.
pub struct Exchange {
    pub answer: String,
    pub cert: CertificateDer<'static>,
    /// Size of the ClientHello the client sent.
    pub hello_len: usize,
    /// The connection, still open.
    pub stream: StreamOwned<ClientConnection, TcpStream>,
}

/// A TLS client trusting only `root` (a pod's self-signed certificate), over `sock`:
/// handshake, one line `ping`, the answer. Errors when the handshake fails (the agent
/// closed the connection, or the certificate is not the pod's).
pub fn exchange(sock: TcpStream, root: &CertificateDer<'static>, opts: &ClientOpts) -> std::io::Result<Exchange> {
    let mut provider = rustls::crypto::ring::default_provider();
    if opts.large_hello {
        provider.kx_groups.insert(0, &HYBRID);
    }
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).map_err(std::io::Error::other)?;
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.enable_sni = opts.sni.is_some();
    // without SNI rustls still verifies the certificate against this name
    let name = opts.sni.clone().unwrap_or_else(|| "no-sni.invalid".into());
    let server = ServerName::try_from(name).map_err(std::io::Error::other)?;
    let mut conn = ClientConnection::new(Arc::new(cfg), server).map_err(std::io::Error::other)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_nodelay(true)?;
    let mut sock = sock;
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello)?;
    }
    match opts.pieces {
        Some((n, pause)) => {
            for piece in hello.chunks(n.max(1)) {
                sock.write_all(piece)?;
                std::thread::sleep(pause);
            }
        }
        None => sock.write_all(&hello)?,
    }
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(b"ping\n")?;
    tls.flush()?;
    let mut answer = String::new();
    BufReader::new(&mut tls).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| std::io::Error::other("no peer certificate"))?;
    Ok(Exchange { answer: answer.trim_end().to_string(), cert, hello_len: hello.len(), stream: tls })
}

/// Waits (bounded) until `f` holds.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
