//! nginx for the benchmarks: a fast HTTP server in a pod namespace (the backend: `/`
//! answers a small body, `/1m` a 1 MiB file), and a stream proxy configured like k3d's
//! serverlb. Stopped by pid on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::in_ns;

pub struct PodNginx {
    child: Child,
    dir: PathBuf,
}

impl PodNginx {
    /// Starts nginx in namespace `ns` on `addr` (the pod's IP:port).
    pub fn start(ns: &str, addr: std::net::SocketAddr) -> Self {
        Self::start_with(ns, addr, "plain", &format!("listen {addr} reuseport;"))
    }

    /// The same server over TLS on `addr` (TLS 1.2 and 1.3, HTTP/2 by ALPN) with the
    /// PEM files `cert` and `key`: the benchmark's direct TLS path.
    pub fn start_tls(ns: &str, addr: std::net::SocketAddr, cert: &std::path::Path, key: &std::path::Path) -> Self {
        let listen = format!(
            "listen {addr} ssl http2 reuseport;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:pod:1m;",
            cert.display(),
            key.display()
        );
        Self::start_with(ns, addr, "tls", &listen)
    }

    fn start_with(ns: &str, addr: std::net::SocketAddr, kind: &str, listen: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ingress-podnginx-{kind}-{}-{ns}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/1m"), vec![b'x'; 1 << 20]).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  server {{\n    {listen}\n    location = /1m {{ root {d}/www; }}\n    location / {{ default_type text/plain; return 200 \"hello from the pod\\n\"; }}\n  }}\n}}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = spawn(ns, &dir, &conf, addr);
        Self { child, dir }
    }

    /// nginx as k3d's serverlb for one port (a `stream` block with `proxy_pass`), in
    /// namespace `ns`, listening on `listen`.
    pub fn stream_proxy(ns: &str, listen: std::net::SocketAddr, upstream: std::net::SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("ingress-l4bench-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err notice;\nevents {{\n  multi_accept on;\n  use epoll;\n  worker_connections 1024;\n}}\nstream {{\n  upstream up {{\n    server {upstream} max_fails=1 fail_timeout=10s;\n  }}\n  server {{\n    listen {listen};\n    proxy_pass up;\n    proxy_timeout 600s;\n    proxy_connect_timeout 2s;\n  }}\n}}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = spawn(ns, &dir, &conf, listen);
        Self { child, dir }
    }
}

/// Starts nginx with `conf` in `ns` (killed with this process) and waits until `addr`
/// accepts.
pub(crate) fn spawn(ns: &str, dir: &std::path::Path, conf: &std::path::Path, addr: std::net::SocketAddr) -> Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "nginx", "-e", "stderr", "-c"])
        .arg(conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start nginx (installed by `cargo xtask bench`)");
    let start = Instant::now();
    while in_ns(ns, || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "nginx in {ns} exited ({st}): {}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
        }
        assert!(start.elapsed() < Duration::from_secs(10), "nginx in {ns} not listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for PodNginx {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops an nginx master we started: SIGTERM (it stops its workers: fast shutdown),
/// then SIGKILL after 5 s.
pub(crate) fn stop(child: &mut Child) {
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while !matches!(child.try_wait(), Ok(Some(_))) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
