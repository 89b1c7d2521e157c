//! Table-driven tests of the engine, on objects written as YAML the way users write
//! them. Each case names the spec rule it checks.

use std::path::Path;

use http::HeaderMap;

use super::*;
use crate::config::ListenMapping;
use crate::resources::Resources;
use crate::sources::manifest::load_text;

pub(crate) fn resources(yaml: &str) -> Resources {
    let mut res = Resources::default();
    let mut errors = Vec::new();
    load_text(Path::new("test.yaml"), yaml, &mut res, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    res
}

pub(crate) const GATEWAY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: x
  listeners:
  - {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}
  - {name: same, protocol: HTTP, port: 81}
  - {name: wild, protocol: HTTP, port: 82, hostname: '*.wild.example', allowedRoutes: {namespaces: {from: All}}}
  - {name: sel, protocol: HTTP, port: 83, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}}
  - {name: tls, protocol: HTTPS, port: 443}
";

/// A Service `name` in `ns` with port 80 -> endpoints `ips` on 8080.
pub(crate) fn service(ns: &str, name: &str, ips: &[&str]) -> String {
    let eps: String = ips.iter().map(|ip| format!("\n- addresses: ['{ip}']\n  conditions: {{ready: true}}")).collect();
    format!(
        "
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-abc, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:{eps}
"
    )
}

pub(crate) fn route(ns: &str, name: &str, body: &str) -> String {
    format!(
        "
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
{body}"
    )
}

/// The OpenChoreo v0.12 fixtures (`tests/fixtures/openchoreo`) as the VM serves them:
/// listener 0 the control plane on 8080, listener 1 the data plane on 9080.
pub(crate) fn openchoreo_fixture_table() -> Table {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/openchoreo");
    let res = crate::sources::manifest::load_dir(&dir).unwrap();
    let cp: ListenMapping = "0.0.0.0:8080=openchoreo-control-plane/gateway-default:80".parse().unwrap();
    let dp: ListenMapping = "0.0.0.0:9080=openchoreo-data-plane/gateway-default:19080".parse().unwrap();
    compile(&res, &[cp, dp])
}

pub(crate) fn table(yaml: &str, listen: &str) -> Table {
    let res = resources(yaml);
    let m: ListenMapping = listen.parse().unwrap();
    compile(&res, &[m])
}

struct Req<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: HeaderMap,
}

fn req<'a>(host: &'a str, path: &'a str) -> Req<'a> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    Req { method: "GET", host, path, query, headers: HeaderMap::new() }
}

impl Req<'_> {
    fn header(mut self, n: &'static str, v: &'static str) -> Self {
        self.headers.append(n, http::HeaderValue::from_static(v));
        self
    }
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
}

/// `route-name/rule-index` that a request reaches, or None.
fn lookup(t: &Table, r: &Req<'_>) -> Option<String> {
    let head = RequestHead { method: r.method, host: r.host, path: r.path, query: r.query, headers: &r.headers };
    t.listeners[0].find(&head).map(|m| format!("{}/{}", m.rule.route.name, m.rule.index))
}

#[test]
fn host_matching_exact_wildcard_catch_all() {
    let yaml = format!(
        "{GATEWAY}{}{}{}{}",
        route(
            "infra",
            "exact",
            "  parentRefs: [{name: gw, sectionName: http}]\n  hostnames: [foo.example.com]\n  rules: [{}]\n"
        ),
        route(
            "infra",
            "wild",
            "  parentRefs: [{name: gw, sectionName: http}]\n  hostnames: ['*.example.com']\n  rules: [{}]\n"
        ),
        route(
            "infra",
            "deeper",
            "  parentRefs: [{name: gw, sectionName: http}]\n  hostnames: ['*.bar.example.com']\n  rules: [{}]\n"
        ),
        route("infra", "any", "  parentRefs: [{name: gw, sectionName: http}]\n  rules: [{}]\n"),
    );
    let t = table(&yaml, "127.0.0.1:8080=infra/gw:80");
    for (host, want) in [
        ("foo.example.com", "exact/0"),
        ("x.example.com", "wild/0"),
        ("a.b.example.com", "wild/0"),
        ("x.bar.example.com", "deeper/0"),
        ("example.com", "any/0"),
        ("other.test", "any/0"),
    ] {
        assert_eq!(lookup(&t, &req(host, "/")).as_deref(), Some(want), "{host}");
    }
}

