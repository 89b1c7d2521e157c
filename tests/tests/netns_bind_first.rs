//! Netns tier for delayed binding's kernel pieces end to end (not the agent: the test
//! loads the object and attaches the programs itself; `netns_kernel_bind.rs` has the agent do it).
//! Three namespaces of this test's own (`hbd-c` client, `hbd-v` the VM, `hbd-p` a pod),
//! veth pairs between them:
//!
//! ```text
//! hbd-c c0 198.18.0.1/24 -- hbd-v eth0 198.18.0.2/24 (XDP syncookie_xdp, tc bind_first)
//!                           hbd-v p0 10.42.0.1/24 (tc l4_reply) -- hbd-p eth0 10.42.0.7/24 (tc pod_bind)
//! ```
//!
//! A real client's connection to 198.18.0.2:8080 gets the cookie SYN-ACK from XDP; its
//! first data segment either binds (host `app.example`: DNAT to the pod, whose socket
//! the kernel makes from that segment with `bpf_sk_assign_tcp_reqsk`; the pod's server
//! reads the requests byte-exact and answers 1 MiB, checked by hash, on a keep-alive
//! connection; the agent's listener sees nothing) or falls back (another host: the
//! kfunc makes the agent listener's socket from the segment; it reads the head
//! byte-exact and answers). Every socket has a timeout; traffic stays in the namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use aya::maps::HashMap;
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use ingress::datapath as ebpf;
use ingress::datapath::syncookie::SynCookieMaps;
use ingress_common::bind::{BindBackend, BindEndpoint, BindTarget};
use ingress_common::first_segment::{FIRST_BOUND, FIRST_FALLBACK};
use ingress_common::head::BindHostKey;
use ingress_common::maps::{
    BIND_BACKENDS_MAP, BIND_FIRST_PROGRAM, BIND_HOSTS_MAP, L4_REPLY_PROGRAM, POD_BIND_NEEDS, POD_BIND_PROGRAM,
    POD_BIND_SINCE, SYNCOOKIE_PROGRAM,
};
use ingress_common::syncookie::SynCookieConfig;
use ingress_tests::netns::{in_ns, ip, ip_quiet, sysctl};

const C: &str = "hbd-c";
const V: &str = "hbd-v";
const P: &str = "hbd-p";
const PORT: u16 = 8080;
const POD_PORT: u16 = 8000;
const TIMEOUT: Duration = Duration::from_secs(5);

struct Topo;

impl Topo {
    fn new() -> Self {
        Self::clean();
        for ns in [C, V, P] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", C, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", V]);
        ip(&["-n", V, "link", "add", "p0", "type", "veth", "peer", "name", "eth0", "netns", P]);
        ip(&["-n", C, "addr", "add", "198.18.0.1/24", "dev", "c0"]);
        ip(&["-n", V, "addr", "add", "198.18.0.2/24", "dev", "eth0"]);
        ip(&["-n", V, "addr", "add", "10.42.0.1/24", "dev", "p0"]);
        ip(&["-n", P, "addr", "add", "10.42.0.7/24", "dev", "eth0"]);
        for (ns, dev) in [(C, "c0"), (V, "eth0"), (V, "p0"), (P, "eth0")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", P, "route", "add", "default", "via", "10.42.0.1"]);
        sysctl(V, "net/ipv4/ip_forward", "1");
        Topo
    }

    fn clean() {
        for ns in [C, V, P] {
            ip_quiet(&["netns", "del", ns]);
        }
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        Self::clean();
    }
}

fn cfg() -> SynCookieConfig {
    SynCookieConfig {
        keys: [ebpf::syncookie::random_key().expect("random key"), ebpf::syncookie::random_key().expect("random key")],
        current: 0,
        path_mss: 1460,
        rcv_wscale: 7,
        window: 64240,
        ..Default::default()
    }
}

