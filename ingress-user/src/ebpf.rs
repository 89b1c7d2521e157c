//! The eBPF edge: load the embedded object, attach XDP to the VM NIC (driver mode,
//! generic mode with a warning), forward aya-log records to `tracing`, read the
//! per-CPU counters. All map access of the agent goes through this module.

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, SockHash};
use aya::programs::{SkSkb, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use ingress_common::maps::{
    SPLICE_PEERS_MAP, SPLICE_PROGRAM, SPLICE_SOCKS_MAP, SPLICE_STATS_MAP, SPLICE_USER_PASS_MAP, XDP_PROGRAM,
    XDP_STATS_MAP,
};
use ingress_common::proto;
use ingress_common::splice::{SpliceKey, SplicePeer, SpliceStats};
use ingress_common::stats::{OVERFLOW_PORT, StatsKey, StatsValue, Verdict};

use crate::stats::{XdpCounter, XdpInfo, xdp_counters};

/// The eBPF object built by `cargo xtask build`, if this binary embeds one.
#[cfg(ebpf_object)]
pub static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("INGRESS_EBPF_OBJECT_PATH")));
#[cfg(not(ebpf_object))]
pub static OBJECT: Option<&[u8]> = None;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this `ingress` was built without its eBPF programs: build it with `cargo xtask build`, or run with `--dataplane userspace`"
    )]
    NotEmbedded,
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error(
        "the kernel rejected XDP program {program} (needs BPF and XDP support, and CAP_BPF + CAP_NET_ADMIN or root): {source}"
    )]
    Load { program: &'static str, source: aya::programs::ProgramError },
    #[error(
        "cannot attach XDP to {interface}: driver mode: {driver}; generic (skb) mode: {generic}. Check that the interface exists and that this process has CAP_NET_ADMIN"
    )]
    Attach { interface: String, driver: aya::programs::ProgramError, generic: aya::programs::ProgramError },
    #[error("cannot count possible CPUs for the per-CPU maps: {0}")]
    Cpus(std::io::Error),
    #[error("cannot read aya-log records from the programs: {0}")]
    Logger(String),
    #[error("eBPF map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
}

/// The loaded programs and the maps the agent reads.
pub struct Dataplane {
    pub ebpf: Ebpf,
    pub stats: StatsMap,
    pub xdp: Option<XdpInfo>,
}

/// Typed access to [`XDP_STATS_MAP`].
pub struct StatsMap(PerCpuHashMap<MapData, StatsKey, StatsValue>);

impl StatsMap {
    /// Counters summed over CPUs.
    pub fn read(&self) -> Result<Vec<XdpCounter>, EbpfError> {
        let mut entries = Vec::new();
        for item in self.0.iter() {
            let (k, per_cpu) = item.map_err(|source| EbpfError::Map { map: XDP_STATS_MAP, source })?;
            let (p, b) = per_cpu.iter().fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            entries.push((k, p, b));
        }
        Ok(xdp_counters(entries))
    }

    /// Creates the overflow keys the program counts into once the map is full.
    fn reserve_overflow_keys(&mut self) -> Result<(), EbpfError> {
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| EbpfError::Cpus(e))?;
        for p in [proto::NONE, proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6] {
            let key = StatsKey { dst_port: OVERFLOW_PORT, proto: p, verdict: Verdict::Pass as u8 };
            let zero = PerCpuValues::try_from(vec![StatsValue::default(); ncpu]).map_err(EbpfError::Cpus)?;
            self.0.insert(key, zero, 0).map_err(|source| EbpfError::Map { map: XDP_STATS_MAP, source })?;
        }
        Ok(())
    }
}

/// aya-log level from the `log` max level the tracing subscriber set, so disabled
/// levels cost nothing in the kernel.
fn aya_log_level() -> u8 {
    use aya_log::Level;
    (match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => Level::Error as u8,
        log::LevelFilter::Warn => Level::Warn as u8,
        log::LevelFilter::Info => Level::Info as u8,
        log::LevelFilter::Debug => Level::Debug as u8,
        log::LevelFilter::Trace => Level::Trace as u8,
    }) as u8
}

/// A program of the object as its type (`Xdp`, `SkSkb`, ...).
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EbpfError::Load { program: name, source })
}

/// Takes a map out of the object as its type.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(EbpfError::MissingMap(name))?;
    T::try_from(map).map_err(|source| EbpfError::Map { map: name, source })
}

/// Loads the embedded object and its XDP program (not attached).
pub fn load() -> Result<Dataplane, EbpfError> {
    let object = OBJECT.ok_or(EbpfError::NotEmbedded)?;
    load_from(object)
}

