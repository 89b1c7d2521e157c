//! HTTP/2 through the agent on 127.0.0.1 (no privileges): h2c with prior knowledge
//! from clients, h2c to backends whose Service port says `appProtocol:
//! kubernetes.io/h2c`, HTTP/1.1 on either side, trailers, gRPC to a tonic backend,
//! and the rapid-reset and CONTINUATION floods (raw frames written by hand) with the
//! agent staying responsive to other clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request};
use ingress_tests::backend::Echo;
use ingress_tests::client::{self, Request as H1};
use ingress_tests::h2_backend::{BytesCodec, H2Backend, H2Echo, h2_client, h2_send};
use ingress_tests::proxy_setup::{SECOND, Setup};
use tonic::codegen::tokio_stream::{self, StreamExt};

/// Services `h2pod` and `grpcpod` (port 80, appProtocol h2c) and the route of host
/// `h2.test`: `/echo.Echo/*` to grpcpod, everything else to h2pod.
fn manifests(h2pod: SocketAddr, grpcpod: SocketAddr) -> String {
    let svc = |name: &str, at: SocketAddr| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec: {{ports: [{{name: h2, port: 80, appProtocol: kubernetes.io/h2c}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-0, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: h2, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
            at.port(),
            at.ip()
        )
    };
    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h2, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [h2.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /echo.Echo}}]
    backendRefs: [{name: grpcpod, port: 80}]
  - backendRefs: [{name: h2pod, port: 80}]
";
    format!("{}{}{route}", svc("h2pod", h2pod), svc("grpcpod", grpcpod))
}

struct H2Setup {
    rt: tokio::runtime::Runtime,
    s: Setup,
    h2pod: H2Backend,
    grpcpod: H2Backend,
}

fn setup(tag: &str) -> H2Setup {
    setup_with(tag, &[])
}

fn setup_with(tag: &str, flags: &[&str]) -> H2Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h2pod = H2Backend::start_local(rt.handle(), "h2pod");
    let grpcpod = H2Backend::start_local(rt.handle(), "grpcpod");
    let s = Setup::local_with_manifests(tag, &manifests(h2pod.addr, grpcpod.addr), flags);
    H2Setup { rt, s, h2pod, grpcpod }
}

fn get(uri: &str) -> Request<()> {
    Request::builder().method("GET").uri(uri).body(()).unwrap()
}

async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the agent");
    h2_client(tcp).await.expect("h2 handshake with the agent")
}