#[test]
fn listener_hostname_intersection_and_no_match() {
    let yaml = format!(
        "{GATEWAY}{}{}",
        route(
            "infra",
            "r",
            "  parentRefs: [{name: gw, sectionName: wild}]\n  hostnames: [a.wild.example, other.example]\n  rules: [{}]\n"
        ),
        route(
            "infra",
            "none",
            "  parentRefs: [{name: gw, sectionName: wild}]\n  hostnames: [nothing.example]\n  rules: [{}]\n"
        ),
    );
    let t = table(&yaml, "127.0.0.1:8082=infra/gw:82");
    assert_eq!(lookup(&t, &req("a.wild.example", "/")).as_deref(), Some("r/0"));
    // other.example is outside the listener's *.wild.example
    assert_eq!(lookup(&t, &req("other.example", "/")), None);
    let none = t.routes.iter().find(|r| r.route == "infra/none").unwrap();
    assert!(none.attached.is_empty());
    assert!(none.problems[0].contains("NoMatchingListenerHostname"), "{:?}", none.problems);
}

#[test]
fn allowed_routes_same_all_selector() {
    let ns_a = "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a}}\n";
    let yaml = format!(
        "{GATEWAY}{ns_a}{}{}{}",
        route("team-a", "a", "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [a.test]\n  rules: [{}]\n"),
        route("team-b", "b", "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [b.test]\n  rules: [{}]\n"),
        route("infra", "i", "  parentRefs: [{name: gw}]\n  hostnames: [i.test]\n  rules: [{}]\n"),
    );
    // listener "same" (port 81): only infra
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    assert_eq!(lookup(&t, &req("i.test", "/")).as_deref(), Some("i/0"));
    assert_eq!(lookup(&t, &req("a.test", "/")), None);
    // listener "sel" (port 83): namespaces labelled team=a
    let t = table(&yaml, "127.0.0.1:83=infra/gw:83");
    assert_eq!(lookup(&t, &req("a.test", "/")).as_deref(), Some("a/0"));
    assert_eq!(lookup(&t, &req("b.test", "/")), None);
    assert_eq!(lookup(&t, &req("i.test", "/")), None);
    let b = t.routes.iter().find(|r| r.route == "team-b/b").unwrap();
    assert!(b.problems.iter().any(|p| p.contains("NotAllowedByListeners")), "{b:?}");
    // listener "http" (port 80): All
    let t = table(&yaml, "127.0.0.1:80=infra/gw:80");
    assert_eq!(lookup(&t, &req("b.test", "/")).as_deref(), Some("b/0"));
}

#[test]
fn allowed_routes_selector_expressions_follow_kubernetes_semantics() {
    // (matchExpressions, namespaces whose route is accepted): team-a {team: a, tier: web},
    // team-b {team: b}, infra (no labels but kubernetes.io/metadata.name)
    let cases: &[(&str, &[&str])] = &[
        ("[{key: team, operator: In, values: [a, b]}]", &["a", "b"]),
        ("[{key: team, operator: NotIn, values: [a]}]", &["b", "i"]),
        ("[{key: tier, operator: Exists}]", &["a"]),
        ("[{key: tier, operator: DoesNotExist}]", &["b", "i"]),
        ("[{key: kubernetes.io/metadata.name, operator: In, values: [infra]}]", &["i"]),
        ("[{key: team, operator: Sometimes, values: [a]}]", &[]),
    ];
    let namespaces = "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a, tier: web}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-b, labels: {team: b}}\n";
    for (exprs, accepted) in cases {
        let gateway = format!(
            "\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: x\n  listeners:\n  - {{name: sel, protocol: HTTP, port: 80, allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchExpressions: {exprs}}}}}}}}}\n"
        );
        let yaml = format!(
            "{gateway}{namespaces}{}{}{}",
            route(
                "team-a",
                "a",
                "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [a.test]\n  rules: [{}]\n"
            ),
            route(
                "team-b",
                "b",
                "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [b.test]\n  rules: [{}]\n"
            ),
            route("infra", "i", "  parentRefs: [{name: gw}]\n  hostnames: [i.test]\n  rules: [{}]\n"),
        );
        let t = table(&yaml, "127.0.0.1:80=infra/gw:80");
        let got: Vec<&str> =
            ["a", "b", "i"].into_iter().filter(|n| lookup(&t, &req(&format!("{n}.test"), "/")).is_some()).collect();
        assert_eq!(&got, accepted, "matchExpressions {exprs}");
    }
}

