//! Pure: gathered [`Facts`] -> the preflight [`Report`] (one [`Row`] per requirement,
//! each ok / fallback / blocker with what to do), its table and its JSON. Knows
//! nothing of the kernel; [`super::gather`] fills the facts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::datapath::mounts::{BPFFS_DIR, Mounts};

/// Capability bits (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The oldest kernel the data path is built for; features past it are rows of their own.
pub const MIN_KERNEL: (u32, u32) = (5, 15);
/// TCX (tc attachment through BPF links) arrived in 6.6; aya 0.14 uses it from there on.
pub const TCX_KERNEL: (u32, u32) = (6, 6);

/// Drivers with native (driver-mode) XDP in mainline Linux. Anything else gets generic
/// (skb) XDP, which works everywhere but costs an skb per packet.
pub const NATIVE_XDP_DRIVERS: &[&str] = &[
    "veth",
    "virtio_net",
    "tun",
    "bond",
    "netdevsim",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "ice",
    "igb",
    "igc",
    "idpf",
    "mlx4_en",
    "mlx5_core",
    "bnxt_en",
    "qede",
    "nfp",
    "ena",
    "gve",
    "hv_netvsc",
    "sfc",
    "thunder-nicvf",
    "mvneta",
    "mvpp2",
    "stmmac",
    "dpaa2-eth",
    "enetc",
    "fec",
    "lan966x-switch",
    "cpsw",
    "netsec",
    "ionic",
    "octeontx2-nicpf",
    "atlantic",
    "mana",
    "xen-netfront",
    "tsnep",
    "fbnic",
    "bcmgenet",
];

/// Largest veth MTU (of the peer, which sends the frames) that still takes driver-mode
/// XDP with 4 KiB pages: a frame fits one page, 4096 - 256 (XDP headroom) - 320
/// (skb_shared_info) - 14 (Ethernet header) = 3506. Measured on 6.18: 3506 attaches in
/// driver mode, 3507 falls back to generic.
pub const VETH_XDP_MAX_MTU: u32 = 3506;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fallback,
    Blocker,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fallback => "fallback",
            Status::Blocker => "blocker",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it; empty when nothing is needed.
    pub action: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Names of the rows that are blockers (non-zero exit when not empty).
    pub blockers: Vec<String>,
    /// Names of the rows where something falls back (slower or reduced, still works).
    pub fallbacks: Vec<String>,
}

/// The NIC as found (no program attached: nothing about the interface is changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceFacts {
    pub name: String,
    /// `--interface`, or the interface of the IPv4 default route.
    pub given: bool,
    pub exists: bool,
    /// ETHTOOL_GDRVINFO; `None` when the ioctl fails.
    pub driver: Option<String>,
    pub mtu: Option<u32>,
    /// For a veth: the MTU of the other end, when it is in this namespace.
    pub peer_mtu: Option<u32>,
}

/// What is pinned under `--pin-path` and whether it matches what this agent would
/// create. Filled by [`super::gather::pinned_state`] (the pin compatibility check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinnedState {
    /// Nothing pinned: the agent starts fresh.
    Nothing,
    /// Pinned maps/links that match (type, key/value size, entries, flags): adopted.
    Compatible { objects: Vec<String> },
    /// Pins that differ, each difference said.
    Incompatible { differences: Vec<String> },
    /// The directory could not be read.
    Unreadable(String),
}