#[test]
fn h2c_streams_on_one_connection_are_each_routed_on_their_own() {
    let t = setup("h2-streams");
    let addr = t.s.client.addr;
    let (before_h2, before_h1) = (t.h2pod.requests(), t.s.requests(SECOND));
    let replies = t.rt.block_on(async {
        let client = connect(addr).await;
        // 60 streams at once on one connection, two hosts, two backends, two protocols
        let calls = (0..60).map(|i| {
            let client = client.clone();
            async move {
                let uri =
                    if i % 2 == 0 { format!("http://h2.test/s/{i}") } else { format!("http://f.test/second?i={i}") };
                let r = tokio::time::timeout(Duration::from_secs(10), h2_send(&client, get(&uri), b"", None)).await;
                (i, r.expect("answered in time").expect("stream answered"))
            }
        });
        let mut set = tokio::task::JoinSet::new();
        for c in calls {
            set.spawn(c);
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    assert_eq!(replies.len(), 60);
    for (i, r) in &replies {
        assert_eq!(r.status, 200, "stream {i}: {}", String::from_utf8_lossy(&r.body));
        if i % 2 == 0 {
            let e: H2Echo = serde_json::from_slice(&r.body).unwrap();
            assert_eq!((e.pod.as_str(), e.version.as_str()), ("h2pod", "HTTP/2.0"), "h2c to the pod");
            assert_eq!(e.path, format!("/s/{i}"));
            assert_eq!(e.authority, "h2.test", ":authority is the request's host, not the pod's address");
            assert_eq!(e.host, None, "no Host beside :authority");
            assert_eq!(e.headers.get("x-forwarded-proto").map(String::as_str), Some("http"));
            assert_eq!(e.headers.get("x-forwarded-host").map(String::as_str), Some("h2.test"));
            let trailers = r.trailers.as_ref().expect("the pod's trailers");
            assert_eq!(trailers["x-pod"], "h2pod");
        } else {
            let e: Echo = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(e.pod, "pod-second", "stream {i}");
            assert_eq!(e.host, "f.test", "Host made from :authority for the HTTP/1.1 pod");
            assert_eq!(e.path, format!("/second?i={i}"));
        }
    }
    assert_eq!(t.h2pod.requests() - before_h2, 30);
    assert_eq!(t.s.requests(SECOND) - before_h1, 30);
    // the h2pod saw them on few connections (multiplexed), counted by the agent as h2
    let stats = t.s.agent.stats();
    assert_eq!(stats.proxy.h2_connections, 1, "{:?}", stats.proxy);
    assert!(stats.proxy.requests >= 60);
}

#[test]
fn trailers_go_end_to_end_between_an_h2_client_and_an_h2c_pod() {
    let t = setup("h2-trailers");
    let addr = t.s.client.addr;
    let r = t.rt.block_on(async {
        let client = connect(addr).await;
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc123".parse().unwrap());
        let req =
            Request::builder().method("POST").uri("http://h2.test/upload").header("te", "trailers").body(()).unwrap();
        h2_send(&client, req, b"hello world", Some(trailers)).await.expect("answered")
    });
    assert_eq!(r.status, 200);
    let e: H2Echo = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(e.body_len, 11);
    assert_eq!(
        e.trailers.get("x-checksum").map(String::as_str),
        Some("abc123"),
        "the request's trailers reached the pod"
    );
    assert_eq!(e.headers.get("te").map(String::as_str), Some("trailers"));
    let t2 = r.trailers.expect("the response's trailers reached the client");
    assert_eq!(t2["x-pod"], "h2pod");
    assert_eq!(t2["x-echo-x-checksum"], "abc123");
}

#[test]
fn grpc_unary_and_streaming_calls_reach_a_tonic_backend() {
    let t = setup("h2-grpc");
    let addr = t.s.client.addr;
    let before = t.grpcpod.requests();
    t.rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .origin("http://h2.test".parse().unwrap())
            .connect()
            .await
            .expect("tonic connects to the agent");
        let mut g = tonic::client::Grpc::new(channel);
        let path = |p: &'static str| http::uri::PathAndQuery::from_static(p);

        g.ready().await.unwrap();
        let r = g.unary(tonic::Request::new(Bytes::from_static(b"ping")), path("/echo.Echo/Unary"), BytesCodec).await;
        assert_eq!(r.expect("unary").into_inner(), Bytes::from_static(b"grpcpod h2.test|ping"));

        g.ready().await.unwrap();
        let r = g.server_streaming(
            tonic::Request::new(Bytes::from_static(b"5")),
            path("/echo.Echo/ServerStream"),
            BytesCodec,
        );
        let mut stream = r.await.expect("server streaming").into_inner();
        let mut got = Vec::new();
        while let Some(m) = stream.message().await.expect("a message") {
            got.push(String::from_utf8(m.to_vec()).unwrap());
        }
        assert_eq!(got, ["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]);

        g.ready().await.unwrap();
        let msgs = tokio_stream::iter([&b"ab"[..], b"cde", b"f"]).map(Bytes::from_static);
        let r = g.client_streaming(tonic::Request::new(msgs), path("/echo.Echo/ClientStream"), BytesCodec).await;
        assert_eq!(r.expect("client streaming").into_inner(), Bytes::from_static(b"3:6"));

        // a gRPC error is a trailers-only answer: its status reaches the client
        g.ready().await.unwrap();
        let r = g.unary(tonic::Request::new(Bytes::new()), path("/echo.Echo/Fail"), BytesCodec).await;
        let status = r.expect_err("the pod's error");
        assert_eq!((status.code(), status.message()), (tonic::Code::NotFound, "no such thing"));
    });
    assert_eq!(t.grpcpod.requests() - before, 4, "every call reached the gRPC pod");
}

#[test]
fn an_http1_client_reaches_an_h2c_pod() {
    let t = setup("h2-h1client");
    let addr = t.s.client.addr;
    let r = client::send(addr, &H1::get("h2.test:8080", "/one?x=1"), Duration::from_secs(5)).expect("answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let e: H2Echo = r.json();
    assert_eq!((e.pod.as_str(), e.version.as_str(), e.method.as_str()), ("h2pod", "HTTP/2.0", "GET"));
    assert_eq!(e.authority, "h2.test:8080", "Host became :authority");
    assert_eq!((e.host, e.path.as_str()), (None, "/one?x=1"));
    let mut post =
        H1::get("h2.test", "/two").method("POST").header("Connection", "keep-alive, x-hop").header("x-hop", "1");
    post.body = vec![b'x'; 100_000];
    let r = client::send(addr, &post, Duration::from_secs(5)).expect("answer");
    let e: H2Echo = r.json();
    assert_eq!(e.body_len, 100_000, "a body larger than a window's worth of frames");
    assert!(!e.headers.contains_key("x-hop") && !e.headers.contains_key("connection"), "{:?}", e.headers);
    // a HEAD (sent to HTTP/1.1 pods with Connection: close) is fine over h2c too
    let head = client::send(addr, &H1::get("h2.test", "/h").method("HEAD"), Duration::from_secs(5)).expect("answer");
    assert_eq!(head.status, 200);
}

// ---- raw frames, for the floods ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block (HPACK, static table and literals, no Huffman): GET http `path`
/// with `:authority` `host`.
fn request_block(host: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing, name index 4
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority, literal without indexing, name index 1
    b.push(host.len() as u8);
    b.extend_from_slice(host.as_bytes());
    b
}

/// What the agent sent on a raw connection, read by a thread until it closed.
#[derive(Default, Debug)]
struct Seen {
    /// (type, flags, stream, payload) of each frame.
    frames: Vec<(u8, u8, u32, Vec<u8>)>,
    /// When the agent closed (EOF or reset), after the first frame was read.
    closed: Option<Instant>,
}

impl Seen {
    fn goaway(&self) -> Option<u32> {
        self.frames.iter().find(|f| f.0 == GOAWAY).map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
    }

    fn setting(&self, id: u16) -> Option<u32> {
        let f = self.frames.iter().find(|f| f.0 == SETTINGS && f.1 & 1 == 0)?;
        f.3.chunks(6)
            .find(|c| u16::from_be_bytes([c[0], c[1]]) == id)
            .map(|c| u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
    }
}

/// Reads frames from `s` (bounded by `limit`) until the agent closes it.
/// With `ack`, SETTINGS and PING are acknowledged (a graceful GOAWAY waits for a PING
/// ack); not while another thread writes frames (two writers could interleave).
fn read_frames(mut s: TcpStream, limit: Duration, ack: bool) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let start = Instant::now();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut seen = Seen::default();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        while start.elapsed() < limit {
            match s.read(&mut chunk) {
                Ok(0) => {
                    seen.closed = Some(Instant::now());
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => {
                    seen.closed = Some(Instant::now());
                    break;
                }
            }
            while buf.len() >= 9 {
                let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let (kind, flags, payload) = (buf[3], buf[4], buf[9..9 + len].to_vec());
                if ack && kind == SETTINGS && flags & ACK == 0 {
                    let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[]));
                } else if ack && kind == PING && flags & ACK == 0 {
                    let _ = s.write_all(&frame(PING, ACK, 0, &payload));
                }
                seen.frames.push((kind, flags, stream, payload));
                buf.drain(..9 + len);
            }
        }
        seen
    })
}

/// Sends HTTP/1.1 requests to f.test/second every 20 ms until `stop`; returns the
/// slowest answer and the failures.
fn keep_asking(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Duration, Vec<String>, usize)> {
    std::thread::spawn(move || {
        let (mut slowest, mut failures, mut served) = (Duration::ZERO, Vec::new(), 0);
        let start = Instant::now();
        while !stop.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(30) {
            let t = Instant::now();
            match client::send(addr, &H1::get("f.test", "/second"), Duration::from_secs(5)) {
                Ok(r) if r.status == 200 => served += 1,
                Ok(r) => failures.push(format!("status {}", r.status)),
                Err(e) => failures.push(e.to_string()),
            }
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        (slowest, failures, served)
    })
}

/// An h2 request on a new connection, answered in time.
fn h2_still_served(t: &H2Setup) {
    let addr = t.s.client.addr;
    let r = t.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            let client = connect(addr).await;
            h2_send(&client, get("http://h2.test/after"), b"", None).await
        })
        .await
    });
    assert_eq!(r.expect("in time").expect("answered").status, 200);
}