#[test]
fn section_name_and_port_select_listeners() {
    let yaml = format!(
        "{GATEWAY}{}{}",
        route("infra", "by-port", "  parentRefs: [{name: gw, port: 81}]\n  hostnames: [p.test]\n  rules: [{}]\n"),
        route(
            "infra",
            "by-section",
            "  parentRefs: [{name: gw, sectionName: same}]\n  hostnames: [s.test]\n  rules: [{}]\n"
        ),
    );
    let t = table(&yaml, "127.0.0.1:80=infra/gw:80");
    assert_eq!(lookup(&t, &req("p.test", "/")), None);
    assert_eq!(lookup(&t, &req("s.test", "/")), None);
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    assert_eq!(lookup(&t, &req("p.test", "/")).as_deref(), Some("by-port/0"));
    assert_eq!(lookup(&t, &req("s.test", "/")).as_deref(), Some("by-section/0"));
}

#[test]
fn path_matching() {
    let rules = "
  hostnames: [p.test]
  rules:
  - matches: [{path: {type: Exact, value: /exact}}]
  - matches: [{path: {type: PathPrefix, value: /foo}}]
  - matches: [{path: {type: PathPrefix, value: /bar/}}]
  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]
";
    let yaml = format!("{GATEWAY}{}", route("infra", "r", &format!("  parentRefs: [{{name: gw}}]\n{rules}")));
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    for (path, want) in [
        ("/exact", Some("r/0")),
        ("/exact/", None),
        ("/foo", Some("r/1")),
        ("/foo/", Some("r/1")),
        ("/foo/bar", Some("r/1")),
        ("/foobar", None),     // by path element, not by string
        ("/bar", Some("r/2")), // trailing slash of the prefix is ignored
        ("/bar/x", Some("r/2")),
        ("/re/123", Some("r/3")),
        ("/re/123/x", None), // regex covers the whole path
        ("/", None),
    ] {
        assert_eq!(lookup(&t, &req("p.test", path)).as_deref(), want, "{path}");
    }
}

#[test]
fn headers_query_method_are_anded_matches_ored() {
    let rules = "
  hostnames: [m.test]
  rules:
  - matches:
    - headers: [{name: X-Env, value: prod}, {name: x-version, type: RegularExpression, value: 'v[12]'}]
    - queryParams: [{name: debug, value: 'on'}]
  - matches: [{method: POST}]
";
    let yaml = format!("{GATEWAY}{}", route("infra", "r", &format!("  parentRefs: [{{name: gw}}]\n{rules}")));
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let r = |x: Req<'_>| lookup(&t, &x);
    assert_eq!(r(req("m.test", "/").header("x-env", "prod").header("X-Version", "v2")).as_deref(), Some("r/0"));
    assert_eq!(r(req("m.test", "/").header("x-env", "prod").header("x-version", "v3")), None);
    assert_eq!(r(req("m.test", "/").header("x-env", "prod")), None);
    assert_eq!(r(req("m.test", "/?a=1&debug=on")).as_deref(), Some("r/0"));
    assert_eq!(r(req("m.test", "/?debug=off")), None);
    assert_eq!(r(req("m.test", "/").method("POST")).as_deref(), Some("r/1"));
    assert_eq!(r(req("m.test", "/").method("GET")), None);
}

