//! Real Kubernetes API server tier: etcd + kube-apiserver v1.20 on loopback, the
//! Gateway API CRDs, the agent with `--kubeconfig --write-status` serving on
//! 127.0.0.1, echo backends on 127.0.0.1. Checks: a route added is served (the time
//! it took is printed: a measurement, with a generous bound for correctness only),
//! a route change, endpoints added and removed, status written, and an API server
//! restart with a compacted etcd (410 Expired on resume) never drops the table. And
//! with the GRPCRoute CRD installed too: a GRPCRoute watched, served and given status.

use std::time::{Duration, Instant};

use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::{Backend, Echo};
use ingress_tests::client::{Request, send};
use ingress_tests::free_port;
use ingress_tests::kubeapi::{self, KubeApiServer, WatchError};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::{Value, json};

/// How long a change may take to be served before the test fails: a correctness
/// bound, far above the times measured (printed as `MEASURED`; the benchmark's
/// business, not this test's).
const SERVED_WITHIN: Duration = Duration::from_secs(10);

/// Drops `null` from every `enum` list: a 1.20 server rejects them (schemars emits
/// them for optional enums).
fn strip_null_enums(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(e)) = m.get_mut("enum") {
                e.retain(|x| !x.is_null());
            }
            m.values_mut().for_each(strip_null_enums);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_null_enums),
        _ => {}
    }
}

async fn install_crds(client: &Client) {
    install_these_crds(client, [Gateway::crd(), HttpRoute::crd(), ReferenceGrant::crd()]).await;
}

async fn install_these_crds(client: &Client, crds: impl IntoIterator<Item = CustomResourceDefinition>) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let mut v = serde_json::to_value(&crd).unwrap();
        // *.k8s.io groups are protected: the approval annotation is required.
        v["metadata"]["annotations"] =
            json!({"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/891"});
        strip_null_enums(&mut v);
        let crd: CustomResourceDefinition = serde_json::from_value(v).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("create CRD {name}: {e}"));
        let start = Instant::now();
        loop {
            let c = api.get(&name).await.unwrap();
            let established = c
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn create<K>(api: Api<K>, obj: Value)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o: K = serde_json::from_value(obj.clone()).unwrap_or_else(|e| panic!("{e}: {obj}"));
    api.create(&PostParams::default(), &o).await.unwrap_or_else(|e| panic!("create {obj}: {e}"));
}

fn slice_ar() -> ApiResource {
    ApiResource {
        group: "discovery.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "discovery.k8s.io/v1beta1".into(),
        kind: "EndpointSlice".into(),
        plural: "endpointslices".into(),
    }
}

