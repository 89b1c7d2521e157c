//! A real Kubernetes API server for tests: etcd and kube-apiserver v1.20 (built from
//! Debian's source package by `xtask/scripts/build-kube-apiserver.sh`, path in
//! `KUBE_APISERVER`) on 127.0.0.1 ports of their own, token auth, a kubeconfig file.
//! Processes are stopped by pid on drop; the data directory is removed. Also: the
//! agent's watch errors, classified from its log.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub const TOKEN: &str = "ingress-test-token";

pub struct KubeApiServer {
    pub dir: PathBuf,
    pub port: u16,
    pub etcd_port: u16,
    pub kubeconfig: PathBuf,
    binary: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

/// The API server binary named by `KUBE_APISERVER`, or None with a printed skip
/// (a panic under CI, where `cargo xtask test` always provides it).
pub fn binary(test: &str) -> Option<PathBuf> {
    match std::env::var_os("KUBE_APISERVER").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        other => {
            let why =
                format!("no kube-apiserver (KUBE_APISERVER {other:?} is not a file); `cargo xtask test` builds it");
            crate::skip(test, &why);
            None
        }
    }
}

fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl KubeApiServer {
    pub fn start(binary: &Path, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ingress-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let ok = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .expect("openssl")
            .success()
            && Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(dir.join("sa.key"))
                .arg("-out")
                .arg(dir.join("sa.pub"))
                .stderr(Stdio::null())
                .status()
                .expect("openssl")
                .success();
        assert!(ok, "openssl key generation failed");
        std::fs::write(dir.join("tokens.csv"), format!("{TOKEN},test-admin,1,\"system:masters\"\n")).unwrap();
        let port = free_port();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}\nusers:\n- name: t\n  user: {{token: {TOKEN}}}\ncontexts:\n- name: t\n  context: {{cluster: t, user: t}}\ncurrent-context: t\n"
            ),
        )
        .unwrap();
        let mut s = Self {
            dir,
            port,
            etcd_port: free_port(),
            kubeconfig,
            binary: binary.to_path_buf(),
            etcd: None,
            apiserver: None,
        };
        s.start_etcd();
        s.start_apiserver();
        s
    }

    fn start_etcd(&mut self) {
        let peer = free_port();
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log);
        self.etcd = Some(dies_with_parent(&mut cmd).spawn().expect("start etcd (Debian package etcd-server)"));
    }

    /// Starts (or restarts) the API server and waits until /readyz answers.
    pub fn start_apiserver(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("apiserver.log")).unwrap();
        let d = |f: &str| self.dir.join(f).display().to_string();
        let mut cmd = Command::new(&self.binary);
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={}", self.port))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", d("certs")))
            .args(["--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/24"])
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", d("sa.pub")))
            .arg(format!("--service-account-signing-key-file={}", d("sa.key")))
            .arg(format!("--token-auth-file={}", d("tokens.csv")))
            .args(["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"])
            // watches go to etcd directly: an old resourceVersion gets a real 410 after compaction
            .arg("--watch-cache=false")
            .stdout(Stdio::null())
            .stderr(log);
        self.apiserver = Some(dies_with_parent(&mut cmd).spawn().expect("start kube-apiserver"));
        self.wait_ready(Duration::from_secs(60));
    }

    pub fn stop_apiserver(&mut self) {
        stop(&mut self.apiserver);
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
                .arg(format!("Authorization: Bearer {TOKEN}"))
                .arg(format!("https://127.0.0.1:{}/readyz", self.port))
                .output();
            if out.is_ok_and(|o| o.stdout == b"200") {
                return;
            }
            if let Some(Ok(Some(status))) = self.apiserver.as_mut().map(|c| c.try_wait()) {
                panic!("kube-apiserver exited ({status}):\n{}", self.log_tail());
            }
            assert!(start.elapsed() < limit, "kube-apiserver not ready after {limit:?}:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
        s.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Compacts etcd's history up to its current revision: watches resumed from an
    /// older resourceVersion then get `410 Expired`.
    pub fn compact(&self) -> u64 {
        let ep = format!("http://127.0.0.1:{}", self.etcd_port);
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &ep, "endpoint", "status", "--write-out=json"])
            .output()
            .expect("etcdctl (Debian package etcd-client)");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
        let rev = v[0]["Status"]["header"]["revision"].as_u64().expect("revision");
        let ok = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &ep, "compact", &rev.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("etcdctl compact")
            .success();
        assert!(ok, "etcdctl compact {rev} failed");
        rev
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        stop(&mut self.apiserver);
        stop(&mut self.etcd);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a watch error the agent logged says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WatchError {
    /// The API server answered 410 Expired (status reason `Expired`): the watch
    /// resumed from a resourceVersion etcd has compacted away; the watcher relists.
    Expired,
    /// No answer: the connection was refused or broke (the API server stopped).
    Unreachable,
    Other,
}

/// The agent's watch errors (`ingress::sources::k8s::watch`'s "watch error" lines), each with its
/// `error=` text, classified by what the error itself says: not by a "410" anywhere
/// in the line, which timestamps, ports and resourceVersions contain too.
pub fn watch_errors(log: &str) -> Vec<(WatchError, String)> {
    log.lines()
        .filter(|l| l.contains("watch error"))
        .map(|l| {
            let error = l.split_once(" error=").map_or("", |(_, e)| e).to_string();
            // kube's Status displays as "{message}: {reason}", its ApiError adds the
            // Debug form with `code: 410`
            let kind = if error.contains(": Expired")
                || error.contains("reason: \"Expired\"")
                || error.contains("code: 410")
            {
                WatchError::Expired
            } else if ["ServiceError", "HyperError", "Connect", "connection refused", "watch stream failed"]
                .iter()
                .any(|m| error.contains(m))
            {
                WatchError::Unreachable
            } else {
                WatchError::Other
            };
            (kind, error)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARN: &str =
        "\u{1b}[33m WARN\u{1b}[0m ingress::k8s: watch error; retrying, the served table stays kind=\"routes\"";

    #[test]
    fn an_expired_watch_is_told_from_a_stopped_server() {
        // a stopped server only (lines as kube 4.2 logs them); "410" in the timestamp, a
        // port and a resourceVersion, which `contains("410")` took for the watch error
        let stopped = format!(
            "2025-01-01T10:04:10.410Z{WARN} error=failed to start watching object: ServiceError: client error (Connect)\n\
             2025-01-01T10:04:10.411Z INFO ingress: served from 127.0.0.1:41000, resourceVersion 410\n\
             2025-01-01T10:04:10.412Z{WARN} error=watch stream failed: Error reading events stream: ServiceError: error reading a body from connection\n"
        );
        let kinds: Vec<WatchError> = watch_errors(&stopped).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [WatchError::Unreachable, WatchError::Unreachable], "{stopped}");
        let expired = format!(
            "{stopped}2025-01-01T10:04:12.000Z{WARN} error=error returned by apiserver during watch: The resourceVersion for the provided watch is too old.: Expired\n"
        );
        let errors = watch_errors(&expired);
        assert_eq!(errors.iter().filter(|(k, _)| *k == WatchError::Expired).count(), 1, "{errors:?}");
        assert!(errors[2].1.starts_with("error returned by apiserver during watch"), "{errors:?}");
    }
}
