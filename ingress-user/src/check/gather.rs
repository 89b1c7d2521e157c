//! The I/O edge of `ingress check`: reads the facts [`super::report::build`] turns into
//! rows. Nothing here changes the machine: no program is attached, the interface is
//! only looked at (netlink link dump, ETHTOOL_GDRVINFO), and the feature probes load
//! and close trivial programs and maps (aya's probes).

use std::path::Path;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_map_supported, is_program_supported};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;

use super::report::{self, CAP_BPF, CAP_SYS_ADMIN, Facts, InterfaceFacts, PinnedState, Probes};
use crate::datapath::interface::interface_driver;
use crate::datapath::mounts::Mounts;

/// Gathers every fact in the current network namespace. `interface`: `--interface`,
/// else the interface of the IPv4 default route.
pub async fn gather(interface: Option<&str>, pin_path: &Path) -> Facts {
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| e.to_string())
        .and_then(|s| report::cap_eff(&s).ok_or_else(|| "no CapEff line".to_string()));
    let may_probe = cap_eff.as_ref().is_ok_and(|c| c & (1 << CAP_BPF | 1 << CAP_SYS_ADMIN) != 0);
    let iface = match interface {
        Some(n) => Some((n.to_string(), true)),
        None => default_route_interface().map(|n| (n, false)),
    };
    let interface = match iface {
        Some((name, given)) => Some(interface_facts(&name, given).await),
        None => None,
    };
    Facts {
        kernel_release: kernel_release(),
        btf_vmlinux: Path::new("/sys/kernel/btf/vmlinux").exists(),
        mounts: std::fs::read_to_string("/proc/self/mounts").map(|t| Mounts::parse(&t)).map_err(|e| e.to_string()),
        cap_eff,
        interface,
        pin_path: pin_path.to_path_buf(),
        pinned: pinned_state(pin_path),
        probes: if may_probe { probes() } else { unprobed() },
        kernel_bind: kernel_bind_facts(),
    }
}

/// Delayed binding's pieces, looked up by name in the kernel's BTF (read only).
fn kernel_bind_facts() -> super::kernel_bind::KernelBindFacts {
    use super::kernel_bind::{BPF_LOOP, DYNPTR, SK_ASSIGN_TCP_REQSK};
    let names = [SK_ASSIGN_TCP_REQSK, DYNPTR[0], DYNPTR[1], BPF_LOOP];
    match crate::datapath::kfunc::kernel_has_functions(&names) {
        Some(v) => super::kernel_bind::KernelBindFacts {
            sk_assign_tcp_reqsk: Some(v[0]),
            dynptr: Some(v[1] && v[2]),
            bpf_loop: Some(v[3]),
        },
        None => Default::default(),
    }
}

fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed utsname; release is NUL-terminated by the kernel.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    }
}

/// The interface of the IPv4 default route (/proc/net/route follows the network
/// namespace of the reading process).
fn default_route_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })
}

/// The NIC over netlink (its MTU and, for a veth whose peer is in this namespace, the
/// peer's MTU) and its driver.
async fn interface_facts(name: &str, given: bool) -> InterfaceFacts {
    let mut f = InterfaceFacts { name: name.into(), given, exists: false, driver: None, mtu: None, peer_mtu: None };
    let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
        return f;
    };
    tokio::spawn(conn);
    let Ok(Some(link)) = handle.link().get().match_name(name.to_string()).execute().try_next().await else {
        return f;
    };
    f.exists = true;
    f.driver = interface_driver(name);
    let mut peer = None;
    let mut peer_elsewhere = false;
    for a in &link.attributes {
        match a {
            LinkAttribute::Mtu(m) => f.mtu = Some(*m),
            LinkAttribute::Link(i) => peer = Some(*i),
            LinkAttribute::LinkNetNsId(_) => peer_elsewhere = true,
            _ => {}
        }
    }
    if let (Some(i), false) = (peer, peer_elsewhere)
        && let Ok(Some(p)) = handle.link().get().match_index(i).execute().try_next().await
    {
        f.peer_mtu = p.attributes.iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(*m) } else { None });
    }
    f
}

const PROGRAMS: [(&str, ProgramType); 4] = [
    ("xdp", ProgramType::Xdp),
    ("sched_cls", ProgramType::SchedClassifier),
    ("cgroup_sock_addr", ProgramType::CgroupSockAddr),
    ("sk_skb", ProgramType::SkSkb),
];
const MAPS: [(&str, MapType); 4] = [
    ("lru_hash", MapType::LruHash),
    ("lpm_trie", MapType::LpmTrie),
    ("percpu_array", MapType::PerCpuArray),
    ("ringbuf", MapType::RingBuf),
];

fn probes() -> Probes {
    let prog = |t: ProgramType| Some(is_program_supported(t).map_err(|e| e.to_string()));
    let map = |t: MapType| Some(is_map_supported(t).map_err(|e| e.to_string()));
    Probes {
        programs: PROGRAMS.iter().filter(|(n, _)| *n != "sk_skb").map(|(n, t)| (*n, prog(*t))).collect(),
        maps: MAPS.iter().map(|(n, t)| (*n, map(*t))).collect(),
        sockhash: map(MapType::SockHash),
        sk_skb: prog(ProgramType::SkSkb),
    }
}

fn unprobed() -> Probes {
    Probes {
        programs: PROGRAMS.iter().filter(|(n, _)| *n != "sk_skb").map(|(n, _)| (*n, None)).collect(),
        maps: MAPS.iter().map(|(n, _)| (*n, None)).collect(),
        sockhash: None,
        sk_skb: None,
    }
}

/// What is pinned under `dir`, compared with what this agent's object creates (map
/// type, key and value size, max entries, flags: [`crate::datapath::pins`]):
/// nothing, compatible (the agent adopts it), or each difference. Links pinned there
/// are listed with the maps: a compatible agent puts its programs into them.
pub fn pinned_state(dir: &Path) -> PinnedState {
    let names = match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> =
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
            v.sort();
            v
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return PinnedState::Nothing,
        Err(e) => return PinnedState::Unreadable(e.to_string()),
    };
    if names.is_empty() {
        return PinnedState::Nothing;
    }
    let Some(object) = crate::datapath::OBJECT else {
        return PinnedState::Incompatible {
            differences: vec![
                "this `ingress` has no eBPF object to compare the pins with (build it with `cargo xtask build`)".into(),
            ],
        };
    };
    match crate::datapath::pins::compare_with_object(object, dir) {
        Ok((mismatches, _)) if mismatches.is_empty() => PinnedState::Compatible { objects: names },
        Ok((mismatches, _)) => {
            PinnedState::Incompatible { differences: mismatches.iter().map(|m| m.to_string()).collect() }
        }
        Err(e) => PinnedState::Unreadable(e.to_string()),
    }
}
