//! The upstream phase: send the request to the chosen endpoint over the pool; on a
//! connect failure try the backend's next endpoints; apply the rule's retry policy
//! (decided in `retry.rs`: connection errors, backendRequest timeouts, retry codes)
//! and timeouts. A request whose connect failed comes back unsent from the HTTP/1.1
//! pool (`h1_client.rs`) and goes to the next endpoint as it is; a copy of the head is
//! kept only where a request that went out may be replayed (a retry policy; h2c pods,
//! whose pool does not give requests back). Requests with a body are sent once (the
//! body streams and cannot be replayed).

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, Uri, header};
use http_body_util::BodyExt;

use super::error::ProxyError;
use super::{Body, Proxy};
use crate::routing::{Backend, BackendProtocol, Rule};

/// How an attempt ended, for the retry decision.
enum Outcome {
    Response(Response<Body>),
    /// Nothing reached the pod: the request, when it came back unsent.
    ConnectFailed(Option<Box<Request<Body>>>),
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
    Answer(Response<Body>),
    /// The client's error.
    Fail(ProxyError),
    /// Another attempt after `wait`, once the response not forwarded (a retried status) is
    /// read; `failure` is how this one ended (the answer if no attempt can follow).
    Again { wait: Duration, drain: Option<Response<Body>>, failure: super::retry::Failure },
}

/// Classifies the attempt's outcome and asks the retry policy (`retry.rs`).
fn next_after(tries: &mut super::retry::Tries<'_>, outcome: Outcome) -> Next {
    use super::retry::{Decision, Failure};
    let (failure, resp) = match outcome {
        Outcome::Response(resp) => (Failure::Status(resp.status().as_u16()), Some(resp)),
        Outcome::ConnectFailed(_) => (Failure::Connect, None),
        // The connection broke before a response: the pod reset or closed it.
        Outcome::Failed => (Failure::Broken, None),
        Outcome::TimedOut => (Failure::TimedOut, None),
    };
    match (tries.after(failure, fastrand::u64(..)), resp) {
        (Decision::Retry(wait), drain) => Next::Again { wait, drain, failure },
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
        pass_fields: bool,
    ) -> Outcome {
        // HTTP/1.1 over the pool (`h1_client.rs`), or HTTP/2 to an h2c pod (`h2_client.rs`)
        let fut = async {
            match backend.protocol {
                BackendProtocol::Http1 => self.h1().request(endpoint, req, pass_fields).await.map_err(|e| match e {
                    super::h1_client::H1Error::Connect(req, e) => (Some(req), true, e),
                    super::h1_client::H1Error::Failed(e) => (None, false, e),
                }),
                // boxed: every HTTP/1.1 request's future would carry the h2 client's size
                BackendProtocol::H2c => Box::pin(self.h2c().request(endpoint, req))
                    .await
                    .map(|r| r.map(|b| b.map_err(Into::into).boxed()))
                    .map_err(|e| (None, e.is_connect(), e.to_string())),
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
            Err((unsent, connect, e)) => {
                self.metrics.backend_error();
                let backend = &backend.name;
                tracing::debug!(%endpoint, %backend, error = %e, connect, "backend request failed");
                if connect { Outcome::ConnectFailed(unsent) } else { Outcome::Failed }
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
        pass_fields: bool,
    ) -> Result<Response<Body>, Response<Body>> {
        let whole = async {
            let retry = rule.retry.as_ref();
            let others = endpoint_count(backend);
            // a copy only where a request that went out may have to go again
            let copy =
                retry.is_some_and(|r| r.attempts > 0) || (backend.protocol == BackendProtocol::H2c && others > 1);
            let replayable = replayable(&req);
            let replay = (copy && replayable).then(|| copy_head(&req, endpoint, pq)).flatten();
            // what to do after each attempt (`retry.rs`)
            let mut tries = super::retry::Tries::new(retry, replayable, others);
            let mut endpoint = endpoint;
            let mut next = Some(req);
            loop {
                let req = match (next.take(), &replay) {
                    (Some(r), _) => r,
                    (None, Some(head)) => copy_head(head, endpoint, pq).expect("same URI shape as the first attempt"),
                    (None, None) => unreachable!("an attempt without the request or a copy is never begun"),
                };
                let mut outcome =
                    self.attempt(req, rule.timeouts.backend_request, endpoint, backend, pass_fields).await;
                // a request that came back unsent goes again as it is
                if let Outcome::ConnectFailed(unsent) = &mut outcome {
                    next = unsent.take().map(|r| *r);
                }
                let wait = match next_after(&mut tries, outcome) {
                    Next::Answer(resp) => return Ok(resp),
                    Next::Fail(e) => return Err(e.into()),
                    Next::Again { wait, drain, failure } => {
                        if let Some(resp) = drain {
                            // Drain so the connection goes back to the pool.
                            let _ = resp.into_body().collect().await;
                        }
                        if next.is_none() && replay.is_none() {
                            // sent, and no copy to send again
                            return Err(failure.error().unwrap_or(ProxyError::BackendFailed).into());
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
