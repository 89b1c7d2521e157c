//! ClientHellos made by rustls' own client (captured into a Vec), cut at every byte,
//! refragmented into several records, without SNI; garbage and oversize input.

use std::sync::Arc;

use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, NamedGroup, RootCertStore};

use super::*;

/// A key exchange group the size of X25519MLKEM768 (a 1184-byte ML-KEM share before the
/// X25519 one) that offers its X25519 half on its own too, as rustls does for the real
/// hybrid: the ClientHello grows to the size post-quantum clients send.
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

/// The bytes rustls' client sends first, for `name` (None: SNI off).
fn client_hello_bytes(name: Option<&str>, hybrid: bool) -> Vec<u8> {
    let mut provider = rustls::crypto::ring::default_provider();
    if hybrid {
        provider.kx_groups.insert(0, &HYBRID);
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    cfg.enable_sni = name.is_some();
    let server = ServerName::try_from(name.unwrap_or("unused.example").to_string()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(cfg), server).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// The same handshake message in records of at most `sizes[i]` bytes each (the last
/// one takes the rest).
fn refragment(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
    let (header, mut msg) = (&hello[..5], &hello[5..]);
    assert_eq!(u16::from_be_bytes([header[3], header[4]]) as usize, msg.len(), "one record in");
    let mut out = Vec::new();
    let mut record = |part: &[u8]| {
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    };
    for &n in sizes {
        let n = n.min(msg.len());
        if n == 0 {
            break;
        }
        record(&msg[..n]);
        msg = &msg[n..];
    }
    if !msg.is_empty() {
        record(msg);
    }
    out
}

fn done(sni: &str) -> Result<Hello, HelloError> {
    Ok(Hello::Done { sni: Some(sni.into()) })
}

/// Every proper prefix needs more; the whole gives `expected`.
fn check_every_cut(bytes: &[u8], expected: Result<Hello, HelloError>) {
    for i in 0..bytes.len() {
        assert_eq!(parse(&bytes[..i]), Ok(Hello::NeedMore), "cut at {i} of {}", bytes.len());
    }
    assert_eq!(parse(bytes), expected);
}

#[test]
fn a_rustls_client_hello_cut_at_every_byte() {
    let hello = client_hello_bytes(Some("Echo.Tls.Example"), false);
    check_every_cut(&hello, done("echo.tls.example"));
    // what follows the ClientHello (a client sending early) does not change the answer
    let mut more = hello.clone();
    more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
    assert_eq!(parse(&more), done("echo.tls.example"));
}

/// An OpenChoreo web-app hostname (they are long).
const LONG: &str = "http-demo-app-web--development-default-ee0f64b2.openchoreoapis.localhost";

#[test]
fn a_post_quantum_sized_client_hello_spans_segments_and_records() {
    let hello = client_hello_bytes(Some(LONG), true);
    // rustls' own hello with an ML-KEM-sized share is ~1.5 KB (browsers add more
    // extensions, ~1.8 KB): more than one TCP segment at MTU 1500 either way
    assert!(hello.len() > 1460, "larger than one segment's payload: {} bytes", hello.len());
    check_every_cut(&hello, done(LONG));
    // the handshake message over two records, split at a few places (in the middle of
    // the handshake header too), then over many small records
    let msg_len = hello.len() - 5;
    for first in [1, 2, 3, 4, 100, 1300, msg_len - 1] {
        let two = refragment(&hello, &[first]);
        assert_eq!(two.len(), hello.len() + 5);
        assert_eq!(parse(&two), done(LONG), "first record {first} bytes");
    }
    let two = refragment(&hello, &[700]);
    check_every_cut(&two, done(LONG));
    let many = refragment(&hello, &[97; 40]);
    check_every_cut(&many, done(LONG));
}

#[test]
fn no_server_name() {
    let hello = client_hello_bytes(None, false);
    check_every_cut(&hello, Ok(Hello::Done { sni: None }));
}

#[test]
fn garbage_and_other_protocols_are_refused_early() {
    assert_eq!(parse(b"G"), Err(HelloError::NotTls));
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Err(HelloError::NotTls));
    assert_eq!(parse(b"PRI * HTTP/2.0\r\n"), Err(HelloError::NotTls));
    assert_eq!(parse(&[0x16, 0x02]), Err(HelloError::NotTls), "SSL 2 / not 3.x");
    assert_eq!(
        parse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
        Err(HelloError::Malformed("the first handshake message is not a ClientHello"))
    );
    assert_eq!(parse(&[0x16, 3, 1, 0, 0]), Err(HelloError::Malformed("an empty handshake record")));
    let hello = client_hello_bytes(Some("a.example"), false);
    // an alert record in the middle of a fragmented ClientHello
    let mut two = refragment(&hello, &[50]);
    two[55] = 0x15;
    assert_eq!(parse(&two), Err(HelloError::Malformed("a record of another type before the ClientHello ended")));
    // a session id length past the end of the message
    let mut bad = hello.clone();
    bad[5 + 4 + 2 + 32] = 0xff;
    assert!(matches!(parse(&bad), Err(HelloError::Malformed(_))), "{:?}", parse(&bad));
    // the extensions' length one more than there is
    let mut bad = hello.clone();
    let sid = bad[5 + 4 + 34] as usize;
    let at = 5 + 4 + 34 + 1 + sid;
    let suites = u16::from_be_bytes([bad[at], bad[at + 1]]) as usize;
    let at = at + 2 + suites;
    let comp = bad[at] as usize;
    let ext = at + 1 + comp;
    let n = u16::from_be_bytes([bad[ext], bad[ext + 1]]) + 1;
    bad[ext..ext + 2].copy_from_slice(&n.to_be_bytes());
    assert_eq!(parse(&bad), Err(HelloError::Malformed("a field runs past the end of the message")));
    // a server name with a character no hostname has
    let mut bad = hello.clone();
    let i = bad.windows(9).position(|w| w == b"a.example").unwrap();
    bad[i + 1] = b'/';
    assert_eq!(parse(&bad), Err(HelloError::Malformed("a server_name that is not a DNS hostname")));
}

#[test]
fn too_large_is_refused_without_reading_it_all() {
    // a ClientHello that says it is 64 KiB: refused at once
    let header = [0x16, 3, 1, 0x40, 0x00, 1, 0x01, 0x00, 0x00];
    assert_eq!(parse(&header), Ok(Hello::NeedMore), "the record is not complete yet");
    let mut big = header.to_vec();
    big.resize(5 + 0x4000, 0);
    assert_eq!(parse(&big), Err(HelloError::TooLarge));
    // records that never finish a 16 KiB message
    let mut slow = vec![0x16, 3, 1, 0, 4, 1, 0, 0x3f, 0xf0];
    while slow.len() < MAX_CLIENT_HELLO + 10 {
        slow.extend_from_slice(&[0x16, 3, 1, 0, 1, 0]);
    }
    assert_eq!(parse(&slow), Err(HelloError::TooLarge));
    let mut record = vec![0x16, 3, 1, 0x40, 0x01];
    record.resize(5 + 0x4001, 1);
    assert_eq!(parse(&record), Err(HelloError::Malformed("a record longer than 2^14 bytes")));
}
