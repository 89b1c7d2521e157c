//! TLSRoutes on passthrough listeners: attachment (parentRefs, allowedRoutes, hostname
//! intersection), SNI precedence (exact, longest wildcard, any), conflicts, weights,
//! ReferenceGrants.

use super::super::tests::{service, table};
use super::*;
use crate::routing::Table;

const GATEWAY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: x
  listeners:
  - {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}
  - name: pass
    protocol: TLS
    port: 8443
    hostname: '*.tls.example'
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: All}}
  - {name: open, protocol: TLS, port: 9443, tls: {mode: Passthrough}}
  - {name: only-http, protocol: TLS, port: 7443, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
  - {name: term, protocol: TLS, port: 6443, tls: {mode: Terminate, certificateRefs: [{name: c}]}}
";

fn tls_route(ns: &str, name: &str, created: &str, body: &str) -> String {
    format!(
        "
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}
spec:
{body}"
    )
}

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-02T00:00:00Z";

/// `route -> backend names` for an SNI name on listen mapping 0, or None.
fn sni(t: &Table, name: &str) -> Option<String> {
    let pt = t.listeners[0].passthrough.as_ref()?;
    pt.lookup(name).map(|h| {
        let b: Vec<&str> = h.rule.backends.iter().map(|b| b.name.as_str()).collect();
        format!("{} -> {}", h.rule.route.name, b.join(","))
    })
}

fn report<'t>(t: &'t Table, route: &str) -> &'t crate::routing::RouteReport {
    t.tls_routes
        .iter()
        .find(|r| r.route == route)
        .unwrap_or_else(|| panic!("no report for {route}: {:?}", t.tls_routes))
}

fn accepted(t: &Table, route: &str) -> (bool, String) {
    let c = report(t, route).parents[0].condition("Accepted").unwrap();
    (c.status, c.reason.clone())
}

#[test]
fn passthrough_listeners_are_served_and_terminate_ones_are_not() {
    let t = table(GATEWAY, "0.0.0.0:8443=infra/gw:8443");
    let l = &t.listeners[0];
    assert_eq!(l.listeners, [("pass".to_string(), 8443)]);
    assert!(l.problems.is_empty(), "{:?}", l.problems);
    assert_eq!(l.passthrough.as_ref().unwrap().listeners, [("pass".to_string(), 8443)]);
    assert!(l.vhosts().is_empty(), "no HTTP hosts on a passthrough-only address");

    let t = table(GATEWAY, "0.0.0.0:6443=infra/gw:6443");
    let l = &t.listeners[0];
    assert!(l.listeners.is_empty() && l.passthrough.is_none());
    assert!(l.problems.iter().any(|p| p.contains("term (TLS port 6443) is not served")), "{:?}", l.problems);

    // the whole Gateway: HTTP and the passthrough listeners side by side
    let t = table(GATEWAY, "0.0.0.0:8443=infra/gw");
    let names: Vec<&str> = t.listeners[0].listeners.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["http", "pass", "open", "only-http"]);
}

