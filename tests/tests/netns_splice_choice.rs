//! Network-namespace tier (root): how upgraded (WebSocket) and splice-safe connections
//! are joined to their pod (`--join-mode`). By default (auto) a bulk connection stays
//! spliced through a pipe; after its first exchanges a small-message WebSocket is
//! joined in the kernel and a splice-safe host's small keep-alive answers go on as the
//! plain copy (the kernel join is slower for them); every mechanism carries hashed bulk both ways and 1 MiB answers
//! byte for byte; the choice and its reason show in `/stats`, `ingress stats` and
//! `/metrics`. Topologies `hsp-*`.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ingress::datapath::join_choice::ClassChoices;
use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::Echo;
use ingress_tests::client::{Request, read_response};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::netns::in_ns;
use ingress_tests::pattern::{Fnv, bytes, first_difference};
use ingress_tests::topology::{Topology, VM_IP, VM_NIC};

/// A splice-safe host of the fixtures: one backendRef, no filters.
const SPLICED_HOST: &str = "react-starter-development.openchoreovm-apis.localhost:9080";
/// The fixtures' WebSocket route.
const WS_HOST: &str = "development.openchoreovm-apis.localhost:9080";
const WS_PATH: &str = "/echo-websocket-service/ws";
const MIB: usize = 1 << 20;
/// Every read and write is bounded by this.
const IO_LIMIT: Duration = Duration::from_secs(20);

fn connect() -> TcpStream {
    let s = TcpStream::connect_timeout(&format!("{VM_IP}:9080").parse().unwrap(), IO_LIMIT).expect("connect");
    s.set_read_timeout(Some(IO_LIMIT)).unwrap();
    s.set_write_timeout(Some(IO_LIMIT)).unwrap();
    s
}

/// An upgraded connection: (writer, reader after the 101).
fn upgrade() -> (TcpStream, BufReader<TcpStream>) {
    let s = connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let up = Request::get(WS_HOST, WS_PATH)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    w.write_all(&up.to_bytes()).unwrap();
    let head = read_response(&mut r, true).expect("upgrade answer");
    assert_eq!(head.status, 101);
    (w, r)
}

/// `n` seeded bytes echoed through an upgraded connection, written and read at once,
/// compared byte for byte.
fn ws_bulk(seed: u64, n: usize) {
    let (mut w, mut r) = upgrade();
    let payload = bytes(seed, n);
    let writer = {
        let payload = payload.clone();
        std::thread::spawn(move || {
            w.write_all(&payload).expect("upload");
            w
        })
    };
    let mut back = vec![0u8; n];
    r.read_exact(&mut back).expect("echo");
    drop(writer.join().expect("writer"));
    assert_eq!(first_difference(seed, &back), None, "echo {seed}: {n} bytes differ");
}

/// `rounds` small messages through an upgraded connection, each echoed before the
/// next, then (`then_bulk`) `then_bulk` bytes of bulk on the same connection.
fn ws_small(seed: u64, rounds: usize, then_bulk: usize) {
    let (mut w, mut r) = upgrade();
    for i in 0..rounds {
        let msg = bytes(seed + i as u64, 64 + i % 100);
        w.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        r.read_exact(&mut back).expect("small echo");
        assert!(back == msg, "message {i} differs");
    }
    if then_bulk > 0 {
        let payload = bytes(seed + 1000, then_bulk);
        let writer = {
            let payload = payload.clone();
            std::thread::spawn(move || w.write_all(&payload).map(|_| w))
        };
        let mut back = vec![0u8; then_bulk];
        r.read_exact(&mut back).expect("bulk echo after small messages");
        writer.join().unwrap().expect("bulk upload");
        assert_eq!(first_difference(seed + 1000, &back), None, "bulk after small messages differs");
    }
}

