//! The differential test of delayed binding: the kernel's head scanner
//! (`ingress_common::head`, the same source the BPF program runs) against the agent's
//! own decision for the same bytes (httparse as hyper configures it, hyper's framing
//! checks, `conn.rs`'s Content-Length + Transfer-Encoding check, `refuse.rs`, then the
//! router and `plan.rs`). The rule, for every head and every first-segment cut: the
//! backend the kernel's map names for the scanner's host key (through
//! [`super::translate`]) is the backend the agent forwards that request to, or the
//! scanner falls back. Never another backend, never a bind for a head the agent answers
//! itself (400, 404, 405, 501, ...), and never a bind on a head not complete in the
//! first segment.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use ingress_common::head::{self, BindHostKey, Verdict};

use super::corpus::{Rng, corpus, random_head};
use super::{BindEntries, BindOptions, translate};
use crate::proxy::plan::{self, Choices, Head, Plan, PlanOptions};
use crate::proxy::refuse;
use crate::routing::{Backend, BackendTarget, ListenerTable, Table};

/// What the agent does with a client's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Agent {
    /// The head is not complete: it waits for more bytes.
    Incomplete,
    /// It answers itself (the reason, e.g. `400 ...`).
    Answers(String),
    /// It forwards the first request to this backend.
    Forwards(String),
}

struct First;
impl Choices for First {
    fn random(&mut self) -> u64 {
        0
    }
    fn endpoint(&mut self, backend: &Backend) -> Option<SocketAddr> {
        match &backend.target {
            BackendTarget::Endpoints(e) => e.first().copied(),
            BackendTarget::Invalid(_) => None,
        }
    }
}

/// hyper's `DEFAULT_MAX_HEADERS`.
const HYPER_MAX_HEADERS: usize = 100;

/// The agent's decision for a connection whose bytes are `stream`, on listener `lt`.
fn agent(lt: &ListenerTable, stream: &[u8]) -> Agent {
    let answers = |why: String| Agent::Answers(why);
    if stream.starts_with(b"PRI * HTTP/2.0") {
        return answers("h2 (the HTTP/2 path: no Host to route by from a preface)".into());
    }
    let mut fields = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(stream) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Agent::Incomplete,
        Err(e) => return answers(format!("400 {e}")),
    }
    let Ok(method) = Method::from_bytes(req.method.unwrap_or("").as_bytes()) else {
        return answers("400 method".into());
    };
    let Ok(uri) = req.path.unwrap_or("").parse::<Uri>() else { return answers("400 uri".into()) };
    let version = if req.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut headers = HeaderMap::new();
    let (mut te, mut cl, mut te_chunked) = (false, None::<u64>, false);
    for f in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(f.name.as_bytes()) else { return answers("400 name".into()) };
        let Ok(value) = HeaderValue::from_bytes(f.value) else { return answers("400 value".into()) };
        // hyper's role.rs: Transfer-Encoding on HTTP/1.0, a bad or differing Content-Length
        if name == http::header::TRANSFER_ENCODING {
            if version == Version::HTTP_10 {
                return answers("400 TE on HTTP/1.0".into());
            }
            te = true;
            te_chunked = value
                .to_str()
                .ok()
                .and_then(|s| s.rsplit(',').next())
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        }
        if name == http::header::CONTENT_LENGTH && !te {
            let digits = value.as_bytes();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return answers("400 content-length".into());
            }
            let Ok(n) = std::str::from_utf8(digits).unwrap().parse::<u64>() else {
                return answers("400 content-length".into());
            };
            if cl.is_some_and(|c| c != n) {
                return answers("400 differing content-lengths".into());
            }
            cl = Some(n);
        }
        headers.append(name, value);
    }
    if te && !te_chunked {
        return answers("400 TE not chunked".into());
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING) && headers.contains_key(http::header::CONTENT_LENGTH) {
        return answers("400 both Content-Length and Transfer-Encoding (conn.rs)".into());
    }
    match refuse::check(&method, &uri, version, &headers) {
        Ok(refuse::Accepted::Route) => {}
        Ok(refuse::Accepted::OptionsAsterisk) => return answers("200 OPTIONS *".into()),
        Err(r) => return answers(format!("{} {}", r.status.as_u16(), r.body.trim())),
    }
    let peer: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    let opts = PlanOptions { forwarded_headers: false, request_ids: false, scheme: "http" };
    let head = Head { method: &method, uri: &uri, headers: &mut headers, peer };
    match plan::plan(lt, head, opts, &mut First).plan {
        Plan::Forward(f) => Agent::Forwards(f.backend().name.clone()),
        Plan::Local(l) => answers(format!("{} {}", l.status.as_u16(), l.body.trim())),
    }
}

/// The kernel's decision for a first segment `segment` to `port`: the backend its map
/// entry names, or None (fallback).
fn kernel(entries: &BindEntries, port: u16, segment: &[u8]) -> Option<String> {
    match head::scan(segment) {
        Verdict::Host(k) => {
            let key = BindHostKey { port, ..k };
            entries.lookup(&key).map(|(_, name)| name.to_string())
        }
        Verdict::Fallback(_) => None,
    }
}

