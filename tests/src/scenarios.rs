//! The proxy's forwarding scenarios, run in two tiers: on 127.0.0.1 (the unit tier,
//! `tests/scenarios_loopback.rs`) and in the k3d-shaped topology with XDP on the VM's
//! NIC (the netns tier, `tests/scenarios_topology.rs`). Each is a function of a
//! [`Setup`]; [`scenario_tests!`](crate::scenario_tests) is the one list of them,
//! so a scenario added here is a test in both tiers.

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::Echo;
use crate::client::{Request, read_counting, read_response, read_until_closed, send};
use crate::proxy_setup::Setup;

/// One `#[test]` per scenario, each on the setup `$setup(test name, tag)` makes
/// (None: the setup recorded why it skips). The tag is short and unique per
/// scenario: it names the temporary directory and the topology's namespaces.
#[macro_export]
macro_rules! scenario_tests {
    ($setup:expr) => {
        $crate::scenario_tests!(@each $setup;
            one_keep_alive_connection_routes_every_request_on_its_own: "ka",
            a_gibibyte_streams_both_ways_with_bounded_agent_memory: "gib",
            a_pod_dying_mid_response_fails_only_that_request: "die",
            an_endpoint_removed_under_load_fails_no_request: "rm",
        );
    };
    (@each $setup:expr; $($name:ident: $tag:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let setup: fn(&str, &str) -> Option<$crate::proxy_setup::Setup> = $setup;
                if let Some(s) = setup(stringify!($name), $tag) {
                    $crate::scenarios::$name(&s);
                }
            }
        )*
    };
}

pub fn one_keep_alive_connection_routes_every_request_on_its_own(s: &Setup) {
    let c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // rewrite on the 1st, 2nd and 3rd request; different backends in between;
    // the last three pipelined (sent before any answer is read) and answered in order
    let mut seen = Vec::new();
    for path in ["/api/a", "/api/b", "/second/x", "/api/c"] {
        w.write_all(&Request::get("f.test", path).to_bytes()).unwrap();
        let echo = read_response(&mut r, false).unwrap().json::<Echo>();
        seen.push((echo.pod, echo.path));
    }
    let seen: Vec<(&str, &str)> = seen.iter().map(|(p, q)| (p.as_str(), q.as_str())).collect();
    assert_eq!(
        seen,
        [("pod-main", "/v2/a"), ("pod-main", "/v2/b"), ("pod-second", "/second/x"), ("pod-main", "/v2/c")]
    );
    for path in ["/api/1", "/api/2", "/api/3"] {
        w.write_all(&Request::get("f.test", path).to_bytes()).unwrap();
    }
    let pipelined: Vec<String> = (0..3).map(|_| read_response(&mut r, false).unwrap().json::<Echo>().path).collect();
    assert_eq!(pipelined, ["/v2/1", "/v2/2", "/v2/3"]);
}

