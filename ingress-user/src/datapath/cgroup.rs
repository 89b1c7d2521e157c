//! The cgroup sock_addr hooks for local clients (`ingress-ebpf/src/l4_local.rs`):
//! loaded and attached to the cgroup v2 directory of `--cgroup`, so that processes in
//! it (the whole VM with the default, the root cgroup) reach the L4 targets on
//! 127.0.0.1, 0.0.0.0 and the VM's addresses. Attached as BPF links, which the kernel
//! always runs beside the other programs of the cgroup (systemd's, a CNI's): a link
//! must be created with no attach flags (`CgroupAttachMode::Single` is flags 0; the
//! kernel refuses `BPF_F_ALLOW_MULTI` on a link with EINVAL).
//!
//! With pins, each link is pinned as `link.cgroup-PROGRAM.CGROUPID` and outlives the
//! agent; the next agent puts its program into the pinned link (BPF_LINK_UPDATE, no
//! moment without the hook) instead of attaching a second one.

use std::os::fd::AsFd;
use std::path::Path;

use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use ingress_common::maps::{
    L4_CONNECT4_PROGRAM, L4_CONNECT6_PROGRAM, L4_GETPEERNAME4_PROGRAM, L4_GETPEERNAME6_PROGRAM,
};

use super::EbpfError;
use super::bpf_links::{link_update, obj_get};
use super::loader::{Dataplane, program};

/// The hooks, in the order they are attached: the getpeername hooks first, so that no
/// socket is rewritten before its process can be told what it dialled.
pub const LOCAL_PROGRAMS: [&str; 4] =
    [L4_GETPEERNAME4_PROGRAM, L4_GETPEERNAME6_PROGRAM, L4_CONNECT4_PROGRAM, L4_CONNECT6_PROGRAM];

/// The pin kind of a hook's link.
fn link_kind(program: &str) -> String {
    format!("cgroup-{program}")
}

impl Dataplane {
    /// Loads the local-client hooks and attaches them to the cgroup v2 directory `cgroup`
    /// (or adopts the links an earlier agent pinned there).
    pub fn attach_cgroup_hooks(&mut self, cgroup: &Path) -> Result<(), EbpfError> {
        use std::os::unix::fs::MetadataExt;
        let cgroup_err = |source| EbpfError::Cgroup { path: cgroup.display().to_string(), source };
        let dir = std::fs::File::open(cgroup).map_err(cgroup_err)?;
        // the cgroup's id as link info gives it: its directory's inode number
        let id = dir.metadata().map_err(cgroup_err)?.ino().to_string();
        let pins = self.pins.clone();
        let mut adopted = 0;
        for name in LOCAL_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            prog.load().map_err(|source| EbpfError::Load { program: name, source })?;
            let attach_err = |e: std::io::Error| EbpfError::CgroupAttach {
                program: name,
                path: cgroup.display().to_string(),
                source: aya::programs::ProgramError::IOError(e),
            };
            if let Some(pins) = &pins {
                let pin = pins.link_path(&link_kind(name), &id);
                if let Ok(link) = obj_get(&pin) {
                    let prog_fd = prog.fd().map_err(|source| EbpfError::Load { program: name, source })?;
                    match link_update(link.as_fd(), prog_fd.as_fd()) {
                        Ok(()) => {
                            adopted += 1;
                            continue;
                        }
                        // the cgroup it was attached to is gone: attach anew
                        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {
                            pins.remove_link_pin(&link_kind(name), &id)
                        }
                        Err(e) => return Err(attach_err(e)),
                    }
                }
            }
            let link_id = prog.attach(&dir, CgroupAttachMode::Single).map_err(|source| EbpfError::CgroupAttach {
                program: name,
                path: cgroup.display().to_string(),
                source,
            })?;
            if let Some(pins) = &pins {
                let link = prog.take_link(link_id).map_err(|source| EbpfError::Load { program: name, source })?;
                let fd = FdLink::try_from(link)
                    .map_err(|e| attach_err(std::io::Error::other(format!("not a BPF link: {e}"))))?;
                // the pin holds the attachment from now on
                drop(pins.pin_link(&link_kind(name), &id, fd)?);
            }
        }
        tracing::info!(
            cgroup = %cgroup.display(),
            adopted,
            "cgroup connect hooks attached: local clients reach the L4 targets"
        );
        Ok(())
    }
}
