//! `cargo xtask install` / `uninstall` / `load`: the agent as a systemd service, and the
//! build-and-run loop for development on the VM.
//!
//! install: the release agent to PREFIX/bin/ingress, the config to
//! /etc/ebpf-ingress/config.toml (never over an existing one), the unit
//! deploy/ebpf-ingress.service to /etc/systemd/system (ExecStart under PREFIX) with
//! deploy/ebpf-ingress-bpffs.service (bpffs in the host's namespace), a list
//! of what it wrote to PREFIX/share/ebpf-ingress/installed; then `systemctl enable
//! --now`. `--root DIR` writes every file under DIR instead of / (an image, a
//! container's root) and then only enables the unit offline (`systemctl --root`);
//! `--no-start` runs no systemctl at all.
//! uninstall: stops and disables the unit, runs `ingress detach` with the config's
//! pin path (and interface), removes every file of the list, and the directories
//! install made once empty.
//! The pure parts (the unit's text for a prefix, the list's format, the paths) carry
//! the unit tests; the rest is file copies and commands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::setup::run;
use crate::workspace_root;

pub const UNIT_NAME: &str = "ebpf-ingress.service";
/// The unit that mounts bpffs in the host's namespace when nothing did (the agent's
/// unit Requires= it): copied as shipped.
pub const BPFFS_UNIT_NAME: &str = "ebpf-ingress-bpffs.service";
pub const DEFAULT_PREFIX: &str = "/usr/local";
pub const CONFIG_DIR: &str = "/etc/ebpf-ingress";
pub const CONFIG_PATH: &str = "/etc/ebpf-ingress/config.toml";
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The unit as shipped: ExecStart under the default prefix.
const SHIPPED_BIN: &str = "/usr/local/bin/ingress";
const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/ebpf-ingress";

pub struct InstallArgs {
    pub config: Option<PathBuf>,
    pub prefix: PathBuf,
    pub root: PathBuf,
    pub no_build: bool,
    pub no_start: bool,
}

/// Where things go on the target system (paths as the running system sees them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub unit: PathBuf,
    pub bpffs_unit: PathBuf,
    /// The list of what install wrote.
    pub manifest: PathBuf,
}

impl Layout {
    pub fn new(prefix: &Path) -> Self {
        Self {
            bin: prefix.join("bin/ingress"),
            config: Path::new(CONFIG_DIR).join("config.toml"),
            unit: Path::new(UNIT_DIR).join(UNIT_NAME),
            bpffs_unit: Path::new(UNIT_DIR).join(BPFFS_UNIT_NAME),
            manifest: prefix.join("share/ebpf-ingress/installed"),
        }
    }
}

