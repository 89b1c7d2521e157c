//! The install tier (root): the agent installed as a systemd service on a throwaway
//! Debian 12 root (debootstrap, cached), booted with `systemd-nspawn --boot` in a
//! network namespace of the test's own (`hvinst`, a veth pair inside it: traffic
//! never leaves it). Checks: the service active, ready, a request through it answered
//! by a backend inside the machine, the XDP program and pins in place; after the
//! uninstall nothing of ours is left (files, units, bpffs pins, XDP). The machine is
//! powered off, killed by pid if need be, and its directory removed, also on failure.
//!
//! Installs with the unit below (this tier's own: Type=notify, `--config`, SIGHUP
//! reload) until `cargo xtask install` and `deploy/ebpf-ingress.service` exist on this
//! branch; see [`install`]. Checks SIGHUP too: `systemctl reload` serves a listen
//! address added to the config, from the same process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ingress_tests::machine::{self, Boot, Machine};
use ingress_tests::netns::{exists, ip, ip_quiet};

const NS: &str = "hvinst";
const MACHINE: &str = "hv-install";
const PIN_PATH: &str = "/sys/fs/bpf/ebpf-ingress";
const NIC: &str = "hv0";
const BACKEND_BODY: &str = "hv-install backend answered";

/// The routes the service serves: `hv.test` on the listener `hv/gw:80` -> a busybox
/// httpd on 127.0.0.1:18081 inside the machine.
const MANIFESTS: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: hv}
spec:
  gatewayClassName: x
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: hv}
spec:
  parentRefs: [{name: gw}]
  hostnames: [hv.test]
  rules: [{backendRefs: [{name: backend, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: hv}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-0, namespace: hv, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 18081}]
endpoints: [{addresses: ['127.0.0.1']}]
"#;

const BACKEND_UNIT: &str = "[Unit]\nDescription=install tier backend\n[Service]\n\
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:18081 -h /srv/hv\n[Install]\nWantedBy=multi-user.target\n";

/// The service's config: the manifests above, XDP on the machine's NIC; `extra_listen`
/// adds a second listen address (the reload test).
fn config(extra_listen: Option<&str>) -> String {
    let mut listen = vec!["\"0.0.0.0:8080=hv/gw:80\"".to_string()];
    listen.extend(extra_listen.map(|l| format!("\"{l}\"")));
    format!(
        "manifests = \"/etc/ebpf-ingress/manifests\"\nlisten = [{}]\ninterface = \"{NIC}\"\nadmin = \"127.0.0.1:9901\"\npin_path = \"{PIN_PATH}\"\n",
        listen.join(", ")
    )
}

/// The netns of the machine: `hv0` (the machine's NIC, XDP goes here) and its peer.
struct Net;

impl Net {
    fn create() -> Net {
        if exists(NS) {
            ip_quiet(&["netns", "del", NS]);
        }
        ip(&["netns", "add", NS]);
        ip(&["-n", NS, "link", "set", "lo", "up"]);
        ip(&["-n", NS, "link", "add", NIC, "type", "veth", "peer", "name", "hv1"]);
        ip(&["-n", NS, "addr", "add", "198.18.77.1/24", "dev", NIC]);
        ip(&["-n", NS, "addr", "add", "198.18.77.2/24", "dev", "hv1"]);
        ip(&["-n", NS, "link", "set", NIC, "up"]);
        ip(&["-n", NS, "link", "set", "hv1", "up"]);
        Net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        ip_quiet(&["netns", "del", NS]);
    }
}

/// An empty file made as a bind-mount point, removed (by its path) when dropped.
struct Placeholder(PathBuf);

impl Placeholder {
    fn new(path: &Path) -> Self {
        std::fs::write(path, b"").unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Placeholder(path.to_path_buf())
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        if std::fs::metadata(&self.0).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Every path under `root` except what a running system changes by itself (logs,
/// systemd's and dbus's state, caches, API file systems), each with its type and size.
fn tree(root: &Path) -> BTreeSet<String> {
    const VOLATILE: &[&str] =
        &["proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log", "var/lib/systemd", "var/cache", "var/lib/dbus"];
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if VOLATILE.contains(&rel.as_str()) {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            let kind = if md.is_dir() {
                "d".to_string()
            } else if md.file_type().is_symlink() {
                format!("l->{}", std::fs::read_link(&p).map(|t| t.display().to_string()).unwrap_or_default())
            } else {
                format!("f{}", md.len())
            };
            out.insert(format!("/{rel} {kind}"));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// A raw HTTP/1.1 GET from inside the machine with bash's /dev/tcp (no curl in minbase).
fn get(m: &Machine, port: u16, host: &str, path: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
    );
    String::from_utf8_lossy(&m.exec(&["/bin/bash", "-c", &script]).stdout).into_owned()
}

/// Polls `f` until it is true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The xtask binary: `INGRESS_XTASK` (set by `cargo xtask test`: itself), else the
/// debug build.
fn xtask_bin() -> PathBuf {
    std::env::var_os("INGRESS_XTASK")
        .map(PathBuf::from)
        .unwrap_or_else(|| machine::workspace().join("target/debug/xtask"))
}

/// `cargo xtask install --no-build --config /etc/hv/config.toml`, run inside the
/// machine (the workspace is bound read-only at its own path, so xtask finds
/// deploy/ and the agent), as a user runs it on the VM: it writes the binary, the
/// config and the unit, then `systemctl enable` and `restart` against the machine's
/// systemd.
fn install(m: &Machine, xtask: &Path) {
    m.ok(&format!("{} install --no-build --config /etc/hv/config.toml", xtask.display()));
}

/// `cargo xtask uninstall` inside the machine: stop, disable, `ingress detach`, remove.
fn uninstall(m: &Machine, xtask: &Path) {
    m.ok(&format!("{} uninstall", xtask.display()));
}

#[test]
fn installed_service_serves_and_uninstall_leaves_nothing() {
    let test = "installed_service_serves_and_uninstall_leaves_nothing";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    if let Some(why) = machine::missing_tools() {
        ingress_tests::skip(test, &why);
        return;
    }
    let bin = ingress_tests::agent::ingress_bin();
    assert!(bin.is_file(), "agent binary {} missing: run `cargo xtask build`", bin.display());
    let xtask = xtask_bin();
    assert!(xtask.is_file(), "xtask binary {} missing: run through `cargo xtask test`", xtask.display());
    // `install --no-build` takes target/release/ingress: the machine sees the agent
    // under test there (a bind mount inside the machine only; the directory is made
    // here if no release build made it)
    let workspace = machine::workspace();
    let release_agent = workspace.join("target/release/ingress");
    std::fs::create_dir_all(release_agent.parent().unwrap()).unwrap();
    let _placeholder = (!release_agent.exists()).then(|| Placeholder::new(&release_agent));
    let started = Instant::now();
    let template = machine::cached_root().unwrap_or_else(|e| panic!("the install tier's Debian root: {e}"));
    eprintln!("install tier: root ready after {:.1}s", started.elapsed().as_secs_f64());

    let _net = Net::create();
    let m = Machine::boot(
        &template,
        Boot {
            name: MACHINE,
            netns: NS,
            bind_ro: vec![(workspace.clone(), workspace.clone()), (bin.clone(), release_agent.clone())],
        },
        |root| {
            std::fs::create_dir_all(root.join("srv/hv")).unwrap();
            std::fs::write(root.join("srv/hv/index.html"), format!("{BACKEND_BODY}\n")).unwrap();
            std::fs::write(root.join("etc/systemd/system/hv-backend.service"), BACKEND_UNIT).unwrap();
            let wants = root.join("etc/systemd/system/multi-user.target.wants");
            std::fs::create_dir_all(&wants).unwrap();
            std::os::unix::fs::symlink("/etc/systemd/system/hv-backend.service", wants.join("hv-backend.service"))
                .unwrap();
            std::fs::create_dir_all(root.join("etc/ebpf-ingress/manifests")).unwrap();
            std::fs::write(root.join("etc/ebpf-ingress/manifests/routes.yaml"), MANIFESTS).unwrap();
            std::fs::create_dir_all(root.join("etc/hv")).unwrap();
            std::fs::write(root.join("etc/hv/config.toml"), config(None)).unwrap();
        },
    );
    eprintln!("install tier: machine {} booted after {:.1}s", m.name, started.elapsed().as_secs_f64());
    assert!(
        get(&m, 18081, "x", "/").contains(BACKEND_BODY),
        "the backend inside the machine does not answer:\n{}",
        m.journal("hv-backend")
    );
    // no bpffs at /sys/fs/bpf in the machine (a container boots without one): the
    // installed ebpf-ingress-bpffs.service must mount it in the machine's namespace, not
    // in the agent's private one, or the pins die with the service (checked below)
    assert!(!m.sh("mountpoint -q /sys/fs/bpf").status.success(), "the machine booted with bpffs at /sys/fs/bpf");
    let before = tree(&m.dir);

    install(&m, &xtask);
    // Type=notify: `enable --now` returned once the unit left "activating", i.e. the
    // agent sent READY=1 (routing table loaded, programs attached)
    let state = String::from_utf8_lossy(&m.sh("systemctl is-active ebpf-ingress").stdout).trim().to_string();
    assert_eq!(state, "active", "ebpf-ingress after start (READY never sent?):\n{}", m.journal("ebpf-ingress"));
    assert!(
        m.sh("mountpoint -q /sys/fs/bpf").status.success(),
        "ebpf-ingress-bpffs.service did not mount bpffs in the machine's namespace:\n{}",
        m.journal("ebpf-ingress-bpffs")
    );
    let ready = eventually(Duration::from_secs(30), || get(&m, 9901, "admin", "/readyz").starts_with("HTTP/1.1 200"));
    assert!(ready, "/readyz never answered 200:\n{}\n{}", get(&m, 9901, "admin", "/readyz"), m.journal("ebpf-ingress"));

    let answer = get(&m, 8080, "hv.test:8080", "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "request through the service: {answer}\n{}", m.journal("ebpf-ingress"));
    assert!(answer.contains(BACKEND_BODY), "the answer is not the backend's: {answer}");
    let unknown = get(&m, 8080, "nobody.test", "/");
    assert!(unknown.starts_with("HTTP/1.1 404"), "a host without a route: {unknown}");

    // the eBPF dataplane: XDP on the machine's NIC, pins on a bpffs of the machine's
    // own namespace (this `ls` runs there, not in the service's), so they outlive it
    let link = m.ok(&format!("ip link show {NIC}"));
    assert!(link.contains("xdp"), "no XDP program on {NIC}: {link}");
    let pins = m.ok(&format!("ls {PIN_PATH}"));
    assert!(pins.lines().any(|l| l.starts_with("link@xdp")), "no pinned XDP link under {PIN_PATH}: {pins}");

    // SIGHUP (systemctl reload) re-reads the config: a second listen address served by
    // the same process
    let pid = |m: &Machine| m.ok("systemctl show -p MainPID --value ebpf-ingress").trim().to_string();
    let main_pid = pid(&m);
    assert!(!get(&m, 8081, "hv.test", "/").starts_with("HTTP/1.1"), "8081 answers before the reload");
    std::fs::write(m.dir.join("etc/ebpf-ingress/config.toml"), config(Some("0.0.0.0:8081=hv/gw:80"))).unwrap();
    let reload = m.sh("systemctl reload ebpf-ingress");
    assert!(
        reload.status.success(),
        "systemctl reload failed: {}\n{}",
        String::from_utf8_lossy(&reload.stderr),
        m.journal("ebpf-ingress")
    );
    let reloaded = eventually(Duration::from_secs(15), || get(&m, 8081, "hv.test:8081", "/").contains(BACKEND_BODY));
    assert!(reloaded, "8081 not served after the reload:\n{}", m.journal("ebpf-ingress"));
    assert_eq!(pid(&m), main_pid, "the reload restarted the agent");
    let state = m.ok("systemctl is-active ebpf-ingress");
    assert_eq!(state.trim(), "active", "after the reload:\n{}", m.journal("ebpf-ingress"));
    assert!(get(&m, 8080, "hv.test", "/").contains(BACKEND_BODY), "8080 no longer served after the reload");

    // the pinned data path outlives the service (README, "What survives a restart")
    m.ok("systemctl stop ebpf-ingress");
    let pins = m.ok(&format!("ls {PIN_PATH}"));
    assert!(pins.lines().any(|l| l.starts_with("link@xdp")), "the pins died with the service: {pins}");
    assert!(m.ok(&format!("ip link show {NIC}")).contains("xdp"), "XDP left {NIC} when the service stopped");

    uninstall(&m, &xtask);
    let state = String::from_utf8_lossy(&m.sh("systemctl is-active ebpf-ingress").stdout).trim().to_string();
    assert_ne!(state, "active", "ebpf-ingress still active after the uninstall");
    // exits 1 when nothing matches
    let units =
        String::from_utf8_lossy(&m.sh("systemctl list-unit-files --no-legend 'ebpf-ingress*'").stdout).into_owned();
    assert!(units.trim().is_empty(), "unit files left: {units}");
    let left = m.sh(&format!("ls -A {PIN_PATH}"));
    assert!(!left.status.success(), "{PIN_PATH} left: {}", String::from_utf8_lossy(&left.stdout));
    let link = m.ok(&format!("ip link show {NIC}"));
    assert!(!link.contains("xdp"), "XDP left on {NIC}: {link}");
    let after = tree(&m.dir);
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(added.is_empty() && removed.is_empty(), "the uninstall left files: added {added:?}, removed {removed:?}");
    drop(m);
    assert!(!PathBuf::from("/var/tmp").join(MACHINE).exists(), "the machine's directory was not removed");
    eprintln!("install tier: done in {:.1}s", started.elapsed().as_secs_f64());
}

/// The agent config `deploy/k3d/takeover.sh` renders from `deploy/k3d/config.toml.in`
/// is one `ingress check --config` accepts, with the listeners and L4 ports the
/// takeover promises (no root: the check starts nothing).
#[test]
fn the_k3d_takeover_config_template_validates() {
    let bin = ingress_tests::agent::ingress_bin();
    assert!(bin.is_file(), "agent binary {} missing: run `cargo xtask build`", bin.display());
    let template = std::fs::read_to_string(machine::workspace().join("deploy/k3d/config.toml.in")).unwrap();
    let dir = std::env::temp_dir().join(format!("hv-k3d-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // the kubeconfig agent-kubeconfig.sh would write (check reads it, connects nowhere)
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: n, cluster: {server: 'https://172.18.0.2:6443'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: n, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let rendered = template
        .replace("@INTERFACE@", "lo")
        .replace("@NODE_IP@", "172.18.0.2")
        .replace("/etc/ebpf-ingress/kubeconfig", &kubeconfig.display().to_string());
    assert!(!rendered.contains('@'), "a placeholder is left: {rendered}");
    let file = dir.join("config.toml");
    std::fs::write(&file, rendered).unwrap();
    let out = std::process::Command::new(&bin).args(["check", "--config"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "ingress check --config refused the rendered template:\n{text}");
    for want in [
        "0.0.0.0:8080=openchoreo-control-plane/gateway-default:80",
        "0.0.0.0:9080=openchoreo-data-plane/gateway-default:19080",
        "6550=172.18.0.2:6443",
        "10081=172.18.0.2:2746",
        "11080=172.18.0.2:8080",
        "11081=172.18.0.2:5601",
        "11082=172.18.0.2:9200",
        "writing status",
    ] {
        assert!(text.contains(want), "`{want}` missing from the check's summary:\n{text}");
    }
}
