//! Gateway API details end to end on 127.0.0.1 (no privileges): the agent binary in
//! front of pods that write exact bytes (`ingress_tests::raw_backend`).
//!
//! - A RequestRedirect filter on a backendRef: requests whose weighted pick is that
//!   backend get the redirect, its pod never sees them; the rule's other backend is
//!   forwarded to.
//! - HTTPRoute `retry` with `attempts` and no `codes` (GEP-1731): a request whose pod
//!   connection is reset or closed before a response is retried up to `attempts`; not
//!   a request with a body, not without a policy, never once a response byte reached
//!   the client.
//! - A retry after a `timeouts.backendRequest` timeout, within `timeouts.request`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::client::{Request, Response, read_until_closed, send};
use ingress_tests::free_port;
use ingress_tests::proxy_setup::service;
use ingress_tests::raw_backend::{Conn, Head, RawBackend, Then};

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: x
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    backendRefs:
    - name: moved
      port: 80
      filters: [{type: RequestRedirect, requestRedirect: {hostname: new.test, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - name: moved
      port: 80
      weight: 1
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: new.test}}]
    - {name: flaky, port: 80, weight: 1}
  - matches: [{path: {type: PathPrefix, value: /retry}}]
    retry: {attempts: 2, backoff: 20ms}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /once}}]
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /stall}}]
    retry: {attempts: 2, backoff: 50ms}
    timeouts: {request: 3s, backendRequest: 300ms}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /short}}]
    retry: {attempts: 5, backoff: 10ms}
    timeouts: {request: 500ms, backendRequest: 300ms}
    backendRefs: [{name: flaky, port: 80}]
"#;

/// How long a stalling pod sleeps before it gives up on an attempt.
const STALL: Duration = Duration::from_millis(1500);

/// The agent with the redirected pod (`moved`) and the flaky pod.
struct Setup {
    _agent: Agent,
    addr: SocketAddr,
    dir: PathBuf,
    moved: RawBackend,
    flaky: RawBackend,
}

impl Setup {
    fn start(tag: &str) -> Self {
        let moved = RawBackend::start(|_, c| {
            c.w.write_all(&ok("the redirected pod"))?;
            Ok(Then::KeepAlive)
        });
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let flaky = RawBackend::start(move |head, c| flaky_pod(&seen, head, c));
        let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let dir = std::env::temp_dir().join(format!("ingress-retry-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("services.yaml"),
            service("moved", &[local(moved.port)]) + &service("flaky", &[local(flaky.port)]),
        )
        .unwrap();
        std::fs::write(dir.join("routes.yaml"), ROUTES).unwrap();
        let port = free_port();
        let admin = format!("127.0.0.1:{}", free_port());
        let args = vec!["--manifests".to_string(), dir.display().to_string()];
        let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/gw")], &args);
        Setup { _agent: agent, addr: local(port), dir, moved, flaky }
    }

    fn send(&self, req: Request) -> Response {
        send(self.addr, &req, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path))
    }

    fn get(&self, path: &str) -> Response {
        self.send(Request::get("app.test:8080", path))
    }

    /// Requests for `path` (with its query) the flaky pod read.
    fn attempts(&self, path: &str) -> usize {
        self.flaky.seen().iter().filter(|h| h.path == path).count()
    }

