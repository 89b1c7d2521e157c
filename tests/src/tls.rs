//! TLS for the HTTPS tests: a test CA (rcgen) that signs leaf certificates, the
//! `kubernetes.io/tls` Secret manifests for them, and a blocking rustls client (ring)
//! that trusts the CA, picks the TLS version, sends SNI, keeps a session cache (to
//! check resumption) and reports what was negotiated and the served certificate's SAN.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::client::{Request, Response, read_response};

// the passthrough tests' TLS pod and client (tls_pod.rs) under the same name
pub use crate::tls_pod::*;

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert: CertificateDer<'static>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "ingress test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert: cert.der().clone(), issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate for `names` signed by this CA: (certificate PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("names");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A client trusting this CA only, speaking exactly `version`, offering `alpn`.
    pub fn client(&self, version: &'static rustls::SupportedProtocolVersion, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("CA as a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }
}

/// A `kubernetes.io/tls` Secret manifest (base64 `data`, as kubectl writes it).
pub fn secret_yaml(ns: &str, name: &str, cert_pem: &str, key_pem: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(cert_pem.as_bytes()),
        base64(key_pem.as_bytes())
    )
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// An open TLS connection to the agent.
pub struct TlsConn {
    pub stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

/// What the handshake gave.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub version: Option<rustls::ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
    /// The first DNS name of the served certificate's SAN.
    pub san: String,
    /// The served certificate (DER).
    pub cert: Vec<u8>,
}

impl TlsConn {
    /// Connects to `addr` (from `tcp`, already connected) and completes the handshake
    /// for `sni`. Err: the handshake failed (the rustls error, with the server's alert).
    pub fn handshake(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        sni: &str,
    ) -> Result<(Self, Negotiated), rustls::Error> {
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = ServerName::try_from(sni.to_string()).expect("a DNS name");
        let mut conn = ClientConnection::new(config, name)?;
        let mut tcp = tcp;
        while conn.is_handshaking() {
            match conn.complete_io(&mut tcp) {
                Ok(_) => {}
                Err(e) => {
                    return Err(match e.into_inner().and_then(|i| i.downcast::<rustls::Error>().ok()) {
                        Some(r) => *r,
                        None => rustls::Error::General("connection closed during the handshake".into()),
                    });
                }
            }
        }
        let cert = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        let san = first_dns_san(&cert);
        let n = Negotiated {
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(|p| p.to_vec()),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            san,
            cert,
        };
        Ok((Self { stream: BufReader::new(StreamOwned::new(conn, tcp)) }, n))
    }

    /// Sends `req` and reads its response on this connection.
    pub fn send(&mut self, req: &Request) -> std::io::Result<Response> {
        let s = self.stream.get_mut();
        s.write_all(&req.to_bytes())?;
        s.flush()?;
        read_response(&mut self.stream, req.method == "HEAD")
    }

    /// Reads until the server closes; the bytes read (after a response, e.g. a 408).
    pub fn read_rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.stream.read_to_end(&mut out);
        out
    }
}

/// Connects to `addr`, handshakes for `sni` with `config`, sends one request.
pub fn get(addr: SocketAddr, config: Arc<ClientConfig>, sni: &str, req: &Request) -> (Negotiated, Response) {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    let (mut c, n) = TlsConn::handshake(tcp, config, sni).unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
    let r = c.send(req).expect("response over TLS");
    (n, r)
}

/// The first DNS name in a DER certificate's SAN extension (OID 2.5.29.17, entries
/// `[2] IA5String`): what the tests check the served certificate by.
pub fn first_dns_san(der: &[u8]) -> String {
    let oid = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let Some(at) = der.windows(oid.len()).position(|w| w == oid) else { return String::new() };
    let rest = &der[at..];
    let Some(p) = rest.iter().position(|b| *b == 0x82) else { return String::new() };
    let len = rest[p + 1] as usize;
    String::from_utf8_lossy(&rest[p + 2..p + 2 + len]).into_owned()
}
