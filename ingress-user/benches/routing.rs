//! `cargo xtask bench` (routing part): a table of 1,000 HTTPRoutes x 10 rules.
//! Reports the median route lookup, the median recompile time and the table's heap
//! size, for two shapes: routes spread over 100 hostnames, and all routes on one
//! hostname split by path prefix (an OpenChoreo environment with 1,000 components).
//! Targets: lookup median < 2 us, recompile < 50 ms, memory < 50 MB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use ingress::config::ListenMapping;
use ingress::resources::Resources;
use ingress::routing::{RequestHead, compile};
use ingress::sources::manifest::load_text;

/// Counts live heap bytes so the table's size can be measured.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

const ROUTES: usize = 1000;
const RULES: usize = 10;

fn host_of(shape: Shape, r: usize) -> String {
    match shape {
        Shape::Spread => format!("env{}.apps.example.com", r % 100),
        Shape::OneHost => "development.openchoreovm-apis.localhost".to_string(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Spread,
    OneHost,
}

fn resources(shape: Shape) -> Resources {
    let mut y = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: x\n  listeners: [{name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}]\n",
    );
    for r in 0..ROUTES {
        let ns = format!("team{}", r % 50);
        y += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{r}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{r}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{r}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: ['10.42.{}.{}']}}, {{addresses: ['10.43.{}.{}']}}]\n",
            r / 250,
            r % 250 + 1,
            r / 250,
            r % 250 + 1
        );
        y += &format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route{r}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: ['{}']\n  rules:\n",
            host_of(shape, r)
        );
        for k in 0..RULES {
            let m = match k % 4 {
                0 => format!("[{{path: {{type: PathPrefix, value: /c{r}/api{k}}}}}]"),
                1 => format!("[{{path: {{type: Exact, value: /c{r}/exact{k}}}}}]"),
                2 => format!(
                    "[{{path: {{type: PathPrefix, value: /c{r}/h{k}}}, headers: [{{name: x-version, value: v{k}}}]}}]"
                ),
                _ => format!("[{{path: {{type: PathPrefix, value: /c{r}/m{k}}}, method: POST}}]"),
            };
            y += &format!(
                "  - matches: {m}\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}}}]\n    backendRefs: [{{name: svc{r}, port: 80}}]\n"
            );
        }
    }
    let mut res = Resources::default();
    let mut errors = Vec::new();
    load_text(Path::new("bench.yaml"), &y, &mut res, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(res.http_routes.len(), ROUTES);
    res
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(shape: Shape) -> bool {
    let res = resources(shape);
    let mapping: ListenMapping = "0.0.0.0:8080=infra/gw:80".parse().unwrap();
    let mappings = vec![mapping];

    // recompile time
    let mut compiles = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let table = compile(&res, &mappings);
        compiles.push(t.elapsed());
        std::hint::black_box(&table);
    }
    // table heap size
    let before = LIVE.load(Ordering::Relaxed);
    let table = compile(&res, &mappings);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let lt = &table.listeners[0];

    // lookups: a mix of hits on every rule kind and misses
    let headers_v = {
        let mut h = HeaderMap::new();
        h.insert("x-version", http::HeaderValue::from_static("v2"));
        h
    };
    let empty = HeaderMap::new();
    let mut reqs = Vec::new();
    for i in 0..20_000usize {
        let r = (i * 7919) % ROUTES;
        let k = i % RULES;
        let path = match i % 5 {
            0 => format!("/c{r}/api{}/items/42", k - k % 4),
            1 => format!("/c{r}/exact{}", (k - k % 4) + 1),
            2 => format!("/c{r}/h2/x"),
            3 => format!("/c{r}/m3"),
            _ => format!("/c{r}/missing"),
        };
        let method = if i % 5 == 3 { "POST" } else { "GET" };
        let hdrs = if i % 5 == 2 { &headers_v } else { &empty };
        reqs.push((host_of(shape, r), path, method, hdrs));
    }
    let mut hits = 0usize;
    let mut lookups = Vec::with_capacity(reqs.len());
    for (host, path, method, hdrs) in &reqs {
        let head = RequestHead { method, host, path, query: None, headers: hdrs };
        let t = Instant::now();
        let m = lt.find(&head);
        lookups.push(t.elapsed());
        hits += m.is_some() as usize;
    }
    assert!(hits >= reqs.len() * 3 / 5, "the requests must mostly hit: {hits}/{}", reqs.len());
    let (lk, cp, mb) = (median(lookups), median(compiles), bytes as f64 / 1e6);
    let ok = lk < Duration::from_micros(2) && cp < Duration::from_millis(50) && mb < 50.0;
    println!(
        "routing {:<8} {ROUTES} routes x {RULES} rules: lookup median {:>7.0} ns (target < 2000)  recompile median {:>6.1} ms (target < 50)  table {:>5.1} MB (target < 50)  hits {hits}/{}  {}",
        format!("{shape:?}"),
        lk.as_nanos() as f64,
        cp.as_secs_f64() * 1e3,
        mb,
        reqs.len(),
        if ok { "OK" } else { "MISSED" }
    );
    ok
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let ok = bench(Shape::Spread) & bench(Shape::OneHost);
    if !ok {
        std::process::exit(1);
    }
}
