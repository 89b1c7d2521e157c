//! The L7 worker set (`--workers`, `proxy/workers.rs`) end to end, on 127.0.0.1 (no
//! privileges): every worker accepts (connections spread over their SO_REUSEPORT
//! sockets, seen in `/stats` `proxy.workers`), `--max-connections-per-source` counts a
//! source's connections over all workers, a SIGHUP that adds a listen address opens
//! it on every worker (and a changed `workers` key waits for a restart), and a bad
//! `--workers` is refused with a message naming it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::Backend;
use ingress_tests::client::{Request, read_response, read_until_closed, send};
use ingress_tests::free_port;
use ingress_tests::proxy_setup::{ConfigDir, Setup};

/// Connections accepted by each worker.
fn accepted(agent: &Agent) -> Vec<u64> {
    agent.stats().proxy.workers
}

/// Requests the agent has begun and not answered.
fn in_flight(agent: &Agent) -> u64 {
    let p = agent.stats().proxy;
    p.requests - (p.responses_2xx + p.responses_3xx + p.responses_4xx + p.responses_5xx)
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` connections to `addr`, one request each for `/api/x` (answered 200), closed in turn.
fn one_request_each(addr: SocketAddr, host: &str, n: usize) {
    for i in 0..n {
        let r = send(addr, &Request::get(host, "/api/x"), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("request {i} to {addr}: {e}"));
        assert_eq!(r.status, 200, "request {i}");
    }
}

#[test]
fn every_worker_accepts_and_the_per_source_cap_counts_across_workers() {
    let s = Setup::local_with("workers-cap", &["--workers", "2", "--max-connections-per-source", "2"]);
    assert_eq!(accepted(&s.agent), [0, 0], "two workers, nothing accepted yet");

    // 64 connections (distinct source ports): the kernel's 4-tuple hash gives each
    // worker some (all on one has a chance of 2^-63)
    one_request_each(s.client.addr, "f.test", 64);
    let by_worker = accepted(&s.agent);
    assert_eq!(by_worker.iter().sum::<u64>(), 64, "{by_worker:?}");
    assert!(by_worker.iter().all(|&n| n > 0), "a worker accepted nothing: {by_worker:?}");
    wait_until("the 64 connections closed", Duration::from_secs(5), || s.agent.stats().proxy.connections_active == 0);

    // two busy connections from 127.0.0.1, one on each worker: a connection that lands
    // on the worker already holding one is closed and another one tried
    let busy = |c: &mut TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&Request::get("f.test", "/api/busy").header("x-echo-sleep-ms", "3000").to_bytes()).unwrap();
    };
    let mut held: Vec<(TcpStream, usize)> = Vec::new();
    for attempt in 0.. {
        assert!(attempt < 200, "no connection reached the second worker in 200 tries");
        let before = accepted(&s.agent);
        let mut c = s.connect();
        // proven accepted: a request answered
        c.write_all(&Request::get("f.test", "/api/probe").to_bytes()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        assert_eq!(read_response(&mut r, false).unwrap().status, 200);
        let after = accepted(&s.agent);
        let worker = (0..after.len()).find(|&w| after[w] > before[w]).expect("one worker accepted it");
        if held.iter().any(|(_, w)| *w == worker) {
            drop((r, c));
            wait_until("the extra connection closed", Duration::from_secs(5), || {
                s.agent.stats().proxy.connections_active == held.len() as u64
            });
            continue;
        }
        busy(&mut c);
        held.push((c, worker));
        let n = held.len() as u64;
        wait_until("the slow request reached the agent", Duration::from_secs(5), || in_flight(&s.agent) == n);
        if held.len() == 2 {
            break;
        }
    }
    // each worker holds one busy connection of this source: a cap counted per worker
    // would admit a third on either; counted over the workers it is refused
    let mut third = s.connect();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = third.write_all(&Request::get("f.test", "/api/third").to_bytes());
    let mut buf = Vec::new();
    let end = read_until_closed(&mut third, &mut buf)
        .unwrap_or_else(|e| panic!("the third connection from the same source was kept open ({e})"));
    assert!(buf.is_empty(), "the third connection got an answer ({end:?}): {:?}", String::from_utf8_lossy(&buf));
    assert!(s.agent.stats().proxy.connections_refused >= 1);
    // the busy ones are still served to the end
    for (c, _) in held {
        let mut r = std::io::BufReader::new(c);
        assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    }
}

/// Writes a config serving 127.0.0.1:`ports` with `workers` workers.
fn write(files: &ConfigDir, ports: &[u16], workers: usize) {
    let listen: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}=apps/gw\"")).collect();
    let text =
        format!("manifests = {}\nlisten = [{}]\nworkers = {workers}\n", files.manifests_toml(), listen.join(", "));
    std::fs::write(&files.config, text).unwrap();
}

fn wait_log(agent: &Agent, what: &str) -> String {
    let mut log = String::new();
    wait_until(&format!("`{what}` in the agent's log"), Duration::from_secs(10), || {
        log = agent.log_text();
        log.contains(what)
    });
    log
}

#[test]
fn a_reload_opens_a_new_listener_on_every_worker() {
    let (_pod, pod_port) = Backend::start_local("pod-main");
    let files = ConfigDir::new("workers-reload", "w.test", pod_port);
    let (first, second) = (free_port(), free_port());
    write(&files, &[first], 3);
    let admin = format!("127.0.0.1:{}", free_port());
    let agent =
        Agent::start_with(&ingress_bin(), None, &admin, &[], &["--config".into(), files.config.display().to_string()]);
    assert_eq!(accepted(&agent).len(), 3, "the file's `workers = 3`");
    one_request_each(SocketAddr::from(([127, 0, 0, 1], first)), "w.test", 8);

    // a second address, and a new worker count (which needs a restart)
    write(&files, &[first, second], 4);
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) }, 0);
    wait_log(&agent, "config reloaded: listen");
    wait_log(&agent, "`workers` changed; it takes effect only after a restart");
    let before = accepted(&agent);
    assert_eq!(before.len(), 3, "still three workers");
    one_request_each(SocketAddr::from(([127, 0, 0, 1], second)), "w.test", 96);
    let after = accepted(&agent);
    let new: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(new.iter().sum::<u64>(), 96, "{new:?}");
    // all on fewer workers: a chance of about 3 * (2/3)^96
    assert!(new.iter().all(|&n| n > 0), "a worker does not accept on the new address: {new:?}");
    // the first address still serves
    one_request_each(SocketAddr::from(([127, 0, 0, 1], first)), "w.test", 1);
}

#[test]
fn a_bad_worker_count_is_refused_naming_it() {
    let out = Command::new(ingress_bin())
        .args(["run", "--manifests", "/nonexistent", "--listen", "127.0.0.1:1=a/b", "--workers", "0"])
        .output()
        .expect("ingress run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--workers 0") && err.contains("at least 1"), "{err}");
}
