//! The translation from the table to delayed binding's map entries, and the
//! eligibility rules it applies (`routing/kernel_bind.rs`).

use super::*;
use crate::routing::tests::{GATEWAY, route, service, table};

/// Hosts on listener port 80 of the test Gateway, each showing one rule of eligibility.
pub(crate) fn bind_table() -> Table {
    let one = |name: &str, host: &str, backend: &str| {
        route(
            "app",
            name,
            &format!(
                "  parentRefs: [{{name: gw, namespace: infra, sectionName: http}}]\n  hostnames: ['{host}']\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"
            ),
        )
    };
    let yaml = [
        GATEWAY.to_string(),
        service("app", "a", &["10.42.0.10", "10.42.0.11"]),
        service("app", "b", &["10.42.0.20"]),
        service("app", "empty", &[]),
        one("bound", "bound.test", "a"),
        one("other", "other.test", "b"),
        one("same", "also-a.test", "a"),
        one("upper", "Mixed.Test", "b"),
        one("wild", "*.wild.test", "a"),
        one("long", &format!("{}.test", "l".repeat(60)), "a"),
        one("fits", &format!("{}.test", "f".repeat(58)), "a"),
        one("under", "under_score.test", "b"),
        one("noeps", "noeps.test", "empty"),
        route(
            "app",
            "split",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: ['split.test']\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: a, port: 80}]\n  - backendRefs: [{name: b, port: 80}]\n",
        ),
        route(
            "app",
            "nocatch",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: ['nocatch.test']\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: a, port: 80}]\n",
        ),
        route(
            "app",
            "samebackend",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: ['two-rules.test']\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /api}}, {method: POST}]\n    backendRefs: [{name: b, port: 80}]\n  - backendRefs: [{name: b, port: 80}]\n",
        ),
        route(
            "app",
            "filtered",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: ['filtered.test']\n  rules:\n  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x, value: y}]}}]\n    backendRefs: [{name: a, port: 80}]\n",
        ),
        route(
            "app",
            "weights",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: ['weights.test']\n  rules:\n  - backendRefs: [{name: a, port: 80, weight: 1}, {name: b, port: 80, weight: 1}]\n",
        ),
        route(
            "app",
            "timeout",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  hostnames: ['timeout.test']\n  rules:\n  - timeouts: {request: 5s}\n    backendRefs: [{name: a, port: 80}]\n",
        ),
        route(
            "app",
            "anyhost",
            "  parentRefs: [{name: gw, namespace: infra, sectionName: http}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /only-any}}]\n    backendRefs: [{name: a, port: 80}]\n",
        ),
    ]
    .concat();
    table(&yaml, "0.0.0.0:9080=infra/gw:80")
}

fn decisions(e: &BindEntries) -> BTreeMap<String, Result<u32, String>> {
    e.decisions.iter().map(|d| (d.hostname.clone(), d.decision.clone())).collect()
}

