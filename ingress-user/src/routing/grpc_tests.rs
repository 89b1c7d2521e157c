//! GRPCRoute in the engine, case by case from the spec text (the GRPCRoute API
//! reference and GEP-1016): method match forms, precedence, header matches, status,
//! hostnames shared with HTTPRoutes, allowedRoutes kinds, filters and backendRefs.

use http::{HeaderMap, HeaderValue};

use super::tests::{GATEWAY, route, service, table};
use super::*;

/// A GRPCRoute in `ns` with `body` under `spec:` (and an optional creation time).
fn grpc_route(ns: &str, name: &str, created: Option<&str>, body: &str) -> String {
    let ts = created.map(|t| format!(", creationTimestamp: '{t}'")).unwrap_or_default();
    format!(
        "
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: {ns}{ts}}}
spec:
{body}"
    )
}

/// A gRPC call (POST, `content-type: application/grpc`) to `host` for `/service/method`.
struct Call {
    method: &'static str,
    host: &'static str,
    path: String,
    headers: HeaderMap,
}

fn call(host: &'static str, service_method: &str) -> Call {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    Call { method: "POST", host, path: format!("/{service_method}"), headers }
}

impl Call {
    fn header(mut self, n: &'static str, v: &'static str) -> Self {
        self.headers.append(n, HeaderValue::from_static(v));
        self
    }
    fn content_type(mut self, v: &'static str) -> Self {
        self.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(v));
        self
    }
}

/// `route/rule` (with `GRPCRoute ` before a GRPCRoute's name) that a call reaches.
fn lookup(t: &Table, c: &Call) -> Option<String> {
    let head = RequestHead { method: c.method, host: c.host, path: &c.path, query: None, headers: &c.headers };
    t.listeners[0].find(&head).map(|m| format!("{}/{}", m.rule.route_label(), m.rule.index))
}

fn report<'t>(t: &'t Table, route: &str) -> &'t RouteReport {
    t.routes.iter().find(|r| r.route == route).unwrap_or_else(|| panic!("no report for {route}: {:?}", t.routes))
}

fn accepted(t: &Table, route: &str) -> (bool, String) {
    let c = report(t, route).parents[0].condition("Accepted").unwrap();
    (c.status, c.reason.clone())
}

const HTTP80: &str = "127.0.0.1:8080=infra/gw:80";

#[test]
fn method_match_forms_exact_service_only_method_only_regex() {
    let yaml = format!(
        "{GATEWAY}{}",
        grpc_route(
            "infra",
            "g",
            None,
            "  parentRefs: [{name: gw}]
  hostnames: [g.test]
  rules:
  - matches: [{method: {service: pkg.Users, method: Get}}]
  - matches: [{method: {type: Exact, service: pkg.Users}}]
  - matches: [{method: {method: Ping}}]
  - matches: [{method: {type: RegularExpression, service: 'pkg\\.v[0-9]+\\.Orders', method: 'List.*'}}]
",
        ),
    );
    let t = table(&yaml, HTTP80);
    let at = |sm: &str| lookup(&t, &call("g.test", sm));
    // type defaults to Exact: service and method
    assert_eq!(at("pkg.Users/Get").as_deref(), Some("GRPCRoute infra/g/0"));
    // a service-only match: every method of the service
    assert_eq!(at("pkg.Users/Delete").as_deref(), Some("GRPCRoute infra/g/1"));
    // a method-only match: that method of any service
    assert_eq!(at("other.Svc/Ping").as_deref(), Some("GRPCRoute infra/g/2"));
    // RegularExpression on both, each anchored
    assert_eq!(at("pkg.v2.Orders/ListAll").as_deref(), Some("GRPCRoute infra/g/3"));
    assert_eq!(at("pkg.v2.Orders/Get"), None);
    assert_eq!(at("xpkg.v2.Orders/ListAll"), None);
    // exact means exact: no prefix, case-sensitive, no extra path element
    assert_eq!(at("pkg.UsersX/Get"), None);
    assert_eq!(at("pkg.users/Get"), None);
    assert_eq!(at("pkg.Users/Get/x"), None);
    assert_eq!(at("pkg.Users"), None);
}