#[test]
fn precedence_across_routes() {
    // Spec order: exact path, longest prefix, method, most headers, most query params,
    // oldest route, then namespace/name.
    let yaml = format!(
        "{GATEWAY}{}{}{}{}{}{}",
        route(
            "infra",
            "z-prefix-short",
            "  parentRefs: [{name: gw}]\n  hostnames: [p.test]\n  rules: [{matches: [{path: {type: PathPrefix, value: /a}}]}]\n"
        ),
        route(
            "infra",
            "y-prefix-long",
            "  parentRefs: [{name: gw}]\n  hostnames: [p.test]\n  rules: [{matches: [{path: {type: PathPrefix, value: /a/b}}]}]\n"
        ),
        route(
            "infra",
            "x-exact",
            "  parentRefs: [{name: gw}]\n  hostnames: [p.test]\n  rules: [{matches: [{path: {type: Exact, value: /a/b}}]}]\n"
        ),
        route(
            "infra",
            "w-method",
            "  parentRefs: [{name: gw}]\n  hostnames: [p.test]\n  rules: [{matches: [{path: {type: PathPrefix, value: /a}, method: GET}]}]\n"
        ),
        route(
            "infra",
            "v-header",
            "  parentRefs: [{name: gw}]\n  hostnames: [p.test]\n  rules: [{matches: [{path: {type: PathPrefix, value: /a}, headers: [{name: h, value: '1'}]}]}]\n"
        ),
        route(
            "infra",
            "a-same",
            "  parentRefs: [{name: gw}]\n  hostnames: [p.test]\n  rules: [{matches: [{path: {type: PathPrefix, value: /a}}]}]\n"
        ),
    );
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    assert_eq!(lookup(&t, &req("p.test", "/a/b")).as_deref(), Some("x-exact/0"));
    assert_eq!(lookup(&t, &req("p.test", "/a/b/c")).as_deref(), Some("y-prefix-long/0"));
    assert_eq!(lookup(&t, &req("p.test", "/a/c")).as_deref(), Some("w-method/0"));
    assert_eq!(lookup(&t, &req("p.test", "/a/c").method("PUT").header("h", "1")).as_deref(), Some("v-header/0"));
    // same match in two routes, no creation time: alphabetical namespace/name
    assert_eq!(lookup(&t, &req("p.test", "/a/c").method("PUT")).as_deref(), Some("a-same/0"));
}

#[test]
fn oldest_route_wins_a_tie() {
    let mk = |name: &str, ts: &str| {
        format!(
            "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: '{ts}'}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [t.test]\n  rules: [{{}}]\n"
        )
    };
    let yaml = format!("{GATEWAY}{}{}", mk("a-new", "2025-06-01T00:00:00Z"), mk("b-old", "2024-01-01T00:00:00Z"));
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    assert_eq!(lookup(&t, &req("t.test", "/")).as_deref(), Some("b-old/0"));
}

#[test]
fn backends_resolve_to_ready_endpoints_with_weights() {
    let body = "  parentRefs: [{name: gw}]\n  hostnames: [b.test]\n  rules:\n  - backendRefs: [{name: one, port: 80, weight: 3}, {name: zero, port: 80, weight: 0}, {name: missing, port: 80}]\n";
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("infra", "one", &["10.42.0.5", "10.42.0.6"]),
        service("infra", "zero", &["10.42.0.7"]),
        route("infra", "r", body)
    );
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let head_h = HeaderMap::new();
    let head = RequestHead { method: "GET", host: "b.test", path: "/", query: None, headers: &head_h };
    let m = t.listeners[0].find(&head).unwrap();
    let rule = m.rule;
    assert_eq!(rule.total_weight(), 4);
    // r in [0,3) -> one; r = 3 -> missing (weight 1, invalid -> 500); weight 0 never
    let picks: Vec<&str> = (0..8).map(|r| rule.pick_backend(r).unwrap().name.as_str()).collect();
    assert_eq!(&picks[..4], ["infra/one:80", "infra/one:80", "infra/one:80", "infra/missing:80"]);
    assert!(!picks.contains(&"infra/zero:80"));
    let one = &rule.backends[0];
    assert_eq!(
        one.target,
        BackendTarget::Endpoints(vec!["10.42.0.5:8080".parse().unwrap(), "10.42.0.6:8080".parse().unwrap()])
    );
    assert!(matches!(&rule.backends[2].target, BackendTarget::Invalid(w) if w.contains("BackendNotFound")));
    let report = &t.routes[0];
    assert!(report.problems.iter().any(|p| p.contains("BackendNotFound")), "{report:?}");
}

