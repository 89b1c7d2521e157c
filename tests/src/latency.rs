//! Connection setup time and time to first byte, for the benchmark (`netbench`'s
//! `latency` workload): `n` connections one after another from a namespace, each timed
//! from `connect` to its return (the SYN / SYN-ACK exchange, as the client sees it), then
//! one `GET` written and timed to the first byte of the answer; the answer is read to its
//! end and checked (200), then the connection is closed. Bounded in count and time; a
//! failed connection or answer is counted, never a sample.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::bench::percentile;
use crate::client::{Request, read_response};
use crate::netns::in_ns;

/// Each step's time limit (connect, write, read).
const IO_LIMIT: Duration = Duration::from_secs(2);

/// What [`measure`] saw: microseconds per sample, in the order measured.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    pub connect_us: Vec<f64>,
    pub first_byte_us: Vec<f64>,
    /// Connections that failed (connect, I/O, timeout) or got another status than 200.
    pub failures: u64,
}

impl Latencies {
    /// (median, p99) of the connect times.
    pub fn connect(&self) -> (f64, f64) {
        (percentile(&self.connect_us, 50.0), percentile(&self.connect_us, 99.0))
    }
    /// (median, p99) of the times to first byte.
    pub fn first_byte(&self) -> (f64, f64) {
        (percentile(&self.first_byte_us, 50.0), percentile(&self.first_byte_us, 99.0))
    }
}

/// `n` sequential connections from namespace `ns` to `addr`, each a `GET path` with
/// `Host: host`, stopping early at `limit`.
pub fn measure(ns: &str, addr: SocketAddr, host: &str, path: &str, n: usize, limit: Duration) -> Latencies {
    let req = Request::get(host, path).to_bytes();
    in_ns(ns, || {
        let mut l = Latencies::default();
        let start = Instant::now();
        for _ in 0..n {
            if start.elapsed() > limit {
                break;
            }
            match one(addr, &req) {
                Ok((connect, first)) => {
                    l.connect_us.push(connect.as_secs_f64() * 1e6);
                    l.first_byte_us.push(first.as_secs_f64() * 1e6);
                }
                Err(e) => {
                    l.failures += 1;
                    if l.failures <= 3 {
                        eprintln!("latency to {addr}: {e}");
                    }
                }
            }
        }
        l
    })
}

/// One connection: (connect time, time from the request's write to the first byte).
fn one(addr: SocketAddr, req: &[u8]) -> std::io::Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, IO_LIMIT)?;
    let connect = t0.elapsed();
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_LIMIT))?;
    s.set_write_timeout(Some(IO_LIMIT))?;
    let mut r = BufReader::new(s.try_clone()?);
    let t1 = Instant::now();
    s.write_all(req)?;
    if r.fill_buf()?.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before answering"));
    }
    let first = t1.elapsed();
    let resp = read_response(&mut r, false)?;
    if resp.status != 200 {
        return Err(std::io::Error::other(format!("status {}", resp.status)));
    }
    Ok((connect, first))
}
