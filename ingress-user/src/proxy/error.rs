//! What can go wrong after a request was planned, classified by where it happened and
//! whether another attempt may help, and mapped to the client's status in one place.

use http::StatusCode;

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The pod: refused, reset, slow, or answered something that is not HTTP.
    Backend,
    /// The proxy's own limits (the route's request timeout, a table without the listener).
    Proxy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// No connection to the endpoint (refused, unreachable, connect timeout).
    ConnectFailed,
    /// The connection broke before a whole response head arrived.
    BackendFailed,
    /// One attempt took longer than the rule's `backendRequest` timeout.
    BackendTimeout,
    /// The whole request took longer than the rule's `request` timeout.
    RequestTimeout,
    /// The pod did not answer an upgrade request as HTTP/1.1.
    UpgradeHandshake,
    /// The routing table has no entry for this listen address (a wiring bug).
    ListenerMissing,
}

impl ProxyError {
    pub fn side(self) -> Side {
        match self {
            Self::ConnectFailed | Self::BackendFailed | Self::BackendTimeout | Self::UpgradeHandshake => Side::Backend,
            Self::RequestTimeout | Self::ListenerMissing => Side::Proxy,
        }
    }

    /// Whether another endpoint may be tried: only when nothing reached the pod (a
    /// request that reached it may have had effects; retries by status code are the
    /// route's `retry` policy, not this).
    pub fn retryable(self) -> bool {
        self == Self::ConnectFailed
    }

    /// The status the client gets, and the body the proxy writes.
    pub fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Self::ConnectFailed => (StatusCode::SERVICE_UNAVAILABLE, "backend unavailable\n"),
            Self::BackendFailed => (StatusCode::BAD_GATEWAY, "backend failed\n"),
            Self::UpgradeHandshake => (StatusCode::BAD_GATEWAY, "backend handshake failed\n"),
            Self::BackendTimeout => (StatusCode::GATEWAY_TIMEOUT, "backend timeout\n"),
            Self::RequestTimeout => (StatusCode::GATEWAY_TIMEOUT, "request timeout\n"),
            Self::ListenerMissing => (StatusCode::INTERNAL_SERVER_ERROR, "listener table missing\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_where_and_how_it_failed() {
        let all = [
            ProxyError::ConnectFailed,
            ProxyError::BackendFailed,
            ProxyError::BackendTimeout,
            ProxyError::RequestTimeout,
            ProxyError::UpgradeHandshake,
            ProxyError::ListenerMissing,
        ];
        let statuses: Vec<u16> = all.iter().map(|e| e.answer().0.as_u16()).collect();
        assert_eq!(statuses, [503, 502, 504, 504, 502, 500]);
        // only a connection that never reached the pod may go to another endpoint
        assert_eq!(all.iter().filter(|e| e.retryable()).collect::<Vec<_>>(), [&ProxyError::ConnectFailed]);
        let proxy_side: Vec<_> = all.iter().filter(|e| e.side() == Side::Proxy).collect();
        assert_eq!(proxy_side, [&ProxyError::RequestTimeout, &ProxyError::ListenerMissing]);
    }
}