#[test]
fn a_rapid_reset_flood_gets_goaway_while_other_clients_are_served() {
    let t = setup("h2-reset");
    let addr = t.s.client.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let asking = keep_asking(addr, stop.clone());

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let reader = read_frames(s.try_clone().unwrap(), Duration::from_secs(15), false);
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    // HEADERS then RST_STREAM(CANCEL), 5000 times, in batches of 100
    let block = request_block("h2.test", "/flood");
    let started = Instant::now();
    let (mut sent, mut write_failed) = (0u32, false);
    'flood: for batch in 0..50u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let id = 2 * (batch * 100 + i) + 1;
            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        if s.write_all(&bytes).is_err() {
            write_failed = true;
            break 'flood;
        }
        sent += 100;
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let seen = reader.join().unwrap();
    // the other client goes on for a while after the flood, too
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()).max(Duration::from_millis(300)));
    stop.store(true, Ordering::Release);
    let (slowest, failures, served) = asking.join().unwrap();

    assert_eq!(seen.setting(0x3), Some(100), "SETTINGS_MAX_CONCURRENT_STREAMS advertised");
    assert_eq!(seen.setting(0x6), Some(64 * 1024), "SETTINGS_MAX_HEADER_LIST_SIZE advertised");
    let code =
        seen.goaway().unwrap_or_else(|| panic!("no GOAWAY after {sent} reset streams (write failed: {write_failed})"));
    // ENHANCE_YOUR_CALM from h2 (streams reset before accepted), or NO_ERROR from the
    // proxy's own budget of cancelled streams (then counted in h2_reset_floods)
    let floods = t.s.agent.stats().proxy.h2_reset_floods;
    assert!(code == 0xb || (code == 0 && floods == 1), "GOAWAY {code:#x}, reset floods counted {floods}");
    assert!(seen.closed.is_some(), "the flooding connection was closed");
    assert!(failures.is_empty(), "the other client failed during the flood: {failures:?}");
    assert!(served >= 3, "the other client was served during the flood ({served})");
    assert!(slowest < Duration::from_secs(2), "the other client waited {slowest:?}");
    h2_still_served(&t);
    eprintln!(
        "rapid reset: {sent} HEADERS+RST_STREAM sent, GOAWAY {code:#x}, other client {served} answers, slowest {slowest:?}"
    );
}

