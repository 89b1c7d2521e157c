//! Delayed binding's pod side, the I/O: finding the network namespace that holds a pod
//! address, and TCX links made from inside it. Network namespaces are found in
//! `/run/netns` (named ones, as `ip netns` and the test topology make them) and in
//! `/proc/<pid>/ns/net` (every process: on k3d a pod's processes run on the VM, so its
//! namespace is some process's), de-duplicated by inode. Each is entered with setns(2)
//! in a thread of its own (a thread's namespace is its own; the thread ends after the
//! scan), its IPv4 addresses listed (getifaddrs, a netlink dump in that namespace) and
//! the interface MTUs read; a TCX link is made there by interface index, which the
//! kernel resolves in the caller's namespace. The links are plain descriptors: closing
//! one ends the attachment (and the kernel ends it when the interface goes).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd};

/// A network namespace, by its nsfs inode, and a path that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    pub inode: u64,
    pub path: PathBuf,
}

/// An interface in some namespace that holds one of the wanted addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub netns: u64,
    pub ifname: String,
    pub ifindex: u32,
    pub mtu: u32,
    pub addrs: Vec<Ipv4Addr>,
}

/// The namespace this thread is in (its inode).
pub fn own_netns() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Every network namespace we can see, once each (not our own).
pub fn namespaces() -> Vec<Netns> {
    let own = own_netns().ok();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            paths.extend(rd.flatten().map(|e| e.path()));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                paths.push(e.path().join("ns/net"));
            }
        }
    }
    for path in paths {
        let Ok(m) = std::fs::metadata(&path) else { continue };
        if Some(m.ino()) == own || !seen.insert(m.ino()) {
            continue;
        }
        out.push(Netns { inode: m.ino(), path });
    }
    out
}

/// Runs `f` in namespace `ns` on a thread of its own.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let path = ns.path.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = std::fs::File::open(&path)?;
            // SAFETY: setns on a descriptor we opened; it changes this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    })
}

/// The interfaces of the current namespace with their IPv4 addresses.
fn interfaces_here() -> io::Result<BTreeMap<String, Vec<Ipv4Addr>>> {
    let mut out: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; every pointer is checked.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = &*p;
            if !a.ifa_addr.is_null() && i32::from((*a.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(a.ifa_addr as *const libc::sockaddr_in);
                let name = std::ffi::CStr::from_ptr(a.ifa_name).to_string_lossy().into_owned();
                out.entry(name).or_default().push(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()));
            }
            p = a.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    Ok(out)
}

/// Index and MTU of `name` in the current namespace.
fn index_and_mtu(name: &str) -> io::Result<(u32, u32)> {
    let c = std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: if_nametoindex reads a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a plain socket for the ioctl, closed by OwnedFd.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: all-zero is a valid ifreq; the name fits (IFNAMSIZ checked below).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU with a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU fills the mtu member.
    Ok((index, unsafe { req.ifr_ifru.ifru_mtu } as u32))
}

/// The value of sysctl `key` (e.g. `net/netfilter/nf_conntrack_tcp_loose`) in the
/// namespace with inode `netns`, trimmed; None when that namespace has no such key (no
/// conntrack there) or is gone.
pub fn sysctl_in(netns: u64, key: &str) -> io::Result<Option<String>> {
    let Some(ns) = namespaces().into_iter().find(|n| n.inode == netns) else {
        return Ok(None);
    };
    let path = format!("/proc/sys/{key}");
    // /proc/sys/net shows the namespace of the reading thread
    in_netns(&ns, || match std::fs::read_to_string(&path) {
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    })
}

/// The interfaces, in every namespace but ours, that hold one of `wanted`.
pub fn find(wanted: &BTreeSet<Ipv4Addr>) -> Vec<PodInterface> {
    let mut out = Vec::new();
    if wanted.is_empty() {
        return out;
    }
    for ns in namespaces() {
        let found = in_netns(&ns, || {
            let mut here = Vec::new();
            for (ifname, addrs) in interfaces_here()? {
                let addrs: Vec<Ipv4Addr> = addrs.into_iter().filter(|a| wanted.contains(a)).collect();
                if addrs.is_empty() || ifname == "lo" {
                    continue;
                }
                let (ifindex, mtu) = index_and_mtu(&ifname)?;
                here.push(PodInterface { netns: ns.inode, ifname, ifindex, mtu, addrs });
            }
            Ok(here)
        });
        match found {
            Ok(v) => out.extend(v),
            // a process that exited, a namespace we may not enter: not a pod's
            Err(e) => tracing::trace!(netns = %ns.path.display(), error = %e, "network namespace not scanned"),
        }
    }
    out
}

/// BPF_LINK_CREATE of a TCX ingress link for `prog` on interface `ifindex` of the
/// current namespace, after the programs already there.
pub fn tcx_ingress_link(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_ifindex = ifindex;
    attr.link_create.attach_type = bpf_attach_type::BPF_TCX_INGRESS as u32;
    // SAFETY: the link_create member is filled; the kernel reads at most the union's size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_LINK_CREATE as libc::c_long,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// A TCX ingress link for `prog` on `ifindex` inside namespace `netns` (its inode).
pub fn tcx_ingress_link_in(netns: u64, prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    let ns = namespaces()
        .into_iter()
        .find(|n| n.inode == netns)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("network namespace {netns} is gone")))?;
    let prog = prog.try_clone_to_owned()?;
    in_netns(&ns, move || {
        use std::os::fd::AsFd;
        tcx_ingress_link(prog.as_fd(), ifindex)
    })
}

/// Ifindex of `name` in the current namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    index_and_mtu(name).map(|(i, _)| i)
}

/// MTU of `name` in the current namespace.
pub fn mtu(name: &str) -> io::Result<u32> {
    index_and_mtu(name).map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_never_a_pods_and_loopback_has_an_mtu() {
        let own = own_netns().unwrap();
        assert!(namespaces().iter().all(|n| n.inode != own));
        let (i, m) = index_and_mtu("lo").unwrap();
        assert!(i >= 1 && m >= 1280, "lo: index {i}, mtu {m}");
        assert!(find(&BTreeSet::new()).is_empty());
        assert!(index_and_mtu("no-such-if0").is_err());
    }
}
