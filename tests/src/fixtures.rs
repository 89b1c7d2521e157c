//! The OpenChoreo v0.12 fixture set (objects of a real VM, in `tests/fixtures/`) and
//! the pods the topology needs to serve it: one pod per EndpointSlice address, named
//! after its Pod (`targetRef`), listening on the slice's ports. The fixtures' pod IPs
//! are already in the node's 10.42.0.0/24, so the topology's pods take exactly the
//! addresses the EndpointSlices list.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::topology::PodSpec;

pub fn openchoreo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/openchoreo")
}

/// VM port 8080 -> the control-plane Gateway's port-80 listener; 9080 -> the data plane's 19080.
pub fn openchoreo_listens(vm_ip: &str) -> Vec<String> {
    vec![
        format!("{vm_ip}:8080=openchoreo-control-plane/gateway-default:80"),
        format!("{vm_ip}:9080=openchoreo-data-plane/gateway-default:19080"),
    ]
}

/// One pod per IPv4 endpoint address of every EndpointSlice in the fixture set.
pub fn openchoreo_pods() -> Vec<PodSpec> {
    let res = ingress::sources::manifest::load_dir(&openchoreo_dir()).expect("fixtures load");
    let mut pods: BTreeMap<Ipv4Addr, PodSpec> = BTreeMap::new();
    for (key, slice) in &res.endpoint_slices {
        let ports: Vec<u16> = slice.ports.iter().flatten().filter_map(|p| p.port).map(|p| p as u16).collect();
        for ep in &slice.endpoints {
            let name = ep.target_ref.as_ref().and_then(|t| t.name.clone()).unwrap_or_else(|| key.name.clone());
            for a in &ep.addresses {
                let Ok(ip) = a.parse::<Ipv4Addr>() else {
                    continue;
                };
                let pod = pods.entry(ip).or_insert_with(|| PodSpec { name: name.clone(), ip, ports: vec![] });
                for p in &ports {
                    if !pod.ports.contains(p) {
                        pod.ports.push(*p);
                    }
                }
            }
        }
    }
    pods.into_values().collect()
}

/// A request the demo and the netns test send from the client: Host, VM port, path,
/// the pod that must answer (None: the ingress itself must answer `status`), and
/// the path the pod must see (after URLRewrite).
pub struct Expectation {
    pub host: &'static str,
    pub port: u16,
    pub path: &'static str,
    pub status: u16,
    pub pod_prefix: Option<&'static str>,
    pub pod_path: Option<&'static str>,
}

const fn e(
    host: &'static str,
    port: u16,
    path: &'static str,
    pod: &'static str,
    pod_path: &'static str,
) -> Expectation {
    Expectation { host, port, path, status: 200, pod_prefix: Some(pod), pod_path: Some(pod_path) }
}

/// What OpenChoreo users reach today through serverlb + Envoy, hostname by hostname.
pub fn openchoreo_expectations() -> Vec<Expectation> {
    vec![
        e("openchoreovm.localhost", 8080, "/", "openchoreo-ui-", "/"),
        e("api.openchoreovm.localhost", 8080, "/api/v1/orgs", "openchoreo-api-", "/api/v1/orgs"),
        e("thunder.openchoreovm.localhost", 8080, "/oauth2/jwks", "thunder-deployment-", "/oauth2/jwks"),
        e(
            "development.openchoreovm-apis.localhost",
            9080,
            "/greeter-service/greeter/greet",
            "greeter-service-development-",
            "/greeter/greet",
        ),
        e(
            "staging.openchoreovm-apis.localhost",
            9080,
            "/greeter-service/greeter/greet",
            "greeter-service-staging-",
            "/greeter/greet",
        ),
        e(
            "react-starter-development.openchoreovm-apis.localhost",
            9080,
            "/index.html",
            "react-starter-development-",
            "/index.html",
        ),
        e(
            "development.openchoreovm-apis.localhost",
            9080,
            "/echo-websocket-service/",
            "echo-websocket-service-development-",
            "/",
        ),
        e("frontend-development.openchoreovm-apis.localhost", 9080, "/cart", "frontend-development-", "/cart"),
        // no route: the ingress answers 404 itself
        Expectation {
            host: "unknown.openchoreovm.localhost",
            port: 8080,
            path: "/",
            status: 404,
            pod_prefix: None,
            pod_path: None,
        },
        // a data-plane host on the control-plane port: not attached there
        Expectation {
            host: "development.openchoreovm-apis.localhost",
            port: 8080,
            path: "/greeter-service/",
            status: 404,
            pod_prefix: None,
            pod_path: None,
        },
    ]
}