#[test]
fn a_continuation_flood_is_closed_at_the_header_limit() {
    let t = setup("h2-cont");
    let addr = t.s.client.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let asking = keep_asking(addr, stop.clone());

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let reader = read_frames(s.try_clone().unwrap(), Duration::from_secs(15), false);
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    // HEADERS without END_HEADERS: a literal header whose value says 16 MiB, then
    // CONTINUATION frames of 16 KiB without END_HEADERS, up to 2000 of them (32 MiB)
    let mut block = request_block("h2.test", "/cont");
    block.extend_from_slice(&[0x00, 0x01, b'x', 0x7f]); // new name "x", value length 127 + ...
    let mut rest = (16u32 << 20) - 127;
    while rest >= 0x80 {
        block.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    block.push(rest as u8);
    s.write_all(&frame(HEADERS, END_STREAM, 1, &block)).unwrap();
    let filler = frame(CONTINUATION, 0, 1, &[b'a'; 16384]);
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 2000 && started.elapsed() < Duration::from_secs(10) {
        if s.write_all(&filler).is_err() {
            break;
        }
        sent += 1;
    }
    let seen = reader.join().unwrap();
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()).max(Duration::from_millis(300)));
    stop.store(true, Ordering::Release);
    let (slowest, failures, served) = asking.join().unwrap();

    let code = seen.goaway().unwrap_or_else(|| panic!("no GOAWAY after {sent} CONTINUATION frames"));
    assert!(code == 0xb || code == 0x9, "GOAWAY ENHANCE_YOUR_CALM or COMPRESSION_ERROR, got {code:#x}");
    assert!(seen.closed.is_some(), "the flooding connection was closed");
    assert!(sent < 2000, "the agent kept reading all {sent} CONTINUATION frames");
    assert!(failures.is_empty(), "the other client failed during the flood: {failures:?}");
    assert!(served >= 1 && slowest < Duration::from_secs(2), "{served} answers, slowest {slowest:?}");
    h2_still_served(&t);
    eprintln!("continuation flood: {sent} frames written before the close, GOAWAY {code:#x}");
}

