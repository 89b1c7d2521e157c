//! The agent's config file end to end, on 127.0.0.1 (no privileges): `ingress run
//! --config FILE` serves the file's listener; SIGHUP with a changed listener port
//! serves the new port and closes the old; a broken file on SIGHUP keeps serving and
//! logs the FILE:LINE; a key that needs a restart is logged as such; `ingress check
//! --config` fails on a bad file naming FILE:LINE and passes a good one.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ingress_tests::agent::{Agent, ingress_bin};
use ingress_tests::backend::{Backend, Echo};
use ingress_tests::client::{Request, send};
use ingress_tests::free_port;
use ingress_tests::proxy_setup::ConfigDir;

/// A config serving 127.0.0.1:`port` from the manifests directory; `more` appended.
fn write(files: &ConfigDir, port: u16, more: &str) {
    let text = format!(
        "# test config\nmanifests = {}\nlisten = [\"127.0.0.1:{port}=apps/gw\"]\nhead_timeout = 10\n{more}",
        files.manifests_toml()
    );
    std::fs::write(&files.config, text).unwrap();
}

fn get(port: u16) -> std::io::Result<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    send(addr, &Request::get("c.test", "/x"), Duration::from_secs(2)).map(|r| {
        assert!(r.status != 200 || r.json::<Echo>().pod == "pod-main", "answered by the route's pod");
        r.status
    })
}

fn hup(agent: &Agent) {
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) }, 0);
}

/// Waits (bounded) until the agent's log has `n` lines containing `what`.
fn wait_log(agent: &Agent, what: &str, n: usize) -> String {
    let start = Instant::now();
    loop {
        let log = agent.log_text();
        if log.matches(what).count() >= n {
            return log;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no {n}x `{what}` in the agent's log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(ingress_bin()).arg("check").arg("--config").arg(config).output().expect("ingress check");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn config_file_serves_reloads_on_sighup_and_keeps_running_on_a_bad_file() {
    let (_pod, pod_port) = Backend::start_local("pod-main");
    let files = ConfigDir::new("config-file-reload", "c.test", pod_port);
    let (first, second) = (free_port(), free_port());
    write(&files, first, "");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = files.config.display().to_string();
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[], &["--config".into(), config.clone()]);
    assert_eq!(get(first).expect("the file's listener serves"), 200);

    // a new port: served after SIGHUP, the old one closed
    write(&files, second, "max_connections_per_source = 7\n");
    hup(&agent);
    wait_log(&agent, "config reloaded: listen", 1);
    assert_eq!(get(second).expect("the new listener serves"), 200);
    assert!(get(first).is_err(), "the old listener is closed");
    let log = wait_log(&agent, "config reloaded: limits", 1);
    assert!(log.contains("max_connections_per_source 7"), "{log}");

    // a broken file: logged with FILE:LINE:COL, the running config stays
    std::fs::write(&files.config, std::fs::read_to_string(&files.config).unwrap() + "syn_rate = \"fast\"\n").unwrap();
    hup(&agent);
    let log = wait_log(&agent, "config reload failed", 1);
    assert!(log.contains(&format!("{config}:6:")), "the error names the file and line: {log}");
    assert_eq!(get(second).expect("still serving"), 200);
    let (ok, out) = check(&files.config);
    assert!(!ok, "check fails on the broken file: {out}");
    assert!(out.contains(&format!("{config}:6:12: key `syn_rate`")), "{out}");
    let bogus = files.dir.join("bogus.toml");
    std::fs::write(&bogus, "listen = [\"127.0.0.1:1=a/b\"]\nlisten_addr = 1\n").unwrap();
    let (ok, out) = check(&bogus);
    assert!(!ok && out.contains(&format!("{}:2:1: key `listen_addr`: unknown key", bogus.display())), "{out}");

    // a key that needs a restart: named in the log, not applied, the rest applied
    let third = free_port();
    write(&files, third, "pin_path = \"/sys/fs/bpf/elsewhere\"\n");
    hup(&agent);
    let log = wait_log(&agent, "`pin_path` changed; it takes effect only after a restart", 1);
    wait_log(&agent, "config reloaded: listen", 2);
    assert_eq!(get(third).expect("the third listener serves"), 200, "{log}");
    let (ok, out) = check(&files.config);
    assert!(ok && out.contains(": ok") && out.contains(&format!("127.0.0.1:{third}=apps/gw")), "{out}");
    drop(agent);
}

#[test]
fn flags_override_the_file_and_sighup_without_a_file_is_harmless() {
    let (_pod, pod_port) = Backend::start_local("pod-main");
    let files = ConfigDir::new("config-file-flags", "c.test", pod_port);
    let (in_file, on_flag) = (free_port(), free_port());
    write(&files, in_file, "");
    let admin = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start_with(
        &ingress_bin(),
        None,
        &admin,
        &[format!("127.0.0.1:{on_flag}=apps/gw")],
        &["--config".into(), files.config.display().to_string()],
    );
    assert_eq!(get(on_flag).expect("the flag's listener serves"), 200);
    assert!(get(in_file).is_err(), "--listen replaces the file's list");
    drop(agent);

    // no --config: SIGHUP is logged, the agent keeps serving
    let port = free_port();
    let args = ["--manifests".to_string(), files.dir.join("manifests").display().to_string()];
    let agent = Agent::start_with(&ingress_bin(), None, &admin, &[format!("127.0.0.1:{port}=apps/gw")], &args);
    hup(&agent);
    wait_log(&agent, "no --config file: nothing to reload", 1);
    assert_eq!(get(port).expect("still serving"), 200);
}
