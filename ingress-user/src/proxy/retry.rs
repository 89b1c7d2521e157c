//! The retry decision, pure: given how an attempt to the backend ended, the rule's
//! `retry` policy and what was already tried -> try again (after how long) or give up.
//! `forward.rs` runs the attempts; this decides between them.
//!
//! GEP-1731 (HTTPRoute retries) and the HTTPRouteRetry API:
//! - "Implementations SHOULD retry when a retry stanza is configured and the connection
//!   could not be established": a connect failure is retried up to `attempts`.
//! - the conformance feature HTTPRouteRetryConnectionError "will test that connections
//!   interrupted by a TCP failure, disconnect or reset are retried if a retry stanza is
//!   configured": a connection that breaks before a response head arrived is retried too,
//!   with `codes` or without. The GEP adds that implementations retrying where the
//!   request may have been processed "MUST clearly document this behavior": only
//!   requests that can be replayed are (no body, not POST/PATCH, `replayable` in
//!   `forward.rs`), and the README says so.
//! - "If a BackendRequest timeout (`rules[].timeouts.backendRequest`) is configured on
//!   the route, any retry attempts which reach the configured BackendRequest timeout
//!   duration without a response SHOULD be canceled if possible and the Gateway SHOULD
//!   schedule the next retry attempt according to the configured backoff" (as Envoy's
//!   per_try_timeout does): a timed-out attempt is retried; the whole stays within
//!   `timeouts.request` (GEP-1742: "an entire client HTTP transaction with a gateway,
//!   covered by the Request timeout, may result in more than one call from the gateway
//!   to the destination backend"), which `forward.rs` enforces around all attempts.
//! - "An explicit zero value MUST disable retries"; an unspecified `attempts` is 0 here
//!   (the API allows "an implementation-specific default, including none").
//! - backoff: "the base interval for a backoff strategy ... Implementations MAY add random
//!   jitter and MAY cap the delay at an implementation-defined maximum, which SHOULD NOT
//!   be less than the base interval": base, 2x base, 4x base, ... capped at 10x base (as
//!   Envoy), plus up to a quarter of jitter. Unspecified: Envoy's 25 ms base.
//!
//! Never after a response byte reached the client: a response head ends the attempts
//! (a retryable status code is drained, not forwarded). Independently of a policy, a
//! replayable request whose connection is refused goes on to the backend's next
//! endpoint, up to [`MAX_CONNECT_TRIES`] endpoints, at once (nothing reached a pod).

use std::time::Duration;

use super::error::ProxyError;
use crate::routing::Retry;

/// Endpoints tried for one request when connections are refused, without a policy.
pub const MAX_CONNECT_TRIES: usize = 3;

/// The base backoff when the policy names none (Envoy's default).
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// The longest backoff, in multiples of the base.
const MAX_BACKOFF_FACTOR: u32 = 10;

/// How an attempt ended without a response to forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection to the endpoint (refused, unreachable).
    Connect,
    /// The connection broke (reset, closed) before a whole response head arrived.
    Broken,
    /// No response head within `timeouts.backendRequest`.
    TimedOut,
    /// A response head with this status.
    Status(u16),
}

impl Failure {
    /// The client's answer when this was the last attempt (`None`: the response itself).
    pub fn error(self) -> Option<ProxyError> {
        match self {
            Self::Connect => Some(ProxyError::ConnectFailed),
            Self::Broken => Some(ProxyError::BackendFailed),
            Self::TimedOut => Some(ProxyError::BackendTimeout),
            Self::Status(_) => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again, on the backend's next endpoint, after this long.
    Retry(Duration),
    GiveUp,
}

/// The attempts of one request.
#[derive(Debug)]
pub struct Tries<'a> {
    policy: Option<&'a Retry>,
    /// Whether the request can be sent again (its head was kept, it has no body).
    replayable: bool,
    /// Ready endpoints of the backend.
    endpoints: usize,
    /// Endpoints tried after refused connections, outside the policy (the first included).
    connect_tries: usize,
    /// Retries of the policy used.
    retries: u32,
}

impl<'a> Tries<'a> {
    pub fn new(policy: Option<&'a Retry>, replayable: bool, endpoints: usize) -> Self {
        Self { policy, replayable, endpoints, connect_tries: 1, retries: 0 }
    }