#[test]
fn only_grpc_calls_match_a_grpcroute() {
    let yaml = format!(
        "{GATEWAY}{}",
        grpc_route("infra", "g", None, "  parentRefs: [{name: gw}]\n  hostnames: [g.test]\n  rules: [{}]\n"),
    );
    let t = table(&yaml, HTTP80);
    // "If no matches are specified, the implementation MUST match every gRPC request."
    assert_eq!(lookup(&t, &call("g.test", "a.B/C")).as_deref(), Some("GRPCRoute infra/g/0"));
    let proto = call("g.test", "a.B/C").content_type("application/grpc+proto");
    assert_eq!(lookup(&t, &proto).as_deref(), Some("GRPCRoute infra/g/0"));
    // not gRPC: another content type, none, gRPC-Web, or not a POST
    assert_eq!(lookup(&t, &call("g.test", "a.B/C").content_type("application/json")), None);
    assert_eq!(lookup(&t, &call("g.test", "a.B/C").content_type("application/grpc-web")), None);
    let mut bare = call("g.test", "a.B/C");
    bare.headers.clear();
    assert_eq!(lookup(&t, &bare), None);
    let mut get = call("g.test", "a.B/C");
    get.method = "GET";
    assert_eq!(lookup(&t, &get), None);
    // a GRPCRoute host is never splice-safe: every request must be checked
    assert!(t.listeners[0].vhost("g.test").unwrap().splice.is_err());
}

#[test]
fn precedence_service_then_method_characters_then_headers() {
    // "Precedence MUST be given to the rule with the largest number of: Characters in a
    // matching non-wildcard hostname. Characters in a matching hostname. Characters in a
    // matching service. Characters in a matching method. Header matches."
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        grpc_route(
            "infra",
            "a",
            None,
            "  parentRefs: [{name: gw}]
  hostnames: [p.test]
  rules:
  - matches: [{method: {method: Get}}]
  - matches: [{method: {service: foo.Bar}}]
  - matches: [{method: {service: foo.Bar, method: Get}}]
  - matches: [{method: {service: foo.Bar, method: Get}, headers: [{name: version, value: '2'}]}]
  - matches: [{method: {type: RegularExpression, service: 'f.*', method: 'Get'}}]
",
        ),
        grpc_route("infra", "any", None, "  parentRefs: [{name: gw}]\n  hostnames: ['*.test']\n  rules: [{}]\n"),
        grpc_route(
            "infra",
            "two",
            None,
            "  parentRefs: [{name: gw}]
  hostnames: [p2.test]
  rules:
  - matches: [{method: {type: RegularExpression, service: 'f.*', method: 'Get'}}]
  - matches: [{method: {service: foo.Bar}}]
",
        ),
    );
    let t = table(&yaml, HTTP80);
    // service foo.Bar (7 characters) + method Get, with the header: rule 3
    assert_eq!(
        lookup(&t, &call("p.test", "foo.Bar/Get").header("version", "2")).as_deref(),
        Some("GRPCRoute infra/a/3")
    );
    // without it: rule 2 (same service and method, fewer headers)
    assert_eq!(lookup(&t, &call("p.test", "foo.Bar/Get")).as_deref(), Some("GRPCRoute infra/a/2"));
    // another method of foo.Bar: only the service-only rule
    assert_eq!(lookup(&t, &call("p.test", "foo.Bar/List")).as_deref(), Some("GRPCRoute infra/a/1"));
    // foo.Baz/Get: the regex (3 service characters) beats the method-only rule (none)
    assert_eq!(lookup(&t, &call("p.test", "foo.Baz/Get")).as_deref(), Some("GRPCRoute infra/a/4"));
    assert_eq!(lookup(&t, &call("p.test", "x.Y/Get")).as_deref(), Some("GRPCRoute infra/a/0"));
    // service characters before method characters: foo.Bar (7, 0) beats f.* (3, 3)
    assert_eq!(lookup(&t, &call("p2.test", "foo.Bar/Get")).as_deref(), Some("GRPCRoute infra/two/1"));
    assert_eq!(lookup(&t, &call("p2.test", "fx.Y/Get")).as_deref(), Some("GRPCRoute infra/two/0"));
    // hostnames first: an exact host hides the wildcard's rules; other hosts get the wildcard
    assert_eq!(lookup(&t, &call("p.test", "x.Y/Other")), None);
    assert_eq!(lookup(&t, &call("q.test", "x.Y/Other")).as_deref(), Some("GRPCRoute infra/any/0"));
}