    /// Waits (bounded) until the flaky pod read `n` requests for `path`, then checks
    /// no more arrive for a while: the count is final.
    fn final_attempts(&self, path: &str, n: usize) -> usize {
        let start = Instant::now();
        while self.attempts(path) < n && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.attempts(path)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// A query parameter of `path` as a number.
fn param(path: &str, name: &str) -> Option<usize> {
    let (_, q) = path.split_once('?')?;
    q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// Resets the connection (RST) without closing the socket: `connect(AF_UNSPEC)`
/// disconnects a TCP socket, with a reset from an established state.
fn reset(s: &TcpStream) {
    // SAFETY: a zeroed sockaddr with family AF_UNSPEC, its size; the fd is ours.
    unsafe {
        let mut addr: libc::sockaddr = std::mem::zeroed();
        addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        libc::connect(s.as_raw_fd(), &addr, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t);
    }
}

/// The flaky pod: the n-th request for one path (query included) fails as the query
/// says while n <= the count: `reset=N` (RST), `close=N` (FIN, no answer), `stall=N`
/// (no answer for [`STALL`]); `partial` answers a head and part of the body, then
/// resets. Otherwise `200 attempt n`.
fn flaky_pod(seen: &Mutex<HashMap<String, usize>>, head: &Head, c: &mut Conn<'_>) -> std::io::Result<Then> {
    let path = head.path.as_str();
    let n = {
        let mut m = seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(path.to_string()).or_default();
        *n += 1;
        *n
    };
    let failing = |what: &str| param(path, what).is_some_and(|count| n <= count);
    if failing("reset") {
        reset(c.w);
        return Ok(Then::Close);
    }
    if failing("close") {
        return Ok(Then::Close);
    }
    if failing("stall") {
        std::thread::sleep(STALL);
        return Ok(Then::Close);
    }
    if path.contains("partial") {
        c.w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")?;
        c.w.flush()?;
        std::thread::sleep(Duration::from_millis(100));
        reset(c.w);
        return Ok(Then::Close);
    }
    c.w.write_all(&ok(&format!("attempt {n}")))?;
    Ok(Then::KeepAlive)
}

#[test]
fn a_request_redirect_on_a_backend_ref_is_answered_and_its_pod_never_sees_the_request() {
    let s = Setup::start("redirect");
    let r = s.get("/moved/a?x=1");
    assert_eq!(r.status, 301);
    assert_eq!(r.headers.get("location").map(String::as_str), Some("http://new.test:8080/moved/a?x=1"));
    // weighted 1:1 with a plain backend: both answers occur, the redirected pod gets nothing
    let (mut redirects, mut forwarded) = (0, 0);
    for i in 0..40 {
        let r = s.get(&format!("/split/{i}"));
        match r.status {
            302 => {
                let want = format!("https://new.test/split/{i}");
                assert_eq!(r.headers.get("location"), Some(&want));
                redirects += 1;
            }
            200 => {
                assert_eq!(r.body, b"attempt 1");
                forwarded += 1;
            }
            other => panic!("/split/{i}: {other} {:?}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert!(redirects > 0 && forwarded > 0, "redirects {redirects}, forwarded {forwarded}");
    assert_eq!(s.flaky.seen().len(), forwarded, "each forwarded request reached the plain pod once");
    assert!(s.moved.seen().is_empty(), "the redirected pod saw {:?}", s.moved.seen());
    assert_eq!(s.moved.connections(), 0);
}

#[test]
fn attempts_without_codes_retry_a_reset_or_closed_connection() {
    let s = Setup::start("reset");
    // reset twice, then answered: 1 attempt + 2 retries
    let r = s.get("/retry/a?reset=2");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"attempt 3"[..]));
    assert_eq!(s.final_attempts("/retry/a?reset=2", 3), 3);
    // closed without an answer once
    let r = s.get("/retry/b?close=1");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"attempt 2"[..]));
    assert_eq!(s.final_attempts("/retry/b?close=1", 2), 2);
    // more failures than attempts: 502 after 1 + 2 tries
    let r = s.get("/retry/c?reset=5");
    assert_eq!(r.status, 502, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(s.final_attempts("/retry/c?reset=5", 3), 3);
    // without a retry policy: one try
    assert_eq!(s.get("/once/d?reset=1").status, 502);
    assert_eq!(s.final_attempts("/once/d?reset=1", 1), 1);
    // a request with a body cannot be replayed: one try
    let mut post = Request::get("app.test", "/retry/e?reset=1").method("POST");
    post.body = b"payload".to_vec();
    assert_eq!(s.send(post).status, 502);
    assert_eq!(s.final_attempts("/retry/e?reset=1", 1), 1);
}

#[test]
fn a_connection_broken_after_response_bytes_reached_the_client_is_not_retried() {
    let s = Setup::start("partial");
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&Request::get("app.test", "/retry/partial").to_bytes()).unwrap();
    let mut got = Vec::new();
    let closed = read_until_closed(&mut c, &mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(closed.is_ok(), "the connection ends: {closed:?} after {text:?}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.ends_with("hello"), "the part the pod sent, then the end: {text:?}");
    assert_eq!(s.final_attempts("/retry/partial", 1), 1, "not retried once the answer had begun");
}

#[test]
fn a_backend_request_timeout_is_retried_within_the_request_timeout() {
    let s = Setup::start("timeout");
    // the first attempt stalls past backendRequest (300ms); the second is answered
    let start = Instant::now();
    let r = s.get("/stall/a?stall=1");
    let took = start.elapsed();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"attempt 2"[..]), "{:?}", String::from_utf8_lossy(&r.body));
    assert!(took >= Duration::from_millis(300) && took < STALL, "{took:?}");
    assert_eq!(s.final_attempts("/stall/a?stall=1", 2), 2);
    // always stalls: 504 after attempts + 1 = 3 tries, well within the 3s request timeout
    let start = Instant::now();
    let r = s.get("/stall/b?stall=99");
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, b"backend timeout\n");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(s.final_attempts("/stall/b?stall=99", 3), 3);
    // the request timeout (500ms) ends the attempts: 2 tries (0ms, ~310ms), not 6
    let start = Instant::now();
    let r = s.get("/short/c?stall=99");
    let took = start.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.body, b"request timeout\n");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1300), "{took:?}");
    assert_eq!(s.final_attempts("/short/c?stall=99", 2), 2);
}
