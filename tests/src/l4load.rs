//! TCP load for the L4 benchmark, from threads that joined the client namespace:
//! new connections per second (connect, read the server's short greeting to EOF,
//! close), and bulk throughput (read from a [`crate::stream::SourceServer`] for a fixed
//! time). Both bounded in time; errors counted, never retried silently.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::netns::enter;

#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 { self.ok as f64 / self.secs } else { f64::NAN }
    }
}

/// `threads` threads in `ns`, each connecting to `addr` again and again for
/// `duration`; a connection counts when it read exactly `greeting` bytes before EOF.
pub fn connect_rate(ns: &str, addr: SocketAddr, threads: usize, duration: Duration, greeting: usize) -> Rate {
    let path = format!("/run/netns/{ns}");
    let start = Instant::now();
    let results: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    enter(&path);
                    let (mut ok, mut errors) = (0u64, 0u64);
                    let mut buf = [0u8; 256];
                    while start.elapsed() < duration {
                        let got = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|mut c| {
                            c.set_read_timeout(Some(Duration::from_secs(2)))?;
                            let mut n = 0;
                            loop {
                                match c.read(&mut buf[n..])? {
                                    0 => return Ok(n),
                                    k => n += k,
                                }
                                if n == buf.len() {
                                    return Ok(n);
                                }
                            }
                        });
                        match got {
                            Ok(n) if n == greeting => ok += 1,
                            _ => errors += 1,
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("load thread")).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    Rate { ok: results.iter().map(|r| r.0).sum(), errors: results.iter().map(|r| r.1).sum(), secs }
}

/// `streams` connections in `ns` to a source at `addr`, each read for `duration`:
/// bytes per second over all of them, and the connections that failed.
pub fn bulk(ns: &str, addr: SocketAddr, streams: usize, duration: Duration) -> (f64, u64) {
    let path = format!("/run/netns/{ns}");
    let results: Vec<Result<(u64, f64), ()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..streams)
            .map(|_| {
                s.spawn(|| {
                    enter(&path);
                    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|_| ())?;
                    c.set_read_timeout(Some(Duration::from_secs(2))).map_err(|_| ())?;
                    let mut buf = vec![0u8; 256 * 1024];
                    let start = Instant::now();
                    let mut total = 0u64;
                    while start.elapsed() < duration {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return Err(()),
                            Ok(n) => total += n as u64,
                        }
                    }
                    Ok((total, start.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bulk thread")).collect()
    });
    let errors = results.iter().filter(|r| r.is_err()).count() as u64;
    let rate = results.iter().flatten().map(|(b, s)| *b as f64 / s).sum();
    (rate, errors)
}
