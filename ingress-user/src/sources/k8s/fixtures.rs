//! Objects and reflector stores for the tests of the Kubernetes source, written as
//! YAML the way users write them.

use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::store::Writer;

use super::watch::Stores;

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_saphyr::from_str(s).unwrap()
}

pub fn gateway() -> Gateway {
    yaml(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra, generation: 3}\nspec:\n  gatewayClassName: x\n  listeners: [{name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}]\n",
    )
}

pub fn route(name: &str, host: &str) -> HttpRoute {
    yaml(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps, generation: 2}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n"
    ))
}

pub fn grpc_route(name: &str, host: &str) -> GrpcRoute {
    yaml(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: apps, generation: 4}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{host}]\n  rules: [{{matches: [{{method: {{service: echo.Echo, method: Say}}}}], backendRefs: [{{name: svc, port: 80}}]}}]\n"
    ))
}

pub fn service() -> Service {
    yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: apps}\nspec: {ports: [{name: http, port: 80}]}\n",
    )
}

pub fn slice_v1beta1(ip: &str) -> DynamicObject {
    yaml(&format!(
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {{name: svc-1, namespace: apps, labels: {{kubernetes.io/service-name: svc}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints: [{{addresses: ['{ip}'], conditions: {{ready: true}}, topology: {{zone: a}}}}]\n"
    ))
}

pub struct Fixture {
    pub gw: Writer<Gateway>,
    pub routes: Writer<HttpRoute>,
    pub svc: Writer<Service>,
    pub slices: Writer<DynamicObject>,
    pub grpc: Writer<GrpcRoute>,
    pub stores: Stores,
}

pub fn fixture() -> Fixture {
    let gw = Writer::<Gateway>::default();
    let routes = Writer::<HttpRoute>::default();
    let grants = Writer::<ReferenceGrant>::default();
    let svc = Writer::<Service>::default();
    let ar = ApiResource {
        group: "discovery.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "discovery.k8s.io/v1beta1".into(),
        kind: "EndpointSlice".into(),
        plural: "endpointslices".into(),
    };
    let slices = Writer::<DynamicObject>::new(ar);
    let ns = Writer::<Namespace>::default();
    let grpc = Writer::<GrpcRoute>::default();
    let stores = Stores {
        gateways: gw.as_reader(),
        routes: routes.as_reader(),
        grants: grants.as_reader(),
        services: svc.as_reader(),
        slices: slices.as_reader(),
        namespaces: ns.as_reader(),
        tls_routes: Default::default(),
        grpc_routes: std::sync::Arc::new(std::sync::OnceLock::from(grpc.as_reader())),
    };
    Fixture { gw, routes, svc, slices, grpc, stores }
}
