//! The benchmark's nginx path (N): Debian's nginx as a one-hop L7 proxy in the VM
//! namespace, the reference a user would pick instead of this ingress. Its routes are
//! generated from the same compiled table the agent serves (like the Envoy config of
//! today's path, `legacy.rs`), straight to the pod IPs as the agent goes: one `server`
//! per virtual host, one `location` per path match, one upstream per rule with
//! `keepalive 128`; `proxy_buffering off`, HTTP/1.1 upstream, WebSocket upgrades
//! passed on, `X-Forwarded-For`/`-Proto` added as the agent adds them.
//!
//! nginx cannot express every Gateway API match in a `location`: rules with header,
//! query or method matches, or with filters other than URLRewrite (hostname, prefix)
//! and RequestHeaderModifier (set, add), are left out and listed by `skipped` (the
//! benchmark's routes use none of them).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;

use ingress::routing::filters::PathModifier;
use ingress::routing::{BackendTarget, Filter, ListenerTable, PathMatch, Rule};

use crate::legacy::{children, vm_hwm_kib};

/// Upstream keep-alive connections per worker (the reference configuration).
pub const UPSTREAM_KEEPALIVE: u32 = 128;

pub struct NginxL7 {
    child: Child,
    workers: Vec<u32>,
    dir: PathBuf,
    /// Table entries left out of the configuration, with the reason.
    pub skipped: Vec<String>,
}