/// `path` (absolute on the target system) under `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The unit's text for an agent at `bin` (the shipped unit names the default prefix's).
pub fn render_unit(shipped: &str, bin: &Path) -> Result<String> {
    let exec = format!("ExecStart={SHIPPED_BIN} ");
    if !shipped.lines().any(|l| l.starts_with(&exec)) {
        bail!("deploy/{UNIT_NAME}: no `{exec}...` line to point at the installed agent");
    }
    Ok(shipped
        .lines()
        .map(|l| match l.strip_prefix(&exec) {
            Some(rest) => format!("ExecStart={} {rest}", bin.display()),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// What install wrote: `file PATH`, `dir PATH` (made by install), `enabled` (the unit
/// was enabled), one a line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub enabled: bool,
}

impl Manifest {
    pub fn render(&self) -> String {
        let mut out = String::from("# written by `cargo xtask install`; read by `cargo xtask uninstall`\n");
        for f in &self.files {
            out += &format!("file {}\n", f.display());
        }
        for d in &self.dirs {
            out += &format!("dir {}\n", d.display());
        }
        if self.enabled {
            out += "enabled\n";
        }
        out
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut m = Manifest::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(' ') {
                Some(("file", p)) => m.files.push(p.into()),
                Some(("dir", p)) => m.dirs.push(p.into()),
                None if line == "enabled" => m.enabled = true,
                _ => bail!("line {}: `{line}` is not `file PATH`, `dir PATH` or `enabled`", n + 1),
            }
        }
        Ok(m)
    }
}

/// Creates `dir` (on the target system, under `root`) and its missing parents, noting
/// each one made in `made` (outermost first).
fn make_dirs(root: &Path, dir: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.as_os_str().is_empty() || under(root, p).exists() {
            break;
        }
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    for p in missing.into_iter().rev() {
        std::fs::create_dir(under(root, &p)).with_context(|| format!("creating {}", under(root, &p).display()))?;
        made.push(p);
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // a new file beside, then renamed over: a running agent's binary is never written in place
    let tmp = to.with_extension("xtask-new");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))
}

pub fn install(a: &InstallArgs) -> Result<()> {
    let offline = a.root != Path::new("/");
    if !offline && !crate::is_root() {
        bail!("cargo xtask install writes /etc and {} and runs systemctl: run it as root", a.prefix.display());
    }
    let agent = workspace_root().join("target/release/ingress");
    if a.no_build {
        if !agent.is_file() {
            bail!("--no-build: {} is missing; build it first with `cargo xtask build --release`", agent.display());
        }
    } else {
        crate::build::build_all(true)?;
    }
    install_agent(a, &agent)
}

/// Installs the agent binary `agent` (built or not) as [`install`] says.
fn install_agent(a: &InstallArgs, agent: &Path) -> Result<()> {
    let root = &a.root;
    let offline = root != Path::new("/");
    let layout = Layout::new(&a.prefix);
    let shipped_unit = std::fs::read_to_string(workspace_root().join("deploy").join(UNIT_NAME))?;
    let unit = render_unit(&shipped_unit, &layout.bin)?;
    let config_src = a.config.clone().unwrap_or_else(|| workspace_root().join("deploy/config.toml"));
    if !config_src.is_file() {
        bail!("--config {}: no such file", config_src.display());
    }
    // the old list, so a second install keeps remembering what the first one wrote
    let mut m = match std::fs::read_to_string(under(root, &layout.manifest)) {
        Ok(t) => Manifest::parse(&t).with_context(|| format!("reading {}", layout.manifest.display()))?,
        Err(_) => Manifest::default(),
    };
    let note = |m: &mut Manifest, p: &Path| {
        if !m.files.iter().any(|f| f == p) {
            m.files.push(p.to_path_buf());
        }
    };
    for dir in [layout.bin.parent(), layout.config.parent(), layout.unit.parent(), layout.manifest.parent()]
        .into_iter()
        .flatten()
    {
        let mut made = Vec::new();
        make_dirs(root, dir, &mut made)?;
        m.dirs.extend(made);
    }
    copy_file(agent, &under(root, &layout.bin), 0o755)?;
    note(&mut m, &layout.bin);
    println!("xtask install: {}", under(root, &layout.bin).display());
    let config_dst = under(root, &layout.config);
    if config_dst.exists() {
        println!("xtask install: {} exists: kept as it is (not overwritten)", config_dst.display());
    } else {
        copy_file(&config_src, &config_dst, 0o644)?;
        note(&mut m, &layout.config);
        println!("xtask install: {} (from {})", config_dst.display(), config_src.display());
    }
    std::fs::write(under(root, &layout.unit), unit)?;
    note(&mut m, &layout.unit);
    println!("xtask install: {}", under(root, &layout.unit).display());
    copy_file(&workspace_root().join("deploy").join(BPFFS_UNIT_NAME), &under(root, &layout.bpffs_unit), 0o644)?;
    note(&mut m, &layout.bpffs_unit);
    println!("xtask install: {}", under(root, &layout.bpffs_unit).display());
    note(&mut m, &layout.manifest);
    std::fs::write(under(root, &layout.manifest), m.render())?;

    if a.no_start {
        println!("xtask install: --no-start: systemctl not run; start it with `systemctl enable --now {UNIT_NAME}`");
        return Ok(());
    }
    if offline {
        run(Command::new("systemctl").arg(format!("--root={}", root.display())).args(["enable", UNIT_NAME]))?;
        m.enabled = true;
        std::fs::write(under(root, &layout.manifest), m.render())?;
        println!("xtask install: enabled in {} (not started: not this system's root)", root.display());
        return Ok(());
    }
    run(Command::new("systemctl").arg("daemon-reload"))?;
    m.enabled = true;
    std::fs::write(under(root, &layout.manifest), m.render())?;
    // restart, not start: a reinstall must run the new binary
    run(Command::new("systemctl").args(["enable", UNIT_NAME]))?;
    run(Command::new("systemctl").args(["restart", UNIT_NAME])).with_context(|| {
        format!("{UNIT_NAME} did not start: see `journalctl -u {UNIT_NAME}` and `ingress check --config {CONFIG_PATH}`")
    })?;
    println!("xtask install: {UNIT_NAME} enabled and started (`systemctl status {UNIT_NAME}`)");
    Ok(())
}

pub struct UninstallArgs {
    pub prefix: PathBuf,
    pub root: PathBuf,
}

/// The config's `pin_path` and `interface` (what `ingress detach` needs), defaults
/// where the file says nothing.
pub fn detach_args(config_text: &str) -> Result<(String, Option<String>)> {
    let t: toml::Table = config_text.parse().context("the config is not TOML")?;
    let s = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok((s("pin_path").unwrap_or_else(|| DEFAULT_PIN_PATH.into()), s("interface")))
}

pub fn uninstall(a: &UninstallArgs) -> Result<()> {
    let root = &a.root;
    let offline = root != Path::new("/");
    if !offline && !crate::is_root() {
        bail!("cargo xtask uninstall stops a system service and removes files under /etc: run it as root");
    }
    let layout = Layout::new(&a.prefix);
    let m = match std::fs::read_to_string(under(root, &layout.manifest)) {
        Ok(t) => Manifest::parse(&t)?,
        Err(e) => {
            println!(
                "xtask uninstall: no {} ({e}): removing the unit and the agent only; the config stays",
                under(root, &layout.manifest).display()
            );
            Manifest {
                files: vec![layout.unit.clone(), layout.bpffs_unit.clone(), layout.bin.clone()],
                dirs: vec![],
                enabled: true,
            }
        }
    };
    let mut problems = Vec::new();
    if m.enabled {
        let mut cmd = Command::new("systemctl");
        if offline {
            cmd.arg(format!("--root={}", root.display())).args(["disable", UNIT_NAME]);
        } else {
            cmd.args(["disable", "--now", UNIT_NAME]);
        }
        if let Err(e) = run(&mut cmd) {
            problems.push(format!("{e:#}"));
        }
    }
    // the pinned data path: only on this system (its kernel holds it)
    let bin = under(root, &layout.bin);
    if offline {
        println!("xtask uninstall: --root {}: `ingress detach` not run (pins live in this kernel)", root.display());
    } else if bin.is_file() {
        let config = std::fs::read_to_string(&layout.config).unwrap_or_default();
        let (pin_path, interface) = detach_args(&config).unwrap_or_else(|_| (DEFAULT_PIN_PATH.into(), None));
        let mut cmd = Command::new(&bin);
        cmd.args(["detach", "--pin-path", &pin_path]);
        if let Some(i) = interface.filter(|i| Path::new("/sys/class/net").join(i).exists()) {
            cmd.args(["--interface", &i]);
        }
        if let Err(e) = run(&mut cmd) {
            problems.push(format!("{e:#}"));
        }
    }
    for f in &m.files {
        let p = under(root, f);
        match std::fs::remove_file(&p) {
            Ok(()) => println!("xtask uninstall: removed {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("removing {}: {e}", p.display())),
        }
    }
    // innermost first; a directory someone else put files in stays
    for d in m.dirs.iter().rev() {
        let p = under(root, d);
        if std::fs::remove_dir(&p).is_ok() {
            println!("xtask uninstall: removed {}/", p.display());
        } else if p.exists() {
            println!("xtask uninstall: {} is not empty: left", p.display());
        }
    }
    if m.enabled && !offline {
        let _ = run(Command::new("systemctl").arg("daemon-reload"));
    }
    if !problems.is_empty() {
        bail!("uninstall did not finish cleanly:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// `cargo xtask load`: build the eBPF object and the agent, run it in the foreground
/// with the config and `--detach-on-exit` (Ctrl-C: drain, then remove everything it
/// attached and pinned). Extra arguments go to `ingress run` after the config (flags
/// override its keys).
pub fn load(config: Option<PathBuf>, release: bool, extra: &[String]) -> Result<()> {
    let config = config.unwrap_or_else(|| {
        let installed = PathBuf::from(CONFIG_PATH);
        if installed.is_file() { installed } else { workspace_root().join("deploy/config.toml") }
    });
    if !config.is_file() {
        bail!("--config {}: no such file", config.display());
    }
    let built = crate::build::build_all(release)?;
    let mut cmd = Command::new(&built.agent);
    cmd.arg("run").arg("--config").arg(&config).arg("--detach-on-exit").args(extra);
    println!("xtask load: {cmd:?} (Ctrl-C stops it and detaches everything it attached)");
    let mut child = cmd.spawn().with_context(|| format!("cannot start {}", built.agent.display()))?;
    // Ctrl-C reaches the agent too (same process group); xtask waits for it to finish
    // its drain and detach instead of dying first. (Ignored after the spawn: an ignored
    // signal would be inherited.)
    ignore_sigint();
    let status = child.wait()?;
    anyhow::ensure!(status.success() || status.code() == Some(130), "the agent exited with {status}");
    Ok(())
}

fn ignore_sigint() {
    unsafe extern "C" {
        fn signal(sig: i32, handler: usize) -> usize;
    }
    const SIGINT: i32 = 2;
    const SIG_IGN: usize = 1;
    // SAFETY: setting SIGINT's disposition to ignore; no handler code runs.
    unsafe {
        signal(SIGINT, SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/config.toml` (what `install` ships) and the takeover's template
    /// `deploy/k3d/config.toml.in` hold the same listeners and L4 ports: the template names
    /// the node's address as `@NODE_IP@`, the shipped file k3d's first node, 172.18.0.2.
    #[test]
    fn the_shipped_config_and_the_takeover_template_agree() {
        let read = |rel: &str| std::fs::read_to_string(workspace_root().join(rel)).unwrap();
        let shipped: toml::Table = toml::from_str(&read("deploy/config.toml")).unwrap();
        let rendered =
            read("deploy/k3d/config.toml.in").replace("@NODE_IP@", "172.18.0.2").replace("@INTERFACE@", "eth0");
        let template: toml::Table = toml::from_str(&rendered).unwrap();
        for key in ["listen", "l4"] {
            let (a, b) = (&shipped.get(key), &template.get(key));
            assert!(
                a.is_some_and(|v| v.as_array().is_some_and(|l| !l.is_empty())),
                "deploy/config.toml: no `{key}` list"
            );
            assert_eq!(a, b, "`{key}` differs between deploy/config.toml and deploy/k3d/config.toml.in");
        }
    }

    fn shipped() -> String {
        std::fs::read_to_string(workspace_root().join("deploy").join(UNIT_NAME)).unwrap()
    }

    #[test]
    fn the_unit_points_at_the_prefix() {
        let u = render_unit(&shipped(), Path::new("/opt/ingress/bin/ingress")).unwrap();
        assert!(u.contains("\nExecStart=/opt/ingress/bin/ingress run --config /etc/ebpf-ingress/config.toml\n"), "{u}");
        assert!(!u.contains(SHIPPED_BIN));
        assert_eq!(render_unit(&shipped(), Path::new(SHIPPED_BIN)).unwrap(), shipped());
        assert!(render_unit("[Service]\nExecStart=/bin/x\n", Path::new("/a")).is_err());
    }

    #[test]
    fn the_shipped_unit_has_what_the_service_needs() {
        let u = shipped();
        for line in [
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "Restart=on-failure",
            "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
            "ProtectSystem=strict",
            "ReadWritePaths=/sys/fs/bpf",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "Requires=ebpf-ingress-bpffs.service",
            "After=ebpf-ingress-bpffs.service",
        ] {
            assert!(u.lines().any(|l| l == line), "missing `{line}`");
        }
        // the mount is not made from inside the sandbox (it would stay in its namespace)
        assert!(!u.lines().any(|l| l.starts_with("ExecStartPre")), "no ExecStartPre mount in the sandboxed unit");
        let b = std::fs::read_to_string(workspace_root().join("deploy").join(BPFFS_UNIT_NAME)).unwrap();
        for line in ["ConditionPathIsMountPoint=!/sys/fs/bpf", "Type=oneshot", "RemainAfterExit=yes"] {
            assert!(b.lines().any(|l| l == line), "{BPFFS_UNIT_NAME}: missing `{line}`");
        }
        assert!(!u.contains("CAP_SYS_ADMIN "), "no CAP_SYS_ADMIN in the bounding set");
    }

    /// `systemd-analyze verify` on the unit as install writes it (the agent's path
    /// must exist for it: a stand-in executable in a temporary prefix).
    #[test]
    fn systemd_analyze_verify_passes() {
        let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("systemd-analyze is missing (apt-get install systemd)");
            }
            eprintln!("SKIPPED: systemd-analyze not installed");
            return;
        };
        assert!(out.status.success());
        let dir = std::env::temp_dir().join(format!("xtask-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::copy("/bin/true", dir.join("bin/ingress")).unwrap();
        let unit = dir.join(UNIT_NAME);
        std::fs::write(&unit, render_unit(&shipped(), &dir.join("bin/ingress")).unwrap()).unwrap();
        // the agent's unit Requires= the bpffs unit: verify loads it from beside
        let bpffs = dir.join(BPFFS_UNIT_NAME);
        std::fs::copy(workspace_root().join("deploy").join(BPFFS_UNIT_NAME), &bpffs).unwrap();
        let v = Command::new("systemd-analyze").arg("verify").arg(&unit).arg(&bpffs).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
        // and a unit that is wrong fails: the check can fail
        let broken = dir.join("broken.service");
        std::fs::write(&broken, shipped().replace("Type=notify", "Type=notifyy")).unwrap();
        let b = Command::new("systemd-analyze").arg("verify").arg(&broken).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            v.status.success() && !said.contains(UNIT_NAME) && !said.contains(BPFFS_UNIT_NAME),
            "systemd-analyze verify: {said}"
        );
        assert!(!b.status.success() || !b.stderr.is_empty(), "a bad Type= is reported");
    }

    #[test]
    fn the_manifest_round_trips_and_refuses_junk() {
        let m = Manifest {
            files: vec!["/usr/local/bin/ingress".into(), CONFIG_PATH.into()],
            dirs: vec![CONFIG_DIR.into()],
            enabled: true,
        };
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
        assert!(Manifest::parse("rm -rf /\n").unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn detach_uses_the_configs_pin_path_and_interface() {
        assert_eq!(
            detach_args("pin_path = \"/sys/fs/bpf/x\"\ninterface = \"eth0\"\n").unwrap(),
            ("/sys/fs/bpf/x".into(), Some("eth0".into()))
        );
        assert_eq!(detach_args("").unwrap(), (DEFAULT_PIN_PATH.into(), None));
        assert_eq!(under(Path::new("/tmp/r"), Path::new("/etc/x")), PathBuf::from("/tmp/r/etc/x"));
    }

    /// Install into a temporary root without building or starting, twice (the config is
    /// kept the second time), then uninstall: nothing of ours is left.
    #[test]
    fn install_then_uninstall_in_a_temporary_root_leaves_nothing() {
        // a stand-in for the agent: what is copied does not matter here
        let agent = Path::new("/bin/true");
        let root = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let args = |prefix: &str| InstallArgs {
            config: None,
            prefix: prefix.into(),
            root: root.clone(),
            no_build: true,
            no_start: true,
        };
        install_agent(&args("/opt/ei"), agent).unwrap();
        let unit = std::fs::read_to_string(root.join("etc/systemd/system").join(UNIT_NAME)).unwrap();
        assert!(unit.contains("ExecStart=/opt/ei/bin/ingress run --config /etc/ebpf-ingress/config.toml"));
        assert!(root.join("opt/ei/bin/ingress").is_file());
        assert!(root.join("etc/systemd/system").join(BPFFS_UNIT_NAME).is_file(), "the bpffs unit is installed");
        let config = root.join("etc/ebpf-ingress/config.toml");
        std::fs::write(&config, "# edited by the user\n").unwrap();
        install_agent(&args("/opt/ei"), agent).unwrap();
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "# edited by the user\n", "config never overwritten");
        uninstall(&UninstallArgs { prefix: "/opt/ei".into(), root: root.clone() }).unwrap();
        let mut left = Vec::new();
        for e in walk(&root) {
            left.push(e.strip_prefix(&root).unwrap().display().to_string());
        }
        let _ = std::fs::remove_dir_all(&root);
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }
}
