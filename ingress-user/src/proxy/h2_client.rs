//! HTTP/2 to backends whose Service port says `appProtocol: kubernetes.io/h2c`: one
//! multiplexed cleartext connection per pod endpoint (prior knowledge), shared by all
//! requests to it, redialled when the pod closes it, and dropped after
//! [`POOL_IDLE`] without a request (its open streams finish first).
//!
//! hyper's pooled client would send the endpoint address as `:authority`; the pod
//! must see the request's host instead, so the connections are kept here and each
//! request's target is rebuilt from its `Host` ([`to_h2`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::Body;

/// A connection to a pod without a request for this long is let go.
pub const POOL_IDLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to an h2c backend got no response.
#[derive(Debug)]
pub enum H2Error {
    /// No connection to the endpoint (refused, unreachable, timeout, no h2 handshake).
    Connect(String),
    /// The request could not be built for HTTP/2 (a bad Host).
    Request(&'static str),
    /// The connection or stream broke before a response head.
    Failed(hyper::Error),
}

impl H2Error {
    /// Whether nothing reached the pod (another endpoint may be tried).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "h2c connect: {e}"),
            Self::Request(e) => write!(f, "h2c request: {e}"),
            Self::Failed(e) => write!(f, "h2c: {e}"),
        }
    }
}

/// The request as it goes out on an HTTP/2 connection (pure): version 2, the target
/// `http://HOST/path?query` with HOST from the `Host` field (RFC 9113 8.3.1: the
/// `:authority`, no `Host` beside it), and no `Connection` field (HTTP/2 has none;
/// a HEAD request carries one for HTTP/1.1 pods). The other hop-by-hop fields were
/// removed by the plan; `TE: trailers` stays.
pub fn to_h2<B>(req: &mut Request<B>) -> Result<(), &'static str> {
    *req.version_mut() = Version::HTTP_2;
    let host = req.headers_mut().remove(header::HOST);
    let authority = match &host {
        Some(h) => h.to_str().map_err(|_| "Host is not ASCII")?.to_string(),
        None => req.uri().authority().map(|a| a.to_string()).ok_or("no Host for :authority")?,
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(pq)
        .build()
        .map_err(|_| "Host is not a valid :authority")?;
    *req.uri_mut() = uri;
    req.headers_mut().remove(header::CONNECTION);
    Ok(())
}

/// One endpoint's connection.
#[derive(Default)]
struct Slot {
    sender: Mutex<Option<SendRequest<Body>>>,
    /// One dial at a time: concurrent first requests share its connection.
    dial: tokio::sync::Mutex<()>,
    /// When a request last began, in ms since [`H2Pool::epoch`].
    used_ms: AtomicU64,
}

/// The connections to h2c pods, one per endpoint.
pub struct H2Pool {
    slots: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
    epoch: Instant,
}

impl Default for H2Pool {
    fn default() -> Self {
        Self { slots: Mutex::default(), epoch: Instant::now() }
    }
}

impl H2Pool {
    /// Sends `req` (addressed to `endpoint` by the plan) on the endpoint's connection.
    pub async fn request(&self, endpoint: SocketAddr, mut req: Request<Body>) -> Result<Response<Incoming>, H2Error> {
        to_h2(&mut req).map_err(H2Error::Request)?;
        let slot = self.slots.lock().expect("h2 pool").entry(endpoint).or_default().clone();
        slot.used_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        // a pooled connection the pod closed since: dial once more
        for fresh in [false, true] {
            let mut sender = self.sender(&slot, endpoint, fresh).await?;
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => req = back,
                    _ => return Err(H2Error::Failed(e.into_error())),
                },
            }
        }
        Err(H2Error::Connect("the connection closed at once".into()))
    }

    /// The slot's open connection, or a new one (always a new one when `fresh`).
    async fn sender(&self, slot: &Arc<Slot>, endpoint: SocketAddr, fresh: bool) -> Result<SendRequest<Body>, H2Error> {
        let open = |s: &Option<SendRequest<Body>>| s.as_ref().filter(|s| !s.is_closed()).cloned();
        if !fresh {
            if let Some(s) = open(&slot.sender.lock().expect("h2 slot")) {
                return Ok(s);
            }
        }
        let _dialing = slot.dial.lock().await;
        // another request may have dialled meanwhile
        if !fresh {
            if let Some(s) = open(&slot.sender.lock().expect("h2 slot")) {
                return Ok(s);
            }
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(H2Error::Connect(e.to_string())),
            Err(_) => return Err(H2Error::Connect("connect timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(super::MAX_HEAD as u32)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| H2Error::Connect(e.to_string()))?;
        *slot.sender.lock().expect("h2 slot") = Some(sender.clone());
        let (slot, epoch) = (slot.clone(), self.epoch);
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            loop {
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            tracing::debug!(%endpoint, error = %e, "h2c backend connection ended");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(POOL_IDLE / 2) => {
                        let used = Duration::from_millis(slot.used_ms.load(Ordering::Acquire));
                        if epoch.elapsed().saturating_sub(used) >= POOL_IDLE {
                            // let it go: it closes once its open streams are done
                            slot.sender.lock().expect("h2 slot").take();
                        }
                    }
                }
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_becomes_the_authority() {
        let mut req = Request::builder()
            .method("HEAD")
            .uri("http://10.42.0.5:9000/pkg.Svc/Call?x=1")
            .version(Version::HTTP_11)
            .header("host", "grpc.test:9080")
            .header("connection", "close")
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        to_h2(&mut req).unwrap();
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri().to_string(), "http://grpc.test:9080/pkg.Svc/Call?x=1");
        assert!(!req.headers().contains_key("host") && !req.headers().contains_key("connection"));
        assert_eq!(req.headers()["te"], "trailers");
        assert_eq!(req.headers()["content-type"], "application/grpc");
    }

    #[test]
    fn without_host_the_target_s_authority_is_kept_and_a_bad_host_is_an_error() {
        let mut req = Request::builder().uri("http://10.42.0.5:9000/").body(()).unwrap();
        to_h2(&mut req).unwrap();
        assert_eq!(req.uri().to_string(), "http://10.42.0.5:9000/");
        let mut bad = Request::builder().uri("http://10.42.0.5:9000/").header("host", "a b").body(()).unwrap();
        assert!(to_h2(&mut bad).is_err());
    }
}