#[test]
fn unready_endpoints_are_skipped_and_no_backends_means_no_pick() {
    let svc = service("infra", "s", &["10.42.0.5"]).replace("{ready: true}", "{ready: false}");
    let yaml = format!(
        "{GATEWAY}{svc}{}",
        route(
            "infra",
            "r",
            "  parentRefs: [{name: gw}]\n  hostnames: [b.test]\n  rules:\n  - backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {value: /none}}]\n"
        )
    );
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let h = HeaderMap::new();
    let head = RequestHead { method: "GET", host: "b.test", path: "/", query: None, headers: &h };
    let rule = t.listeners[0].find(&head).unwrap().rule;
    assert_eq!(rule.backends[0].target, BackendTarget::Endpoints(vec![]));
    let head = RequestHead { path: "/none", ..head };
    let rule = t.listeners[0].find(&head).unwrap().rule;
    assert!(rule.pick_backend(0).is_none(), "a rule with no backendRefs answers 500");
}

#[test]
fn cross_namespace_backend_needs_reference_grant() {
    let body = "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: [x.test]\n  rules:\n  - backendRefs: [{name: s, namespace: other, port: 80}]\n";
    let base = format!("{GATEWAY}{}{}", service("other", "s", &["10.42.0.9"]), route("apps", "r", body));
    let t = table(&base, "127.0.0.1:80=infra/gw:80");
    let h = HeaderMap::new();
    let head = RequestHead { method: "GET", host: "x.test", path: "/", query: None, headers: &h };
    let rule = t.listeners[0].find(&head).unwrap().rule;
    assert!(matches!(&rule.backends[0].target, BackendTarget::Invalid(w) if w.contains("RefNotPermitted")));
    let grant = "\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]\n  to: [{group: '', kind: Service}]\n";
    let t = table(&format!("{base}{grant}"), "127.0.0.1:80=infra/gw:80");
    let rule = t.listeners[0].find(&head).unwrap().rule;
    assert_eq!(rule.backends[0].target, BackendTarget::Endpoints(vec!["10.42.0.9:8080".parse().unwrap()]));
}

#[test]
fn unsupported_filters_are_kept_so_requests_get_500() {
    let body = "  parentRefs: [{name: gw}]\n  hostnames: [f.test]\n  rules:\n  - filters: [{type: ExtensionRef, extensionRef: {group: x, kind: Y, name: z}}]\n";
    let t = table(&format!("{GATEWAY}{}", route("infra", "r", body)), "127.0.0.1:81=infra/gw:81");
    let h = HeaderMap::new();
    let head = RequestHead { method: "GET", host: "f.test", path: "/", query: None, headers: &h };
    let rule = t.listeners[0].find(&head).unwrap().rule;
    assert!(matches!(&rule.filters[0], Filter::Unsupported { .. }));
    assert!(t.routes[0].problems[0].contains("ExtensionRef"));
}

#[test]
fn timeouts_are_carried() {
    let body = "  parentRefs: [{name: gw}]\n  hostnames: [t.test]\n  rules:\n  - timeouts: {request: 1m30s, backendRequest: 0s}\n";
    let t = table(&format!("{GATEWAY}{}", route("infra", "r", body)), "127.0.0.1:81=infra/gw:81");
    let h = HeaderMap::new();
    let head = RequestHead { method: "GET", host: "t.test", path: "/", query: None, headers: &h };
    let rule = t.listeners[0].find(&head).unwrap().rule;
    assert_eq!(rule.timeouts.request, Some(std::time::Duration::from_secs(90)));
    assert_eq!(rule.timeouts.backend_request, None, "0s means no timeout");
    assert!(super::rules::parse_duration("1x").is_err());
    assert_eq!(super::rules::parse_duration("500ms").unwrap(), std::time::Duration::from_millis(500));
    assert_eq!(super::rules::parse_duration("1h2m3s4ms").unwrap(), std::time::Duration::from_millis(3_723_004));
    // GEP-2257: no fractions, no signs, no units below ms, at most 5 digits and 4 parts
    for bad in ["1.5s", "-1s", "10us", "100000s", "1h1m1s1ms1h", "", "s"] {
        assert!(super::rules::parse_duration(bad).is_err(), "{bad:?} is not a GEP-2257 duration");
    }
}