#[test]
fn sni_precedence_exact_then_longest_wildcard() {
    let yaml = format!(
        "{GATEWAY}{}{}{}{}{}{}",
        service("apps", "a", &["10.0.0.1"]),
        service("apps", "b", &["10.0.0.2"]),
        service("apps", "c", &["10.0.0.3"]),
        tls_route(
            "apps",
            "exact",
            T0,
            "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [a.tls.example]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"
        ),
        tls_route(
            "apps",
            "wild",
            T0,
            "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: ['*.tls.example']\n  rules: [{backendRefs: [{name: b, port: 80}]}]\n"
        ),
        tls_route(
            "apps",
            "deeper",
            T0,
            "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: ['*.x.tls.example']\n  rules: [{backendRefs: [{name: c, port: 80}]}]\n"
        ),
    );
    let t = table(&yaml, "0.0.0.0:8443=infra/gw:8443");
    assert_eq!(sni(&t, "a.tls.example").as_deref(), Some("exact -> apps/a:80"));
    assert_eq!(sni(&t, "A.TLS.example.").as_deref(), Some("exact -> apps/a:80"), "case and a trailing dot");
    assert_eq!(sni(&t, "b.tls.example").as_deref(), Some("wild -> apps/b:80"));
    assert_eq!(sni(&t, "y.x.tls.example").as_deref(), Some("deeper -> apps/c:80"), "the longest wildcard");
    assert_eq!(sni(&t, "x.tls.example").as_deref(), Some("wild -> apps/b:80"), "a wildcard needs a label before");
    assert_eq!(sni(&t, "tls.example"), None);
    assert_eq!(sni(&t, "other.example"), None);
    let hosts: Vec<String> =
        t.listeners[0].passthrough.as_ref().unwrap().hosts().iter().map(|h| h.hostname.clone()).collect();
    assert_eq!(hosts, ["a.tls.example", "*.x.tls.example", "*.tls.example"]);
    // `ingress routes` lists them with their routes and endpoints
    let text = crate::routing::view::TableView::of(&t).format_text();
    assert!(text.contains("gateway infra/gw (listeners pass:8443)"), "{text}");
    assert!(
        text.contains(
            "  passthrough a.tls.example  (TLS by SNI, bytes unchanged)  (apps/exact)  apps/a:80 w1 -> [10.0.0.1:8080]"
        ),
        "{text}"
    );
    assert!(text.contains("  passthrough *.tls.example"), "{text}");
    for r in ["apps/exact", "apps/wild", "apps/deeper"] {
        assert_eq!(accepted(&t, r), (true, "Accepted".into()), "{r}");
        assert_eq!(report(&t, r).attached, ["infra/gw/pass"]);
        assert!(report(&t, r).parents[0].condition("ResolvedRefs").unwrap().status);
    }
    // the listener without hostname: a route without hostnames serves any SNI
    let yaml = format!(
        "{GATEWAY}{}{}",
        service("infra", "a", &["10.0.0.1"]),
        tls_route(
            "infra",
            "any",
            T0,
            "  parentRefs: [{name: gw, sectionName: open}]\n  hostnames: []\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"
        ),
    );
    let t = table(&yaml, "0.0.0.0:9443=infra/gw:9443");
    assert_eq!(sni(&t, "whatever.example").as_deref(), Some("any -> infra/a:80"));
}

#[test]
fn attachment_follows_parent_refs_allowed_routes_and_hostnames() {
    let r = |name: &str, ns: &str, body: &str| tls_route(ns, name, T0, body);
    let yaml = format!(
        "{GATEWAY}{}{}{}{}{}{}{}",
        service("apps", "a", &["10.0.0.1"]),
        r(
            "to-http",
            "apps",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: [a.tls.example]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"
        ),
        r(
            "by-port",
            "apps",
            "  parentRefs: [{name: gw, namespace: infra, port: 8443}]\n  hostnames: [p.tls.example]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"
        ),
        r(
            "bad-host",
            "apps",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: pass}]\n  hostnames: [a.elsewhere.example]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"
        ),
        r(
            "same-ns-only",
            "apps",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: open}]\n  hostnames: [o.example]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"
        ),
        r(
            "kinds",
            "infra",
            "  parentRefs: [{name: gw, sectionName: only-http}]\n  hostnames: [k.example]\n  rules: [{backendRefs: [{name: a, namespace: apps, port: 80}]}]\n"
        ),
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: http-on-tls, namespace: infra}\nspec:\n  parentRefs: [{name: gw, sectionName: pass}]\n  hostnames: [h.tls.example]\n  rules: [{backendRefs: [{name: a, namespace: apps, port: 80}]}]\n",
    );
    let t = table(&yaml, "0.0.0.0:8443=infra/gw");
    assert_eq!(
        accepted(&t, "apps/to-http"),
        (false, "NoMatchingParent".into()),
        "TLSRoutes do not attach to HTTP listeners"
    );
    assert_eq!(accepted(&t, "apps/by-port"), (true, "Accepted".into()));
    assert_eq!(sni(&t, "p.tls.example").as_deref(), Some("by-port -> apps/a:80"));
    assert_eq!(accepted(&t, "apps/bad-host"), (false, "NoMatchingListenerHostname".into()));
    assert_eq!(accepted(&t, "apps/same-ns-only"), (false, "NotAllowedByListeners".into()), "from: Same by default");
    assert_eq!(accepted(&t, "infra/kinds"), (false, "NotAllowedByListeners".into()));
    assert!(report(&t, "infra/kinds").problems[0].contains("excludes TLSRoute"), "{:?}", report(&t, "infra/kinds"));
    for h in ["a.tls.example", "a.elsewhere.example", "o.example", "k.example", "h.tls.example"] {
        assert_eq!(sni(&t, h), None, "{h}");
    }
    // the HTTPRoute is not accepted by the passthrough listener
    let http = t.routes.iter().find(|r| r.route == "infra/http-on-tls").unwrap();
    assert!(!http.parents[0].condition("Accepted").unwrap().status, "{http:?}");
}

