//! `ingress detach`: removes every link, map and route the agent attached or pinned,
//! so that nothing of ours is left: the pins under `--pin-path` (links detached
//! first, then maps, then the directory), attachments of our programs on
//! `--interface` and `--cgroup` that are not pinned (left by a killed agent, or held
//! by one still running), and the host routes (hook below). Delayed binding's links,
//! `pod_bind` in pod namespaces among them, are pinned there too
//! ([`super::bind_links`]), so they are removed by their pins and never by program
//! name: another agent's (another `--pin-path`) stay. Idempotent: what is not there is
//! not an error, and the report says what was removed.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use ingress_common::maps::ATTACHED_PROGRAMS;

use super::bpf_links::{link_detach, links_of, obj_get};
use super::pinning::{Removal, detach_order, parse_link_pin, validate_pin_path};

/// What `ingress detach` removed, and what it could not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DetachReport {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

impl DetachReport {
    /// The lines `ingress detach` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.removed {
            out += &format!("removed {r}\n");
        }
        for f in &self.failed {
            out += &format!("FAILED  {f}\n");
        }
        if self.removed.is_empty() && self.failed.is_empty() {
            out += "nothing to remove: no pinned state and no attachment of ours found\n";
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error(transparent)]
    Path(#[from] super::pinning::PinPathError),
    #[error("--interface {0}: no such interface in this network namespace")]
    NoInterface(String),
    #[error("--cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: std::io::Error },
    #[error("cannot list the pins under {path}: {source}")]
    List { path: PathBuf, source: std::io::Error },
}

/// Removes what the agent left: see the module text.
pub fn detach(pin_dir: &Path, interface: Option<&str>, cgroup: Option<&Path>) -> Result<DetachReport, DetachError> {
    let dir = validate_pin_path(pin_dir)?;
    let ifindex = match interface {
        Some(i) => Some(ifindex_of(i).ok_or_else(|| DetachError::NoInterface(i.into()))?),
        None => None,
    };
    let cgroup_id = match cgroup {
        Some(p) => {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(p).map_err(|source| DetachError::Cgroup { path: p.into(), source })?;
            Some(m.ino())
        }
        None => None,
    };
    let mut report = DetachReport::default();
    remove_pins(&dir, &mut report)?;
    if ifindex.is_some() || cgroup_id.is_some() {
        remove_unpinned_links(interface.unwrap_or(""), ifindex, cgroup, cgroup_id, &mut report);
    }
    remove_routes(&mut report);
    Ok(report)
}