#[test]
fn missing_gateway_and_https_listeners_are_reported() {
    let t = table(GATEWAY, "127.0.0.1:80=infra/nope");
    assert!(t.listeners[0].problems[0].contains("not found"));
    // an HTTPS listener is served (issue 12), but one without certificateRefs cannot
    // complete a handshake: reported, and its TLS listener carries the problem
    let t = table(GATEWAY, "127.0.0.1:443=infra/gw:443");
    assert!(t.listeners[0].problems.iter().any(|p| p.contains("HTTPS")), "{:?}", t.listeners[0].problems);
    assert_eq!(t.listeners[0].listeners, [("tls".to_string(), 443)]);
    let tls = t.listeners[0].tls.as_ref().expect("a TLS mapping");
    assert!(tls.listener("tls").unwrap().certificate.as_ref().is_err_and(|p| p.reason == "InvalidCertificateRef"));
}

#[test]
fn openchoreo_fixtures_route_as_on_the_vm() {
    let t = openchoreo_fixture_table();
    let h = HeaderMap::new();
    let find = |i: usize, host: &str, path: &str| {
        let head = RequestHead { method: "GET", host, path, query: None, headers: &h };
        t.listeners[i].find(&head).map(|m| {
            let b = &m.rule.backends[0];
            let first = match &b.target {
                BackendTarget::Endpoints(e) => e.first().map(|e| e.to_string()).unwrap_or_default(),
                BackendTarget::Invalid(_) => String::new(),
            };
            (m.rule.route.name.clone(), first)
        })
    };
    assert_eq!(
        find(0, "api.openchoreovm.localhost", "/api/v1/x"),
        Some(("openchoreo-api".into(), "10.42.0.22:8080".into()))
    );
    assert_eq!(find(0, "openchoreovm.localhost", "/"), Some(("openchoreo-backstage".into(), "10.42.0.21:7007".into())));
    assert_eq!(
        find(0, "thunder.openchoreovm.localhost", "/oauth2/token"),
        Some(("thunder-openchoreo".into(), "10.42.0.23:8090".into()))
    );
    assert_eq!(find(0, "development.openchoreovm-apis.localhost", "/greeter-service"), None, "DP route not on CP");
    assert_eq!(
        find(1, "development.openchoreovm-apis.localhost", "/greeter-service/greet"),
        Some(("greeter-service-development-a9f97fde".into(), "10.42.0.45:9090".into()))
    );
    assert_eq!(
        find(1, "development.openchoreovm-apis.localhost", "/echo-websocket-service/"),
        Some(("echo-websocket-service-development-a43512ee".into(), "10.42.0.50:8080".into()))
    );
    assert_eq!(find(1, "development.openchoreovm-apis.localhost", "/other"), None);
    assert_eq!(
        find(1, "frontend-development.openchoreovm-apis.localhost", "/x"),
        Some(("frontend-development-def9a783".into(), "10.42.0.61:8080".into()))
    );
    // the HTTPS listeners exist but are not served on these addresses
    assert!(t.listeners[0].problems.is_empty(), "{:?}", t.listeners[0].problems);
}

#[test]
fn segment_index_finds_what_a_linear_scan_finds() {
    // Many prefixes sharing and not sharing first segments, plus generic entries.
    let mut rules = String::from("  hostnames: [i.test]\n  rules:\n");
    for i in 0..40 {
        rules += &format!("  - matches: [{{path: {{type: PathPrefix, value: /svc{}/v{}}}}}]\n", i % 7, i);
        rules += &format!("  - matches: [{{path: {{type: Exact, value: /svc{}}}}}]\n", i % 5);
    }
    rules += "  - matches: [{path: {type: RegularExpression, value: '/svc1/.*'}, headers: [{name: x, value: y}]}]\n";
    rules += "  - matches: [{path: {type: PathPrefix, value: /}, method: POST}]\n";
    let yaml = format!("{GATEWAY}{}", route("infra", "r", &format!("  parentRefs: [{{name: gw}}]\n{rules}")));
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let vhost = t.listeners[0].vhost("i.test").unwrap();
    let mut checked = 0;
    for path in [
        "/",
        "/svc1",
        "/svc1/v8",
        "/svc1/v8/x",
        "/svc3/v10",
        "/svc9",
        "/other",
        "/svc1/zzz",
        "/svc0/v0",
        "/svc6/v13/deep",
    ] {
        for (method, hdr) in [("GET", None), ("POST", None), ("GET", Some("y"))] {
            let mut headers = HeaderMap::new();
            if let Some(v) = hdr {
                headers.insert("x", http::HeaderValue::from_static(v));
            }
            let head = RequestHead { method, host: "i.test", path, query: None, headers: &headers };
            let linear = vhost.entries.iter().position(|e| e.matcher.matches(&head));
            let indexed = vhost.find(&head).map(|e| vhost.entries.iter().position(|x| std::ptr::eq(x, e)).unwrap());
            assert_eq!(indexed, linear, "{method} {path} {hdr:?}");
            checked += linear.is_some() as usize;
        }
    }
    assert!(checked > 15, "the cases exercise matches, not only misses");
}