pub fn a_gibibyte_streams_both_ways_with_bounded_agent_memory(s: &Setup) {
    const GIB: u64 = 1 << 30;
    // the agent's own peak before any byte streams (its code and tables): what the
    // streams add on top is what must stay bounded, whatever the binary's size
    let before = s.agent.peak_rss_kib().expect("agent RSS");
    let c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // chunked upload of 1 GiB in 1 MiB chunks
    w.write_all(b"POST /api/upload HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..(GIB >> 20) {
        write!(w, "{:x}\r\n", chunk.len()).unwrap();
        w.write_all(&chunk).unwrap();
        w.write_all(b"\r\n").unwrap();
    }
    w.write_all(b"0\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json::<Echo>().body_len as u64, GIB, "the whole chunked upload reached the pod");
    // 1 GiB chunked download, then 1 GiB with Content-Length, same connection
    for chunked in [true, false] {
        let mut req = Request::get("f.test", "/api/download").header("x-echo-bytes", &GIB.to_string());
        if chunked {
            req = req.header("x-echo-chunked", "1");
        }
        w.write_all(&req.to_bytes()).unwrap();
        let got = read_counting(&mut r).unwrap_or_else(|e| panic!("download chunked={chunked}: {e}"));
        assert_eq!(got, (200, GIB), "download chunked={chunked}");
    }
    let rss = s.agent.peak_rss_kib().expect("agent RSS");
    eprintln!("MEASURED agent peak RSS {before} KiB before, {rss} KiB after 3 GiB streamed through it");
    assert!(
        rss < before + 32 * 1024,
        "agent peak RSS {rss} KiB while 3 GiB streamed through it ({before} KiB before: more than 32 MiB added)"
    );
}

pub fn a_pod_dying_mid_response_fails_only_that_request(s: &Setup) {
    const SIZE: usize = 10_000_000;
    const DIES_AFTER: usize = 1_000_000;
    const LIMIT: Duration = Duration::from_secs(10);
    let c = s.connect();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut w = c.try_clone().unwrap();
    let start = Instant::now();
    w.write_all(
        &Request::get("f.test", "/api/big")
            .header("x-echo-bytes", &SIZE.to_string())
            .header("x-echo-die-after", &DIES_AFTER.to_string())
            .to_bytes(),
    )
    .unwrap();
    // The answer was promised 10 MB: the client must see it end (FIN or RST) soon
    // after the pod's last byte, not wait on a connection that says nothing.
    let mut got = Vec::new();
    let end = read_until_closed(&mut BufReader::new(c), &mut got).unwrap_or_else(|e| {
        panic!("the connection was neither closed nor reset after the pod died ({e}); {} bytes arrived", got.len())
    });
    assert!(start.elapsed() < LIMIT, "closed only after {:?}", start.elapsed());
    let head_len = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or_else(|| {
        panic!("no complete response head before the close: {:?}", String::from_utf8_lossy(&got[..got.len().min(200)]))
    });
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..head_len]));
    let body = got.len() - head_len;
    eprintln!(
        "pod died after {DIES_AFTER} body bytes: the client got {body}, then {end:?}, {:?} after the request",
        start.elapsed()
    );
    assert_eq!(body, DIES_AFTER, "every body byte the pod sent before it died, and no more ({end:?})");
    // everything else is unaffected
    for _ in 0..5 {
        assert_eq!(s.get("/api/ok").status, 200);
    }
}

pub fn an_endpoint_removed_under_load_fails_no_request(s: &Setup) {
    const LOAD_LIMIT: Duration = Duration::from_secs(20);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let client = s.client.clone();
            std::thread::spawn(move || {
                client.within(|| {
                    let (mut ok, mut failed, mut pods) = (0u32, Vec::new(), BTreeSet::new());
                    let deadline = Instant::now() + LOAD_LIMIT;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match send(client.addr, &Request::get("f.test", "/pair"), Duration::from_secs(3)) {
                            Ok(r) if r.status == 200 => {
                                ok += 1;
                                pods.insert(r.json::<Echo>().pod);
                            }
                            other => failed.push(format!("{:?}", other.map(|r| r.status))),
                        }
                    }
                    (ok, failed, pods, stop.load(Ordering::SeqCst))
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.endpoints("pair").len(), 2, "both endpoints of pair before the edit");
    // drop the second endpoint of "pair" while the load runs
    let services = std::fs::read_to_string(s.dir.join("services.yaml")).unwrap();
    let mut docs: Vec<&str> = services.split("---\n").collect();
    let before = docs.len();
    docs.retain(|d| !d.contains("name: pair-1,"));
    assert_eq!(docs.len(), before - 1, "the second slice of pair was found");
    std::fs::write(s.dir.join("services.yaml"), docs.join("---\n")).unwrap();
    // the load goes on until the agent serves the new table, and 500 ms past it
    let edited = Instant::now();
    loop {
        let eps = s.endpoints("pair");
        if eps.len() == 1 {
            break;
        }
        assert!(edited.elapsed() < Duration::from_secs(10), "the endpoint was not removed from the table: {eps:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("endpoint removed from the table {:?} after the edit", edited.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed, mut pods) = (0, Vec::new(), BTreeSet::new());
    for w in workers {
        let (o, f, p, stopped) = w.join().unwrap();
        assert!(stopped, "a worker ran out of time before the reload was seen");
        ok += o;
        failed.extend(f);
        pods.extend(p);
    }
    assert!(failed.is_empty(), "{ok} ok, {} failed: {failed:?}", failed.len());
    assert!(pods.contains("pod-second"), "the second endpoint served before its removal: {pods:?}");
    // after the reload only the first endpoint serves
    for _ in 0..6 {
        assert_eq!(s.get("/pair").json::<Echo>().pod, "pod-main");
    }
}