#[test]
fn ties_go_to_the_oldest_route_then_by_name_then_rule_order() {
    let rule = "  parentRefs: [{name: gw}]\n  hostnames: [t.test]\n  rules:\n  - matches: [{method: {service: s.S}}]\n  - matches: [{method: {service: s.S}}]\n";
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        grpc_route("infra", "b-old", Some("2024-01-01T00:00:00Z"), rule),
        grpc_route("infra", "a-new", Some("2025-01-01T00:00:00Z"), rule),
        grpc_route("infra", "a-unknown", None, rule),
    );
    let t = table(&yaml, HTTP80);
    assert_eq!(lookup(&t, &call("t.test", "s.S/M")).as_deref(), Some("GRPCRoute infra/b-old/0"));
    // without creation times: "{namespace}/{name}" alphabetical
    let yaml = format!("{GATEWAY}{}{}", grpc_route("infra", "z", None, rule), grpc_route("infra", "m", None, rule),);
    let t = table(&yaml, HTTP80);
    assert_eq!(lookup(&t, &call("t.test", "s.S/M")).as_deref(), Some("GRPCRoute infra/m/0"));
    // the rules that never match are reported
    let m = report(&t, "GRPCRoute infra/m");
    assert!(m.problems.iter().any(|p| p.contains("rule 1") && p.contains("never matches")), "{m:?}");
}

#[test]
fn header_matches_exact_regex_and_first_of_equivalent_names() {
    let yaml = format!(
        "{GATEWAY}{}",
        grpc_route(
            "infra",
            "h",
            None,
            "  parentRefs: [{name: gw}]
  hostnames: [h.test]
  rules:
  - matches: [{headers: [{name: Env, value: canary}, {name: env, value: ignored}]}]
  - matches: [{headers: [{type: RegularExpression, name: x-tier, value: 'gold|silver'}]}]
",
        ),
    );
    let t = table(&yaml, HTTP80);
    assert_eq!(lookup(&t, &call("h.test", "a.B/C").header("env", "canary")).as_deref(), Some("GRPCRoute infra/h/0"));
    assert_eq!(lookup(&t, &call("h.test", "a.B/C").header("env", "ignored")), None);
    assert_eq!(lookup(&t, &call("h.test", "a.B/C").header("x-tier", "gold")).as_deref(), Some("GRPCRoute infra/h/1"));
    assert_eq!(lookup(&t, &call("h.test", "a.B/C").header("x-tier", "golden")), None);
}

#[test]
fn invalid_matches_are_unsupported_values_in_status() {
    for (m, what) in [
        ("{method: {type: RegularExpression, service: 'foo(', method: Get}}", "service regex"),
        ("{method: {type: RegularExpression, method: '[z-a]'}}", "method regex"),
        ("{method: {type: Exact, service: 'foo/bar'}}", "not a valid gRPC service name"),
        ("{method: {type: Exact}}", "needs a service or a method"),
        ("{headers: [{type: RegularExpression, name: x, value: '(('}]}", "header regex"),
    ] {
        let body = format!("  parentRefs: [{{name: gw}}]\n  hostnames: [i.test]\n  rules:\n  - matches: [{m}]\n");
        let yaml = format!("{GATEWAY}{}", grpc_route("infra", "bad", None, &body));
        let t = table(&yaml, HTTP80);
        assert_eq!(accepted(&t, "GRPCRoute infra/bad"), (false, "UnsupportedValue".into()), "{m}");
        let r = report(&t, "GRPCRoute infra/bad");
        assert!(r.problems.iter().any(|p| p.contains(what)), "{m}: {:?}", r.problems);
        assert_eq!(lookup(&t, &call("i.test", "foo.Bar/Get")), None, "an invalid match matches nothing");
    }
}

