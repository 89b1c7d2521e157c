//! wrk (Debian's package) as the benchmark's load generator: run inside a namespace
//! for a bounded duration, with whole-machine CPU measured around it, and its report
//! parsed (requests/s, transfer/s, latency percentiles, socket errors, non-2xx answers).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::{LoadResult, busy_cpu_seconds};

/// One wrk run: `connections` over `threads`, `duration`, `Host: host`, extra headers.
pub struct Wrk<'a> {
    pub ns: &'a str,
    pub url: String,
    pub host: &'a str,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub headers: Vec<&'a str>,
}

/// Parsed wrk output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub requests: u64,
    /// Socket errors: connect, read, write, timeout.
    pub errors: u64,
    /// Answers that were not 2xx or 3xx (wrk's "Non-2xx or 3xx responses").
    pub non_2xx: u64,
    pub seconds: f64,
    pub bytes_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Wrk<'_> {
    /// Runs wrk (bounded: its own `-d`, and killed by `timeout` 30 s after that).
    pub fn run(&self) -> (LoadResult, Report) {
        let secs = self.duration.as_secs().max(1);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns, "timeout", &(secs + 30).to_string(), "wrk", "--latency"])
            .arg(format!("-t{}", self.threads.min(self.connections).max(1)))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{secs}s"))
            .args(["--timeout", "5s", "-H", &format!("Host: {}", self.host)]);
        for h in &self.headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(&self.url);
        let cpu0 = busy_cpu_seconds();
        let start = Instant::now();
        let out = cmd.output().expect("run wrk (installed by `cargo xtask bench`)");
        let elapsed = start.elapsed();
        let cpu = busy_cpu_seconds() - cpu0;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "wrk failed ({}): {}\n{text}", out.status, String::from_utf8_lossy(&out.stderr));
        let rep = parse(&text).unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"));
        let load = LoadResult {
            requests: rep.requests,
            errors: rep.errors,
            non_2xx: rep.non_2xx,
            elapsed: Duration::from_secs_f64(rep.seconds),
            p50: Duration::from_secs_f64(rep.p50_us / 1e6),
            p99: Duration::from_secs_f64(rep.p99_us / 1e6),
            // CPU of the whole run (wrk's start and stop included) over its wall time,
            // scaled to wrk's measured window
            cpu_seconds: cpu * rep.seconds / elapsed.as_secs_f64().max(rep.seconds),
        };
        (load, rep)
    }
}

/// `1.23ms`, `456.00us`, `2.00s` -> microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

/// `12.34MB` -> bytes.
fn size_bytes(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "" | "B" => v,
        "KB" => v * 1024.0,
        "MB" => v * 1024.0 * 1024.0,
        "GB" => v * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

pub fn parse(text: &str) -> Option<Report> {
    let mut r = Report::default();
    let (mut have_total, mut have_p50, mut have_p99) = (false, false, false);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => {
                r.p50_us = duration_us(v)?;
                have_p50 = true;
            }
            ["99%", v] => {
                r.p99_us = duration_us(v)?;
                have_p99 = true;
            }
            // "  123456 requests in 5.00s, 12.34MB read"
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().ok()?;
                r.seconds = duration_us(secs.trim_end_matches(','))? / 1e6;
                have_total = true;
            }
            ["Transfer/sec:", v] => r.bytes_per_sec = size_bytes(v)?,
            // "  Socket errors: connect 0, read 0, write 0, timeout 0"
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx += n.parse::<u64>().ok()?,
            _ => {}
        }
    }
    (have_total && have_p50 && have_p99).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_wrk_report() {
        let text = "Running 5s test @ http://198.18.0.2:9080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  40.00ms   90.00%
    Req/Sec    10.50k     1.00k   12.00k    70.00%
  Latency Distribution
     50%    2.90ms
     75%    3.50ms
     90%    4.20ms
     99%  812.00us
  104530 requests in 5.00s, 15.20MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  20906.00
Transfer/sec:      3.04MB
";
        let r = parse(text).unwrap();
        assert_eq!(r.requests, 104530);
        assert_eq!(r.seconds, 5.0);
        assert_eq!(r.p50_us, 2900.0);
        assert_eq!(r.p99_us, 812.0);
        assert_eq!((r.errors, r.non_2xx), (3, 4));
        assert!((r.bytes_per_sec - 3.04 * 1024.0 * 1024.0).abs() < 1.0);
        assert!(parse("garbage").is_none());
    }
}
