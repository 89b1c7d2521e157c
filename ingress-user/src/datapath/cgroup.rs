//! The cgroup sock_addr hooks for local clients (`ingress-ebpf/src/l4_local.rs`):
//! loaded and attached to the cgroup v2 directory of `--cgroup`, so that processes in
//! it (the whole VM with the default, the root cgroup) reach the L4 targets on
//! 127.0.0.1, 0.0.0.0 and the VM's addresses. Attached as BPF links, which the kernel
//! always runs beside the other programs of the cgroup (systemd's, a CNI's): a link
//! must be created with no attach flags (`CgroupAttachMode::Single` is flags 0; the
//! kernel refuses `BPF_F_ALLOW_MULTI` on a link with EINVAL).

use std::path::Path;

use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use ingress_common::maps::{
    L4_CONNECT4_PROGRAM, L4_CONNECT6_PROGRAM, L4_GETPEERNAME4_PROGRAM, L4_GETPEERNAME6_PROGRAM,
};

use super::EbpfError;
use super::loader::{Dataplane, program};

/// The hooks, in the order they are attached: the getpeername hooks first, so that no
/// socket is rewritten before its process can be told what it dialled.
pub const LOCAL_PROGRAMS: [&str; 4] =
    [L4_GETPEERNAME4_PROGRAM, L4_GETPEERNAME6_PROGRAM, L4_CONNECT4_PROGRAM, L4_CONNECT6_PROGRAM];

impl Dataplane {
    /// Loads the local-client hooks and attaches them to the cgroup v2 directory `cgroup`.
    pub fn attach_cgroup_hooks(&mut self, cgroup: &Path) -> Result<(), EbpfError> {
        let dir = std::fs::File::open(cgroup)
            .map_err(|source| EbpfError::Cgroup { path: cgroup.display().to_string(), source })?;
        for name in LOCAL_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            prog.load().map_err(|source| EbpfError::Load { program: name, source })?;
            prog.attach(&dir, CgroupAttachMode::Single).map_err(|source| EbpfError::CgroupAttach {
                program: name,
                path: cgroup.display().to_string(),
                source,
            })?;
        }
        tracing::info!(cgroup = %cgroup.display(), "cgroup connect hooks attached: local clients reach the L4 targets");
        Ok(())
    }
}