pub fn load_from(object: &[u8]) -> Result<Dataplane, EbpfError> {
    raise_memlock_limit();
    let level = aya_log_level();
    let mut ebpf = EbpfLoader::new().override_global(aya_log::LEVEL, &level, false).load(object)?;
    let prog: &mut Xdp = program(&mut ebpf, XDP_PROGRAM)?;
    prog.load().map_err(|source| EbpfError::Load { program: XDP_PROGRAM, source })?;
    let mut stats = StatsMap(take_map(&mut ebpf, XDP_STATS_MAP)?);
    stats.reserve_overflow_keys()?;
    Ok(Dataplane { ebpf, stats, xdp: None })
}

impl Dataplane {
    /// Attaches XDP to `interface`: driver (native) mode, else generic mode with a warning.
    pub fn attach_xdp(&mut self, interface: &str) -> Result<(), EbpfError> {
        let prog: &mut Xdp = program(&mut self.ebpf, XDP_PROGRAM)?;
        let mut why_generic = None;
        let mode = match prog.attach(interface, XdpMode::Driver) {
            Ok(_) => "driver",
            Err(driver) => match prog.attach(interface, XdpMode::Skb) {
                Ok(_) => {
                    let why = generic_reason(interface, &driver.to_string());
                    tracing::warn!(%interface, "XDP driver mode is not available; using generic (skb) mode, which is slower: {why}");
                    why_generic = Some(why);
                    "generic"
                }
                Err(generic) => {
                    return Err(EbpfError::Attach { interface: interface.into(), driver, generic });
                }
            },
        };
        tracing::info!(%interface, mode, "XDP program attached");
        self.xdp = Some(XdpInfo { interface: interface.into(), mode: mode.into(), why_generic });
        Ok(())
    }

    /// Loads the sk_skb stream-verdict program, attaches it to the SOCKHASH and
    /// returns the maps the agent uses to join sockets.
    pub fn load_splicer(&mut self) -> Result<Splicer, EbpfError> {
        let prog: &mut SkSkb = program(&mut self.ebpf, SPLICE_PROGRAM)?;
        prog.load().map_err(|source| EbpfError::Load { program: SPLICE_PROGRAM, source })?;
        let socks: SockHash<MapData, SpliceKey> = take_map(&mut self.ebpf, SPLICE_SOCKS_MAP)?;
        let prog: &mut SkSkb = program(&mut self.ebpf, SPLICE_PROGRAM)?;
        prog.attach(socks.fd()).map_err(|source| EbpfError::Load { program: SPLICE_PROGRAM, source })?;
        let peers = take_map(&mut self.ebpf, SPLICE_PEERS_MAP)?;
        let stats = take_map(&mut self.ebpf, SPLICE_STATS_MAP)?;
        let user_pass = take_map(&mut self.ebpf, SPLICE_USER_PASS_MAP)?;
        Ok(Splicer { socks, peers, user_pass, stats })
    }

    /// The program's file descriptor, for BPF_PROG_TEST_RUN in the packet tests.
    pub fn xdp_program_fd(&self) -> Result<std::os::fd::RawFd, EbpfError> {
        use std::os::fd::{AsFd, AsRawFd};
        let prog: &Xdp = self
            .ebpf
            .program(XDP_PROGRAM)
            .ok_or(EbpfError::MissingProgram(XDP_PROGRAM))?
            .try_into()
            .map_err(|source| EbpfError::Load { program: XDP_PROGRAM, source })?;
        let fd = prog.fd().map_err(|source| EbpfError::Load { program: XDP_PROGRAM, source })?;
        Ok(fd.as_fd().as_raw_fd())
    }