#[test]
fn a_hostname_shared_with_an_httproute_goes_to_the_older_route() {
    let http = |name: &str, created: &str, host: &str| {
        route("infra", name, &format!("  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules: [{{}}]\n"))
            .replace(
                &format!("name: {name}, namespace: infra"),
                &format!("name: {name}, namespace: infra, creationTimestamp: '{created}'"),
            )
    };
    let grpc = |name: &str, created: &str, host: &str| {
        grpc_route(
            "infra",
            name,
            Some(created),
            &format!("  parentRefs: [{{name: gw}}]\n  hostnames: ['{host}']\n  rules: [{{}}]\n"),
        )
    };
    // the HTTPRoute is older: the GRPCRoute is not accepted, gRPC calls go to the HTTPRoute
    let yaml = format!(
        "{GATEWAY}{}{}",
        http("web", "2024-01-01T00:00:00Z", "s.test"),
        grpc("rpc", "2025-01-01T00:00:00Z", "s.test")
    );
    let t = table(&yaml, HTTP80);
    assert_eq!(accepted(&t, "GRPCRoute infra/rpc"), (false, "NotAllowedByListeners".into()));
    let why = &report(&t, "GRPCRoute infra/rpc").parents[0].condition("Accepted").unwrap().message;
    assert!(why.contains("older infra/web"), "{why}");
    assert_eq!(accepted(&t, "infra/web"), (true, "Accepted".into()));
    assert!(report(&t, "GRPCRoute infra/rpc").attached.is_empty());
    assert_eq!(lookup(&t, &call("s.test", "a.B/C")).as_deref(), Some("infra/web/0"));
    // the GRPCRoute is older: the HTTPRoute is the one refused; a wildcard intersects too
    let yaml = format!(
        "{GATEWAY}{}{}",
        http("web", "2025-01-01T00:00:00Z", "s.test"),
        grpc("rpc", "2024-01-01T00:00:00Z", "*.test")
    );
    let t = table(&yaml, HTTP80);
    assert_eq!(accepted(&t, "infra/web"), (false, "NotAllowedByListeners".into()));
    assert_eq!(accepted(&t, "GRPCRoute infra/rpc"), (true, "Accepted".into()));
    assert_eq!(lookup(&t, &call("s.test", "a.B/C")).as_deref(), Some("GRPCRoute infra/rpc/0"));
    // same age: "{namespace}/{name}" decides
    let yaml = format!(
        "{GATEWAY}{}{}",
        http("b", "2024-01-01T00:00:00Z", "s.test"),
        grpc("a", "2024-01-01T00:00:00Z", "s.test")
    );
    let t = table(&yaml, HTTP80);
    assert_eq!(accepted(&t, "GRPCRoute infra/a"), (true, "Accepted".into()));
    assert_eq!(accepted(&t, "infra/b"), (false, "NotAllowedByListeners".into()));
    // hostnames that do not meet: both served, each on its own host
    let yaml = format!(
        "{GATEWAY}{}{}",
        http("web", "2024-01-01T00:00:00Z", "w.test"),
        grpc("rpc", "2025-01-01T00:00:00Z", "r.test")
    );
    let t = table(&yaml, HTTP80);
    assert_eq!(accepted(&t, "GRPCRoute infra/rpc"), (true, "Accepted".into()));
    assert_eq!(accepted(&t, "infra/web"), (true, "Accepted".into()));
    assert_eq!(lookup(&t, &call("r.test", "a.B/C")).as_deref(), Some("GRPCRoute infra/rpc/0"));
    // an HTTPRoute without hostnames meets every hostname on the listener
    let any = route("infra", "all", "  parentRefs: [{name: gw}]\n  rules: [{}]\n").replace(
        "name: all, namespace: infra",
        "name: all, namespace: infra, creationTimestamp: '2020-01-01T00:00:00Z'",
    );
    let yaml = format!("{GATEWAY}{any}{}", grpc("rpc", "2025-01-01T00:00:00Z", "r.test"));
    let t = table(&yaml, HTTP80);
    assert_eq!(accepted(&t, "GRPCRoute infra/rpc"), (false, "NotAllowedByListeners".into()));
}

