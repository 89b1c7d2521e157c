//! The proxy tests' setup: the agent binary with a set of Gateway API manifests in a
//! temporary directory and three echo pods (main, shadow, second), either on
//! 127.0.0.1 (no privileges) or in the k3d-shaped topology (root: the client
//! namespace -> the VM's NIC with XDP -> the agent -> pod IPs behind the node).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::agent::{Agent, ingress_bin};
use crate::backend::Backend;
use crate::client::{Request, Response, send};
use crate::netns::in_ns;
use crate::topology::{PodSpec, Topology, VM_IP, VM_NIC};
use crate::{RefusedPort, free_port};

/// The routes every setup serves (listener `apps/gw`, host `f.test`).
pub const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: x
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [f.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-env, value: test}], remove: [x-drop]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-resp, value: 'yes'}]}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /cors}}]
    filters: [{type: CORS, cors: {allowOrigins: ['https://ui.test'], allowMethods: [GET, POST], maxAge: 60}}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]
  - matches: [{path: {value: /to-https}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: x}}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: missing, port: 80}]
  - matches: [{path: {value: /empty}}]
    backendRefs: [{name: noeps, port: 80}]
  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /retry}}]
    retry: {attempts: 2, codes: [503], backoff: 10ms}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {value: /half}}]
    backendRefs: [{name: half, port: 80}]
  - matches: [{path: {value: /pair}}]
    backendRefs: [{name: pair, port: 80}]
  - matches: [{path: {value: /second}}]
    backendRefs: [{name: second, port: 80}]
  - matches: [{path: {value: /weights}}]
    backendRefs: [{name: main, port: 80, weight: 1}, {name: second, port: 80, weight: 1}, {name: shadow, port: 80, weight: 0}]
"#;

/// Pod numbers for [`Setup::requests`].
pub const MAIN: usize = 0;
pub const SHADOW: usize = 1;
pub const SECOND: usize = 2;

/// A temporary directory with `manifests/all.yaml` (Gateway `apps/gw` with an HTTP
/// listener and one HTTPRoute sending every request for `host` to Service `main`, whose
/// one endpoint is 127.0.0.1:`backend_port`) and the path of a `config.toml` beside it,
/// which the test writes. Removed when dropped.
pub struct ConfigDir {
    pub dir: std::path::PathBuf,
    pub config: std::path::PathBuf,
}

impl ConfigDir {
    pub fn new(tag: &str, host: &str, backend_port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("ingress-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let main = SocketAddr::from(([127, 0, 0, 1], backend_port));
        let route = format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\n\
             spec:\n  gatewayClassName: x\n  listeners: [{{name: http, protocol: HTTP, port: 80}}]\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: apps}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: main, port: 80}}]}}]\n"
        );
        std::fs::write(dir.join("manifests/all.yaml"), format!("{route}{}", service("main", &[main]))).unwrap();
        let config = dir.join("config.toml");
        ConfigDir { dir, config }
    }

    /// The manifests directory, as a config file's `manifests` value (quoted).
    pub fn manifests_toml(&self) -> String {
        format!("{:?}", self.dir.join("manifests").display().to_string())
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Service `name` (port 80, named http) with one EndpointSlice per endpoint.
pub fn service(name: &str, endpoints: &[SocketAddr]) -> String {
    let mut y = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
    );
    for (i, e) in endpoints.iter().enumerate() {
        y += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
            e.port(),
            e.ip()
        );
    }
    y
}

/// Writes the manifests for pods at `main`, `shadow`, `second`; `refused` accepts no
/// connection (the first endpoint of `half`). Returns the directory.
fn manifests(tag: &str, [main, shadow, second]: [SocketAddr; 3], refused: SocketAddr) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ingress-proxy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let services = [
        service("main", &[main]),
        service("shadow", &[shadow]),
        service("second", &[second]),
        service("noeps", &[]),
        service("half", &[refused, main]),
        service("pair", &[main, second]),
    ];
    std::fs::write(dir.join("services.yaml"), services.concat()).unwrap();
    std::fs::write(dir.join("routes.yaml"), ROUTES).unwrap();
    dir
}

/// Where the agent listens, and the namespace clients connect from (None: this one).
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub ns: Option<String>,
}

impl Client {
    pub fn try_connect(&self) -> std::io::Result<TcpStream> {
        let addr = self.addr;
        match &self.ns {
            Some(ns) => in_ns(ns, move || TcpStream::connect(addr)),
            None => TcpStream::connect(addr),
        }
    }
    pub fn connect(&self) -> TcpStream {
        self.try_connect().expect("connect to the agent")
    }
    pub fn send(&self, req: &Request, timeout: Duration) -> std::io::Result<Response> {
        self.within(|| send(self.addr, req, timeout))
    }
    /// Runs `f` where clients connect from.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.ns {
            Some(ns) => in_ns(ns, f),
            None => f(),
        }
    }
}

/// The three echo pods: main, shadow, second.
enum Pods {
    /// On 127.0.0.1, with the port `half`'s first endpoint refuses on (held, unread).
    Local {
        backends: [Backend; 3],
        _refused: RefusedPort,
    },
    Topology(Topology),
}