#[test]
fn only_hosts_with_one_unchanged_backend_and_an_exact_short_name_are_bound() {
    let t = bind_table();
    let e = translate(&t, &[9080], BindOptions::default());
    let d = decisions(&e);
    let id = |h: &str| d[h].clone().unwrap_or_else(|w| panic!("{h} should be bindable: {w}"));
    let why = |h: &str| d[h].clone().expect_err(h);
    // bound: the backend ids are shared by hosts with the same backend
    assert_eq!(id("bound.test"), id("also-a.test"));
    assert_ne!(id("bound.test"), id("other.test"));
    assert_eq!(id("mixed.test"), id("other.test"), "hostnames are lowercased");
    assert_eq!(id("two-rules.test"), id("other.test"), "two rules, one backend, a catch-all");
    assert_eq!(id("under_score.test"), id("other.test"));
    id(&format!("{}.test", "f".repeat(58)));
    // not bound, each with its reason
    assert!(why("split.test").contains("another backend"), "{}", why("split.test"));
    assert!(why("nocatch.test").contains("no rule matches every request"));
    assert!(why("filtered.test").contains("filters"));
    assert!(why("weights.test").contains("exactly one backend"));
    assert!(why("timeout.test").contains("timeouts"));
    assert!(why("noeps.test").contains("no ready endpoint"));
    assert!(why("*.wild.test").contains("wildcard"), "{}", why("*.wild.test"));
    assert!(why(&format!("{}.test", "l".repeat(60))).contains("host key holds 63"));
    let any = e.decisions.iter().find(|d| d.hostname == "*").map(|d| d.decision.clone());
    assert!(any.is_some_and(|d| d.is_err()), "routes without hostnames are never bound: {:?}", e.decisions);
    let view = crate::routing::view::TableView::of(&t);
    assert!(view.listeners[0].hosts.iter().all(|h| h.kernel_binding.eligible == d[&h.hostname].is_ok()));
    // the entries: one per bindable host, keyed by port and host
    let bindable = d.values().filter(|r| r.is_ok()).count();
    assert_eq!(e.hosts.len(), bindable);
    assert_eq!(bindable, 7);
    let key = BindHostKey::new(9080, b"bound.test").unwrap();
    let (bid, name) = e.lookup(&key).unwrap();
    assert_eq!(name, "app/a:80");
    assert_eq!(e.lookup(&BindHostKey::new(8080, b"bound.test").unwrap()), None, "another port");
    let (_, backend) = e.backends.iter().find(|(i, _)| *i == bid).unwrap();
    assert_eq!(backend.count, 2);
    let addrs: Vec<(std::net::Ipv4Addr, u16)> =
        backend.endpoints[..2].iter().map(|ep| (std::net::Ipv4Addr::from(ep.addr.to_ne_bytes()), ep.port)).collect();
    assert_eq!(addrs, [("10.42.0.10".parse().unwrap(), 8080), ("10.42.0.11".parse().unwrap(), 8080)]);
    assert_eq!(e.backends.len(), 2, "one entry per backend, not per host");
}

#[test]
fn headers_added_by_the_proxy_or_a_shared_port_bind_nothing() {
    let t = bind_table();
    for (opts, word) in [
        (BindOptions { forwarded_headers: true, request_ids: false }, "X-Forwarded"),
        (BindOptions { forwarded_headers: false, request_ids: true }, "X-Request-Id"),
    ] {
        let e = translate(&t, &[9080], opts);
        assert!(e.hosts.is_empty() && e.backends.is_empty());
        let d = decisions(&e);
        assert!(d["bound.test"].as_ref().is_err_and(|w| w.contains(word)), "{:?}", d["bound.test"]);
        assert!(d["split.test"].as_ref().is_err_and(|w| w.contains("another backend")), "the first reason stays");
    }
    let two = crate::routing::compile(
        &crate::routing::tests::resources(&format!(
            "{GATEWAY}{}{}",
            service("app", "a", &["10.42.0.10"]),
            route(
                "app",
                "r",
                "  parentRefs: [{name: gw, namespace: infra}]\n  hostnames: ['bound.test']\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n"
            )
        )),
        &["127.0.0.1:9080=infra/gw:80".parse().unwrap(), "127.0.0.2:9080=infra/gw:80".parse().unwrap()],
    );
    let e = translate(&two, &[9080, 9080], BindOptions::default());
    assert!(e.hosts.is_empty());
    assert!(e.decisions.iter().all(|d| d.decision.as_ref().is_err_and(|w| w.contains("more than one --listen"))));
    assert_eq!(translate(&two, &[9080, 9081], BindOptions::default()).hosts.len(), 2);
    assert!(translate(&two, &[], BindOptions::default()).decisions.is_empty(), "no port, no entries");
}

