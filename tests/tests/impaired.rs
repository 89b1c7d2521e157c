//! Network-namespace tier (root): connections the agent joins in the kernel (a
//! splice-safe host's whole connection, and WebSocket upgrades) keep every byte in
//! order when the links lose, reorder and duplicate packets. The client's egress and
//! the node's egress towards the VM (the pods' answers) go through the NFQUEUE
//! impairment of `ingress_tests::impair`; the pod network has flannel's 1450 MTU.
//! Bodies are seeded byte streams, hashed at both ends.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::Echo;
use ingress_tests::client::{Request, read_response};
use ingress_tests::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use ingress_tests::impair::{ImpairCounts, ImpairedLink, Impairment};
use ingress_tests::netns::enter;
use ingress_tests::pattern::{Fnv, bytes, first_difference};
use ingress_tests::topology::{Topology, VM_IP, VM_NIC};

/// A splice-safe host of the fixtures: one backendRef, no filters.
const SPLICED_HOST: &str = "react-starter-development.openchoreovm-apis.localhost:9080";
/// The fixtures' WebSocket route.
const WS_HOST: &str = "development.openchoreovm-apis.localhost:9080";
const WS_PATH: &str = "/echo-websocket-service/ws";

const DOWNLOAD: usize = 1 << 20;
const UPLOAD: usize = 256 << 10;
const ECHO: usize = 512 << 10;
/// Every read and write is bounded by this; a stuck transfer fails the test.
const IO_LIMIT: Duration = Duration::from_secs(30);

/// What one workload saw: transfers done, and each one that failed, with why.
#[derive(Default, Debug)]
struct Tally {
    uploads: usize,
    downloads: usize,
    echoes: usize,
    bad: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.uploads += o.uploads;
        self.downloads += o.downloads;
        self.echoes += o.echoes;
        self.bad.extend(o.bad);
    }
}

fn connect() -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&format!("{VM_IP}:9080").parse().unwrap(), IO_LIMIT)?;
    s.set_read_timeout(Some(IO_LIMIT))?;
    s.set_write_timeout(Some(IO_LIMIT))?;
    Ok(s)
}

/// One keep-alive connection to the splice-safe host: `rounds` x (GET 1 MiB, POST 256 KiB).
fn keepalive(seed: u64, rounds: usize, t: &mut Tally) -> std::io::Result<()> {
    let s = connect()?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    for round in 0..rounds {
        let dl_seed = seed * 1000 + round as u64 * 2;
        let get = Request::get(SPLICED_HOST, "/download")
            .header("x-echo-bytes", &DOWNLOAD.to_string())
            .header("x-echo-pattern", &dl_seed.to_string());
        w.write_all(&get.to_bytes())?;
        let resp = read_response(&mut r, false)?;
        t.downloads += 1;
        if resp.status != 200 || resp.body.len() != DOWNLOAD {
            t.bad.push(format!("download {dl_seed}: status {} with {} bytes", resp.status, resp.body.len()));
        } else if let Some((at, from)) = first_difference(dl_seed, &resp.body) {
            t.bad.push(format!("download {dl_seed}: differs from byte {at} on (those sent at {from:?})"));
        }
        let up_seed = dl_seed + 1;
        let mut post = Request::get(SPLICED_HOST, "/upload").method("POST");
        post.body = bytes(up_seed, UPLOAD);
        w.write_all(&post.to_bytes())?;
        let resp = read_response(&mut r, false)?;
        t.uploads += 1;
        let echo: Echo = serde_json::from_slice(&resp.body).map_err(std::io::Error::other)?;
        if echo.body_len != UPLOAD || echo.body_hash != Fnv::of(&post.body) {
            t.bad.push(format!(
                "upload {up_seed}: the pod got {} bytes, hash differs: {}",
                echo.body_len,
                echo.body_hash != Fnv::of(&post.body)
            ));
        }
    }
    Ok(())
}

/// One WebSocket-style upgraded connection echoing `ECHO` bytes.
fn upgraded(seed: u64, t: &mut Tally) -> std::io::Result<()> {
    let s = connect()?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let up = Request::get(WS_HOST, WS_PATH)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    w.write_all(&up.to_bytes())?;
    let head = read_response(&mut r, true)?;
    if head.status != 101 {
        t.bad.push(format!("upgrade {seed}: status {}", head.status));
        return Ok(());
    }
    let payload = bytes(seed, ECHO);
    let writer = {
        let payload = payload.clone();
        std::thread::spawn(move || w.write_all(&payload))
    };
    let mut back = vec![0u8; ECHO];
    let read = r.read_exact(&mut back);
    let wrote = writer.join().expect("writer thread");
    t.echoes += 1;
    read?;
    wrote?;
    if let Some((at, from)) = first_difference(seed, &back) {
        t.bad.push(format!("echo {seed}: differs from byte {at} on (those sent at {from:?})"));
    }
    Ok(())
}

