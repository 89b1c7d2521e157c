//! Load helpers for the benchmarks (the request load itself is wrk's, `wrk.rs`):
//! whole-machine CPU time from `/proc/stat` (user + system + softirq + irq of every
//! CPU, since an eBPF path spends its time in softirq, not in any process), idle
//! keep-alive connections held open, and an upgraded connection's echo throughput.

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{Request, read_response};
use crate::netns::in_ns;

#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: u64,
    /// Socket errors.
    pub errors: u64,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Whole-machine busy CPU seconds during the run.
    pub cpu_seconds: f64,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    /// Busy CPU microseconds per request.
    pub fn cpu_us_per_request(&self) -> f64 {
        if self.requests == 0 { f64::NAN } else { self.cpu_seconds * 1e6 / self.requests as f64 }
    }
}

/// Busy jiffies of all CPUs (user, nice, system, irq, softirq, steal) and USER_HZ.
fn busy_jiffies() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum()
}

/// Busy CPU seconds of the whole machine since boot (see [`busy_jiffies`]).
pub fn busy_cpu_seconds() -> f64 {
    busy_jiffies() as f64 / user_hz()
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/PID/stat`; None when
/// it cannot be read (the process is gone).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after "pid (comm) ": state is field 3, utime 14, stime 15 (1-based)
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((utime + stime) as f64 / user_hz())
}

fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Opens `n` keep-alive connections from namespace `ns` to `addr`, each answered once
/// (`GET /` with `Host: host`), and holds them idle while `measure` runs, 6 s later.
pub fn with_idle_connections<T: Send>(
    ns: &str,
    addr: SocketAddr,
    host: &str,
    n: usize,
    measure: impl FnOnce() -> T + Send,
) -> (usize, T) {
    let req = Request::get(host, "/").to_bytes();
    let held: Vec<std::net::TcpStream> = in_ns(ns, || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut held = Vec::with_capacity(n);
        let mut failures = 0;
        while held.len() < n && Instant::now() < deadline {
            let mut c = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    eprintln!("idle connection {}: connect: {e}", held.len());
                    continue;
                }
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let got = c.write_all(&req).and_then(|_| read_response(&mut BufReader::new(c.try_clone()?), false));
            match got {
                Ok(resp) if resp.status == 200 => held.push(c),
                other => {
                    failures += 1;
                    eprintln!("idle connection {}: {:?}", held.len(), other.map(|r| r.status));
                }
            }
            if failures > 50 {
                break;
            }
        }
        held
    });
    // steady state: the agent hands freed heap back every 5 s (idle connections are
    // closed after the 10 s head timeout, so this stays well inside it)
    std::thread::sleep(Duration::from_secs(6));
    let out = measure();
    (held.len(), out)
}

/// One upgraded (WebSocket-style) connection from namespace `ns`: after the 101,
/// `bytes` are written while the echo is read back. Returns MB/s (both directions
/// counted) and the whole-machine CPU seconds.
pub fn upgrade_throughput(ns: &str, addr: SocketAddr, host: &str, bytes: usize) -> (f64, f64) {
    use std::io::Read;
    let host = host.to_string();
    in_ns(ns, move || {
        let c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = c.try_clone().unwrap();
        write!(w, "GET /echo-websocket-service/ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        let mut r = BufReader::new(c);
        let head = read_response(&mut r, true).expect("101");
        assert_eq!(head.status, 101, "upgrade through {addr}");
        let cpu0 = busy_jiffies();
        let start = Instant::now();
        let writer = std::thread::spawn(move || {
            let block = vec![0x5au8; 256 * 1024];
            let mut left = bytes;
            while left > 0 {
                let k = left.min(block.len());
                w.write_all(&block[..k]).unwrap();
                left -= k;
            }
            w
        });
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < bytes {
            let n = r.read(&mut buf).expect("echo");
            assert!(n > 0, "connection closed after {got} of {bytes} bytes");
            got += n;
        }
        let elapsed = start.elapsed().as_secs_f64();
        drop(writer.join());
        let cpu = busy_jiffies().saturating_sub(cpu0) as f64 / user_hz();
        (2.0 * bytes as f64 / elapsed / 1e6, cpu)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_time_grows_while_it_works() {
        let me = std::process::id();
        let before = process_cpu_seconds(me).expect("our own /proc/PID/stat");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_seconds(me).unwrap();
        assert!(after - before >= 0.1, "{before} -> {after} after 300 ms of work");
        assert_eq!(process_cpu_seconds(u32::MAX), None);
    }
}
