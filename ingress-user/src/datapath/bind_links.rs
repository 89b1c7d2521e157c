//! Delayed binding's links, pinned under `--pin-path` like the L4 path's, so that
//! connections bound in the kernel keep being forwarded while the agent restarts:
//!
//! | link | pin |
//! |---|---|
//! | `bind_first` on the NIC's ingress | `link@tcx-bind_first@NIC` |
//! | `l4_reply` where bound flows' replies come back | `link@tcx-bind_reply@IFACE` |
//! | `pod_bind` in a pod's network namespace | `link@tcx-pod_bind@netns-INODE-if-INDEX` |
//!
//! A pin found at start gets the new agent's program (BPF_LINK_UPDATE: every packet runs
//! the old or the new program, none runs neither); a pin whose interface or namespace is
//! gone (ENOLINK) is removed and the link made anew. `ingress detach` removes them with
//! the other pins (links first). Without pins (tests that load the object alone) the
//! links are plain descriptors and end with the agent.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::bpf_links::{link_update, obj_get, obj_pin};
use super::pinning::parse_link_pin;
use super::pins::Pins;

/// Pin kinds (`link@KIND@TARGET`).
pub const FIRST_KIND: &str = "tcx-bind_first";
pub const REPLY_KIND: &str = "tcx-bind_reply";
pub const POD_KIND: &str = "tcx-pod_bind";

/// The pin target of a `pod_bind` link: the namespace's inode and the interface's index
/// there (a name means nothing across namespaces; the pair is unique while both live).
pub fn pod_target(netns: u64, ifindex: u32) -> String {
    format!("netns-{netns}-if-{ifindex}")
}

/// The inverse of [`pod_target`].
pub fn parse_pod_target(target: &str) -> Option<(u64, u32)> {
    let rest = target.strip_prefix("netns-")?;
    let (ns, ifindex) = rest.split_once("-if-")?;
    Some((ns.parse().ok()?, ifindex.parse().ok()?))
}

/// How a link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// An earlier agent's pinned link, now running this agent's program.
    Adopted,
    /// Made now (and pinned, with pins).
    Attached,
}

/// The link pinned as `KIND@TARGET` with `prog` put into it, else a new one from
/// `create`, pinned there.
pub fn adopt_or_attach(
    pins: Option<&Pins>,
    kind: &str,
    target: &str,
    prog: BorrowedFd<'_>,
    create: impl FnOnce() -> io::Result<OwnedFd>,
) -> io::Result<(OwnedFd, Got)> {
    if let Some(p) = pins
        && let Some(link) = adopt(p, kind, target, prog)?
    {
        return Ok((link, Got::Adopted));
    }
    let link = create()?;
    if let Some(p) = pins {
        let path = p.link_path(kind, target);
        let _ = std::fs::remove_file(&path);
        obj_pin(link.as_fd(), &path)
            .map_err(|e| io::Error::new(e.kind(), format!("pinning {}: {e}", path.display())))?;
    }
    Ok((link, Got::Attached))
}

/// The pinned link `KIND@TARGET` running `prog` now; None when nothing is pinned there
/// or its interface is gone (the pin is removed then).
fn adopt(pins: &Pins, kind: &str, target: &str, prog: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let path = pins.link_path(kind, target);
    let link = match obj_get(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("opening the pin {}: {e}", path.display()))),
    };
    match link_update(link.as_fd(), prog) {
        Ok(()) => Ok(Some(link)),
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {
            let _ = std::fs::remove_file(&path);
            Ok(None)
        }
        Err(e) => {
            Err(io::Error::new(e.kind(), format!("putting the program into the pinned link {}: {e}", path.display())))
        }
    }
}

/// Removes the pin `KIND@TARGET` (the link ends once the agent drops its descriptor).
pub fn unpin(pins: Option<&Pins>, kind: &str, target: &str) {
    if let Some(p) = pins {
        let _ = std::fs::remove_file(p.link_path(kind, target));
    }
}

/// The `pod_bind` links an earlier agent pinned, each now running `prog`: (netns inode,
/// ifindex) -> link. Pins whose namespace or interface is gone are removed.
pub fn adopt_pod_links(pins: &Pins, prog: BorrowedFd<'_>) -> Vec<((u64, u32), OwnedFd)> {
    let Ok(dir) = std::fs::read_dir(pins.dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((POD_KIND, target)) = parse_link_pin(&name) else {
            continue;
        };
        let Some(key) = parse_pod_target(target) else {
            continue;
        };
        match adopt(pins, POD_KIND, target, prog) {
            Ok(Some(link)) => out.push((key, link)),
            Ok(None) => tracing::info!(pin = %name, "the pinned pod_bind link's namespace is gone; pin removed"),
            Err(e) => tracing::warn!(pin = %name, error = %e, "cannot adopt a pinned pod_bind link"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::pinning::link_pin_name;

    #[test]
    fn pod_targets_round_trip_through_their_pin_names() {
        let t = pod_target(4026532301, 7);
        assert_eq!(t, "netns-4026532301-if-7");
        let name = link_pin_name(POD_KIND, &t);
        assert_eq!(name, "link@tcx-pod_bind@netns-4026532301-if-7");
        let (kind, target) = parse_link_pin(&name).unwrap();
        assert_eq!((kind, parse_pod_target(target)), (POD_KIND, Some((4026532301, 7))));
        for bad in ["netns-1", "netns--if-2", "netns-x-if-2", "netns-1-if-", "ns-1-if-2", "netns-1-if-2x"] {
            assert_eq!(parse_pod_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn without_pins_a_link_is_made_and_nothing_is_pinned() {
        let prog = std::fs::File::open("/dev/null").unwrap();
        let made = std::fs::File::open("/dev/null").unwrap();
        let (fd, got) = adopt_or_attach(None, FIRST_KIND, "eth0", prog.as_fd(), || Ok(made.into())).unwrap();
        assert_eq!(got, Got::Attached);
        drop(fd);
        let e = adopt_or_attach(None, FIRST_KIND, "eth0", prog.as_fd(), || Err(io::Error::other("no"))).unwrap_err();
        assert_eq!(e.to_string(), "no", "the create error is returned as it is");
    }
}