    /// Retries of the policy used so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// After an attempt that ended in `f`: again, or give up. `random` is a uniformly
    /// random number (the jitter).
    pub fn after(&mut self, f: Failure, random: u64) -> Decision {
        if !self.replayable {
            return Decision::GiveUp;
        }
        if f == Failure::Connect && self.connect_tries < self.endpoints.min(MAX_CONNECT_TRIES) {
            self.connect_tries += 1;
            return Decision::Retry(Duration::ZERO);
        }
        let Some(policy) = self.policy else { return Decision::GiveUp };
        let retried = match f {
            Failure::Connect | Failure::Broken | Failure::TimedOut => true,
            Failure::Status(code) => policy.codes.contains(&code),
        };
        if !retried || self.retries >= policy.attempts {
            return Decision::GiveUp;
        }
        self.retries += 1;
        Decision::Retry(backoff(policy.backoff.unwrap_or(DEFAULT_BACKOFF), self.retries, random))
    }
}

/// The wait before retry number `n` (1 = the first retry): `base * 2^(n-1)`, at most
/// `10 * base`, plus up to a quarter of that from `random`. Never less than `base`.
pub fn backoff(base: Duration, n: u32, random: u64) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX).min(MAX_BACKOFF_FACTOR);
    let d = base.saturating_mul(factor);
    d.saturating_add(d.mul_f64((random % 1024) as f64 / 4096.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, codes: &[u16], backoff: Option<u64>) -> Retry {
        Retry { attempts, codes: codes.to_vec(), backoff: backoff.map(Duration::from_millis) }
    }

    /// The decisions for a run of failures, until the first give-up (random = 0).
    fn run(t: &mut Tries<'_>, failures: &[Failure]) -> Vec<Decision> {
        let mut out = Vec::new();
        for f in failures {
            let d = t.after(*f, 0);
            out.push(d);
            if d == Decision::GiveUp {
                break;
            }
        }
        out
    }

    const MS: fn(u64) -> Decision = |ms| Decision::Retry(Duration::from_millis(ms));

    #[test]
    fn attempts_without_codes_retry_connection_errors_and_timeouts_with_backoff() {
        let p = policy(2, &[], Some(100));
        for f in [Failure::Broken, Failure::TimedOut] {
            let mut t = Tries::new(Some(&p), true, 1);
            assert_eq!(run(&mut t, &[f; 4]), [MS(100), MS(200), Decision::GiveUp], "{f:?}");
            assert_eq!(t.retries(), 2);
        }
        // a refused connection to the only endpoint is retried by the policy
        let mut t = Tries::new(Some(&p), true, 1);
        assert_eq!(run(&mut t, &[Failure::Connect; 4]), [MS(100), MS(200), Decision::GiveUp]);
        // mixed: each kind counts against the same attempts
        let mut t = Tries::new(Some(&p), true, 1);
        assert_eq!(
            run(&mut t, &[Failure::TimedOut, Failure::Broken, Failure::TimedOut]),
            [MS(100), MS(200), Decision::GiveUp]
        );
        // without codes a status is never retried: the response is the answer
        let mut t = Tries::new(Some(&p), true, 1);
        assert_eq!(t.after(Failure::Status(503), 0), Decision::GiveUp);
    }

    #[test]
    fn codes_are_retried_up_to_attempts_and_other_codes_are_answered() {
        let p = policy(3, &[502, 503], Some(10));
        let mut t = Tries::new(Some(&p), true, 2);
        let s = Failure::Status(503);
        assert_eq!(run(&mut t, &[s, Failure::Status(502), s, s]), [MS(10), MS(20), MS(40), Decision::GiveUp]);
        let mut t = Tries::new(Some(&p), true, 2);
        assert_eq!(t.after(Failure::Status(500), 0), Decision::GiveUp, "500 is not in the codes");
        // connection errors are retried when codes are set, too
        let mut t = Tries::new(Some(&p), true, 1);
        assert_eq!(t.after(Failure::Broken, 0), MS(10));
    }

    #[test]
    fn a_request_that_cannot_be_replayed_or_zero_attempts_is_never_retried() {
        let p = policy(5, &[503], None);
        let mut t = Tries::new(Some(&p), false, 3);
        for f in [Failure::Connect, Failure::Broken, Failure::TimedOut, Failure::Status(503)] {
            assert_eq!(t.after(f, 0), Decision::GiveUp, "{f:?}");
        }
        let zero = policy(0, &[503], None);
        let mut t = Tries::new(Some(&zero), true, 1);
        for f in [Failure::Broken, Failure::TimedOut, Failure::Status(503)] {
            assert_eq!(t.after(f, 0), Decision::GiveUp, "{f:?}");
        }
        let mut t = Tries::new(None, true, 1);
        assert_eq!(t.after(Failure::Broken, 0), Decision::GiveUp, "no policy");
    }

    #[test]
    fn refused_connections_go_to_the_next_endpoints_first_then_the_policy() {
        // no policy: up to 3 endpoints (or as many as there are), at once
        let mut t = Tries::new(None, true, 5);
        let c = Failure::Connect;
        assert_eq!(run(&mut t, &[c; 5]), [MS(0), MS(0), Decision::GiveUp]);
        let mut t = Tries::new(None, true, 2);
        assert_eq!(run(&mut t, &[c; 5]), [MS(0), Decision::GiveUp]);
        // with a policy: the free tries, then the policy's attempts with backoff
        let p = policy(1, &[], None);
        let mut t = Tries::new(Some(&p), true, 2);
        assert_eq!(run(&mut t, &[c; 5]), [MS(0), MS(25), Decision::GiveUp]);
        assert_eq!(t.retries(), 1);
    }

    #[test]
    fn backoff_doubles_to_ten_times_the_base_with_at_most_a_quarter_of_jitter() {
        let base = Duration::from_millis(100);
        let waits: Vec<u128> = (1..=6).map(|n| backoff(base, n, 0).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(base, 40, 0), Duration::from_secs(1), "no overflow");
        for r in [1, 511, 1023, u64::MAX] {
            let d = backoff(base, 1, r);
            assert!(d >= base && d < base + base / 4, "{r}: {d:?}");
        }
        assert_eq!(backoff(Duration::ZERO, 3, 1023), Duration::ZERO);
    }

    #[test]
    fn failures_map_to_the_client_answer() {
        assert_eq!(Failure::Connect.error(), Some(ProxyError::ConnectFailed));
        assert_eq!(Failure::Broken.error(), Some(ProxyError::BackendFailed));
        assert_eq!(Failure::TimedOut.error(), Some(ProxyError::BackendTimeout));
        assert_eq!(Failure::Status(503).error(), None);
    }
}