pub struct Setup {
    /// The manifest directory the agent watches.
    pub dir: PathBuf,
    pub client: Client,
    pub agent: Agent,
    pods: Pods,
}

impl Setup {
    /// The agent and pods on 127.0.0.1 (no privileges); `tag` names the directory.
    pub fn local(tag: &str) -> Self {
        Self::local_with(tag, &[])
    }

    /// [`Setup::local`] with extra agent flags.
    pub fn local_with(tag: &str, extra: &[&str]) -> Self {
        Self::local_with_manifests(tag, "", extra)
    }

    /// [`Setup::local_with`] with more manifests (`extra.yaml` beside the standard ones;
    /// the services `main`, `shadow`, `second` are there to point at).
    pub fn local_with_manifests(tag: &str, manifests_yaml: &str, extra: &[&str]) -> Self {
        let (main, pm) = Backend::start_local("pod-main");
        let (shadow, ps) = Backend::start_local("pod-shadow");
        let (second, p2) = Backend::start_local("pod-second");
        let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        // held for the setup's life, so no other test can start listening there
        let refused = RefusedPort::new();
        let dir = manifests(tag, [local(pm), local(ps), local(p2)], refused.addr);
        if !manifests_yaml.is_empty() {
            std::fs::write(dir.join("extra.yaml"), manifests_yaml).unwrap();
        }
        let port = free_port();
        let admin = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--manifests".to_string(), dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/gw")], &args);
        let client = Client { addr: local(port), ns: None };
        Setup { dir, client, agent, pods: Pods::Local { backends: [main, shadow, second], _refused: refused } }
    }

    /// The same manifests in the k3d-shaped topology (namespaces `{prefix}-*`): pods
    /// behind the node, the agent in the vm namespace on 9080 with XDP on its NIC,
    /// clients in the client namespace. None (with a recorded skip) without root or
    /// the eBPF object.
    pub fn in_topology(test: &str, prefix: &str, extra: &[&str]) -> Option<Self> {
        if !crate::require_root(test) || !crate::require_ebpf_object(test) {
            return None;
        }
        let pod = |name: &str, last: u8| PodSpec { name: name.into(), ip: [10, 42, 0, last].into(), ports: vec![8080] };
        let specs = [pod("pod-main", 11), pod("pod-shadow", 12), pod("pod-second", 13)];
        let at = |p: &PodSpec, port: u16| SocketAddr::from((p.ip, port));
        let topo = Topology::create(prefix, &specs);
        // port 9 of the main pod: nothing listens in its own namespace, the pod resets
        let dir = manifests(prefix, [at(&specs[0], 8080), at(&specs[1], 8080), at(&specs[2], 8080)], at(&specs[0], 9));
        let mut flags = vec!["--interface", VM_NIC];
        flags.extend_from_slice(extra);
        let agent = Agent::start(&ingress_bin(), &topo.vm_ns(), &dir, &[format!("{VM_IP}:9080=apps/gw")], &flags);
        let client = Client { addr: format!("{VM_IP}:9080").parse().unwrap(), ns: Some(topo.client_ns()) };
        Some(Setup { dir, client, agent, pods: Pods::Topology(topo) })
    }

    pub fn send(&self, req: Request) -> Response {
        self.client.send(&req, Duration::from_secs(5)).expect("request")
    }

    pub fn get(&self, path: &str) -> Response {
        self.send(Request::get("f.test:8080", path))
    }

    pub fn connect(&self) -> TcpStream {
        self.client.connect()
    }

    /// Requests pod number `i` (MAIN, SHADOW, SECOND) has answered.
    pub fn requests(&self, i: usize) -> usize {
        match &self.pods {
            Pods::Local { backends, .. } => backends[i].requests(),
            Pods::Topology(t) => t.backend(i).requests(),
        }
    }

    /// Waits (bounded by `limit`) until pod `i` has answered `n` requests in all:
    /// a request the proxy gave up on (a timeout) is counted when the pod finishes.
    pub fn wait_requests(&self, i: usize, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.requests(i) < n {
            assert!(start.elapsed() < limit, "pod {i} answered {} of {n} requests in {limit:?}", self.requests(i));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The endpoints the agent's table has for backend `name` (e.g. `pair`), from
    /// `GET /routes`: every rule that sends to it lists the same ones.
    pub fn endpoints(&self, name: &str) -> Vec<String> {
        let (status, body) = self.agent.admin_get("/routes").expect("admin /routes");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("/routes json");
        let backends = v["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["hosts"].as_array().into_iter().flatten())
            .flat_map(|h| h["rules"].as_array().into_iter().flatten())
            .flat_map(|r| r["backends"].as_array().into_iter().flatten());
        let wanted = format!("apps/{name}:80");
        let mut found = backends.filter(|b| b["name"] == name || b["name"] == wanted.as_str());
        let b = found.next().unwrap_or_else(|| panic!("no backend {name} in /routes: {body}"));
        b["endpoints"].as_array().into_iter().flatten().filter_map(|e| e.as_str().map(str::to_string)).collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