/// A listener under test: its table, the port its map entries have, the entries.
struct Under<'t> {
    lt: &'t ListenerTable,
    port: u16,
    entries: &'t BindEntries,
    hosts: Vec<String>,
}

#[derive(Default, Debug)]
struct Tally {
    heads: usize,
    cuts: usize,
    binds: usize,
    agent_forwards: usize,
    complete_fallbacks: usize,
}

impl Under<'_> {
    /// Checks one head cut at `cut` (the first segment is `stream[..cut]`, the agent
    /// reads all of `stream`).
    fn check(&self, stream: &[u8], cut: usize, tally: &mut Tally) {
        tally.cuts += 1;
        let segment = &stream[..cut.min(stream.len())];
        let k = kernel(self.entries, self.port, segment);
        let a = agent(self.lt, stream);
        let text = || String::from_utf8_lossy(stream).into_owned();
        if let Some(b) = &k {
            tally.binds += 1;
            assert_eq!(
                a,
                Agent::Forwards(b.clone()),
                "port {} cut {cut}: the kernel binds to {b}: {:?}",
                self.port,
                text()
            );
            // the head ends inside the segment
            let mut fields = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
            let end = match httparse::Request::new(&mut fields).parse(segment) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("bound on a segment httparse reads as {other:?}: {:?}", text()),
            };
            assert!(end <= cut, "bound before the head's end");
        } else if matches!(a, Agent::Forwards(_)) && cut >= stream.len() {
            tally.complete_fallbacks += 1;
        }
        if matches!(a, Agent::Forwards(_)) {
            tally.agent_forwards += 1;
        }
    }

    /// Every cut of `stream` from 0 to its length.
    fn every_cut(&self, stream: &[u8], tally: &mut Tally) {
        tally.heads += 1;
        for cut in 0..=stream.len() {
            self.check(stream, cut, tally);
        }
    }
}

fn hosts_of(lt: &ListenerTable) -> Vec<String> {
    // a name under each wildcard (`*.a.test` -> `sub.a.test`); `*` (any host) has none
    lt.vhosts()
        .iter()
        .filter_map(|v| match v.hostname.strip_prefix("*.") {
            Some(suffix) => Some(format!("sub.{suffix}")),
            None => (v.hostname != "*").then(|| v.hostname.clone()),
        })
        .collect()
}

fn fixtures() -> (Table, BindEntries, Table, BindEntries) {
    let oc = crate::routing::tests::openchoreo_fixture_table();
    let oc_entries = translate(&oc, &[8080, 9080], BindOptions::default());
    let t = super::tests::bind_table();
    let e = translate(&t, &[9080], BindOptions::default());
    assert!(oc_entries.hosts.len() >= 2 && e.hosts.len() >= 5, "the fixtures have bindable hosts");
    (oc, oc_entries, t, e)
}

fn unders<'t>(oc: &'t Table, oc_e: &'t BindEntries, t: &'t Table, e: &'t BindEntries) -> Vec<Under<'t>> {
    let mut v = vec![];
    for (i, port) in [(0usize, 8080u16), (1, 9080)] {
        v.push(Under { lt: &oc.listeners[i], port, entries: oc_e, hosts: hosts_of(&oc.listeners[i]) });
    }
    v.push(Under { lt: &t.listeners[0], port: 9080, entries: e, hosts: hosts_of(&t.listeners[0]) });
    v
}

#[test]
fn the_hand_written_corpus_binds_where_the_router_forwards_or_falls_back() {
    let (oc, oc_e, t, e) = fixtures();
    let mut tally = Tally::default();
    for u in unders(&oc, &oc_e, &t, &e) {
        for host in u.hosts.iter().chain([&"nowhere.test".to_string()]) {
            for stream in corpus(host) {
                u.every_cut(&stream, &mut tally);
            }
        }
    }
    println!("corpus: {tally:?}");
    assert!(tally.binds > 300 && tally.agent_forwards > tally.binds, "{tally:?}");
}

#[test]
fn fuzzed_heads_bind_where_the_router_forwards_or_fall_back() {
    const HEADS: usize = 100_000;
    let seed = std::env::var("BIND_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1460_2026_u64);
    let (oc, oc_e, t, e) = fixtures();
    let unders = unders(&oc, &oc_e, &t, &e);
    let mut r = Rng(seed);
    let mut tally = Tally::default();
    for i in 0..HEADS {
        let u = &unders[i % unders.len()];
        let stream = random_head(&mut r, &u.hosts);
        tally.heads += 1;
        // the whole head in one segment, a random cut, and a cut just before the end
        u.check(&stream, stream.len(), &mut tally);
        u.check(&stream, r.below(stream.len() + 1), &mut tally);
        if let Some(end) = stream.windows(4).position(|w| w == b"\r\n\r\n") {
            u.check(&stream, end + 3, &mut tally);
        }
    }
    println!("fuzz (seed {seed:#x}): {tally:?}");
    assert!(tally.binds > HEADS / 20, "enough heads bind for the test to mean something: {tally:?}");
    assert!(tally.complete_fallbacks > 0, "{tally:?}");
}