/// Loads the object, configures the cookie and the bindable host, attaches the programs.
fn dataplane(test: &str) -> (ebpf::Dataplane, SynCookieMaps) {
    let mut d = match std::env::var_os("BIND_FIRST_OBJECT") {
        Some(p) => ebpf::load_from(&std::fs::read(&p).expect("BIND_FIRST_OBJECT")),
        None => ebpf::load(),
    }
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    d.syncookie_program_fd().unwrap_or_else(|e| panic!("{test}: {e}"));
    d.bind_first_program_fd().unwrap_or_else(|e| panic!("{test}: {e}"));
    d.kfunc_tc_program_fd(POD_BIND_PROGRAM, POD_BIND_NEEDS, POD_BIND_SINCE).unwrap_or_else(|e| panic!("{test}: {e}"));
    d.tc_program_fd(L4_REPLY_PROGRAM).unwrap_or_else(|e| panic!("{test}: {e}"));
    let mut maps = SynCookieMaps::take(&mut d.ebpf).expect("cookie maps");
    maps.set_config(&cfg()).expect("config");
    maps.add_target("198.18.0.2".parse().unwrap(), PORT).expect("target");
    {
        let mut hosts: HashMap<_, BindHostKey, BindTarget> =
            HashMap::try_from(d.ebpf.map_mut(BIND_HOSTS_MAP).expect("BIND_HOSTS")).expect("hash");
        hosts.insert(BindHostKey::new(PORT, b"app.example").unwrap(), BindTarget { backend: 1, _pad: 0 }, 0).unwrap();
        let mut backends: HashMap<_, u32, BindBackend> =
            HashMap::try_from(d.ebpf.map_mut(BIND_BACKENDS_MAP).expect("BIND_BACKENDS")).expect("hash");
        let mut b = BindBackend { count: 1, ..Default::default() };
        b.endpoints[0] = BindEndpoint { addr: u32::from_ne_bytes([10, 42, 0, 7]), port: POD_PORT, _pad: 0 };
        backends.insert(1, b, 0).unwrap();
    }
    in_ns(V, || {
        let x: &mut Xdp = d.ebpf.program_mut(SYNCOOKIE_PROGRAM).unwrap().try_into().unwrap();
        x.attach("eth0", XdpMode::Skb).expect("XDP on hbd-v eth0");
        let t: &mut SchedClassifier = d.ebpf.program_mut(BIND_FIRST_PROGRAM).unwrap().try_into().unwrap();
        t.attach("eth0", TcAttachType::Ingress).expect("bind_first on hbd-v eth0");
        let r: &mut SchedClassifier = d.ebpf.program_mut(L4_REPLY_PROGRAM).unwrap().try_into().unwrap();
        r.attach("p0", TcAttachType::Ingress).expect("l4_reply on hbd-v p0");
    });
    in_ns(P, || {
        let t: &mut SchedClassifier = d.ebpf.program_mut(POD_BIND_PROGRAM).unwrap().try_into().unwrap();
        t.attach("eth0", TcAttachType::Ingress).expect("pod_bind on hbd-p eth0");
    });
    (d, maps)
}

/// Accepts one connection within [`TIMEOUT`] (never hangs a failing test).
fn accept_within(l: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    l.set_nonblocking(true).unwrap();
    let end = std::time::Instant::now() + TIMEOUT;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.set_write_timeout(Some(TIMEOUT)).unwrap();
                return (s, peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{what}: no connection within {TIMEOUT:?}: {e}"),
        }
    }
}

fn listen(ns: &str, port: u16) -> TcpListener {
    in_ns(ns, || TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("listen in {ns}: {e}")))
}

