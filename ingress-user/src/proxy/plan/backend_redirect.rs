//! Redirect answers, for a rule's RequestRedirect filter and for one on a backendRef.
//!
//! Gateway API on backendRef filters: "Filters defined at this level should be executed
//! if and only if the request is being forwarded to the backend defined here" (support:
//! implementation-specific). A RequestRedirect there answers the requests whose weighted
//! pick is that backend with the redirect; they never reach its pods. The other
//! backends of the rule are forwarded to as usual. Pure.

use http::StatusCode;
use http::header::{self, HeaderValue};

use super::Local;
use crate::routing::Backend;
use crate::routing::filters::{Filter, Redirect, RedirectInput};

/// The RequestRedirect filter of a backendRef, if it has one.
pub(super) fn of(backend: &Backend) -> Option<&Redirect> {
    backend.filters.iter().find_map(|f| match f {
        Filter::RequestRedirect(r) => Some(r),
        _ => None,
    })
}

/// The answer to a request a redirect applies to: its status with the Location, or 500
/// when the Location cannot be made (ReplacePrefixMatch without a PathPrefix match, a
/// value that is no header value).
pub(super) fn answer(r: &Redirect, input: &RedirectInput<'_>) -> Local {
    let location = r.location(input).ok().and_then(|l| HeaderValue::from_str(&l).ok());
    match (location, StatusCode::from_u16(r.status).ok()) {
        (Some(loc), Some(status)) => Local {
            headers: vec![(header::LOCATION, loc), (header::CONTENT_LENGTH, HeaderValue::from_static("0"))],
            ..Local::new(status, "")
        },
        _ => Local::new(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::header::{self, HeaderMap, HeaderValue};
    use http::{Method, Uri};

    use super::super::{Choices, Head, Plan, PlanOptions, Planned, plan};
    use crate::routing::tests::{GATEWAY, route, service, table};
    use crate::routing::{Backend, BackendTarget, Table};

    const RULES: &str = "  parentRefs: [{name: gw}]
  hostnames: [b.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    backendRefs:
    - name: s
      port: 80
      weight: 1
      filters:
      - {type: RequestRedirect, requestRedirect: {hostname: new.test, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    - {name: t, port: 80, weight: 3}
  - matches: [{path: {type: PathPrefix, value: /empty}}]
    backendRefs:
    - name: empty
      port: 80
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /gone}}]
    backendRefs:
    - name: missing
      port: 80
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
";

    fn fixture() -> Table {
        let yaml = format!(
            "{GATEWAY}{}{}{}{}",
            service("infra", "s", &["10.42.0.5"]),
            service("infra", "t", &["10.42.0.7"]),
            service("infra", "empty", &[]),
            route("infra", "r", RULES)
        );
        table(&yaml, "127.0.0.1:8080=infra/gw:81")
    }

    /// `random` returns the given numbers in turn; endpoints: the first one.
    struct Fixed(Vec<u64>);

    impl Choices for Fixed {
        fn random(&mut self) -> u64 {
            if self.0.is_empty() { 0 } else { self.0.remove(0) }
        }
        fn endpoint(&mut self, b: &Backend) -> Option<SocketAddr> {
            match &b.target {
                BackendTarget::Endpoints(e) => e.first().copied(),
                BackendTarget::Invalid(_) => None,
            }
        }
    }

    fn run(t: &Table, target: &str, rnd: &[u64]) -> Planned {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("b.test:8080"));
        let uri: Uri = target.parse().unwrap();
        let head = Head { method: &Method::GET, uri: &uri, headers: &mut h, peer: "198.18.0.1:40000".parse().unwrap() };
        let opts = PlanOptions { forwarded_headers: true, request_ids: false, scheme: "http" };
        plan(&t.listeners[0], head, opts, &mut Fixed(rnd.to_vec()))
    }

    fn location(p: &Planned) -> (u16, Option<String>) {
        match &p.plan {
            Plan::Local(l) => (
                l.status.as_u16(),
                l.headers.iter().find(|(n, _)| n == header::LOCATION).map(|(_, v)| v.to_str().unwrap().to_string()),
            ),
            Plan::Forward(f) => panic!("expected a redirect, got a forward to {}", f.uri),
        }
    }

    #[test]
    fn a_weighted_pick_of_the_redirecting_backend_is_answered_the_others_are_forwarded() {
        let t = fixture();
        // weights 1 (s, redirects) and 3 (t): r % 4 == 0 picks s, 1..=3 pick t
        let p = run(&t, "/moved/a?q=1", &[0]);
        assert_eq!(location(&p), (301, Some("http://new.test:8080/v2/a?q=1".into())));
        assert_eq!((&*p.route, &*p.backend), ("infra/r#0", "infra/s:80"), "counted under the backend");
        for r in 1..4 {
            let p = run(&t, "/moved/a", &[r]);
            match &p.plan {
                Plan::Forward(f) => assert_eq!(f.uri, "http://10.42.0.7:8080/moved/a", "r={r}"),
                Plan::Local(l) => panic!("r={r}: {} {:?}", l.status, l.headers),
            }
        }
    }

    #[test]
    fn a_redirecting_backend_needs_no_ready_endpoint_but_a_valid_reference() {
        let t = fixture();
        assert_eq!(location(&run(&t, "/empty/x", &[])), (302, Some("https://b.test/empty/x".into())));
        // an unresolvable backendRef stays a 500, redirect or not
        let p = run(&t, "/gone", &[]);
        assert_eq!(location(&p), (500, None));
    }
}