/// One keep-alive connection to the splice-safe host: `small` small GETs, then
/// `big` x (GET 1 MiB seeded, POST 256 KiB seeded), all checked.
fn keepalive(seed: u64, small: usize, big: usize) {
    let s = connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut pods = Vec::new();
    for i in 0..small {
        w.write_all(&Request::get(SPLICED_HOST, &format!("/s{i}")).to_bytes()).unwrap();
        let resp = read_response(&mut r, false).expect("small answer");
        let echo: Echo = resp.json();
        assert_eq!(echo.path, format!("/s{i}"));
        pods.push(echo.pod);
    }
    for i in 0..big {
        let dl = seed * 100 + i as u64 * 2;
        let get = Request::get(SPLICED_HOST, "/download")
            .header("x-echo-bytes", &MIB.to_string())
            .header("x-echo-pattern", &dl.to_string());
        w.write_all(&get.to_bytes()).unwrap();
        let resp = read_response(&mut r, false).expect("1 MiB answer");
        assert_eq!((resp.status, resp.body.len()), (200, MIB), "download {dl}");
        assert_eq!(first_difference(dl, &resp.body), None, "download {dl} differs");
        let mut post = Request::get(SPLICED_HOST, "/upload").method("POST");
        post.body = bytes(dl + 1, 256 << 10);
        w.write_all(&post.to_bytes()).unwrap();
        let echo: Echo = read_response(&mut r, false).expect("upload answer").json();
        assert_eq!((echo.body_len, echo.body_hash), (post.body.len(), Fnv::of(&post.body)), "upload {}", dl + 1);
        pods.push(echo.pod);
    }
    assert!(pods.iter().all(|p| p == &pods[0]), "one joined connection, one pod: {pods:?}");
}

fn agent(topo: &Topology, extra: &[&str]) -> Agent {
    Agent::start(&ingress_bin(), &topo.vm_ns(), &openchoreo_dir(), &openchoreo_listens(VM_IP), extra)
}

/// (kernel, pipe, copied) of a class.
fn mech(c: &ClassChoices) -> (u64, u64, u64) {
    (c.joined_kernel, c.spliced_pipe, c.copied)
}

fn reason(c: &ClassChoices, key: &str) -> u64 {
    c.reasons.get(key).copied().unwrap_or(0)
}