fn connect() -> TcpStream {
    let addr: SocketAddr = ([198, 18, 0, 2], PORT).into();
    let s = in_ns(C, || TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect from hbd-c"));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Reads a request head (to the blank line) and then `body` more bytes.
fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert!(got.len() < 16384, "head too long");
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => got.push(b[0]),
            Err(e) => panic!("reading the request: {e} (after {:?})", String::from_utf8_lossy(&got)),
        }
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    if let Some(n) = text.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|v| v.parse().ok()) {
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).expect("the request body");
        got.extend_from_slice(&body);
    }
    got
}

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn response(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

fn read_response(s: &mut TcpStream, len: usize) -> Vec<u8> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
    let mut got = vec![0u8; head.len() + len];
    s.read_exact(&mut got).expect("the whole response");
    assert_eq!(&got[..head.len()], head.as_bytes(), "the response head");
    got.split_off(head.len())
}

fn require(test: &str) -> bool {
    ingress_tests::require_root(test)
        && ingress_tests::require_ebpf_object(test)
        && match ebpf::kfunc::kernel_has_functions(POD_BIND_NEEDS) {
            Some(v) if v.iter().all(|b| *b) => true,
            _ => {
                ingress_tests::skip(test, "this kernel lacks bpf_sk_assign_tcp_reqsk (Linux 6.11+ with BTF)");
                false
            }
        }
}

#[test]
fn a_bindable_hosts_connection_is_served_by_the_pod_through_the_kernel_and_others_by_the_agent() {
    let test = "a_bindable_hosts_connection_is_served_by_the_pod_through_the_kernel_and_others_by_the_agent";
    if !require(test) {
        return;
    }
    let _topo = Topo::new();
    let (d, _maps) = dataplane(test);
    let agent = listen(V, PORT);
    agent.set_nonblocking(true).unwrap();
    let pod = listen(P, POD_PORT);

    // bound: two requests on one keep-alive connection, 1 MiB answers, a 64 KiB upload
    let requests: Vec<Vec<u8>> = vec![b"GET /one HTTP/1.1\r\nHost: app.example\r\nUser-Agent: hbd\r\n\r\n".to_vec(), {
        let mut r = b"POST /two HTTP/1.1\r\nHost: app.example\r\nContent-Length: 65536\r\n\r\n".to_vec();
        r.extend_from_slice(&pattern(7, 65536));
        r
    }];
    let answers = [pattern(1, 1 << 20), pattern(2, 1 << 20)];
    let pod_side = {
        let requests = requests.clone();
        let answers = answers.clone();
        std::thread::spawn(move || {
            let (mut s, peer) = accept_within(&pod, "the pod");
            let mut seen = Vec::new();
            for a in &answers {
                seen.push(read_request(&mut s));
                s.write_all(&response(a)).expect("the pod answers");
            }
            assert_eq!(seen, requests, "the pod got the client's bytes unchanged");
            peer
        })
    };
    let mut c = connect();
    for (r, a) in requests.iter().zip(&answers) {
        c.write_all(r).expect("the client sends");
        assert!(read_response(&mut c, a.len()) == *a, "the pod's answer reached the client byte-exact");
    }
    let peer = pod_side.join().expect("pod side");
    assert_eq!(peer.ip().to_string(), "198.18.0.1", "the pod sees the client's address");
    assert!(agent.accept().is_err(), "the agent's listener saw nothing of the bound connection");
    drop(c);
    let counts = d.bind_first_counts().unwrap();
    assert!(counts[FIRST_BOUND as usize] >= 1, "{counts:?}");

    // another host: the agent's listener gets the connection, made from the first segment
    let head = b"GET /x HTTP/1.1\r\nHost: other.example\r\n\r\n".to_vec();
    let agent_side = {
        let head = head.clone();
        std::thread::spawn(move || {
            let (mut s, _) = accept_within(&agent, "the agent");
            assert_eq!(read_request(&mut s), head, "the agent got the head unchanged");
            s.write_all(&response(b"agent")).unwrap();
        })
    };
    let mut c = connect();
    c.write_all(&head).unwrap();
    assert_eq!(read_response(&mut c, 5), b"agent");
    agent_side.join().expect("agent side");
    let counts = d.bind_first_counts().unwrap();
    assert!(counts[FIRST_FALLBACK as usize] >= 1, "{counts:?}");
    println!("bind_first counts: {counts:?}");
}
