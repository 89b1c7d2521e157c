//! h2load (Debian's nghttp2-client) as the benchmark's HTTP/2 load generator: many
//! streams in flight on few connections, run inside a namespace for a bounded
//! duration, with whole-machine CPU measured around it (as `wrk.rs` does), and its
//! report parsed.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::{LoadResult, busy_cpu_seconds};

/// One h2load run: `clients` connections, `streams` concurrent streams on each,
/// `duration` of measurement. An `https://` URL negotiates h2 by ALPN (SNI and
/// :authority are the URL's host); `http://` is h2c with prior knowledge.
pub struct H2load<'a> {
    pub ns: &'a str,
    pub url: String,
    pub clients: usize,
    pub streams: usize,
    pub threads: usize,
    pub duration: Duration,
}

/// Parsed h2load output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Requests done in the measured window.
    pub done: u64,
    pub succeeded: u64,
    /// Failed, errored and timed-out requests.
    pub faults: u64,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
    pub seconds: f64,
    /// Mean time per request (h2load prints no percentiles).
    pub mean_us: f64,
}

impl H2load<'_> {
    /// Runs h2load (bounded: its own `-D`, and killed by `timeout` 30 s after that).
    pub fn run(&self) -> (LoadResult, Report) {
        let secs = self.duration.as_secs().max(1);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns, "timeout", &(secs + 30).to_string(), "h2load"])
            .arg(format!("-c{}", self.clients))
            .arg(format!("-m{}", self.streams))
            .arg(format!("-t{}", self.threads.min(self.clients).max(1)))
            .arg(format!("-D{secs}"))
            .arg("--warm-up-time=1")
            .arg(&self.url);
        let cpu0 = busy_cpu_seconds();
        let start = Instant::now();
        let out = cmd.output().expect("run h2load (nghttp2-client, installed by `cargo xtask bench`)");
        let elapsed = start.elapsed();
        let cpu = busy_cpu_seconds() - cpu0;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rep = parse(&text).unwrap_or_else(|| {
            panic!("unexpected h2load output ({}):\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr))
        });
        let load = LoadResult {
            requests: rep.done,
            errors: rep.faults,
            non_2xx: rep.non_2xx,
            elapsed: Duration::from_secs_f64(rep.seconds),
            p50: Duration::from_secs_f64(rep.mean_us / 1e6),
            p99: Duration::ZERO,
            // the warm-up second and the process start are outside the measured window
            cpu_seconds: cpu * rep.seconds / elapsed.as_secs_f64().max(rep.seconds),
        };
        (load, rep)
    }
}

/// `326us`, `1.55ms`, `2.00s` -> microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        _ => return None,
    })
}

/// The number before `word` in a comma-separated h2load line (`102217 done`).
fn count(line: &str, word: &str) -> Option<u64> {
    line.split(',').find_map(|part| {
        let mut w = part.split_whitespace().rev();
        (w.next()? == word).then_some(())?;
        w.next()?.parse().ok()
    })
}

pub fn parse(text: &str) -> Option<Report> {
    let mut r = Report::default();
    let (mut have_finished, mut have_requests, mut have_status) = (false, false, false);
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 5.00s, 20443.40 req/s, 2.84MB/s"
            r.seconds = duration_us(rest.split(',').next()?.trim())? / 1e6;
            have_finished = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "requests: 102217 total, 102857 started, 102217 done, 102217 succeeded, 0 failed, 0 errored, 0 timeout"
            r.done = count(rest, "done")?;
            r.succeeded = count(rest, "succeeded")?;
            r.faults = count(rest, "failed")? + count(rest, "errored")? + count(rest, "timeout")?;
            have_requests = true;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // "status codes: 102217 2xx, 0 3xx, 0 4xx, 0 5xx"
            r.non_2xx = count(rest, "4xx")? + count(rest, "5xx")?;
            have_status = true;
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // "time for request:   326us  10.45ms  1.55ms  1.23ms  72.43%": min max mean sd
            r.mean_us = duration_us(rest.split_whitespace().nth(2)?)?;
        }
    }
    (have_finished && have_requests && have_status).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "starting benchmark...
spawning thread #0: 8 total client(s). Timing-based test with 1s warm-up time and 5s main duration
Warm-up started for thread #0.
Main benchmark duration is started for thread #0.

finished in 5.00s, 20443.40 req/s, 2.84MB/s
requests: 102217 total, 102857 started, 102217 done, 102200 succeeded, 10 failed, 5 errored, 2 timeout
status codes: 102190 2xx, 0 3xx, 7 4xx, 3 5xx
traffic: 14.21MB (14896640) total, 1.03MB (1079524) headers (space savings 90.12%), 1.85MB (1942123) data
                     min         max         mean         sd        +/- sd
time for request:      326us     10.45ms      1.55ms       1.23ms    72.43%
time for connect:     1.23ms      2.34ms      1.80ms       0.40ms    50.00%
";

    #[test]
    fn a_report_is_parsed() {
        let r = parse(OUT).unwrap();
        assert_eq!(r.done, 102217);
        assert_eq!(r.succeeded, 102200);
        assert_eq!(r.faults, 17);
        assert_eq!(r.non_2xx, 10);
        assert!((r.seconds - 5.0).abs() < 1e-9);
        assert!((r.mean_us - 1550.0).abs() < 1e-6);
    }

    #[test]
    fn a_cut_report_is_refused() {
        let cut: String = OUT.lines().filter(|l| !l.starts_with("status codes")).collect::<Vec<_>>().join("\n");
        assert_eq!(parse(&cut), None);
        assert_eq!(parse("h2load: connection refused\n"), None);
    }
}