/// Kernel feature probes (aya's `is_program_supported` / `is_map_supported`): `None`
/// when not probed (missing privileges), `Some(Err)` when the probe failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probes {
    pub programs: Vec<(&'static str, Option<Result<bool, String>>)>,
    pub maps: Vec<(&'static str, Option<Result<bool, String>>)>,
    pub sockhash: Option<Result<bool, String>>,
    pub sk_skb: Option<Result<bool, String>>,
}

/// Everything the report is built from.
#[derive(Clone, Debug)]
pub struct Facts {
    /// `uname -r`.
    pub kernel_release: String,
    pub btf_vmlinux: bool,
    pub mounts: Result<Mounts, String>,
    /// CapEff of /proc/self/status.
    pub cap_eff: Result<u64, String>,
    /// `None`: no --interface and no default route.
    pub interface: Option<InterfaceFacts>,
    pub pin_path: PathBuf,
    pub pinned: PinnedState,
    pub probes: Probes,
    /// Delayed binding's kernel pieces (`--bind-in-kernel`).
    pub kernel_bind: super::kernel_bind::KernelBindFacts,
}

/// `"6.18.0-1-amd64"` -> (6, 18).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The CapEff hex mask of /proc/self/status.
pub fn cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

fn row(name: &str, status: Status, detail: impl Into<String>, action: impl Into<String>) -> Row {
    Row { name: name.into(), status, detail: detail.into(), action: action.into() }
}

/// Builds the report: one row per requirement, in a fixed order.
pub fn build(f: &Facts) -> Report {
    let version = kernel_version(&f.kernel_release);
    let mut rows = vec![kernel_row(&f.kernel_release, version), btf_row(f.btf_vmlinux)];
    let caps = f.cap_eff.as_ref().ok().copied();
    let has = |bit: u32| caps.map(|c| c & (1u64 << bit) != 0);
    rows.push(bpffs_row(&f.mounts, has(CAP_SYS_ADMIN)));
    rows.push(cgroup_row(&f.mounts));
    rows.extend(cap_rows(&f.cap_eff));
    rows.extend(probe_rows(&f.probes));
    rows.push(xdp_row(f.interface.as_ref()));
    rows.push(tc_row(version));
    rows.push(sockmap_row(&f.probes));
    rows.push(pinned_row(&f.pin_path, &f.pinned));
    rows.extend(super::kernel_bind::rows(&f.kernel_bind));
    let names = |s: Status| rows.iter().filter(|r| r.status == s).map(|r| r.name.clone()).collect();
    Report { blockers: names(Status::Blocker), fallbacks: names(Status::Fallback), rows }
}

fn kernel_row(release: &str, v: Option<(u32, u32)>) -> Row {
    match v {
        Some(v) if v >= MIN_KERNEL => row("kernel", Status::Ok, format!("Linux {release}"), ""),
        Some(_) => row(
            "kernel",
            Status::Blocker,
            format!(
                "Linux {release} is older than {}.{}, the oldest the data path is built for",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            "upgrade the kernel, or run with --dataplane userspace (no eBPF)",
        ),
        None => row(
            "kernel",
            Status::Fallback,
            format!("cannot read a version from `{release}`; the feature rows below are probed instead"),
            "",
        ),
    }
}

fn btf_row(btf: bool) -> Row {
    if btf {
        row("btf", Status::Ok, "/sys/kernel/btf/vmlinux present", "")
    } else {
        row(
            "btf",
            Status::Fallback,
            "no /sys/kernel/btf/vmlinux: the programs need no CO-RE relocations and load without it, but bpftool and \
             the verifier's messages show no kernel types",
            "enable CONFIG_DEBUG_INFO_BTF for a kernel with BTF (optional)",
        )
    }
}

fn bpffs_row(mounts: &Result<Mounts, String>, sys_admin: Option<bool>) -> Row {
    match mounts {
        Err(e) => {
            row("bpffs", Status::Blocker, format!("cannot read /proc/mounts: {e}"), "run on a host with /proc mounted")
        }
        Ok(m) if m.bpffs_at(std::path::Path::new(BPFFS_DIR)) => {
            row("bpffs", Status::Ok, format!("bpffs mounted at {BPFFS_DIR}"), "")
        }
        Ok(_) if sys_admin == Some(false) => row(
            "bpffs",
            Status::Blocker,
            format!(
                "no bpffs at {BPFFS_DIR}, and without CAP_SYS_ADMIN the agent cannot mount it to pin its maps and links"
            ),
            format!("mount it: `mount -t bpf bpf {BPFFS_DIR}` (or run the agent as root)"),
        ),
        Ok(_) => row(
            "bpffs",
            Status::Fallback,
            format!("no bpffs at {BPFFS_DIR}: the agent mounts it at start"),
            format!("optional: mount it at boot (`bpf {BPFFS_DIR} bpf defaults 0 0` in /etc/fstab)"),
        ),
    }
}

fn cgroup_row(mounts: &Result<Mounts, String>) -> Row {
    match mounts.as_ref().ok().and_then(Mounts::cgroup2_root) {
        Some(p) => {
            row("cgroup2", Status::Ok, format!("cgroup v2 mounted at {} (the --cgroup default)", p.display()), "")
        }
        None => row(
            "cgroup2",
            Status::Blocker,
            "no cgroup v2 mount in /proc/mounts: the connect hooks that serve L4 ports to clients on this host need one",
            "mount it (`mount -t cgroup2 none /sys/fs/cgroup/unified`), or boot with systemd.unified_cgroup_hierarchy=1",
        ),
    }
}

fn cap_rows(cap_eff: &Result<u64, String>) -> Vec<Row> {
    let caps = match cap_eff {
        Ok(c) => *c,
        Err(e) => {
            return vec![row(
                "capabilities",
                Status::Blocker,
                format!("cannot read CapEff from /proc/self/status: {e}"),
                "run on a host with /proc mounted",
            )];
        }
    };
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    let sys_admin = has(CAP_SYS_ADMIN);
    let mut rows = Vec::new();
    let covered =
        |name: &str| row(name, Status::Ok, format!("not in CapEff ({caps:#x}), but CAP_SYS_ADMIN covers it"), "");
    let present = |name: &str| row(name, Status::Ok, "in the effective set", "");
    rows.push(match (has(CAP_BPF), sys_admin) {
        (true, _) => present("cap_bpf"),
        (false, true) => covered("cap_bpf"),
        (false, false) => row(
            "cap_bpf",
            Status::Blocker,
            "missing: the programs and maps cannot be loaded",
            "run as root, or grant CAP_BPF (systemd: AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN)",
        ),
    });
    rows.push(if has(CAP_NET_ADMIN) {
        present("cap_net_admin")
    } else {
        row(
            "cap_net_admin",
            Status::Blocker,
            "missing: XDP, tc, cgroup and sockmap programs cannot be loaded or attached, routes cannot be added",
            "run as root, or grant CAP_NET_ADMIN",
        )
    });
    rows.push(if sys_admin {
        present("cap_sys_admin")
    } else {
        row(
            "cap_sys_admin",
            Status::Fallback,
            "missing: the agent cannot mount bpffs, and `ingress detach` cannot look BPF objects up by id (it finds them by \
             their pins only)",
            "grant CAP_SYS_ADMIN for those, or mount bpffs beforehand",
        )
    });
    rows.push(match (has(CAP_PERFMON), sys_admin) {
        (true, _) => present("cap_perfmon"),
        (false, true) => covered("cap_perfmon"),
        (false, false) => row(
            "cap_perfmon",
            Status::Fallback,
            "missing: the verifier loads the programs with the Spectre v1 mitigations of unprivileged code (slower, and \
             some pointer arithmetic is refused)",
            "grant CAP_PERFMON",
        ),
    });
    rows
}

fn probe_rows(p: &Probes) -> Vec<Row> {
    let mut rows = Vec::new();
    for (kind, list) in [("program", &p.programs), ("map", &p.maps)] {
        for (what, r) in list.iter() {
            let name = format!("{kind}:{what}");
            rows.push(match r {
                Some(Ok(true)) => row(&name, Status::Ok, "the kernel loads this type", ""),
                Some(Ok(false)) => row(
                    &name,
                    Status::Blocker,
                    format!("the kernel does not support BPF {kind} type {what}"),
                    "use a kernel built with it (a distribution kernel >= 5.15 has it), or --dataplane userspace",
                ),
                Some(Err(e)) => row(&name, Status::Fallback, format!("probe failed: {e}; assumed present"), ""),
                None => row(
                    &name,
                    Status::Fallback,
                    "not probed: loading a probe needs CAP_BPF (see the capability rows); assumed present",
                    "run `ingress check` as the agent's user",
                ),
            });
        }
    }
    rows
}

fn xdp_row(i: Option<&InterfaceFacts>) -> Row {
    let Some(i) = i else {
        return row(
            "xdp",
            Status::Fallback,
            "no --interface and no IPv4 default route: the NIC is unknown",
            "give --interface IFACE (the VM's NIC)",
        );
    };
    let whose = if i.given { format!("--interface {}", i.name) } else { format!("{} (default route)", i.name) };
    if !i.exists {
        return row(
            "xdp",
            Status::Blocker,
            format!("{whose}: no such interface in this network namespace"),
            "give the name of the VM's NIC (`ip link`)",
        );
    }
    let Some(driver) = i.driver.as_deref() else {
        return row(
            "xdp",
            Status::Fallback,
            format!("{whose}: the driver cannot be read (ETHTOOL_GDRVINFO); the agent tries driver mode, then generic"),
            "",
        );
    };
    if driver == "veth" {
        // the agent attaches to a veth in generic mode by choice, whatever the MTU
        // (datapath/interface.rs: veth_generic_reason)
        return row(
            "xdp",
            Status::Ok,
            format!(
                "{whose}: veth, MTU {} (peer {}): generic (skb) XDP by choice (on a veth, driver mode turns GSO off on \
                 the peer and copies every packet; generic mode keeps bulk transfers into the agent fast)",
                opt(i.mtu),
                opt(i.peer_mtu)
            ),
            "",
        );
    }
    if NATIVE_XDP_DRIVERS.contains(&driver) {
        row("xdp", Status::Ok, format!("{whose}: driver {driver} has native (driver) XDP"), "")
    } else {
        row(
            "xdp",
            Status::Fallback,
            format!("{whose}: driver {driver} is not known to have native XDP: generic (skb) XDP, slower"),
            "use a NIC with a native-XDP driver (e.g. virtio_net, ixgbe, i40e, mlx5_core) for full speed",
        )
    }
}

fn opt(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

fn tc_row(v: Option<(u32, u32)>) -> Row {
    match v {
        Some(v) if v >= TCX_KERNEL => row("tc", Status::Ok, "TCX (tc through BPF links, kernel >= 6.6)", ""),
        Some(_) => row(
            "tc",
            Status::Fallback,
            "kernel < 6.6: no TCX; the L4 programs attach through a clsact qdisc (legacy tc, netlink) instead",
            "",
        ),
        None => row("tc", Status::Fallback, "kernel version unknown: TCX is tried, legacy tc used if it fails", ""),
    }
}

fn sockmap_row(p: &Probes) -> Row {
    match (&p.sockhash, &p.sk_skb) {
        (Some(Ok(true)), Some(Ok(true))) => {
            row("sockmap", Status::Ok, "SOCKHASH and sk_skb stream verdict: joined sockets spliced in the kernel", "")
        }
        (Some(Ok(false)), _) | (_, Some(Ok(false))) => row(
            "sockmap",
            Status::Fallback,
            "no SOCKHASH / sk_skb (CONFIG_BPF_STREAM_PARSER): upgraded connections are copied in user space",
            "use a kernel with CONFIG_BPF_STREAM_PARSER=y for in-kernel splicing",
        ),
        _ => row("sockmap", Status::Fallback, "not probed (needs CAP_BPF); if missing, joined sockets are copied", ""),
    }
}

fn pinned_row(dir: &std::path::Path, p: &PinnedState) -> Row {
    let d = dir.display();
    match p {
        PinnedState::Nothing => row("pinned", Status::Ok, format!("nothing pinned under {d}: a fresh start"), ""),
        PinnedState::Compatible { objects } => row(
            "pinned",
            Status::Ok,
            format!(
                "{} pinned object(s) under {d} match; the agent adopts them: {}",
                objects.len(),
                objects.join(", ")
            ),
            "",
        ),
        PinnedState::Incompatible { differences } => row(
            "pinned",
            Status::Blocker,
            format!("pinned state under {d} differs from this agent's: {}", differences.join("; ")),
            format!("`ingress detach --pin-path {d}` (drops the pinned flows), then start the agent"),
        ),
        PinnedState::Unreadable(e) => row(
            "pinned",
            Status::Blocker,
            format!("cannot read {d}: {e}"),
            format!("check the permissions of {d}, or give another --pin-path"),
        ),
    }
}

/// The report as a table: NAME STATUS DETAIL, the action under its row, and a summary.
pub fn format_table(r: &Report) -> String {
    let w = r.rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<w$}  {:<8}  DETAIL\n", "NAME", "STATUS");
    for row in &r.rows {
        out += &format!("{:<w$}  {:<8}  {}\n", row.name, row.status.as_str(), row.detail);
        if !row.action.is_empty() {
            out += &format!("{:<w$}  {:<8}  -> {}\n", "", "", row.action);
        }
    }
    out += &match (r.blockers.len(), r.fallbacks.len()) {
        (0, 0) => "ready: everything runs at full speed\n".to_string(),
        (0, _) => format!("ready, with fallbacks: {}\n", r.fallbacks.join(", ")),
        (_, _) => format!("NOT ready: blockers: {}\n", r.blockers.join(", ")),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CAPS: u64 = (1 << CAP_BPF) | (1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN) | (1 << CAP_PERFMON);

    fn veth(mtu: u32, peer: u32) -> InterfaceFacts {
        InterfaceFacts {
            name: "eth0".into(),
            given: true,
            exists: true,
            driver: Some("veth".into()),
            mtu: Some(mtu),
            peer_mtu: Some(peer),
        }
    }

    fn good() -> Facts {
        Facts {
            kernel_release: "6.18.0-1-amd64".into(),
            btf_vmlinux: true,
            mounts: Ok(Mounts::parse("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n")),
            cap_eff: Ok(ALL_CAPS),
            interface: Some(veth(1500, 1500)),
            pin_path: "/sys/fs/bpf/ebpf-ingress".into(),
            pinned: PinnedState::Nothing,
            probes: Probes {
                programs: vec![("xdp", Some(Ok(true))), ("sched_cls", Some(Ok(true)))],
                maps: vec![("lru_hash", Some(Ok(true)))],
                sockhash: Some(Ok(true)),
                sk_skb: Some(Ok(true)),
            },
            kernel_bind: crate::check::kernel_bind::KernelBindFacts::all_present(),
        }
    }

    fn status(r: &Report, name: &str) -> Status {
        r.rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}: {r:?}")).status
    }

    fn only(r: &Report, name: &str, s: Status) {
        assert_eq!(status(r, name), s, "{r:#?}");
        let others: Vec<_> = r.rows.iter().filter(|x| x.name != name && x.status != Status::Ok).collect();
        assert!(others.is_empty(), "only {name} changes: {others:#?}");
    }

    #[test]
    fn a_good_host_is_all_ok_and_ready() {
        let r = build(&good());
        assert!(r.rows.iter().all(|r| r.status == Status::Ok), "{r:#?}");
        assert!(r.blockers.is_empty() && r.fallbacks.is_empty());
        let names: Vec<&str> = r.rows.iter().map(|r| r.name.as_str()).collect();
        for want in [
            "kernel",
            "btf",
            "bpffs",
            "cgroup2",
            "cap_bpf",
            "cap_net_admin",
            "cap_sys_admin",
            "cap_perfmon",
            "xdp",
            "tc",
            "sockmap",
            "pinned",
        ] {
            assert!(names.contains(&want), "row {want} in {names:?}");
        }
        assert!(format_table(&r).ends_with("ready: everything runs at full speed\n"));
    }

    #[test]
    fn kernel_rows() {
        assert_eq!(kernel_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(kernel_version("5.15"), Some((5, 15)));
        assert_eq!(kernel_version("weird"), None);
        let mut f = good();
        f.kernel_release = "5.10.0-28-amd64".into();
        let r = build(&f);
        assert_eq!(status(&r, "kernel"), Status::Blocker);
        assert_eq!(status(&r, "tc"), Status::Fallback, "no TCX before 6.6");
        assert_eq!(r.blockers, ["kernel"]);
        f.kernel_release = "6.1.0-18-amd64".into();
        only(&build(&f), "tc", Status::Fallback);
        f.kernel_release = "custom".into();
        let r = build(&f);
        assert_eq!((status(&r, "kernel"), status(&r, "tc")), (Status::Fallback, Status::Fallback));
    }

    #[test]
    fn no_btf_is_a_fallback() {
        let mut f = good();
        f.btf_vmlinux = false;
        only(&build(&f), "btf", Status::Fallback);
    }

    #[test]
    fn bpffs_missing_is_mounted_by_the_agent_unless_it_lacks_cap_sys_admin() {
        let mut f = good();
        f.mounts = Ok(Mounts::parse("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\nbpf /run/other bpf rw 0 0\n"));
        only(&build(&f), "bpffs", Status::Fallback);
        f.cap_eff = Ok(ALL_CAPS & !(1 << CAP_SYS_ADMIN));
        let r = build(&f);
        assert_eq!(status(&r, "bpffs"), Status::Blocker);
        assert_eq!(status(&r, "cap_sys_admin"), Status::Fallback);
        f.mounts = Err("EACCES".into());
        assert_eq!(status(&build(&f), "bpffs"), Status::Blocker);
    }

    #[test]
    fn no_cgroup2_is_a_blocker() {
        let mut f = good();
        f.mounts = Ok(Mounts::parse("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n"));
        let r = build(&f);
        only(&r, "cgroup2", Status::Blocker);
        assert!(format_table(&r).contains("NOT ready: blockers: cgroup2"));
    }

    #[test]
    fn capabilities_blockers_fallbacks_and_sys_admin_covering() {
        let mut f = good();
        f.cap_eff = Ok(1 << CAP_NET_ADMIN | 1 << CAP_SYS_ADMIN);
        let r = build(&f);
        assert!(r.blockers.is_empty() && r.fallbacks.is_empty(), "CAP_SYS_ADMIN covers BPF and PERFMON: {r:#?}");
        f.cap_eff = Ok(1 << CAP_NET_ADMIN | 1 << CAP_BPF);
        let r = build(&f);
        assert_eq!(r.fallbacks, ["cap_sys_admin", "cap_perfmon"]);
        f.cap_eff = Ok(1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_SYS_ADMIN);
        only(&build(&f), "cap_net_admin", Status::Blocker);
        f.cap_eff = Ok(0);
        let r = build(&f);
        assert_eq!(r.blockers, ["cap_bpf", "cap_net_admin"]);
        f.cap_eff = Err("no /proc".into());
        assert_eq!(build(&f).blockers, ["capabilities"]);
        assert_eq!(cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"), Some(0x1ff_ffff_ffff));
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn probes_missing_type_is_a_blocker_unprobed_a_fallback() {
        let mut f = good();
        f.probes.programs[1].1 = Some(Ok(false));
        only(&build(&f), "program:sched_cls", Status::Blocker);
        f.probes.programs[1].1 = None;
        only(&build(&f), "program:sched_cls", Status::Fallback);
        f.probes.programs[1].1 = Some(Err("EINVAL".into()));
        only(&build(&f), "program:sched_cls", Status::Fallback);
    }

    #[test]
    fn xdp_rows_by_driver_mtu_and_existence() {
        let mut f = good();
        // a veth: generic mode by choice, whatever the MTUs
        for (mtu, peer) in [(1500, 9000), (VETH_XDP_MAX_MTU, VETH_XDP_MAX_MTU), (VETH_XDP_MAX_MTU + 1, 1500)] {
            f.interface = Some(veth(mtu, peer));
            let r = build(&f);
            only(&r, "xdp", Status::Ok);
            let detail = format!("MTU {mtu} (peer {peer}): generic (skb) XDP by choice");
            assert!(r.rows.iter().any(|r| r.name == "xdp" && r.detail.contains(&detail)), "{r:#?}");
        }
        f.interface = Some(InterfaceFacts { peer_mtu: None, ..veth(1500, 0) });
        only(&build(&f), "xdp", Status::Ok);
        f.interface = Some(InterfaceFacts { driver: Some("e1000".into()), ..veth(1500, 0) });
        only(&build(&f), "xdp", Status::Fallback);
        f.interface = Some(InterfaceFacts { driver: Some("virtio_net".into()), peer_mtu: None, ..veth(9000, 0) });
        only(&build(&f), "xdp", Status::Ok);
        f.interface = Some(InterfaceFacts { exists: false, driver: None, mtu: None, peer_mtu: None, ..veth(0, 0) });
        let r = build(&f);
        only(&r, "xdp", Status::Blocker);
        assert!(r.rows.iter().any(|r| r.detail == "--interface eth0: no such interface in this network namespace"));
        f.interface = None;
        only(&build(&f), "xdp", Status::Fallback);
    }

    #[test]
    fn no_sockmap_falls_back_to_copying() {
        let mut f = good();
        f.probes.sockhash = Some(Ok(false));
        only(&build(&f), "sockmap", Status::Fallback);
    }

    #[test]
    fn pinned_state_rows() {
        let mut f = good();
        f.pinned = PinnedState::Compatible { objects: vec!["conntrack".into()] };
        only(&build(&f), "pinned", Status::Ok);
        f.pinned =
            PinnedState::Incompatible { differences: vec!["conntrack: max_entries 65536, expected 262144".into()] };
        let r = build(&f);
        only(&r, "pinned", Status::Blocker);
        let row = r.rows.iter().find(|r| r.name == "pinned").unwrap();
        assert!(row.detail.contains("max_entries 65536"), "{row:?}");
        assert!(row.action.contains("ingress detach --pin-path /sys/fs/bpf/ebpf-ingress"), "{row:?}");
        f.pinned = PinnedState::Unreadable("EACCES".into());
        only(&build(&f), "pinned", Status::Blocker);
    }

    #[test]
    fn json_round_trips_with_lowercase_statuses() {
        let mut f = good();
        f.btf_vmlinux = false;
        let r = build(&f);
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains(r#""status":"fallback""#), "{j}");
        let back: Report = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }
}