async fn create_slice(client: &Client, name: &str, port: u16) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "apps", &slice_ar());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "apps", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// GET through the agent: (status, answering pod).
fn get(port: u16, host: &str) -> (u16, Option<String>) {
    match send(format!("127.0.0.1:{port}").parse().unwrap(), &Request::get(host, "/"), Duration::from_secs(3)) {
        Ok(r) if r.status == 200 => (200, serde_json::from_slice::<Echo>(&r.body).ok().map(|e| e.pod)),
        Ok(r) => (r.status, None),
        Err(_) => (0, None),
    }
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`. Returns the time it took.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_against_a_real_api_server() {
    let test = "kubernetes_source_against_a_real_api_server";
    let Some(bin) = kubeapi::binary(test) else { return };
    let mut api = KubeApiServer::start(&bin, "src");
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    install_crds(&client).await;
    for ns in ["infra", "apps"] {
        create::<Namespace>(
            Api::all(client.clone()),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    create::<Gateway>(Api::namespaced(client.clone(), "infra"), json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "infra"},
        "spec": {"gatewayClassName": "x", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}}]},
    }))
    .await;
    create::<Service>(
        Api::namespaced(client.clone(), "apps"),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "apps"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }),
    )
    .await;
    let (backend_a, port_a) = Backend::start_local("pod-a");
    let (backend_b, port_b) = Backend::start_local("pod-b");
    create_slice(&client, "svc-a", port_a).await;

    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--kubeconfig".to_string(), api.kubeconfig.display().to_string(), "--write-status".to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=infra/gw:80")], &args);

    // A route added is served.
    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), "apps");
    create::<HttpRoute>(
        routes.clone(),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r1", "namespace": "apps"},
            "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}], "hostnames": ["a.test"],
                     "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]},
        }),
    )
    .await;
    let took = until("route served", SERVED_WITHIN, || get(port, "a.test") == (200, Some("pod-a".into()))).await;
    eprintln!("MEASURED kube: route added -> served in {took:?}");

    // Status written (server-side apply).
    let start = Instant::now();
    loop {
        let r = routes.get("r1").await.unwrap();
        let parents = r.status.map(|s| s.parents).unwrap_or_default();
        if let Some(p) = parents.first() {
            assert_eq!(p.controller_name, ingress::sources::k8s::CONTROLLER_NAME);
            let accepted = p.conditions.iter().find(|c| c.type_ == "Accepted").expect("Accepted");
            let resolved = p.conditions.iter().find(|c| c.type_ == "ResolvedRefs").expect("ResolvedRefs");
            assert_eq!((accepted.status.as_str(), resolved.status.as_str()), ("True", "True"));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no HTTPRoute status written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gws: Api<Gateway> = Api::namespaced(client.clone(), "infra");
    let start = Instant::now();
    loop {
        let gw = gws.get("gw").await.unwrap();
        let listeners = gw.status.and_then(|s| s.listeners).unwrap_or_default();
        // the writer patches the route, then the Gateway: a status written before the
        // route existed (0 attached) may still be there for a moment
        let seen: Vec<(String, i32)> = listeners.iter().map(|l| (l.name.clone(), l.attached_routes)).collect();
        if seen.first().is_some_and(|(name, n)| name == "http" && *n == 1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "Gateway listener status is not (http, 1 attached route): {seen:?}; agent log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A route changed.
    let pp = PatchParams::default();
    routes.patch("r1", &pp, &Patch::Merge(json!({"spec": {"hostnames": ["b.test"]}}))).await.unwrap();
    let took =
        until("route change", SERVED_WITHIN, || get(port, "b.test").0 == 200 && get(port, "a.test").0 == 404).await;
    eprintln!("MEASURED kube: route changed -> served in {took:?}");

    // Endpoints added, then removed.
    create_slice(&client, "svc-b", port_b).await;
    until("both endpoints in rotation", Duration::from_secs(5), || {
        let pods: Vec<_> = (0..4).filter_map(|_| get(port, "b.test").1).collect();
        pods.iter().any(|p| p == "pod-a") && pods.iter().any(|p| p == "pod-b")
    })
    .await;
    let slices: Api<DynamicObject> = Api::namespaced_with(client.clone(), "apps", &slice_ar());
    slices.delete("svc-a", &DeleteParams::default()).await.unwrap();
    until("removed endpoint out of rotation", Duration::from_secs(5), || {
        (0..4).all(|_| get(port, "b.test").1.as_deref() == Some("pod-b"))
    })
    .await;

    // API server restart with etcd compacted meanwhile: the watches resume from an old
    // resourceVersion and get 410 Expired, relist, and the table is served throughout.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    for i in 0..20 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("churn-{i}")}, "data": {"i": i.to_string()}}))
                .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    api.stop_apiserver();
    for _ in 0..3 {
        assert_eq!(get(port, "b.test"), (200, Some("pod-b".into())), "served while the API server is down");
    }
    let rev = api.compact();
    api.start_apiserver();
    assert_eq!(get(port, "b.test"), (200, Some("pod-b".into())), "served after the restart");
    routes.patch("r1", &pp, &Patch::Merge(json!({"spec": {"hostnames": ["c.test"]}}))).await.unwrap();
    let took = until("change after restart", Duration::from_secs(60), || get(port, "c.test").0 == 200).await;
    eprintln!("etcd compacted at revision {rev}; change after the API server restart served in {took:?}");
    let log = agent.stop();
    let errors = kubeapi::watch_errors(&log);
    let count = |kind: WatchError| errors.iter().filter(|(k, _)| *k == kind).count();
    assert!(count(WatchError::Unreachable) > 0, "the watchers saw the API server stop:\n{log}");
    assert!(count(WatchError::Expired) > 0, "a watcher resumed into the compaction and got 410 Expired:\n{log}");
    eprintln!(
        "watch errors: {} unreachable, {} expired, {} other",
        count(WatchError::Unreachable),
        count(WatchError::Expired),
        count(WatchError::Other)
    );
    let distinct: std::collections::BTreeSet<_> = errors.iter().collect();
    for (kind, error) in distinct {
        eprintln!("  {kind:?}: {error}");
    }
    backend_a.stop();
    backend_b.stop();
}

/// The GRPCRoute CRD installed: the agent watches GRPCRoutes, serves one (a gRPC call
/// over HTTP/1.1 routed by service; another service gets grpc-status 12) and writes its
/// status; the Gateway's listener lists GRPCRoute among its kinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_are_watched_served_and_given_status() {
    let test = "grpc_routes_are_watched_served_and_given_status";
    let Some(bin) = kubeapi::binary(test) else { return };
    let api = KubeApiServer::start(&bin, "grpc");
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    install_these_crds(&client, [Gateway::crd(), HttpRoute::crd(), ReferenceGrant::crd(), GrpcRoute::crd()]).await;
    for ns in ["infra", "apps"] {
        create::<Namespace>(
            Api::all(client.clone()),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    create::<Gateway>(Api::namespaced(client.clone(), "infra"), json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "infra"},
        "spec": {"gatewayClassName": "x", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}}]},
    }))
    .await;
    create::<Service>(
        Api::namespaced(client.clone(), "apps"),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "apps"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }),
    )
    .await;
    let (backend, port_a) = Backend::start_local("pod-grpc");
    create_slice(&client, "svc-a", port_a).await;
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--kubeconfig".to_string(), api.kubeconfig.display().to_string(), "--write-status".to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=infra/gw:80")], &args);

    let routes: Api<GrpcRoute> = Api::namespaced(client.clone(), "apps");
    create::<GrpcRoute>(
        routes.clone(),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "g1", "namespace": "apps"},
            "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}], "hostnames": ["g.test"],
                     "rules": [{"matches": [{"method": {"service": "echo.Echo"}}], "backendRefs": [{"name": "svc", "port": 80}]}]},
        }),
    )
    .await;
    let call = |path: &str| {
        let mut r = Request::get("g.test", path).method("POST").header("content-type", "application/grpc");
        r.body = vec![0, 0, 0, 0, 0];
        send(format!("127.0.0.1:{port}").parse().unwrap(), &r, Duration::from_secs(3)).ok()
    };
    let served = || {
        call("/echo.Echo/Say").is_some_and(|r| {
            r.status == 200 && serde_json::from_slice::<Echo>(&r.body).is_ok_and(|e| e.pod == "pod-grpc")
        })
    };
    let took = until("GRPCRoute served", SERVED_WITHIN, served).await;
    eprintln!("MEASURED kube: GRPCRoute added -> served in {took:?}");
    let other = call("/other.Svc/Say").expect("an answer");
    assert_eq!((other.status, other.headers.get("grpc-status").map(String::as_str)), (200, Some("12")));

    // status.parents written by server-side apply, as for HTTPRoute
    let start = Instant::now();
    loop {
        let r = routes.get("g1").await.unwrap();
        let parents = r.status.map(|s| s.parents).unwrap_or_default();
        if let Some(p) = parents.first() {
            assert_eq!(p.controller_name, ingress::sources::k8s::CONTROLLER_NAME);
            assert_eq!(p.parent_ref.name, "gw");
            let accepted = p.conditions.iter().find(|c| c.type_ == "Accepted").expect("Accepted");
            let resolved = p.conditions.iter().find(|c| c.type_ == "ResolvedRefs").expect("ResolvedRefs");
            assert_eq!((accepted.status.as_str(), resolved.status.as_str()), ("True", "True"));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no GRPCRoute status written:\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gws: Api<Gateway> = Api::namespaced(client.clone(), "infra");
    let start = Instant::now();
    loop {
        let gw = gws.get("gw").await.unwrap();
        let l = gw.status.and_then(|s| s.listeners).unwrap_or_default();
        let kinds: Vec<String> =
            l.first().and_then(|l| l.supported_kinds.clone()).unwrap_or_default().into_iter().map(|k| k.kind).collect();
        if l.first().is_some_and(|l| l.attached_routes == 1) && kinds.iter().any(|k| k == "GRPCRoute") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "listener status: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // deleted: no longer served
    routes.delete("g1", &DeleteParams::default()).await.unwrap();
    until("GRPCRoute deleted", SERVED_WITHIN, || {
        call("/echo.Echo/Say").is_some_and(|r| r.headers.get("grpc-status").map(String::as_str) == Some("12"))
    })
    .await;
    drop(agent);
    backend.stop();
}

/// A TLS handshake for `sni` with `client` on the agent's `port`: the served
/// certificate (DER), or the error (the server's alert).
fn tls_handshake(port: u16, client: std::sync::Arc<rustls::ClientConfig>, sni: &str) -> Result<Vec<u8>, String> {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let (mut c, n) = ingress_tests::tls::TlsConn::handshake(tcp, client, sni).map_err(|e| format!("{e:?}"))?;
    let r = c.send(&Request::get(sni, "/")).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    Ok(n.cert)
}

/// The `(status, reason)` of condition `kind` of Gateway listener `name`, if written.
async fn listener_condition(gws: &Api<Gateway>, gw: &str, name: &str, kind: &str) -> Option<(String, String)> {
    let g = gws.get(gw).await.ok()?;
    let l = g.status?.listeners?.into_iter().find(|l| l.name == name)?;
    let c = l.conditions.into_iter().find(|c| c.type_ == kind)?;
    Some((c.status, c.reason))
}

/// HTTPS listeners from Kubernetes (issue 12): the agent watches the Secret the
/// listener names (and no other), refuses the handshake with InvalidCertificateRef in
/// the Gateway status while it is missing, serves it once it exists, and serves a new
/// certificate to new connections after the Secret is updated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_secrets_are_watched_one_by_one() {
    let test = "https_listener_secrets_are_watched_one_by_one";
    let Some(bin) = kubeapi::binary(test) else { return };
    let api = KubeApiServer::start(&bin, "tls");
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    install_crds(&client).await;
    for ns in ["infra", "apps"] {
        create::<Namespace>(
            Api::all(client.clone()),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    create::<Gateway>(
        Api::namespaced(client.clone(), "infra"),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "infra"},
            "spec": {"gatewayClassName": "x", "listeners": [{
                "name": "https", "protocol": "HTTPS", "port": 443, "hostname": "a.test",
                "allowedRoutes": {"namespaces": {"from": "All"}},
                "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "gw-cert"}]},
            }]},
        }),
    )
    .await;
    create::<Service>(
        Api::namespaced(client.clone(), "apps"),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "apps"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }),
    )
    .await;
    let (_backend, port_a) = Backend::start_local("pod-a");
    create_slice(&client, "svc-a", port_a).await;
    create::<HttpRoute>(
        Api::namespaced(client.clone(), "apps"),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r1", "namespace": "apps"},
            "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}], "hostnames": ["a.test"],
                     "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]},
        }),
    )
    .await;
    let ca = ingress_tests::tls::TestCa::new();
    let secret = |name: &str| {
        let (crt, key) = ca.leaf(&["a.test"]);
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "infra"},
               "type": "kubernetes.io/tls", "stringData": {"tls.crt": crt, "tls.key": key}})
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "infra");
    // a Secret no listener names: never watched
    create(secrets.clone(), secret("other")).await;

    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--kubeconfig".to_string(), api.kubeconfig.display().to_string(), "--write-status".to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=infra/gw:443")], &args);
    let tls = || ca.client(&rustls::version::TLS13, &[b"http/1.1"]);

    // missing Secret: the handshake is refused, the listener not programmed
    let refused = tls_handshake(port, tls(), "a.test").expect_err("no certificate yet");
    assert!(refused.contains("HandshakeFailure"), "{refused}");
    let gws: Api<Gateway> = Api::namespaced(client.clone(), "infra");
    let start = Instant::now();
    while listener_condition(&gws, "gw", "https", "ResolvedRefs").await
        != Some(("False".into(), "InvalidCertificateRef".into()))
    {
        assert!(start.elapsed() < SERVED_WITHIN, "no InvalidCertificateRef in the Gateway status");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // the Secret appears: served
    create(secrets.clone(), secret("gw-cert")).await;
    let mut first = Vec::new();
    let took = until("certificate served", SERVED_WITHIN, || match tls_handshake(port, tls(), "a.test") {
        Ok(cert) => {
            first = cert;
            true
        }
        Err(_) => false,
    })
    .await;
    eprintln!("MEASURED kube: Secret created -> served in {took:?}");
    assert_eq!(ingress_tests::tls::first_dns_san(&first), "a.test");
    let start = Instant::now();
    while listener_condition(&gws, "gw", "https", "ResolvedRefs").await != Some(("True".into(), "ResolvedRefs".into()))
    {
        assert!(start.elapsed() < SERVED_WITHIN, "ResolvedRefs not True after the Secret was created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // the Secret updated: new connections get the new certificate
    let (crt, key) = ca.leaf(&["a.test"]);
    let patch = json!({"stringData": {"tls.crt": crt, "tls.key": key}});
    secrets.patch("gw-cert", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    until("new certificate served", SERVED_WITHIN, || {
        tls_handshake(port, tls(), "a.test").is_ok_and(|c| !c.is_empty() && c != first)
    })
    .await;

    let log = agent.stop();
    assert!(log.contains("watching the Secret of an HTTPS listener") && log.contains("infra/gw-cert"), "{log}");
    assert!(!log.contains("infra/other"), "an unreferenced Secret was watched:\n{log}");
}