fn parent<'t>(t: &'t Table, route: &str) -> &'t ParentStatus {
    let r =
        t.routes.iter().find(|r| r.route == route).unwrap_or_else(|| panic!("no report for {route}: {:?}", t.routes));
    assert_eq!(r.parents.len(), 1, "{r:?}");
    &r.parents[0]
}

fn cond(p: &ParentStatus, kind: &str) -> (bool, String) {
    let c = p.condition(kind).unwrap();
    (c.status, c.reason.clone())
}

#[test]
fn status_conditions_carry_the_spec_reasons() {
    let ns_b = "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n";
    let yaml = format!(
        "{GATEWAY}{ns_b}{}{}{}{}{}{}{}{}",
        service("infra", "ok", &["10.42.0.5"]),
        route(
            "infra",
            "good",
            "  parentRefs: [{name: gw, sectionName: same}]\n  rules: [{backendRefs: [{name: ok, port: 80}]}]\n"
        ),
        route(
            "team-b",
            "not-allowed",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: same}]\n  rules: [{}]\n"
        ),
        route(
            "infra",
            "no-host",
            "  parentRefs: [{name: gw, sectionName: wild}]\n  hostnames: [x.other]\n  rules: [{}]\n"
        ),
        route("infra", "no-parent", "  parentRefs: [{name: gw, sectionName: nope}]\n  rules: [{}]\n"),
        route(
            "infra",
            "missing",
            "  parentRefs: [{name: gw, sectionName: same}]\n  hostnames: [m.test]\n  rules: [{backendRefs: [{name: absent, port: 80}]}]\n"
        ),
        route(
            "infra",
            "kind",
            "  parentRefs: [{name: gw, sectionName: same}]\n  hostnames: [k.test]\n  rules: [{backendRefs: [{name: b, kind: Bucket, group: s3.example, port: 80}]}]\n"
        ),
        route(
            "infra",
            "bad-regex",
            "  parentRefs: [{name: gw, sectionName: same}]\n  hostnames: [r.test]\n  rules: [{matches: [{path: {type: RegularExpression, value: '(['}}]}]\n"
        ),
    );
    let res = resources(&yaml);
    let maps: Vec<ListenMapping> =
        ["127.0.0.1:81=infra/gw:81", "127.0.0.1:82=infra/gw:82"].iter().map(|m| m.parse().unwrap()).collect();
    let t = compile(&res, &maps);
    assert_eq!(cond(parent(&t, "infra/good"), "Accepted"), (true, "Accepted".into()));
    assert_eq!(cond(parent(&t, "infra/good"), "ResolvedRefs"), (true, "ResolvedRefs".into()));
    assert_eq!(cond(parent(&t, "team-b/not-allowed"), "Accepted"), (false, "NotAllowedByListeners".into()));
    assert_eq!(cond(parent(&t, "infra/no-host"), "Accepted"), (false, "NoMatchingListenerHostname".into()));
    assert_eq!(cond(parent(&t, "infra/no-parent"), "Accepted"), (false, "NoMatchingParent".into()));
    assert_eq!(cond(parent(&t, "infra/missing"), "ResolvedRefs"), (false, "BackendNotFound".into()));
    assert_eq!(cond(parent(&t, "infra/missing"), "Accepted"), (true, "Accepted".into()));
    assert_eq!(cond(parent(&t, "infra/kind"), "ResolvedRefs"), (false, "InvalidKind".into()));
    assert_eq!(cond(parent(&t, "infra/bad-regex"), "Accepted"), (false, "UnsupportedValue".into()));
}