impl NginxL7 {
    /// Starts nginx in namespace `ns` on `listen`, routing by `lt`.
    pub fn start(ns: &str, listen: SocketAddr, lt: &ListenerTable) -> Self {
        let dir = std::env::temp_dir().join(format!("ingress-nginx-l7-{}-{ns}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (conf, skipped) = config(lt, listen, &dir);
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = crate::nginx::spawn(ns, &dir, &path, listen);
        let workers = children(child.id());
        Self { child, workers, dir, skipped }
    }

    /// Peak RSS of master and workers (VmHWM), KiB; None if a process could not be read.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        std::iter::once(self.child.id()).chain(self.workers.iter().copied()).map(vm_hwm_kib).sum()
    }
}

impl Drop for NginxL7 {
    fn drop(&mut self) {
        crate::nginx::stop(&mut self.child);
        for w in &self.workers {
            // a worker its master did not stop (by the pid we recorded)
            if std::path::Path::new(&format!("/proc/{w}")).exists() {
                // SAFETY: kill on a pid recorded as this nginx's worker.
                unsafe { libc::kill(*w as i32, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The nginx configuration for `lt` on `listen` (temp paths under `dir`), and the
/// entries it leaves out.
pub fn config(lt: &ListenerTable, listen: SocketAddr, dir: &std::path::Path) -> (String, Vec<String>) {
    let d = dir.display();
    let mut upstreams = String::new();
    let mut servers = String::new();
    let mut skipped = vec![];
    let mut n_up = 0usize;
    let mut default_done = false;
    for vh in lt.vhosts() {
        let any = vh.hostname == "*" || vh.hostname.is_empty();
        let mut server = String::new();
        if any {
            default_done = true;
            writeln!(server, "  server {{\n    listen {listen} default_server reuseport;\n    server_name _;").unwrap();
        } else {
            writeln!(server, "  server {{\n    listen {listen};\n    server_name {};", vh.hostname).unwrap();
        }
        let mut seen = BTreeSet::new();
        for e in &vh.entries {
            let m = &e.matcher;
            let why = if !m.headers.is_empty() || !m.query.is_empty() || m.method.is_some() {
                Some("header, query or method match")
            } else {
                None
            };
            let locs = match &m.path {
                PathMatch::Exact(p) => vec![format!("= {p}")],
                PathMatch::Prefix(p) if p == "/" => vec!["/".to_string()],
                // a path-separated prefix: the path itself and everything under it
                PathMatch::Prefix(p) => {
                    let p = p.trim_end_matches('/');
                    vec![format!("= {p}"), format!("{p}/")]
                }
                PathMatch::Regex(r) => {
                    vec![format!("~ \"{}\"", r.as_str().trim_start_matches("^(?:").trim_end_matches(")$"))]
                }
            };
            let body = match why.map(Err).unwrap_or_else(|| location_body(&e.rule, &mut upstreams, &mut n_up)) {
                Ok(b) => b,
                Err(why) => {
                    skipped.push(format!("{} {:?}: {why}", vh.hostname, m.path));
                    continue;
                }
            };
            for loc in locs {
                // the table is in precedence order: the first entry for a location wins
                if seen.insert(loc.clone()) {
                    writeln!(server, "    location {loc} {{\n{body}    }}").unwrap();
                }
            }
        }
        if !seen.contains("/") {
            writeln!(server, "    location / {{ return 404; }}").unwrap();
        }
        writeln!(server, "  }}").unwrap();
        servers += &server;
    }
    if !default_done {
        writeln!(servers, "  server {{\n    listen {listen} default_server reuseport;\n    return 404;\n  }}").unwrap();
    }
    let conf = format!(
        "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{\n  worker_connections 4096;\n  multi_accept on;\n  use epoll;\n}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  keepalive_requests 1000000;\n  keepalive_timeout 600s;\n  server_names_hash_bucket_size 256;\n  tcp_nodelay on;\n  map $http_upgrade $connection_upgrade {{\n    default upgrade;\n    '' '';\n  }}\n{upstreams}{servers}}}\n"
    );
    (conf, skipped)
}

/// The proxying part of one location for `rule`, with its upstream appended to
/// `upstreams`; Err: the rule uses what this configuration does not express.
fn location_body(rule: &Rule, upstreams: &mut String, n_up: &mut usize) -> Result<String, &'static str> {
    let mut host = "$http_host".to_string();
    let mut extra = String::new();
    let mut rewrite = None;
    for f in &rule.filters {
        match f {
            Filter::UrlRewrite(rw) => {
                if let Some(h) = &rw.hostname {
                    host = h.clone();
                }
                match &rw.path {
                    Some(PathModifier::ReplacePrefixMatch(p)) => rewrite = Some(p.clone()),
                    Some(PathModifier::ReplaceFullPath(_)) => return Err("URLRewrite ReplaceFullPath"),
                    None => {}
                }
            }
            Filter::RequestHeaderModifier(h) => {
                if !h.remove.is_empty() {
                    return Err("RequestHeaderModifier remove");
                }
                for (n, v) in h.set.iter().chain(&h.add) {
                    writeln!(extra, "      proxy_set_header {} \"{}\";", n.as_str(), v.to_str().unwrap_or("")).unwrap();
                }
            }
            _ => return Err("a filter this configuration does not express"),
        }
    }
    let mut servers = String::new();
    // a weight-0 backend takes no requests (nginx has no weight 0: it is left out)
    for b in rule.backends.iter().filter(|b| b.weight > 0) {
        if let BackendTarget::Endpoints(eps) = &b.target {
            for ep in eps {
                writeln!(servers, "    server {ep} weight={};", b.weight).unwrap();
            }
        }
    }
    if servers.is_empty() {
        return Ok("      return 503;\n".into());
    }
    let name = format!("r{n_up}");
    *n_up += 1;
    writeln!(upstreams, "  upstream {name} {{\n{servers}    keepalive {UPSTREAM_KEEPALIVE};\n  }}").unwrap();
    let target = match rewrite {
        // the location's prefix replaced: nginx swaps a matched prefix location for the URI in proxy_pass
        Some(p) => format!("http://{name}{p}"),
        None => format!("http://{name}"),
    };
    Ok(format!(
        "      proxy_pass {target};\n      proxy_http_version 1.1;\n      proxy_buffering off;\n      proxy_request_buffering off;\n      proxy_set_header Host {host};\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Proto $scheme;\n{extra}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture table: the benchmarked host is a server with its route to both
    /// pods, a path-separated prefix becomes the exact path plus `prefix/`, and a host
    /// nobody serves gets the default 404 server. (nginx itself checks the rest when
    /// the benchmark starts it: a configuration it refuses stops the run with its error.)
    #[test]
    fn the_fixture_routes_become_servers_locations_and_upstreams() {
        let res = ingress::sources::manifest::load_dir(&crate::fixtures::openchoreo_dir()).expect("fixtures");
        let mappings: Vec<ingress::config::ListenMapping> =
            crate::fixtures::openchoreo_listens("127.0.0.1").iter().map(|l| l.parse().unwrap()).collect();
        let table = ingress::routing::compile(&res, &mappings);
        let lt = &table.listeners[1];
        let (conf, skipped) = config(lt, "127.0.0.1:19999".parse().unwrap(), std::path::Path::new("/tmp/x"));
        let server = conf
            .split("  server {")
            .find(|s| s.contains("server_name react-starter-development.openchoreovm-apis.localhost;"))
            .unwrap_or_else(|| panic!("no server for the benchmarked host:\n{conf}"));
        let upstream = server
            .split("proxy_pass http://")
            .nth(1)
            .and_then(|s| s.split([';', '/']).next())
            .unwrap_or_else(|| panic!("no proxy_pass:\n{server}"));
        let block = conf.split(&format!("upstream {upstream} {{")).nth(1).unwrap().split('}').next().unwrap();
        let pods: Vec<_> = crate::fixtures::openchoreo_pods()
            .into_iter()
            .filter(|p| p.name.starts_with("react-starter-development-"))
            .collect();
        assert_eq!(pods.len(), 2);
        for p in &pods {
            assert!(block.contains(&format!("server {}:8080", p.ip)), "{} missing in {block}", p.ip);
        }
        assert!(block.contains(&format!("keepalive {UPSTREAM_KEEPALIVE};")), "{block}");
        assert!(conf.contains("default_server"), "{conf}");
        // every entry of the table is either in the configuration or listed as left out
        let locations = conf.matches("    location ").count();
        let entries: usize = lt.vhosts().iter().map(|v| v.entries.len()).sum();
        assert!(locations + skipped.len() >= entries, "{locations} locations + {skipped:?} < {entries} entries");
    }
}
