//! TLSRoutes from a real API server (etcd + kube-apiserver v1.20 on loopback, the
//! Gateway API CRDs with TLSRoute v1): the agent with `--kubeconfig --write-status`
//! discovers and watches TLSRoutes, serves a TLS passthrough listener on 127.0.0.1 to
//! a rustls pod, and writes the TLSRoute's status and the listener's supportedKinds.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::free_port;
use ingress_tests::kubeapi::{self, KubeApiServer};
use ingress_tests::tls::{ClientOpts, TlsPod, exchange};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::{Value, json};

/// Drops `null` from every `enum` list (a 1.20 server rejects them).
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
    install_these_crds(client, [Gateway::crd(), HttpRoute::crd(), ReferenceGrant::crd(), TlsRoute::crd()]).await;
}

async fn install_these_crds(client: &Client, crds: impl IntoIterator<Item = CustomResourceDefinition>) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let mut v = serde_json::to_value(&crd).unwrap();
        v["metadata"]["annotations"] =
            json!({"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/891"});
        strip_null_enums(&mut v);
        let crd: CustomResourceDefinition = serde_json::from_value(v).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("create CRD {name}: {e}"));
        let start = Instant::now();
        loop {
            let c = api.get(&name).await.unwrap();
            if c.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_from_the_api_server_are_served_and_get_status() {
    let test = "tls_routes_from_the_api_server_are_served_and_get_status";
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
            "spec": {"gatewayClassName": "x", "listeners": [{"name": "pass", "protocol": "TLS", "port": 8443,
                "tls": {"mode": "Passthrough"}, "allowedRoutes": {"namespaces": {"from": "All"}}}]},
        }),
    )
    .await;
    let pod = TlsPod::start_local("tls-pod", &["secure.test"]);
    create::<Service>(
        Api::namespaced(client.clone(), "apps"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "apps"},
               "spec": {"ports": [{"name": "tls", "port": 443}]}}),
    )
    .await;
    let slice_ar = ApiResource {
        group: "discovery.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "discovery.k8s.io/v1beta1".into(),
        kind: "EndpointSlice".into(),
        plural: "endpointslices".into(),
    };
    let slice: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-1", "namespace": "apps", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        "ports": [{"name": "tls", "port": pod.addr.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), "apps", &slice_ar)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();

    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--kubeconfig".to_string(), api.kubeconfig.display().to_string(), "--write-status".to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=infra/gw:8443")], &args);
    let routes: Api<TlsRoute> = Api::namespaced(client.clone(), "apps");
    create::<TlsRoute>(routes.clone(), json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
        "metadata": {"name": "t1", "namespace": "apps"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "pass"}], "hostnames": ["secure.test"],
                 "rules": [{"backendRefs": [{"name": "svc", "port": 443}]}]},
    }))
    .await;

    let opts = ClientOpts { sni: Some("secure.test".into()), ..Default::default() };
    let start = Instant::now();
    let answer = loop {
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if let Ok(x) = tokio::task::block_in_place(|| exchange(sock, &pod.cert, &opts)) {
            break x.answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the TLSRoute was not served; agent log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer, "tls-pod sni=secure.test got=ping");
    eprintln!("MEASURED kube: TLSRoute added -> served in {:?}", start.elapsed());

    let start = Instant::now();
    loop {
        let r = routes.get("t1").await.unwrap();
        if let Some(p) = r.status.map(|s| s.parents).unwrap_or_default().first() {
            assert_eq!(p.controller_name, ingress::sources::k8s::CONTROLLER_NAME);
            assert_eq!(p.parent_ref.section_name.as_deref(), Some("pass"));
            let status = |kind: &str| p.conditions.iter().find(|c| c.type_ == kind).map(|c| c.status.clone());
            assert_eq!(
                (status("Accepted").as_deref(), status("ResolvedRefs").as_deref()),
                (Some("True"), Some("True"))
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no TLSRoute status written; agent log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gws: Api<Gateway> = Api::namespaced(client.clone(), "infra");
    let start = Instant::now();
    loop {
        let gw = gws.get("gw").await.unwrap();
        let l = gw.status.and_then(|s| s.listeners).unwrap_or_default();
        let seen: Vec<(String, i32, Vec<String>)> = l
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    l.attached_routes,
                    l.supported_kinds.iter().flatten().map(|k| k.kind.clone()).collect(),
                )
            })
            .collect();
        if seen == [("pass".to_string(), 1, vec!["TLSRoute".to_string()])] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "Gateway listener status: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = agent.stop();
    assert!(log.contains("watching TLSRoutes"), "{log}");
}

/// TLSRoute and GRPCRoute CRDs installed AFTER the agent started (an API server with
/// only Gateway, HTTPRoute and ReferenceGrant at its start): the agent asks discovery
/// again, starts both watchers without a restart, serves the TLSRoute and writes the
/// status of both routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_crds_installed_after_the_start_are_watched_without_a_restart() {
    let test = "route_crds_installed_after_the_start_are_watched_without_a_restart";
    let Some(bin) = kubeapi::binary(test) else { return };
    let api = KubeApiServer::start(&bin, "late-crds");
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    install_these_crds(&client, [Gateway::crd(), HttpRoute::crd(), ReferenceGrant::crd()]).await;
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
            "spec": {"gatewayClassName": "x", "listeners": [
                {"name": "pass", "protocol": "TLS", "port": 8443, "tls": {"mode": "Passthrough"},
                 "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}}]},
        }),
    )
    .await;
    let pod = TlsPod::start_local("tls-pod", &["late.test"]);
    create::<Service>(
        Api::namespaced(client.clone(), "apps"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "apps"},
               "spec": {"ports": [{"name": "tls", "port": 443}]}}),
    )
    .await;
    let slice_ar = ApiResource {
        group: "discovery.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "discovery.k8s.io/v1beta1".into(),
        kind: "EndpointSlice".into(),
        plural: "endpointslices".into(),
    };
    let slice: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-1", "namespace": "apps", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        "ports": [{"name": "tls", "port": pod.addr.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), "apps", &slice_ar)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();

    let (tls_port, http_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let args = vec!["--kubeconfig".to_string(), api.kubeconfig.display().to_string(), "--write-status".to_string()];
    let listens = [format!("127.0.0.1:{tls_port}=infra/gw:8443"), format!("127.0.0.1:{http_port}=infra/gw:80")];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &listens, &args);
    let start = Instant::now();
    while !agent.log_text().contains("serves no TLSRoute kind") {
        assert!(start.elapsed() < Duration::from_secs(10), "the agent did not start:\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // now the CRDs, and a route of each kind
    install_these_crds(&client, [TlsRoute::crd(), GrpcRoute::crd()]).await;
    let installed = Instant::now();
    let tls_routes: Api<TlsRoute> = Api::namespaced(client.clone(), "apps");
    create::<TlsRoute>(tls_routes.clone(), json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
        "metadata": {"name": "late", "namespace": "apps"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "pass"}], "hostnames": ["late.test"],
                 "rules": [{"backendRefs": [{"name": "svc", "port": 443}]}]},
    }))
    .await;
    let grpc_routes: Api<GrpcRoute> = Api::namespaced(client.clone(), "apps");
    create::<GrpcRoute>(grpc_routes.clone(), json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "late-grpc", "namespace": "apps"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "http"}], "hostnames": ["g.test"],
                 "rules": [{"backendRefs": [{"name": "svc", "port": 443}]}]},
    }))
    .await;

    // served without a restart: discovery is asked again within 1, 2, 4, 8, then every 10 s
    let opts = ClientOpts { sni: Some("late.test".into()), ..Default::default() };
    let answer = loop {
        let sock = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
        if let Ok(x) = tokio::task::block_in_place(|| exchange(sock, &pod.cert, &opts)) {
            break x.answer;
        }
        assert!(
            installed.elapsed() < Duration::from_secs(30),
            "the late TLSRoute was not served; agent log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer, "tls-pod sni=late.test got=ping");
    eprintln!("MEASURED kube: TLSRoute CRD installed after the start -> route served in {:?}", installed.elapsed());

    // both routes get status (the TLSRoute at the version discovered late)
    let accepted = |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        conditions.iter().find(|c| c.type_ == "Accepted").map(|c| c.status.clone())
    };
    let start = Instant::now();
    loop {
        let t = tls_routes.get("late").await.unwrap();
        let t = t.status.map(|s| s.parents).unwrap_or_default();
        let g = grpc_routes.get("late-grpc").await.unwrap();
        let g = g.status.map(|s| s.parents).unwrap_or_default();
        let seen = (t.first().and_then(|p| accepted(&p.conditions)), g.first().and_then(|p| accepted(&p.conditions)));
        if seen == (Some("True".into()), Some("True".into())) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "route status (TLSRoute, GRPCRoute) Accepted: {seen:?}; agent log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.stop();
    assert!(log.contains("a Gateway API CRD was installed after the start"), "{log}");
    assert!(log.contains("watching TLSRoutes") && log.contains("watching GRPCRoutes"), "{log}");
}