#[test]
fn allowed_routes_kinds_default_to_http_and_grpc_routes() {
    let gw = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: x
  listeners:
  - {name: default, protocol: HTTP, port: 80}
  - {name: empty, protocol: HTTP, port: 81, allowedRoutes: {kinds: []}}
  - {name: http-only, protocol: HTTP, port: 82, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
  - {name: grpc-only, protocol: HTTP, port: 83, allowedRoutes: {kinds: [{group: gateway.networking.k8s.io, kind: GRPCRoute}]}}
";
    let yaml = format!(
        "{gw}{}{}",
        grpc_route("infra", "g", None, "  parentRefs: [{name: gw}]\n  hostnames: [g.test]\n  rules: [{}]\n"),
        route("infra", "h", "  parentRefs: [{name: gw}]\n  hostnames: [h.test]\n  rules: [{}]\n"),
    );
    for (port, grpc_ok, http_ok) in [(80, true, true), (81, true, true), (82, false, true), (83, true, false)] {
        let t = table(&yaml, &format!("127.0.0.1:8080=infra/gw:{port}"));
        assert_eq!(accepted(&t, "GRPCRoute infra/g").0, grpc_ok, "port {port}");
        assert_eq!(accepted(&t, "infra/h").0, http_ok, "port {port}");
        assert_eq!(lookup(&t, &call("g.test", "a.B/C")).is_some(), grpc_ok, "port {port}");
        if !grpc_ok {
            assert_eq!(accepted(&t, "GRPCRoute infra/g").1, "NotAllowedByListeners");
            let r = report(&t, "GRPCRoute infra/g");
            assert!(r.problems.iter().any(|p| p.contains("excludes GRPCRoute")), "{:?}", r.problems);
        }
    }
}

#[test]
fn filters_and_weighted_backends_compile_as_for_httproute() {
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("infra", "a", &["10.42.0.1"]),
        service("infra", "b", &["10.42.0.2"]),
        grpc_route(
            "infra",
            "f",
            None,
            "  parentRefs: [{name: gw}]
  hostnames: [f.test]
  rules:
  - matches: [{method: {service: s.S, method: Get}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-env, value: test}], remove: [x-drop]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-resp, value: 'yes'}]}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: b, port: 80}}}
    backendRefs:
    - {name: a, port: 80, weight: 3}
    - name: b
      port: 80
      weight: 1
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-b, value: '1'}]}}]
  - matches: [{method: {service: s.S, method: Ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: x}}]
    backendRefs: [{name: a, port: 80}]
",
        ),
    );
    let t = table(&yaml, HTTP80);
    assert_eq!(accepted(&t, "GRPCRoute infra/f"), (false, "UnsupportedValue".into()), "the ExtensionRef");
    let headers = call("f.test", "x").headers;
    let find = |path: &str| {
        let head = RequestHead { method: "POST", host: "f.test", path, query: None, headers: &headers };
        t.listeners[0].find(&head).map(|m| m.rule.clone()).expect("a rule")
    };
    let m = find("/s.S/Get");
    let kinds: Vec<&str> = m
        .filters
        .iter()
        .map(|f| match f {
            Filter::RequestHeaderModifier(_) => "req",
            Filter::ResponseHeaderModifier(_) => "resp",
            Filter::RequestMirror(_) => "mirror",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["req", "resp", "mirror"]);
    let weights: Vec<(String, u32)> = m.backends.iter().map(|b| (b.name.clone(), b.weight)).collect();
    assert_eq!(weights, [("infra/a:80".to_string(), 3), ("infra/b:80".to_string(), 1)]);
    assert_eq!(m.backends[1].filters.len(), 1, "backendRef filters");
    assert_eq!(m.backends[0].target, BackendTarget::Endpoints(vec!["10.42.0.1:8080".parse().unwrap()]));
    // weights pick 3:1
    let picks: Vec<usize> = (0..4).map(|r| m.pick_backend_index(r).unwrap()).collect();
    assert_eq!(picks, [0, 0, 0, 1]);
    let ext = find("/s.S/Ext");
    assert!(matches!(ext.filters[0], Filter::Unsupported { .. }));
}

