//! Filters on a backendRef: a RequestRedirect there is compiled into the backend (the
//! proxy answers with it when the weighted pick is that backend, `proxy/plan/backend_redirect.rs`)
//! and the route stays Accepted; a backendRef's filters that cannot be served are reported.

use super::tests::{GATEWAY, route, service, table};
use super::*;

fn rule_of<'t>(t: &'t Table, host: &str) -> &'t Arc<Rule> {
    let h = http::HeaderMap::new();
    let head = RequestHead { method: "GET", host, path: "/", query: None, headers: &h };
    t.listeners[0].find(&head).expect("a rule for the host").rule
}

fn condition(t: &Table, route: &str, kind: &str) -> (bool, String) {
    let r = t.routes.iter().find(|r| r.route == route).unwrap_or_else(|| panic!("no report for {route}"));
    let c = r.parents[0].condition(kind).unwrap_or_else(|| panic!("{route}: no {kind} condition"));
    (c.status, c.reason.clone())
}

#[test]
fn a_request_redirect_on_a_backend_ref_is_compiled_and_the_route_accepted() {
    let body = "  parentRefs: [{name: gw}]
  hostnames: [r.test]
  rules:
  - backendRefs:
    - name: a
      port: 80
      weight: 1
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: b.test, port: 8443, statusCode: 308}}]
    - {name: b, port: 80, weight: 1}
";
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("infra", "a", &["10.0.0.1"]),
        service("infra", "b", &["10.0.0.2"]),
        route("infra", "r", body)
    );
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let rule = rule_of(&t, "r.test");
    assert!(rule.filters.is_empty(), "the rule itself has no filter: {:?}", rule.filters);
    assert_eq!(rule.redirect(), None, "the rule does not redirect every request");
    let redirect = Redirect {
        scheme: Some("https".into()),
        hostname: Some("b.test".into()),
        port: Some(8443),
        path: None,
        status: 308,
    };
    assert_eq!(rule.backends[0].filters, [Filter::RequestRedirect(redirect)]);
    assert!(rule.backends[1].filters.is_empty());
    assert_eq!(condition(&t, "infra/r", "Accepted"), (true, "Accepted".into()));
    assert_eq!(condition(&t, "infra/r", "ResolvedRefs"), (true, "ResolvedRefs".into()));
    assert!(t.routes[0].problems.is_empty(), "{:?}", t.routes[0].problems);
    let why = t.listeners[0].vhost("r.test").unwrap().splice.clone().unwrap_err();
    assert!(why.contains("exactly one backend"), "{why}");
}

#[test]
fn a_backend_ref_with_redirect_and_rewrite_or_an_unknown_filter_is_reported() {
    let body = "  parentRefs: [{name: gw}]
  hostnames: [x.test]
  rules:
  - backendRefs:
    - name: a
      port: 80
      filters:
      - {type: RequestRedirect, requestRedirect: {scheme: https}}
      - {type: URLRewrite, urlRewrite: {hostname: y.test}}
  - matches: [{path: {value: /ext}}]
    backendRefs:
    - name: a
      port: 80
      filters: [{type: ExtensionRef, extensionRef: {group: x.test, kind: Thing, name: t}}]
";
    let yaml = format!("{GATEWAY}{}{}", service("infra", "a", &["10.0.0.1"]), route("infra", "x", body));
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let rule = rule_of(&t, "x.test");
    assert!(
        rule.backends[0]
            .filters
            .iter()
            .any(|f| matches!(f, Filter::Unsupported { reason } if reason.contains("RequestRedirect and URLRewrite"))),
        "{:?}",
        rule.backends[0].filters
    );
    let problems = &t.routes[0].problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("rule 0 backendRef infra/a:80: RequestRedirect and URLRewrite"), "{problems:?}");
    assert!(problems[1].starts_with("rule 1 backendRef infra/a:80: filter ExtensionRef"), "{problems:?}");
    assert_eq!(condition(&t, "infra/x", "Accepted"), (false, "UnsupportedValue".into()));
}