#[test]
fn the_openchoreo_fixtures_bind_their_splice_safe_hosts_only() {
    let t = crate::routing::tests::openchoreo_fixture_table();
    let e = translate(&t, &[8080, 9080], BindOptions::default());
    for l in &t.listeners {
        for (v, d) in l.kernel_binding() {
            if d.is_ok() {
                assert!(v.splice.is_ok(), "{}", v.hostname);
            }
        }
    }
    let bound: Vec<&str> = e.decisions.iter().filter(|d| d.decision.is_ok()).map(|d| d.hostname.as_str()).collect();
    assert!(bound.contains(&"api.openchoreovm.localhost"), "{bound:?}");
    assert!(bound.contains(&"react-starter-development.openchoreovm-apis.localhost"), "{bound:?}");
    let split = e.decisions.iter().find(|d| d.hostname == "development.openchoreovm-apis.localhost").unwrap();
    assert!(split.decision.is_err(), "{split:?}");
}

#[test]
fn the_routes_view_shows_each_hosts_decision() {
    let t = bind_table();
    let mut view = crate::routing::view::TableView::of(&t);
    let text = view.format_text();
    assert!(text.contains("  host bound.test  (splice-safe"), "{text}");
    let after = |host: &str| {
        let at = text.find(&format!("  host {host}  (")).unwrap();
        text[at..].lines().nth(1).unwrap().to_string()
    };
    assert_eq!(after("bound.test"), "    kernel binding: eligible");
    assert!(after("split.test").starts_with("    kernel binding: no: not splice-safe:"), "{}", after("split.test"));
    assert!(after("*.wild.test").contains("kernel binding: no: a wildcard hostname"), "{}", after("*.wild.test"));
    let json = serde_json::to_value(&view).unwrap();
    let hosts = json["listeners"][0]["hosts"].as_array().unwrap();
    let bound = hosts.iter().find(|h| h["hostname"] == "bound.test").unwrap();
    assert_eq!(bound["kernel_binding"], serde_json::json!({"eligible": true, "why_not": null}));
    view.not_bound_because("because");
    let json = serde_json::to_value(&view).unwrap();
    let bound =
        json["listeners"][0]["hosts"].as_array().unwrap().iter().find(|h| h["hostname"] == "bound.test").cloned();
    assert_eq!(bound.unwrap()["kernel_binding"], serde_json::json!({"eligible": false, "why_not": "because"}));
    assert!(view.format_text().contains("kernel binding: no: because"));
    // an older CLI's JSON (no kernel_binding) still reads
    let mut old = json.clone();
    for h in old["listeners"][0]["hosts"].as_array_mut().unwrap() {
        h.as_object_mut().unwrap().remove("kernel_binding");
    }
    let back: crate::routing::view::TableView = serde_json::from_value(old).unwrap();
    assert!(!back.listeners[0].hosts[0].kernel_binding.eligible);
}

#[test]
fn the_routes_view_shows_the_hosts_left_out_for_want_of_a_pod_namespace() {
    let t = bind_table();
    let e = translate(&t, &[8080], BindOptions::default());
    assert!(e.decisions.iter().any(|d| d.hostname == "bound.test" && d.decision.is_ok()), "{:?}", e.decisions);
    // every endpoint found: the view is unchanged
    let all = crate::datapath::bind_plan::endpoint_addrs(&e);
    let mut view = crate::routing::view::TableView::of(&t);
    let before = view.clone();
    view.apply_bind_decisions(&crate::datapath::bind_plan::keep_covered(e.clone(), &all).decisions);
    assert_eq!(view, before);
    // no pod namespace found: bound.test says why, the others keep their own reason
    view.apply_bind_decisions(&crate::datapath::bind_plan::keep_covered(e, &Default::default()).decisions);
    let text = view.format_text();
    let after = |host: &str| {
        let at = text.find(&format!("  host {host}  (")).unwrap();
        text[at..].lines().nth(1).unwrap().to_string()
    };
    assert!(
        after("bound.test").starts_with("    kernel binding: no: an endpoint is in no network namespace"),
        "{text}"
    );
    assert!(after("split.test").starts_with("    kernel binding: no: not splice-safe:"), "{text}");
}
