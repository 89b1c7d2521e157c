//! The few bpf(2) link commands aya 0.14 keeps private, by hand: opening a pin as a
//! plain descriptor (BPF_OBJ_GET) and pinning one (BPF_OBJ_PIN), a link's target (interface index, cgroup id) from
//! BPF_OBJ_GET_INFO_BY_FD (aya's `LinkInfo` gives only its id, program and type),
//! BPF_LINK_GET_FD_BY_ID and BPF_LINK_DETACH (aya has no call for it: `ingress
//! detach` must end an attachment even while a running agent still holds the link).
//! The attribute layouts are aya-obj's generated kernel bindings.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

/// What the kernel says about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFacts {
    pub id: u32,
    pub prog_id: u32,
    pub link_type: u32,
    /// XDP and TCX links: the interface (0 once the interface is gone).
    pub ifindex: Option<u32>,
    /// cgroup links: the cgroup's id (its directory's inode number on cgroup v2).
    pub cgroup_id: Option<u64>,
}

impl LinkFacts {
    pub fn kind(&self) -> &'static str {
        match self.link_type {
            t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => "xdp",
            t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => "tcx",
            t if t == bpf_link_type::BPF_LINK_TYPE_CGROUP as u32 => "cgroup",
            _ => "other",
        }
    }
}

/// bpf(2) returning a new descriptor or 0.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a zero-initialised bpf_attr whose member for `cmd` the caller
    // filled in; the kernel reads at most size_of::<bpf_attr>() bytes of it.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut bpf_attr, std::mem::size_of::<bpf_attr>())
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// BPF_OBJ_GET: a descriptor of whatever is pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr).map(owned)
}

/// BPF_OBJ_PIN: pins `fd` (a link or map) at `path`, on a bpffs; the object then
/// lives as long as the pin, whoever closes their descriptors.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// BPF_LINK_GET_FD_BY_ID.
pub fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_6.__bindgen_anon_1.link_id = id;
    sys_bpf(bpf_cmd::BPF_LINK_GET_FD_BY_ID, &mut attr).map(owned)
}

/// BPF_OBJ_GET_INFO_BY_FD on a link. Fails (EINVAL) on a descriptor that is no link.
pub fn link_facts(fd: BorrowedFd<'_>) -> io::Result<LinkFacts> {
    // SAFETY: all-zero is a valid bpf_link_info (plain integers and unions of them).
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // the info member points at `info`, which outlives the call, with its size
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
    attr.info.info = &mut info as *mut bpf_link_info as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let mut facts =
        LinkFacts { id: info.id, prog_id: info.prog_id, link_type: info.type_, ifindex: None, cgroup_id: None };
    // SAFETY: the union member read is the one the kernel fills for this link type.
    unsafe {
        match info.type_ {
            t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => {
                facts.ifindex = Some(info.__bindgen_anon_1.xdp.ifindex)
            }
            t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => {
                facts.ifindex = Some(info.__bindgen_anon_1.tcx.ifindex)
            }
            t if t == bpf_link_type::BPF_LINK_TYPE_CGROUP as u32 => {
                facts.cgroup_id = Some(info.__bindgen_anon_1.cgroup.cgroup_id)
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// BPF_LINK_DETACH: ends the attachment now, whoever still holds the link.
pub fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.link_detach.link_fd = fd.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// Every link on the machine whose program's name is one of `programs` (names as the
/// kernel keeps them: at most 15 bytes), with a descriptor of it.
pub fn links_of(programs: &[&str]) -> io::Result<Vec<(OwnedFd, LinkFacts, String)>> {
    // program id -> name, for the programs named in `programs`
    let ours: std::collections::HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
        .filter(|(_, name)| programs.iter().any(|p| p.get(..p.len().min(15)) == Some(name.as_str())))
        .collect();
    let mut out = Vec::new();
    for info in aya::programs::loaded_links() {
        let info = match info {
            Ok(i) => i,
            // a link that went away while we listed them
            Err(aya::programs::links::LinkError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                continue;
            }
            Err(e) => return Err(io::Error::other(format!("listing BPF links: {e}"))),
        };
        let Some(name) = ours.get(&info.program_id()).cloned() else {
            continue;
        };
        let Ok(fd) = link_fd_by_id(info.id()) else {
            continue;
        };
        let facts = link_facts(std::os::fd::AsFd::as_fd(&fd))?;
        out.push((fd, facts, name));
    }
    Ok(out)
}

/// BPF_LINK_UPDATE: puts program `prog` into link `link` atomically (the kernel runs
/// either the old or the new program for each packet or call, never neither). For the
/// link kinds aya has no `attach_to_link` for (cgroup links).
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.link_update.link_fd = link.as_raw_fd() as u32;
    attr.link_update.__bindgen_anon_1.new_prog_fd = prog.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr).map(|_| ())
}
