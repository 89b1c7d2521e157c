//! The upstream phase: send the request to the chosen endpoint over the pool; on a
//! connect failure try the backend's next endpoints; apply the rule's retry policy
//! and timeouts. A request whose connect failed comes back unsent from the HTTP/1.1
//! pool (`h1_client.rs`) and goes to the next endpoint as it is; a copy of the head is
//! kept only where a sent request may be replayed (a retry policy; h2c pods, whose
//! pool does not give requests back). Requests with a body are sent once (the body
//! streams and cannot be replayed).

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, Uri, header};
use http_body_util::BodyExt;

use super::error::ProxyError;
use super::{Body, Proxy};
use crate::routing::{Backend, BackendProtocol, Rule};

/// Endpoints tried for one request when connections are refused.
const MAX_CONNECT_TRIES: usize = 3;

/// How an attempt ended, for the retry decision.
enum Outcome {
    Response(Response<Body>),
    /// Nothing reached the pod: the request, when it came back unsent.
    ConnectFailed(Option<Box<Request<Body>>>),
    Failed,
    TimedOut,
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
    ) -> Outcome {
        // HTTP/1.1 over the pool (`h1_client.rs`), or HTTP/2 to an h2c pod (`h2_client.rs`)
        let fut = async {
            match backend.protocol {
                BackendProtocol::Http1 => self.h1.request(endpoint, req).await.map_err(|e| match e {
                    super::h1_client::H1Error::Connect(req, e) => (Some(req), true, e),
                    super::h1_client::H1Error::Failed(e) => (None, false, e.to_string()),
                }),
                BackendProtocol::H2c => self
                    .h2c
                    .request(endpoint, req)
                    .await
                    .map(|r| r.map(|b| b.boxed()))
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
    ) -> Result<Response<Body>, Response<Body>> {
        let whole = async {
            let retry = rule.retry.as_ref();
            let others = match &backend.target {
                crate::routing::BackendTarget::Endpoints(e) => e.len(),
                _ => 1,
            };
            // a copy only where a request that went out may have to go again
            let copy =
                retry.is_some_and(|r| r.attempts > 0) || (backend.protocol == BackendProtocol::H2c && others > 1);
            let replay = (copy && replayable(&req)).then(|| copy_head(&req, endpoint, pq)).flatten();
            let max_status_retries = if replay.is_some() { retry.map_or(0, |r| r.attempts) } else { 0 };
            let (mut status_retries, mut connect_tries) = (0u32, 1usize);
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
                match self.attempt(req, rule.timeouts.backend_request, endpoint, backend).await {
                    Outcome::Response(resp) => {
                        let code = resp.status().as_u16();
                        let retry_code = retry.is_some_and(|r| r.codes.contains(&code));
                        if retry_code && status_retries < max_status_retries {
                            status_retries += 1;
                            // Drain so the connection goes back to the pool.
                            let _ = resp.into_body().collect().await;
                            if let Some(b) = retry.and_then(|r| r.backoff) {
                                tokio::time::sleep(b).await;
                            }
                            endpoint = self.endpoints.pick(backend).unwrap_or(endpoint);
                            continue;
                        }
                        return Ok(resp);
                    }
                    Outcome::ConnectFailed(unsent) => {
                        // the request itself when it came back unsent, else a copy of its head
                        if (unsent.is_some() || replay.is_some()) && connect_tries < others.min(MAX_CONNECT_TRIES) {
                            connect_tries += 1;
                            endpoint = self.endpoints.pick(backend).unwrap_or(endpoint);
                            next = unsent.map(|r| *r);
                            continue;
                        }
                        return Err(ProxyError::ConnectFailed.into());
                    }
                    // The connection broke before a response: the pod reset it.
                    Outcome::Failed => return Err(ProxyError::BackendFailed.into()),
                    Outcome::TimedOut => return Err(ProxyError::BackendTimeout.into()),
                }
            }
        };
        match rule.timeouts.request {
            Some(t) => tokio::time::timeout(t, whole).await.unwrap_or_else(|_| Err(ProxyError::RequestTimeout.into())),
            None => whole.await,
        }
    }
}