#[test]
fn shutdown_sends_goaway_and_finishes_the_open_stream() {
    let t = setup("h2-goaway");
    let addr = t.s.client.addr;
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    let reader = read_frames(s.try_clone().unwrap(), Duration::from_secs(10), true);
    std::thread::sleep(Duration::from_millis(100)); // the reader's SETTINGS ack first
    // one request to an HTTP/1.1 pod that answers after 700 ms, then SIGTERM
    let mut block = request_block("f.test", "/second");
    let name = b"x-echo-sleep-ms"; // a literal header with a new name
    block.extend_from_slice(&[0x00, name.len() as u8]);
    block.extend_from_slice(name);
    block.extend_from_slice(&[3, b'7', b'0', b'0']);
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    t.s.agent.terminate_async();
    let seen = reader.join().unwrap();
    let goaway = seen.frames.iter().position(|f| f.0 == GOAWAY).expect("GOAWAY on shutdown");
    let answer = seen.frames.iter().position(|f| f.0 == HEADERS && f.2 == 1).expect("the open stream was answered");
    assert!(
        goaway < answer,
        "GOAWAY first, then the in-flight answer: {:?}",
        seen.frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    let status = &seen.frames[answer].3;
    assert_eq!(status.first(), Some(&0x88), "HPACK :status 200 (static index 8)");
    assert!(seen.closed.is_some(), "closed after the stream finished");
}

#[test]
fn an_idle_h2_connection_is_one_connection_under_the_per_source_cap() {
    let t = setup_with("h2-cap", &["--max-connections-per-source", "1"]);
    let addr = t.s.client.addr;
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    let reader = read_frames(s.try_clone().unwrap(), Duration::from_secs(8), true);
    std::thread::sleep(Duration::from_millis(100));
    // three streams on it, answered; then it is idle
    for id in [1, 3, 5] {
        s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, id, &request_block("h2.test", "/cap"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    // a second connection from the same source: the idle h2 one makes room
    let r = client::send(addr, &H1::get("f.test", "/second"), Duration::from_secs(5)).expect("admitted");
    assert_eq!(r.status, 200);
    let seen = reader.join().unwrap();
    let mut answered: Vec<u32> = seen.frames.iter().filter(|f| f.0 == HEADERS).map(|f| f.2).collect();
    answered.dedup(); // an answer's head and its trailers
    answered.sort();
    answered.dedup();
    let answered = answered.iter().filter(|id| [1, 3, 5].contains(*id)).count();
    assert_eq!(answered, 3, "all three streams were served on the one connection");
    assert!(seen.goaway().is_some(), "the evicted h2 connection got GOAWAY");
    assert!(seen.closed.is_some(), "and was closed");
    let p = t.s.agent.stats().proxy;
    assert_eq!((p.connections_evicted, p.connections_refused, p.h2_connections), (1, 0, 1), "{p:?}");
}

/// `--h2-keepalive-interval 1`: the agent PINGs an idle client connection every second
/// (acknowledged PINGs keep it open); without the flag (off by default) it sends none.
#[test]
fn keepalive_pings_only_when_asked_for() {
    let pings = |t: &H2Setup| {
        let mut s = TcpStream::connect(t.s.client.addr).unwrap();
        s.write_all(PREFACE).unwrap();
        s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        let seen = read_frames(s.try_clone().unwrap(), Duration::from_millis(3500), true).join().unwrap();
        let n = seen.frames.iter().filter(|f| f.0 == PING && f.1 & ACK == 0).count();
        (n, seen.closed)
    };
    let t = setup_with("h2-keepalive", &["--h2-keepalive-interval", "1"]);
    let (n, closed) = pings(&t);
    assert!(n >= 2, "PINGs every second over 3.5 s: {n}");
    assert!(closed.is_none(), "an acknowledged PING keeps the connection open");
    drop(t);
    let t = setup("h2-no-keepalive");
    assert_eq!(pings(&t), (0, None), "off by default: no PING, and the connection stays");
}