fn ifindex_of(interface: &str) -> Option<u32> {
    let c = std::ffi::CString::new(interface).ok()?;
    // SAFETY: if_nametoindex reads a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The pins under `dir`: links (detached, then unpinned), then maps, then `dir`.
fn remove_pins(dir: &Path, report: &mut DetachReport) -> Result<(), DetachError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(DetachError::List { path: dir.into(), source }),
    };
    let mut names = Vec::new();
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            report.failed.push(format!("{}: a directory, not a pin of ours; left as it is", e.path().display()));
            continue;
        }
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    for step in detach_order(names) {
        match step {
            Removal::Link(name) => {
                let path = dir.join(&name);
                let (kind, target) = parse_link_pin(&name).unwrap_or(("link", ""));
                // BPF_LINK_DETACH first: an agent still running keeps the link open,
                // and removing the pin alone would leave it attached
                match obj_get(&path) {
                    Ok(fd) => match link_detach(fd.as_fd()) {
                        Ok(()) => {}
                        // links whose kernel side cannot detach on request end when
                        // their last reference (this pin) goes
                        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                        Err(e) => report.failed.push(format!("detaching {}: {e}", path.display())),
                    },
                    Err(e) => report.failed.push(format!("opening {}: {e}", path.display())),
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => report.removed.push(format!("{kind} link on {target} (pin {})", path.display())),
                    Err(e) => report.failed.push(format!("removing {}: {e}", path.display())),
                }
            }
            Removal::Pin(name) => {
                let path = dir.join(&name);
                match std::fs::remove_file(&path) {
                    Ok(()) => report.removed.push(format!("map {name} (pin {})", path.display())),
                    Err(e) => report.failed.push(format!("removing {}: {e}", path.display())),
                }
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => report.removed.push(format!("pin directory {}", dir.display())),
        Err(e) => report.failed.push(format!("removing the pin directory {}: {e}", dir.display())),
    }
    Ok(())
}

/// Links of our programs on the interface or cgroup that no pin holds: a killed
/// agent's that were never pinned, or a running agent's.
fn remove_unpinned_links(
    interface: &str,
    ifindex: Option<u32>,
    cgroup: Option<&Path>,
    cgroup_id: Option<u64>,
    report: &mut DetachReport,
) {
    let links = match links_of(ATTACHED_PROGRAMS) {
        Ok(l) => l,
        Err(e) => {
            report.failed.push(format!("listing the attached programs: {e}"));
            return;
        }
    };
    for (fd, facts, program) in links {
        let on = match (facts.ifindex, facts.cgroup_id) {
            (Some(i), _) if Some(i) == ifindex => interface.to_string(),
            (_, Some(c)) if Some(c) == cgroup_id => cgroup.map(|p| p.display().to_string()).unwrap_or_default(),
            _ => continue,
        };
        match link_detach(fd.as_fd()) {
            Ok(()) => report.removed.push(format!("{} link {} of program {program} on {on}", facts.kind(), facts.id)),
            Err(e) => report.failed.push(format!("detaching {} link {} on {on}: {e}", facts.kind(), facts.id)),
        }
    }
}

/// Removes the host routes the agent installed (those marked with our own route
/// protocol, [`super::routes`]), a line per route in `report`.
fn remove_routes(report: &mut DetachReport) {
    match super::routes::remove_our_routes_blocking() {
        Ok(routes) => report.removed.extend(routes.into_iter().map(|r| format!("route {r}"))),
        Err(e) => report.failed.push(format!("removing our host routes: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_and_defaults() {
        use crate::cli::{Cli, Cmd};
        use clap::Parser;
        let cli = Cli::try_parse_from(["ingress", "detach"]).unwrap();
        let Cmd::Detach { pin_path, interface, cgroup } = cli.cmd else { panic!("detach") };
        assert_eq!((pin_path.as_path(), interface, cgroup), (Path::new("/sys/fs/bpf/ebpf-ingress"), None, None));
        let cli = Cli::try_parse_from([
            "ingress",
            "detach",
            "--pin-path",
            "/sys/fs/bpf/x",
            "--interface",
            "eth0",
            "--cgroup",
            "/sys/fs/cgroup/a",
        ])
        .unwrap();
        let Cmd::Detach { pin_path, interface, cgroup } = cli.cmd else { panic!("detach") };
        assert_eq!(pin_path, Path::new("/sys/fs/bpf/x"));
        assert_eq!((interface.as_deref(), cgroup.as_deref()), (Some("eth0"), Some(Path::new("/sys/fs/cgroup/a"))));
        let run = |extra: &[&str]| {
            let mut args = vec!["ingress", "run", "--listen", "0.0.0.0:8080=ns/gw"];
            args.extend(extra);
            match Cli::try_parse_from(args).unwrap().cmd {
                Cmd::Run { pin_path, .. } => pin_path,
                _ => panic!("run"),
            }
        };
        assert_eq!(run(&[]), Path::new(super::super::pinning::DEFAULT_PIN_PATH));
        assert_eq!(run(&["--pin-path", "/sys/fs/bpf/y"]), Path::new("/sys/fs/bpf/y"));
    }

    #[test]
    fn nothing_to_remove_is_said_and_not_an_error() {
        let dir = std::env::temp_dir().join(format!("ingress-detach-none-{}", std::process::id()));
        let r = detach(&dir, None, None).expect("nothing there is no error");
        assert_eq!(r, DetachReport::default());
        assert!(r.render().contains("nothing to remove"), "{}", r.render());
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = detach(Path::new("relative"), None, None).unwrap_err();
        assert!(e.to_string().contains("--pin-path `relative`"), "{e}");
        let dir = std::env::temp_dir().join("ingress-detach-absent");
        let e = detach(&dir, Some("no-such-if0"), None).unwrap_err();
        assert_eq!(e.to_string(), "--interface no-such-if0: no such interface in this network namespace");
        let e = detach(&dir, None, Some(Path::new("/no/such/cgroup"))).unwrap_err();
        assert!(e.to_string().starts_with("--cgroup /no/such/cgroup: "), "{e}");
    }

    #[test]
    fn plain_files_in_the_directory_are_removed_and_reported() {
        // a tmpfs/ext4 stand-in for bpffs: map pins are files that unlink the same way
        let dir = std::env::temp_dir().join(format!("ingress-detach-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("XDP_STATS"), b"").unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let r = detach(&dir, None, None).unwrap();
        assert_eq!(r.removed, [format!("map XDP_STATS (pin {})", dir.join("XDP_STATS").display())]);
        assert_eq!(r.failed.len(), 2, "the sub-directory is left, so is the directory: {:?}", r.failed);
        assert!(r.render().contains("FAILED"), "{}", r.render());
        std::fs::remove_dir(dir.join("sub")).unwrap();
        let r = detach(&dir, None, None).unwrap();
        assert_eq!(r.removed, [format!("pin directory {}", dir.display())]);
        assert!(!dir.exists());
    }
}