    /// Forwards aya-log records from the programs to the `log` facade (and so to
    /// `tracing`), on a tokio task.
    pub fn spawn_logger(&mut self) -> Result<(), EbpfError> {
        let logger = aya_log::EbpfLogger::init(&mut self.ebpf).map_err(|e| EbpfError::Logger(e.to_string()))?;
        // SAFETY: the logger owns its ring buffer's fd, which stays open and the same
        // for as long as the logger (now owned by the AsyncFd) lives.
        let mut fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|e| EbpfError::Logger(e.to_string()))?;
        tokio::spawn(async move {
            loop {
                let Ok(mut guard) = fd.readable_mut().await else {
                    return;
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
        Ok(())
    }
}

/// The splicing maps: joined sockets, their peers, the sockets the agent took over,
/// counters.
pub struct Splicer {
    socks: SockHash<MapData, SpliceKey>,
    peers: aya::maps::HashMap<MapData, SpliceKey, SplicePeer>,
    user_pass: aya::maps::HashMap<MapData, SpliceKey, u32>,
    stats: PerCpuArray<MapData, SpliceStats>,
}

impl Splicer {
    /// Joins two sockets: from now on the kernel moves what arrives on one out of
    /// the other. The peer entries go in first, so every segment the verdict program
    /// sees on a joined socket has its entry (its sequence tracking starts with the
    /// first one); a segment that arrives while its peer is not in the SOCKHASH yet
    /// turns that direction over to the agent (see `ingress-ebpf/src/splice.rs`).
    pub fn join(
        &mut self,
        a: (SpliceKey, std::os::fd::RawFd),
        b: (SpliceKey, std::os::fd::RawFd),
    ) -> Result<(), EbpfError> {
        let peers = |source| EbpfError::Map { map: SPLICE_PEERS_MAP, source };
        let entry = |key| SplicePeer { key, ..Default::default() };
        self.peers.insert(a.0, entry(b.0), 0).map_err(peers)?;
        if let Err(e) = self.peers.insert(b.0, entry(a.0), 0) {
            let _ = self.peers.remove(&a.0);
            return Err(peers(e));
        }
        let map = |source| EbpfError::Map { map: SPLICE_SOCKS_MAP, source };
        let socks = self.socks.insert(a.0, a.1, 0).and_then(|()| self.socks.insert(b.0, b.1, 0));
        if let Err(e) = socks {
            self.part(a.0, b.0);
            return Err(map(e));
        }
        Ok(())
    }

    /// Bytes the kernel has moved from joined socket `from` to its peer.
    pub fn redirected_from(&self, from: &SpliceKey) -> u64 {
        self.peers.get(from, 0).map(|p| p.redirected_bytes).unwrap_or(0)
    }

    /// From now on the bytes of joined socket `key` go to the agent, not to the peer.
    pub fn take_over(&mut self, key: SpliceKey) -> Result<(), EbpfError> {
        self.user_pass.insert(key, 1, 0).map_err(|source| EbpfError::Map { map: SPLICE_USER_PASS_MAP, source })
    }

    /// Undoes [`Splicer::join`]: the sockets leave the SOCKHASH first (their bytes
    /// take the normal path again), then their entries.
    pub fn part(&mut self, a: SpliceKey, b: SpliceKey) {
        let _ = self.socks.remove(&a);
        let _ = self.socks.remove(&b);
        for k in [a, b] {
            let _ = self.peers.remove(&k);
            let _ = self.user_pass.remove(&k);
        }
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> SpliceStats {
        let mut total = SpliceStats::default();
        if let Ok(per_cpu) = self.stats.get(&0, 0) {
            for s in per_cpu.iter() {
                total.redirected_bytes += s.redirected_bytes;
                total.redirected_skbs += s.redirected_skbs;
                total.unmatched_skbs += s.unmatched_skbs;
                total.trimmed_bytes += s.trimmed_bytes;
                total.passed_skbs += s.passed_skbs;
                total.layout_mismatches += s.layout_mismatches;
            }
        }
        total
    }
}

/// Why driver-mode XDP was refused on `interface`, with what to check: the kernel's
/// error, and for a veth the MTU rule (driver mode needs a frame that fits one page,
/// so an MTU of about 3,500 bytes at most with 4 KiB pages; a 9000-byte MTU on either
/// end falls back to generic mode).
fn generic_reason(interface: &str, error: &str) -> String {
    let is_veth = interface_driver(interface).as_deref() == Some("veth");
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{interface}/mtu")).ok();
    let mtu = mtu.as_deref().map(str::trim).unwrap_or("?");
    if is_veth {
        format!(
            "driver mode was refused ({error}); {interface} is a veth with MTU {mtu}: a veth takes driver-mode XDP only \
             when the MTU of both ends is at most about 3,500 bytes (one page per frame); lower the MTU (e.g. 1500) \
             or accept generic mode"
        )
    } else {
        format!("driver mode was refused ({error}); the driver of {interface} (MTU {mtu}) may lack native XDP")
    }
}

/// The driver of a network interface (`ethtool -i`: SIOCETHTOOL, ETHTOOL_GDRVINFO).
fn interface_driver(interface: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    let mut info = DrvInfo { cmd: 3, driver: [0; 32], rest: [0; 160] };
    // SAFETY: an ifreq zeroed, with the name copied in (bounded) and a pointer to `info`,
    // which outlives the ioctl; the socket is closed before returning.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        let name = interface.as_bytes();
        if name.len() >= req.ifr_name.len() {
            return None;
        }
        for (d, s) in req.ifr_name.iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; raise it (harmless after).
fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer; failure only matters on old kernels.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_object_or_a_message_saying_how_to_get_it() {
        match OBJECT {
            // built by `cargo xtask build`: a BPF ELF object
            Some(obj) => {
                assert_eq!(&obj[..4], b"\x7fELF");
                assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 247, "e_machine EM_BPF");
            }
            // plain `cargo build`: the agent says what to do
            None => {
                let e = load().err().expect("no object, no load");
                assert!(e.to_string().contains("cargo xtask build"), "{e}");
                assert!(e.to_string().contains("--dataplane userspace"), "{e}");
            }
        }
    }
}
