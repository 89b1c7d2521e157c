//! HTTP/1.1 Upgrade (WebSocket and any other protocol the route reaches): the request
//! goes to the pod on a dedicated connection with its Upgrade/Connection headers; on
//! `101 Switching Protocols` both connections are joined and bytes are copied both
//! ways until either side closes. Other answers are returned as normal responses.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::error::ProxyError;
use super::{Body, Proxy};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Proxy {
    pub(super) async fn upgrade(
        &self,
        mut req: Request<Body>,
        proto: HeaderValue,
        endpoint: SocketAddr,
        backend: &str,
    ) -> Response<Body> {
        let client_side = hyper::upgrade::on(&mut req);
        // Only the upgrade pair survives among the hop-by-hop headers.
        super::plan::strip_hop_by_hop(req.headers_mut());
        req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(header::UPGRADE, proto);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint)).await {
            Ok(Ok(s)) => s,
            _ => {
                self.metrics.backend_error();
                return ProxyError::ConnectFailed.into();
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(p) => p,
            Err(_) => return ProxyError::UpgradeHandshake.into(),
        };
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.backend_error();
                tracing::debug!(%endpoint, %backend, error = %e, "502: upgrade request failed");
                return ProxyError::BackendFailed.into();
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return resp.map(|b| b.map_err(Into::into).boxed());
        }
        let upstream_side = hyper::upgrade::on(&mut resp);
        let guard = self.metrics.upgraded();
        let backend = backend.to_string();
        let joiner = self.joiner().clone();
        let join_mode = self.config().join_mode;
        tokio::spawn(async move {
            let _guard = guard;
            let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(%backend, error = %e, "upgrade did not complete");
                    return;
                }
            };
            type Io = TokioIo<tokio::net::TcpStream>;
            // The client side is a `ClientIo`, perhaps with bytes not yet consumed.
            let client = client.downcast::<TokioIo<super::conn::ClientIo>>().map(|p| {
                let (stream, rest) = p.io.into_inner().into_parts();
                if rest.is_empty() {
                    return (stream, p.read_buf);
                }
                let mut pending = rest.to_vec();
                pending.extend_from_slice(&p.read_buf);
                (stream, bytes::Bytes::from(pending))
            });
            match (client, upstream.downcast::<Io>()) {
                (Ok((c, c_buf)), Ok(u)) => {
                    use crate::datapath::join_choice::JoinClass;
                    joiner.run_chosen(JoinClass::Upgraded, join_mode, c, c_buf, u.io.into_inner(), u.read_buf).await;
                }
                (c, u) => {
                    // Not plain TCP underneath: copy through hyper's upgraded streams.
                    let (Err(c), Err(u)) = (c, u) else { return };
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            }
            tracing::debug!(%backend, "upgraded connection closed");
        });
        // The 101 goes back with the pod's headers (Sec-WebSocket-Accept, ...).
        let (parts, _) = resp.into_parts();
        Response::from_parts(parts, super::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::plan::requested;
    use http::HeaderMap;

    #[test]
    fn upgrade_needs_connection_upgrade_and_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(requested(&h).is_none(), "Upgrade without Connection: upgrade");
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(requested(&h).unwrap(), "websocket");
    }
}