#[test]
fn the_older_route_keeps_a_contested_hostname() {
    let body = |svc: &str| {
        format!(
            "  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [a.tls.example]\n  rules: [{{backendRefs: [{{name: {svc}, port: 80}}]}}]\n"
        )
    };
    let yaml = format!(
        "{GATEWAY}{}{}{}{}{}",
        service("apps", "a", &["10.0.0.1"]),
        service("apps", "b", &["10.0.0.2"]),
        tls_route("apps", "aaa-newer", T1, &body("a")),
        tls_route("apps", "zzz-older", T0, &body("b")),
        tls_route("apps", "zzz-same-age", T0, &body("a")),
    );
    let t = table(&yaml, "0.0.0.0:8443=infra/gw:8443");
    assert_eq!(sni(&t, "a.tls.example").as_deref(), Some("zzz-older -> apps/b:80"), "oldest, then by name");
    for loser in ["apps/aaa-newer", "apps/zzz-same-age"] {
        let r = report(&t, loser);
        assert!(r.problems.iter().any(|p| p.contains("served by TLSRoute apps/zzz-older")), "{r:?}");
    }
    assert!(report(&t, "apps/zzz-older").problems.is_empty());
}

#[test]
fn weights_invalid_backends_and_reference_grants() {
    let yaml = format!(
        "{GATEWAY}{}{}{}{}{}",
        service("apps", "a", &["10.0.0.1", "10.0.0.2"]),
        service("other", "b", &["10.0.1.1"]),
        service("granted", "g", &["10.0.2.1"]),
        "
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-tls, namespace: granted}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: apps}]
  to: [{group: '', kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: http-only, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: '', kind: Service}]
",
        tls_route(
            "apps",
            "w",
            T0,
            "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [w.tls.example]\n  rules:\n  - backendRefs:\n    - {name: a, port: 80, weight: 3}\n    - {name: b, namespace: other, port: 80, weight: 1}\n    - {name: g, namespace: granted, port: 80, weight: 1}\n    - {name: missing, port: 80, weight: 0}\n"
        ),
    );
    let t = table(&yaml, "0.0.0.0:8443=infra/gw:8443");
    let host = t.listeners[0].passthrough.as_ref().unwrap().lookup("w.tls.example").unwrap().clone();
    let b = &host.rule.backends;
    assert_eq!(
        b[0].target,
        BackendTarget::Endpoints(vec!["10.0.0.1:8080".parse().unwrap(), "10.0.0.2:8080".parse().unwrap()])
    );
    assert!(
        matches!(&b[1].target, BackendTarget::Invalid(w) if w.contains("RefNotPermitted") && w.contains("TLSRoutes")),
        "{:?}",
        b[1]
    );
    assert_eq!(b[2].target, BackendTarget::Endpoints(vec!["10.0.2.1:8080".parse().unwrap()]), "granted to TLSRoutes");
    assert!(matches!(&b[3].target, BackendTarget::Invalid(w) if w.contains("BackendNotFound")));
    // weights 3:1:1:0 -> over 5 consecutive draws: a three times, b and g once, missing never
    let picks: Vec<&str> = (0..5).map(|r| host.rule.pick_backend(r).unwrap().name.as_str()).collect();
    assert_eq!(picks, ["apps/a:80", "apps/a:80", "apps/a:80", "other/b:80", "granted/g:80"]);
    let resolved = report(&t, "apps/w").parents[0].condition("ResolvedRefs").unwrap().clone();
    assert!(!resolved.status && resolved.reason == "RefNotPermitted", "{resolved:?}");
    assert_eq!(accepted(&t, "apps/w"), (true, "Accepted".into()), "an unresolved backend does not unaccept the route");
}

/// v1 allows one rule; v1alpha2/v1alpha3 (read as v1) allow several, without matches:
/// every rule's backendRefs serve the route, weighted together as one pool.
#[test]
fn every_rule_of_a_route_is_used_with_weights_pooled() {
    let yaml = format!(
        "{GATEWAY}{}{}{}{}",
        service("apps", "a", &["10.0.0.1"]),
        service("apps", "b", &["10.0.0.2"]),
        service("apps", "c", &["10.0.0.3"]),
        tls_route(
            "apps",
            "multi",
            T0,
            "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [m.tls.example]\n  rules:\n  - backendRefs: [{name: a, port: 80, weight: 2}]\n  - backendRefs: [{name: b, port: 80, weight: 1}, {name: missing, port: 80, weight: 1}]\n  - name: third\n    backendRefs: [{name: c, port: 80}]\n"
        ),
    );
    let t = table(&yaml, "0.0.0.0:8443=infra/gw:8443");
    assert_eq!(sni(&t, "m.tls.example").as_deref(), Some("multi -> apps/a:80,apps/b:80,apps/missing:80,apps/c:80"));
    let host = t.listeners[0].passthrough.as_ref().unwrap().lookup("m.tls.example").unwrap().clone();
    // weights 2:1:1:1 (c's default weight is 1) over 5 consecutive draws
    let picks: Vec<&str> = (0..5).map(|r| host.rule.pick_backend(r).unwrap().name.as_str()).collect();
    assert_eq!(picks, ["apps/a:80", "apps/a:80", "apps/b:80", "apps/missing:80", "apps/c:80"]);
    let r = report(&t, "apps/multi");
    assert!(!r.problems.iter().any(|p| p.contains("ignored")), "no rule is ignored: {r:?}");
    // the unresolved backendRef of the second rule shows in the route's status as in a one-rule route
    let resolved = r.parents[0].condition("ResolvedRefs").unwrap();
    assert!(!resolved.status && resolved.reason == "BackendNotFound", "{resolved:?}");
    assert_eq!(accepted(&t, "apps/multi"), (true, "Accepted".into()));
}