/// `conns` keep-alive connections and `ws` upgraded ones at once, from the client namespace.
fn workload(topo: &Topology, seed: u64, conns: usize, rounds: usize, ws: usize) -> Tally {
    let client = format!("/run/netns/{}", topo.client_ns());
    let mut total = Tally::default();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..conns + ws {
            let client = client.clone();
            handles.push(s.spawn(move || {
                enter(&client);
                let mut t = Tally::default();
                let conn_seed = seed * 100 + i as u64;
                let res = if i < conns { keepalive(conn_seed, rounds, &mut t) } else { upgraded(conn_seed, &mut t) };
                if let Err(e) = res {
                    t.bad.push(format!("connection {conn_seed}: {e}"));
                }
                t
            }));
        }
        for h in handles {
            total.add(h.join().expect("workload thread"));
        }
    });
    total
}

#[test]
fn joined_connections_keep_every_byte_on_impaired_links() {
    let test = "joined_connections_keep_every_byte_on_impaired_links";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let topo = Topology::create("ingt-imp", &openchoreo_pods());
    topo.set_pod_mtu(1450);
    let agent = Agent::start(
        &ingress_bin(),
        &topo.vm_ns(),
        &openchoreo_dir(),
        &openchoreo_listens(VM_IP),
        // every connection joined in the kernel (auto would keep this bulk on a pipe)
        &["--interface", VM_NIC, "--forwarded-headers", "off", "--join-mode", "kernel"],
    );
    // unimpaired first: the workload itself is right
    let clean = workload(&topo, 1, 4, 1, 2);
    assert!(clean.bad.is_empty(), "without impairment: {:#?}", clean.bad);
    let mut report = Vec::new();
    let mut failed = false;
    for (k, (name, imp)) in Impairment::presets(42).into_iter().enumerate() {
        let before = agent.stats().splice;
        let started = Instant::now();
        let up = ImpairedLink::start(&topo.client_ns(), "eth0", 1, imp);
        let down = ImpairedLink::start(&topo.node_ns(), "eth0", 2, Impairment { seed: imp.seed + 1, ..imp });
        let t = workload(&topo, 10 + k as u64, 12, 2, 6);
        let (up, down): (ImpairCounts, ImpairCounts) = (up.stop(), down.stop());
        let after = agent.stats().splice;
        let line = format!(
            "{name}: {} uploads, {} downloads, {} echoes, {} bad in {:.1} s; joined {} (in the kernel {}, copied {}); \
             overlapping bytes cut in the kernel {}, directions taken over {}; client link {up:?}; pod link {down:?}",
            t.uploads,
            t.downloads,
            t.echoes,
            t.bad.len(),
            started.elapsed().as_secs_f64(),
            after.joined_total - before.joined_total,
            after.kernel_redirected_skbs > before.kernel_redirected_skbs,
            after.copied_in_userspace - before.copied_in_userspace,
            after.kernel_trimmed_bytes - before.kernel_trimmed_bytes,
            after.taken_over - before.taken_over,
        );
        assert_eq!(after.kernel_layout_mismatches, 0, "the verdict program reads the TCP control block: {after:?}");
        eprintln!("{line}");
        for b in &t.bad {
            eprintln!("  {b}");
        }
        // the impairment did what it says, on both links
        for (link, c) in [("client", up), ("pod", down)] {
            assert!(c.seen > 1000, "{name}: the {link} link saw {c:?}");
            assert_eq!(c.dropped > 0, imp.loss > 0.0, "{name}: {link} link {c:?}");
            assert_eq!(c.delayed > 0, imp.reorder > 0.0, "{name}: {link} link {c:?}");
            assert_eq!(c.duplicated > 0, imp.duplicate > 0.0, "{name}: {link} link {c:?}");
        }
        // every transfer ran, on connections that were all joined (12 spliced + 6 upgraded)
        let ran = (t.uploads, t.downloads, t.echoes) == (24, 24, 6);
        let joined = after.joined_total - before.joined_total == 18;
        failed |= !t.bad.is_empty() || !ran || !joined;
        report.push(line);
    }
    agent.stop();
    assert!(!failed, "bytes differ on joined connections:\n{}", report.join("\n"));
}