#[test]
fn backend_refs_resolve_with_grpcroute_reference_grants() {
    let grant = |kind: &str| {
        format!(
            "
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g, namespace: other}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: infra}}]
  to: [{{group: '', kind: Service}}]
"
        )
    };
    let body = "  parentRefs: [{name: gw}]
  hostnames: [b.test]
  rules:
  - backendRefs: [{name: svc, namespace: other, port: 80}]
  - matches: [{method: {service: k.K}}]
    backendRefs: [{group: example.com, kind: Thing, name: x}]
";
    let resolved = |t: &Table| report(t, "GRPCRoute infra/r").parents[0].condition("ResolvedRefs").unwrap().clone();
    // a grant for HTTPRoutes does not cover a GRPCRoute
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("other", "svc", &["10.42.0.9"]),
        grant("HTTPRoute"),
        grpc_route("infra", "r", None, body)
    );
    let t = table(&yaml, HTTP80);
    let c = resolved(&t);
    assert!(!c.status && c.reason == "RefNotPermitted", "{c:?}");
    assert!(c.message.contains("GRPCRoutes from infra"), "{c:?}");
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("other", "svc", &["10.42.0.9"]),
        grant("GRPCRoute"),
        grpc_route("infra", "r", None, body)
    );
    let t = table(&yaml, HTTP80);
    let m = t.listeners[0].find(&RequestHead {
        method: "POST",
        host: "b.test",
        path: "/a.B/C",
        query: None,
        headers: &call("b.test", "a.B/C").headers,
    });
    assert_eq!(m.unwrap().rule.backends[0].target, BackendTarget::Endpoints(vec!["10.42.0.9:8080".parse().unwrap()]));
    // the other rule's backendRef is of a kind that is not a Service
    let c = resolved(&t);
    assert!(!c.status && c.reason == "InvalidKind", "{c:?}");
    assert_eq!(accepted(&t, "GRPCRoute infra/r"), (true, "Accepted".into()));
}

#[test]
fn routes_view_names_the_kind_and_the_method_match() {
    let yaml = format!(
        "{GATEWAY}{}",
        grpc_route(
            "infra",
            "v",
            None,
            "  parentRefs: [{name: gw}]\n  hostnames: [v.test]\n  rules:\n  - matches: [{method: {service: pkg.Svc, method: Get}, headers: [{name: x-a, value: '1'}]}]\n",
        ),
    );
    let t = table(&yaml, HTTP80);
    let v = view::TableView::of(&t);
    let rule = &v.listeners[0].hosts[0].rules[0];
    assert_eq!(rule.route, "GRPCRoute infra/v");
    let g = rule.matcher.grpc.as_ref().expect("the gRPC method match in the view");
    assert_eq!(
        (g.kind.as_deref(), g.service.as_deref(), g.method.as_deref()),
        (Some("Exact"), Some("pkg.Svc"), Some("Get"))
    );
    assert_eq!(rule.matcher.path.value, "/pkg.Svc/Get");
    let text = v.format_text();
    assert!(text.contains("gRPC Exact pkg.Svc/Get header x-a Exact 1  (GRPCRoute infra/v rule 0)"), "{text}");
    // the JSON round-trips (the CLI reads what the agent writes)
    let back: view::TableView = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(back, v);
}