/// HTTPS (Terminate) and TLS (Passthrough) listeners on one port are told apart by
/// hostname: the SNI's passthrough route, else the HTTPS listener matching it; both
/// matching, the more specific hostname wins (the route on a tie); neither: closed.
#[test]
fn sni_chooses_between_passthrough_and_https_listeners_on_one_port() {
    use super::super::tls::Selected;
    let gw = |extra: &str| {
        format!(
            "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: x
  listeners:
  - {{name: pass, protocol: TLS, port: 443, tls: {{mode: Passthrough}}, allowedRoutes: {{namespaces: {{from: All}}}}}}
  - {{name: web, protocol: HTTPS, port: 443, hostname: '*.web.example', tls: {{certificateRefs: [{{name: c}}]}}}}
  - {{name: exact, protocol: HTTPS, port: 443, hostname: a.pass.example, tls: {{certificateRefs: [{{name: c}}]}}}}
{extra}"
        )
    };
    let route = |name: &str, hosts: &str| {
        tls_route(
            "apps",
            name,
            T0,
            &format!(
                "  parentRefs: [{{name: gw, namespace: infra, sectionName: pass}}]\n  hostnames: {hosts}\n  rules: [{{backendRefs: [{{name: a, port: 80}}]}}]\n"
            ),
        )
    };
    let decide = |t: &Table, sni: Option<&str>| {
        let l = &t.listeners[0];
        match choose(l.passthrough.as_ref().unwrap(), l.tls.as_ref(), sni) {
            SniChoice::Passthrough(h) => format!("pass {}", h.hostname),
            SniChoice::Terminate => match l.tls.as_ref().unwrap().select(sni) {
                Selected::Serve(l, _) | Selected::Invalid(l, _) => format!("https {}", l.name),
                Selected::NoMatch => unreachable!("terminated without a listener"),
            },
            SniChoice::NoSni => "closed: no SNI".into(),
            SniChoice::NoRoute => "closed: no route".into(),
        }
    };
    let yaml = format!(
        "{}{}{}",
        gw(""),
        service("apps", "a", &["10.0.0.1"]),
        route("r", "['*.pass.example', db.web.example]")
    );
    let t = table(&yaml, "0.0.0.0:8443=infra/gw:443");
    let l = &t.listeners[0];
    assert!(l.tls.is_some() && l.passthrough.is_some(), "both kinds served on the port: {:?}", l.problems);
    assert_eq!(decide(&t, Some("b.pass.example")), "pass *.pass.example");
    assert_eq!(decide(&t, Some("a.pass.example")), "https exact", "an exact listener beats a route's wildcard");
    assert_eq!(decide(&t, Some("x.web.example")), "https web", "no route for it: terminated");
    assert_eq!(decide(&t, Some("DB.web.example.")), "pass db.web.example", "an exact route beats a wildcard listener");
    assert_eq!(decide(&t, Some("other.example")), "closed: no route");
    assert_eq!(decide(&t, None), "closed: no SNI");

    // a route for any name, and an HTTPS listener without hostname
    let yaml = format!(
        "{}{}{}",
        gw("  - {name: plain, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: c}]}}\n"),
        service("apps", "a", &["10.0.0.1"]),
        route("any", "[]")
    );
    let t = table(&yaml, "0.0.0.0:8443=infra/gw:443");
    assert_eq!(decide(&t, Some("other.example")), "pass *", "the route for any name, on a tie with `plain`");
    assert_eq!(decide(&t, Some("x.web.example")), "https web", "a wildcard listener beats a route for any name");
    assert_eq!(decide(&t, None), "https plain", "no SNI: the listener without hostname terminates it");
}