#[test]
fn shadowed_rules_are_noted() {
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        route(
            "infra",
            "a-first",
            "  parentRefs: [{name: gw}]\n  hostnames: [s.test]\n  rules: [{matches: [{path: {value: /x}}]}, {}]\n"
        ),
        route(
            "infra",
            "b-second",
            "  parentRefs: [{name: gw}]\n  hostnames: [s.test]\n  rules: [{matches: [{path: {value: /x/}}]}, {matches: [{path: {type: PathPrefix, value: /y}}]}]\n"
        ),
        route(
            "infra",
            "c-regex",
            "  parentRefs: [{name: gw}]\n  hostnames: [s.test]\n  rules: [{matches: [{path: {type: RegularExpression, value: '/z.*'}}]}]\n"
        ),
    );
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let notes = |r: &str| t.routes.iter().find(|x| x.route == r).map(|x| x.problems.clone()).unwrap_or_default();
    let b = notes("infra/b-second");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].contains("rule 0") && b[0].contains("infra/a-first rule 0 takes precedence"), "{b:?}");
    let c = notes("infra/c-regex");
    assert!(c.iter().any(|n| n.contains("infra/a-first rule 1")), "{c:?}");
    assert!(notes("infra/a-first").is_empty());
}

#[test]
fn cors_mirror_and_retry_are_compiled() {
    let body = "  parentRefs: [{name: gw}]\n  hostnames: [c.test]\n  rules:\n  - filters:\n    - {type: CORS, cors: {allowOrigins: ['https://ui.test'], allowMethods: [GET], maxAge: 60}}\n    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, percent: 25}}\n    retry: {attempts: 2, codes: [502, 503, 404], backoff: 100ms}\n    backendRefs: [{name: main, port: 80}]\n  - matches: [{path: {value: /bad}}]\n    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: nowhere, port: 80}}}]\n";
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("infra", "main", &["10.42.0.5"]),
        service("infra", "shadow", &["10.42.0.6"]),
        route("infra", "r", body)
    );
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    let h = HeaderMap::new();
    let head = RequestHead { method: "GET", host: "c.test", path: "/", query: None, headers: &h };
    let rule = t.listeners[0].find(&head).unwrap().rule;
    assert!(matches!(&rule.filters[0], Filter::Cors(c) if c.max_age == 60 && c.allow_origins == ["https://ui.test"]));
    match &rule.filters[1] {
        Filter::RequestMirror(m) => {
            assert_eq!((m.numerator, m.denominator), (25, 100));
            assert_eq!(m.target, BackendTarget::Endpoints(vec!["10.42.0.6:8080".parse().unwrap()]));
        }
        other => panic!("{other:?}"),
    }
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 2);
    assert_eq!(retry.codes, [502, 503], "only 5xx codes are retried");
    assert_eq!(retry.backoff, Some(std::time::Duration::from_millis(100)));
    let head = RequestHead { path: "/bad", ..head };
    let bad = t.listeners[0].find(&head).unwrap().rule;
    assert!(matches!(&bad.filters[0], Filter::Unsupported { reason } if reason.contains("BackendNotFound")));
}

#[test]
fn splice_safe_hosts_send_everything_unchanged_to_one_backend() {
    let t = openchoreo_fixture_table();
    for host in ["openchoreovm.localhost", "api.openchoreovm.localhost", "thunder.openchoreovm.localhost"] {
        let v = t.listeners[0].vhost(host).unwrap();
        assert_eq!(v.splice, Ok(()), "{host}");
        assert!(v.splice_backend().is_some());
    }
    assert!(t.listeners[1].vhost("react-starter-development.openchoreovm-apis.localhost").unwrap().splice.is_ok());
    let dev = t.listeners[1].vhost("development.openchoreovm-apis.localhost").unwrap();
    let why = dev.splice.clone().unwrap_err();
    assert!(why.contains("no rule matches every request") || why.contains("filters"), "{why}");
    assert!(t.listeners[0].any_splice_safe());
    // weights across two backends are not splice-safe
    let body = "  parentRefs: [{name: gw}]\n  hostnames: [w.test]\n  rules:\n  - backendRefs: [{name: a, port: 80}, {name: b, port: 80}]\n";
    let yaml = format!(
        "{GATEWAY}{}{}{}",
        service("infra", "a", &["10.0.0.1"]),
        service("infra", "b", &["10.0.0.2"]),
        route("infra", "r", body)
    );
    let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
    assert!(t.listeners[0].vhost("w.test").unwrap().splice.as_ref().unwrap_err().contains("exactly one backend"));
}