/// Waits (bounded) until no pair is open, so every pair was counted.
fn settle(a: &Agent) -> ingress::telemetry::StatsView {
    let start = std::time::Instant::now();
    loop {
        let s = a.stats();
        if s.splice.joined_active == 0 || start.elapsed() > Duration::from_secs(5) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn auto_joins_small_websocket_messages_in_the_kernel_copies_small_keepalive_and_keeps_bulk_on_the_pipe() {
    let test = "auto_joins_small_websocket_messages_in_the_kernel_copies_small_keepalive_and_keeps_bulk_on_the_pipe";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("hsp-auto", &openchoreo_pods());
    let a = agent(&topo, &["--interface", VM_NIC, "--forwarded-headers", "off"]);
    let ns = topo.client_ns();

    // WebSocket bulk both ways: the pipe, for bulk
    in_ns(&ns, || ws_bulk(1, 8 * MIB));
    let s = settle(&a);
    let up = &s.splice.choice.upgraded;
    assert_eq!(mech(up), (0, 1, 0), "{:?}", s.splice);
    assert_eq!(reason(up, "spliced_pipe:bulk"), 1, "{up:?}");
    assert_eq!(s.splice.kernel_redirected_bytes, 0, "nothing went through the kernel join: {:?}", s.splice);

    // small WebSocket messages: joined in the kernel after the first exchanges; then
    // bulk on the same connection still arrives whole
    let before = a.stats().splice.kernel_redirected_bytes;
    in_ns(&ns, || ws_small(10, 200, 2 * MIB));
    let s = settle(&a);
    let up = &s.splice.choice.upgraded;
    assert_eq!(mech(up), (1, 1, 0), "{:?}", s.splice);
    assert_eq!(reason(up, "joined_kernel:small_messages"), 1, "{up:?}");
    assert!(
        s.splice.kernel_redirected_bytes >= before + 2 * 2 * MIB as u64,
        "the small messages and the bulk after them went through the kernel: {:?}",
        s.splice
    );

    // splice-safe host, 1 MiB answers (and 256 KiB uploads) from the first request: the pipe
    in_ns(&ns, || keepalive(20, 0, 3));
    let s = settle(&a);
    let ss = &s.splice.choice.splice_safe;
    assert_eq!(mech(ss), (0, 1, 0), "{:?}", s.splice);
    assert_eq!(reason(ss, "spliced_pipe:bulk"), 1, "{ss:?}");

    // splice-safe host, small answers: the plain copy (not the kernel join); then 1 MiB
    // answers and uploads on it, byte for byte
    let before = a.stats().splice.kernel_redirected_bytes;
    in_ns(&ns, || keepalive(30, 6, 2));
    let s = settle(&a);
    let ss = &s.splice.choice.splice_safe;
    assert_eq!(mech(ss), (0, 1, 1), "{:?}", s.splice);
    assert_eq!(reason(ss, "copied:small_messages"), 1, "{ss:?}");
    assert_eq!(s.splice.kernel_redirected_bytes, before, "nothing of it went through the kernel join: {:?}", s.splice);
    assert_eq!(s.splice.kernel_layout_mismatches, 0, "{:?}", s.splice);
    assert_eq!(s.splice.copied_in_userspace, 1, "{:?}", s.splice);

    // the choice is visible in `ingress stats` and /metrics
    let table = a.stats_table();
    assert!(
        table.contains(
            "joined upgraded: kernel 1 pipe 1 copied 0 (joined_kernel:small_messages 1, spliced_pipe:bulk 1)"
        ),
        "{table}"
    );
    assert!(
        table.contains("joined splice_safe: kernel 0 pipe 1 copied 1 (copied:small_messages 1, spliced_pipe:bulk 1)"),
        "{table}"
    );
    let (_, metrics) = a.admin_get("/metrics").expect("/metrics");
    for line in [
        r#"ingress_join_choices_total{class="upgraded",mechanism="spliced_pipe",reason="bulk"} 1"#,
        r#"ingress_join_choices_total{class="upgraded",mechanism="joined_kernel",reason="small_messages"} 1"#,
        r#"ingress_join_choices_total{class="splice_safe",mechanism="copied",reason="small_messages"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in /metrics:\n{metrics}");
    }
    println!("{table}");
    a.stop();
}

#[test]
fn every_join_mode_carries_bulk_both_ways_and_1_mib_answers_byte_for_byte() {
    let test = "every_join_mode_carries_bulk_both_ways_and_1_mib_answers_byte_for_byte";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("hsp-mode", &openchoreo_pods());
    let ns = topo.client_ns();
    for (mode, want, key) in [
        ("kernel", (1, 0, 0), "joined_kernel:forced"),
        ("pipe", (0, 1, 0), "spliced_pipe:forced"),
        ("copy", (0, 0, 1), "copied:forced"),
    ] {
        let a = agent(&topo, &["--interface", VM_NIC, "--forwarded-headers", "off", "--join-mode", mode]);
        in_ns(&ns, || ws_bulk(40, 4 * MIB));
        in_ns(&ns, || ws_small(41, 20, 0));
        in_ns(&ns, || keepalive(42, 2, 2));
        let s = settle(&a);
        let (up, ss) = (&s.splice.choice.upgraded, &s.splice.choice.splice_safe);
        let twice = (want.0 * 2, want.1 * 2, want.2 * 2);
        assert_eq!((mech(up), mech(ss)), (twice, want), "--join-mode {mode}: {:?}", s.splice);
        assert_eq!((reason(up, key), reason(ss, key)), (2, 1), "--join-mode {mode}: {:?}", s.splice.choice);
        // only the kernel mode moves bytes in the kernel
        assert_eq!(s.splice.kernel_redirected_bytes > 0, mode == "kernel", "--join-mode {mode}: {:?}", s.splice);
        a.stop();
    }
    // the userspace dataplane copies by default, and says why
    let a = agent(&topo, &["--dataplane", "userspace", "--forwarded-headers", "off"]);
    in_ns(&ns, || ws_bulk(50, 2 * MIB));
    let s = settle(&a);
    assert_eq!(mech(&s.splice.choice.upgraded), (0, 0, 1), "{:?}", s.splice);
    assert_eq!(reason(&s.splice.choice.upgraded, "copied:no_sockmap"), 1);
    a.stop();
}
