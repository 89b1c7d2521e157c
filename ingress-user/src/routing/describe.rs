//! The table as JSON for `GET /routes` and `ingress routes`: per listen address,
//! host -> rules (match, filters, backends with weights and endpoints), and what
//! happened to each route.

use serde_json::{Value, json};

use super::matching::{PathMatch, ValueMatch};
use super::{BackendTarget, Matcher, Table};

fn value_match(v: &ValueMatch) -> Value {
    match v {
        ValueMatch::Exact(s) => json!({"type": "Exact", "value": s}),
        ValueMatch::Regex(r) => json!({"type": "RegularExpression", "value": r.as_str()}),
    }
}

fn matcher(m: &Matcher) -> Value {
    let path = match &m.path {
        PathMatch::Exact(p) => json!({"type": "Exact", "value": p}),
        PathMatch::Prefix(p) => json!({"type": "PathPrefix", "value": p}),
        PathMatch::Regex(r) => json!({"type": "RegularExpression", "value": r.as_str()}),
    };
    json!({
        "path": path,
        "method": m.method,
        "headers": m.headers.iter().map(|(n, v)| json!({"name": n.as_str(), "match": value_match(v)})).collect::<Vec<_>>(),
        "queryParams": m.query.iter().map(|(n, v)| json!({"name": n, "match": value_match(v)})).collect::<Vec<_>>(),
    })
}

pub fn describe(t: &Table) -> Value {
    let listeners: Vec<Value> = t
        .listeners
        .iter()
        .map(|l| {
            let hosts: Vec<Value> = l
                .vhosts()
                .into_iter()
                .map(|v| {
                    let rules: Vec<Value> = v
                        .entries
                        .iter()
                        .map(|e| {
                            let r = &e.rule;
                            json!({
                                "route": r.route.to_string(),
                                "rule": r.index,
                                "match": matcher(&e.matcher),
                                "filters": r.filters,
                                "timeouts": r.timeouts,
                                "backends": r.backends.iter().map(|b| {
                                    let (endpoints, error) = match &b.target {
                                        BackendTarget::Endpoints(e) => (e.iter().map(|a| a.to_string()).collect::<Vec<_>>(), None),
                                        BackendTarget::Invalid(w) => (vec![], Some(w.clone())),
                                    };
                                    json!({"name": b.name, "weight": b.weight, "endpoints": endpoints, "error": error, "filters": b.filters})
                                }).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    let (safe, why_not) = match &v.splice {
                        Ok(()) => (true, None),
                        Err(w) => (false, Some(w.clone())),
                    };
                    json!({"hostname": v.hostname, "splice": {"safe": safe, "why_not": why_not}, "rules": rules})
                })
                .collect();
            json!({
                "gateway": l.gateway.to_string(),
                "listeners": l.listeners.iter().map(|(n, p)| json!({"name": n, "port": p})).collect::<Vec<_>>(),
                "problems": l.problems,
                "hosts": hosts,
            })
        })
        .collect();
    json!({"listeners": listeners, "routes": t.routes})
}

/// Human-readable form for `ingress routes`.
pub fn format_text(v: &Value) -> String {
    let mut out = String::new();
    if let Some(src) = v.get("source") {
        out += &format!("source: {} (table generation {})\n", src["source"].as_str().unwrap_or(""), src["generation"]);
        if let Some(e) = src["error"].as_str() {
            out += &format!("  ! newest input rejected, serving the last good table: {e}\n");
        }
    }
    if let Some(x) = v.get("xdp").filter(|x| !x.is_null()) {
        out +=
            &format!("XDP on {}: {} mode\n", x["interface"].as_str().unwrap_or("?"), x["mode"].as_str().unwrap_or("?"));
        if let Some(why) = x["why_generic"].as_str() {
            out += &format!("  ! generic (skb) mode is slower: {why}\n");
        }
    }
    for l in v["listeners"].as_array().into_iter().flatten() {
        let ls: Vec<String> = l["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{}:{}", x["name"].as_str().unwrap_or(""), x["port"]))
            .collect();
        out += &format!("gateway {} (listeners {})\n", l["gateway"].as_str().unwrap_or(""), ls.join(", "));
        for p in l["problems"].as_array().into_iter().flatten() {
            out += &format!("  ! {}\n", p.as_str().unwrap_or(""));
        }
        for h in l["hosts"].as_array().into_iter().flatten() {
            let splice = match h["splice"]["why_not"].as_str() {
                None => "splice-safe: connections are joined to the pod in the kernel".to_string(),
                Some(w) => format!("not splice-safe: {w}"),
            };
            out += &format!("  host {}  ({splice})\n", h["hostname"].as_str().unwrap_or(""));
            for r in h["rules"].as_array().into_iter().flatten() {
                let path = &r["match"]["path"];
                let backends: Vec<String> = r["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let eps: Vec<&str> =
                            b["endpoints"].as_array().into_iter().flatten().filter_map(|e| e.as_str()).collect();
                        match b["error"].as_str() {
                            Some(e) => format!("{} w{} ERROR {e}", b["name"].as_str().unwrap_or(""), b["weight"]),
                            None => {
                                format!("{} w{} -> [{}]", b["name"].as_str().unwrap_or(""), b["weight"], eps.join(" "))
                            }
                        }
                    })
                    .collect();
                out += &format!(
                    "    {} {} {}  ({} rule {})  {}\n",
                    path["type"].as_str().unwrap_or(""),
                    path["value"].as_str().unwrap_or(""),
                    r["match"]["method"].as_str().unwrap_or(""),
                    r["route"].as_str().unwrap_or(""),
                    r["rule"],
                    backends.join(", ")
                );
            }
        }
    }
    for r in v["routes"].as_array().into_iter().flatten() {
        for p in r["problems"].as_array().into_iter().flatten() {
            out += &format!("route {}: {}\n", r["route"].as_str().unwrap_or(""), p.as_str().unwrap_or(""));
        }
    }
    out
}
