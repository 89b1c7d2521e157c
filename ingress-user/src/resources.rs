//! The Kubernetes objects the routing engine reads, as one plain snapshot. Route
//! sources (manifest files, later the API server) fill it; the engine only reads it.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Every object the engine uses, keyed by `namespace/name` (Namespaces by name).
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub gateways: BTreeMap<ObjectKey, Gateway>,
    pub http_routes: BTreeMap<ObjectKey, HttpRoute>,
    pub tls_routes: BTreeMap<ObjectKey, gateway_api::apis::standard::tlsroutes::TlsRoute>,
    pub grpc_routes: BTreeMap<ObjectKey, GrpcRoute>,
    pub reference_grants: BTreeMap<ObjectKey, ReferenceGrant>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// `kubernetes.io/tls` Secrets of HTTPS listeners (routing/tls.rs).
    pub secrets: BTreeMap<ObjectKey, Secret>,
}

/// The namespace of an object's metadata, `default` when unset (as kubectl applies it).
pub fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".to_string())
}

pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey::new(namespace_of(meta), meta.name.clone().unwrap_or_default())
}

impl Resources {
    /// Number of objects of each kind, for logs.
    pub fn summary(&self) -> String {
        format!(
            "{} Gateways, {} HTTPRoutes, {} GRPCRoutes, {} ReferenceGrants, {} Services, {} EndpointSlices, {} Namespaces, {} Secrets",
            self.gateways.len(),
            self.http_routes.len(),
            self.grpc_routes.len(),
            self.reference_grants.len(),
            self.services.len(),
            self.endpoint_slices.len(),
            self.namespaces.len(),
            self.secrets.len()
        ) + &format!(", {} TLSRoutes", self.tls_routes.len())
    }
}
