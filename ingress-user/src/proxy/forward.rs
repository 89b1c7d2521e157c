//! The upstream phase: send the request to the chosen endpoint over the pool; on a
//! connect failure try the backend's next endpoints; apply the rule's retry policy
//! (decided in `retry.rs`: connection errors, backendRequest timeouts, retry codes)
//! and timeouts. Requests with a body are sent once (the body streams and cannot be
//! replayed); requests without one can be replayed to another endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::error::ProxyError;
use super::{Body, Proxy};
use crate::routing::{Backend, BackendProtocol, Rule};

/// How an attempt ended, for the retry decision.
enum Outcome {
    Response(Response<Incoming>),
    ConnectFailed,
    Failed,
    TimedOut,
}

/// Ready endpoints of a backend (1 for an invalid one: the endpoint tried).
fn endpoint_count(backend: &Backend) -> usize {
    match &backend.target {
        crate::routing::BackendTarget::Endpoints(e) => e.len(),
        _ => 1,
    }
}

/// What follows an attempt.
enum Next {
    /// The response for the client.
    Answer(Response<Incoming>),
    /// The client's error.
    Fail(ProxyError),
    /// Another attempt after `wait`, once the response not forwarded (a retried status) is read.
    Again { wait: Duration, drain: Option<Response<Incoming>> },
}

/// Classifies the attempt's outcome and asks the retry policy (`retry.rs`).
fn next_after(tries: &mut super::retry::Tries<'_>, outcome: Outcome) -> Next {
    use super::retry::{Decision, Failure};
    let (failure, resp) = match outcome {
        Outcome::Response(resp) => (Failure::Status(resp.status().as_u16()), Some(resp)),
        Outcome::ConnectFailed => (Failure::Connect, None),
        // The connection broke before a response: the pod reset or closed it.
        Outcome::Failed => (Failure::Broken, None),
        Outcome::TimedOut => (Failure::TimedOut, None),
    };
    match (tries.after(failure, fastrand::u64(..)), resp) {
        (Decision::Retry(wait), drain) => Next::Again { wait, drain },
        (Decision::GiveUp, Some(resp)) => Next::Answer(resp),
        (Decision::GiveUp, None) => Next::Fail(failure.error().unwrap_or(ProxyError::BackendFailed)),
    }
}

fn replayable<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    !h.contains_key(header::TRANSFER_ENCODING)
        && h.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0")
        && !matches!(*req.method(), http::Method::POST | http::Method::PATCH)
}

/// A request for an HTTP/1.1 pod: an HTTP/2 client's request goes out as HTTP/1.1
/// (hyper's HTTP/1 client refuses version 2; Host was set from `:authority` by the plan).
pub(super) fn as_http1<B>(mut req: Request<B>) -> Request<B> {
    if req.version() == http::Version::HTTP_2 {
        *req.version_mut() = http::Version::HTTP_11;
    }
    req
}

fn copy_head(req: &Request<Body>, endpoint: SocketAddr, pq: &str) -> Option<Request<Body>> {
    let uri: Uri = format!("http://{endpoint}{pq}").parse().ok()?;
    let mut b = Request::builder().method(req.method().clone()).uri(uri).version(req.version());
    *b.headers_mut()? = req.headers().clone();
    b.body(super::empty()).ok()
}

impl Proxy {
    async fn attempt(
        &self,
        req: Request<Body>,
        timeout: Option<Duration>,
        endpoint: SocketAddr,
        backend: &Backend,
    ) -> Outcome {
        // HTTP/1.1 over the pooled client, or HTTP/2 to an h2c pod (`h2_client.rs`)
        let fut = async {
            match backend.protocol {
                BackendProtocol::Http1 => {
                    self.client.request(as_http1(req)).await.map_err(|e| (e.is_connect(), e.to_string()))
                }
                BackendProtocol::H2c => {
                    self.h2c.request(endpoint, req).await.map_err(|e| (e.is_connect(), e.to_string()))
                }
            }
        };
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => return Outcome::TimedOut,
            },
            None => fut.await,
        };
        match result {
            Ok(r) => Outcome::Response(r),
            Err((connect, e)) => {
                self.metrics.backend_error();
                let backend = &backend.name;
                tracing::debug!(%endpoint, %backend, error = %e, connect, "backend request failed");
                if connect { Outcome::ConnectFailed } else { Outcome::Failed }
            }
        }
    }

    /// Sends `req` (already addressed to `endpoint`), with retries where allowed.
    /// `Err` is the response to give the client instead: 502, 503 or 504.
    pub(super) async fn forward(
        &self,
        req: Request<Body>,
        rule: &Rule,
        backend: &Backend,
        endpoint: SocketAddr,
        pq: &str,
    ) -> Result<Response<Incoming>, Response<Body>> {
        let whole = async {
            let replay = replayable(&req).then(|| copy_head(&req, endpoint, pq)).flatten();
            // what to do after each attempt (`retry.rs`)
            let mut tries = super::retry::Tries::new(rule.retry.as_ref(), replay.is_some(), endpoint_count(backend));
            let mut endpoint = endpoint;
            let mut next = Some(req);
            loop {
                let req = match next.take() {
                    Some(r) => r,
                    None => {
                        let head = replay.as_ref().expect("replays only happen for replayable requests");
                        copy_head(head, endpoint, pq).expect("same URI shape as the first attempt")
                    }
                };
                let outcome = self.attempt(req, rule.timeouts.backend_request, endpoint, backend).await;
                let wait = match next_after(&mut tries, outcome) {
                    Next::Answer(resp) => return Ok(resp),
                    Next::Fail(e) => return Err(e.into()),
                    Next::Again { wait, drain } => {
                        if let Some(resp) = drain {
                            // Drain so the connection goes back to the pool.
                            let _ = resp.into_body().collect().await;
                        }
                        wait
                    }
                };
                tracing::debug!(%endpoint, backend = %backend.name, retry = tries.retries(), ?wait, "retrying");
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                endpoint = self.endpoints.pick(backend).unwrap_or(endpoint);
            }
        };
        match rule.timeouts.request {
            Some(t) => tokio::time::timeout(t, whole).await.unwrap_or_else(|_| Err(ProxyError::RequestTimeout.into())),
            None => whole.await,
        }
    }
}
