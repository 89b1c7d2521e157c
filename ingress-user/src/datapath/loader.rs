//! Loads the embedded object, attaches XDP to the VM NIC (driver mode, generic mode
//! with the reason), loads the splice program, forwards aya-log records to `tracing`.

use aya::maps::{MapData, SockHash};
use aya::programs::{SkSkb, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use ingress_common::maps::PINNED_MAPS;
use ingress_common::maps::{
    SPLICE_PEERS_MAP, SPLICE_PROGRAM, SPLICE_SOCKS_MAP, SPLICE_STATS_MAP, SPLICE_USER_PASS_MAP, XDP_PROGRAM,
    XDP_STATS_MAP,
};
use ingress_common::splice::SpliceKey;

use super::guard_maps::GuardMaps;
use super::interface::generic_reason;
use super::maps::{Splicer, StatsMap};
use super::pins::Pins;
use super::{EbpfError, OBJECT};
use crate::telemetry::XdpInfo;

/// The loaded programs and the maps the agent reads.
pub struct Dataplane {
    pub ebpf: Ebpf,
    pub stats: StatsMap,
    pub xdp: Option<XdpInfo>,
    /// The XDP guard's rules and counters.
    pub guard: GuardMaps,
    /// Where maps and links are pinned (None: nothing outlives the agent).
    pub pins: Option<Pins>,
    /// The kfunc calls of the object as resolved for this kernel (`datapath/kfunc.rs`).
    pub kfuncs: Vec<super::kfunc::KfuncCall>,
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
pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EbpfError::Load { program: name, source })
}

/// Takes a map out of the object as its type.
pub(super) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
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
    load_with(object, None)
}

/// Loads the embedded object with the [`PINNED_MAPS`] pinned under `pins` (adopted
/// when already pinned and compatible), and links pinned there on attach.
pub fn load_pinned(pins: Pins) -> Result<Dataplane, EbpfError> {
    let object = OBJECT.ok_or(EbpfError::NotEmbedded)?;
    load_with(object, Some(pins))
}

/// Loads `object`; with `pins`, first refuses pinned maps that differ from the
/// object's definitions (aya would reuse them unchecked), then adopts the others as
/// they are (no entry reset) and pins the ones not pinned yet.
pub fn load_with(object: &[u8], pins: Option<Pins>) -> Result<Dataplane, EbpfError> {
    raise_memlock_limit();
    // kfunc calls resolved against this kernel's BTF first: aya 0.14 cannot relocate them.
    let patched = super::kfunc::patch_for_running_kernel(object)?;
    let object = patched.object.as_slice();
    let level = aya_log_level();
    let mut loader = EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, &level, false);
    if let Some(p) = &pins {
        let adopted = p.check_maps(object)?;
        if !adopted.is_empty() {
            tracing::info!(dir = %p.dir().display(), maps = ?adopted, "adopting pinned maps (their entries are kept)");
        }
        for name in PINNED_MAPS {
            loader.map_pin_path(name, p.map_path(name));
        }
    }
    let mut ebpf = loader.load(object)?;
    let prog: &mut Xdp = program(&mut ebpf, XDP_PROGRAM)?;
    prog.load().map_err(|source| EbpfError::Load { program: XDP_PROGRAM, source })?;
    let guard = GuardMaps::take(&mut ebpf)?;
    let mut stats = StatsMap(take_map(&mut ebpf, XDP_STATS_MAP)?, guard.slot_stats_reader()?, guard.slot_table());
    stats.reserve_overflow_keys()?;
    Ok(Dataplane { ebpf, stats, xdp: None, guard, pins, kfuncs: patched.calls })
}

impl Dataplane {
    /// Attaches XDP to `interface`: driver (native) mode, else generic mode with a
    /// warning. With pins: a link pinned for `interface` by an earlier agent gets this
    /// program atomically (BPF_LINK_UPDATE: no packet misses XDP, none sees two
    /// programs); otherwise the new link is pinned.
    pub fn attach_xdp(&mut self, interface: &str) -> Result<(), EbpfError> {
        if let Some(pins) = self.pins.clone()
            && super::adopt::adopt_xdp(self, &pins, interface)?
        {
            return Ok(());
        }
        let prog: &mut Xdp = program(&mut self.ebpf, XDP_PROGRAM)?;
        let mut why_generic = None;
        // a veth: generic mode by choice (see `veth_generic_reason`), driver mode only
        // if generic is refused
        if let Some(why) = super::interface::veth_generic_reason(interface)
            && let Ok(link) = prog.attach(interface, XdpMode::Skb)
        {
            tracing::info!(%interface, mode = "generic", "XDP program attached: {why}");
            self.xdp = Some(XdpInfo { interface: interface.into(), mode: "generic".into(), why_generic: Some(why) });
            if let Some(pins) = self.pins.clone() {
                super::adopt::pin_xdp(self, &pins, interface, link, "generic")?;
            }
            return Ok(());
        }
        let prog: &mut Xdp = program(&mut self.ebpf, XDP_PROGRAM)?;
        let (link, mode) = match prog.attach(interface, XdpMode::Driver) {
            Ok(link) => (link, "driver"),
            Err(driver) => match prog.attach(interface, XdpMode::Skb) {
                Ok(link) => {
                    let why = generic_reason(interface, &driver.to_string());
                    tracing::warn!(%interface, "XDP driver mode is not available; using generic (skb) mode, which is slower: {why}");
                    why_generic = Some(why);
                    (link, "generic")
                }
                Err(generic) => {
                    return Err(EbpfError::Attach { interface: interface.into(), driver, generic });
                }
            },
        };
        tracing::info!(%interface, mode, "XDP program attached");
        self.xdp = Some(XdpInfo { interface: interface.into(), mode: mode.into(), why_generic });
        if let Some(pins) = self.pins.clone() {
            super::adopt::pin_xdp(self, &pins, interface, link, mode)?;
        }
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

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; raise it (harmless after).
fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer; failure only matters on old kernels.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

// L4 forwarding: the two tc programs, attached as aya does it (TCX on kernels >= 6.6,
// else legacy clsact + cls_bpf, for which the clsact qdisc is added first).
impl Dataplane {
    /// Loads the L4 tc programs, attaches `l4_nic` to the ingress of `nic` and
    /// `l4_reply` to the ingress of every interface in `reply_ifaces`, and takes the L4
    /// maps out of the object.
    pub fn attach_l4(&mut self, nic: &str, reply_ifaces: &[String]) -> Result<super::l4_maps::L4Maps, EbpfError> {
        use aya::programs::SchedClassifier;
        use aya::programs::tc::{TcAttachType, qdisc_add_clsact};
        use ingress_common::maps::{L4_NIC_PROGRAM, L4_REPLY_PROGRAM};

        let tcx = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        let pins = self.pins.clone();
        let mut links = Vec::new();
        let mut attach = |ebpf: &mut Ebpf, name: &'static str, iface: &str| -> Result<(), EbpfError> {
            let tc_err = |source| EbpfError::TcAttach { program: name, interface: iface.into(), source };
            let prog: &mut SchedClassifier = program(ebpf, name)?;
            if prog.fd().is_err() {
                prog.load().map_err(|source| EbpfError::Load { program: name, source })?;
            }
            let kind = format!("tc-{name}");
            // A link an earlier agent pinned: this program goes into it atomically
            // (BPF_LINK_UPDATE), so flows keep being forwarded across the restart.
            if let Some(pinned) = pins.as_ref().map(|p| p.pinned_link(&kind, iface)).transpose()?.flatten() {
                let pins = pins.as_ref().expect("pinned link without pins");
                match aya::programs::tc::SchedClassifierLink::try_from(pinned) {
                    Ok(link) => match prog.attach_to_link(link) {
                        Ok(_) => {
                            tracing::info!(interface = %iface, program = name, "tc program put into the link pinned by an earlier agent (no gap)");
                            links.push(super::l4_maps::L4Link { interface: iface.into(), program: name });
                            return Ok(());
                        }
                        Err(aya::programs::ProgramError::SyscallError(e))
                            if e.io_error.raw_os_error() == Some(libc::ENOLINK) =>
                        {
                            // its interface is gone (re-created since): attach anew
                            pins.remove_link_pin(&kind, iface);
                        }
                        Err(source) => return Err(tc_err(source)),
                    },
                    Err(_) => pins.remove_link_pin(&kind, iface),
                }
            }
            if !tcx {
                // Legacy tc needs the clsact qdisc; it may be there already.
                if let Err(e) = qdisc_add_clsact(iface) {
                    tracing::debug!(%iface, error = %e, "clsact qdisc not added (already there?)");
                }
            }
            let id = prog.attach(iface, TcAttachType::Ingress).map_err(tc_err)?;
            tracing::info!(interface = %iface, program = name, mode = if tcx { "tcx" } else { "legacy tc" }, "tc program attached (ingress)");
            if let Some(pins) = &pins {
                let link = prog.take_link(id).map_err(tc_err)?;
                match aya::programs::links::FdLink::try_from(link) {
                    // the pin holds the attachment from now on
                    Ok(fd) => drop(pins.pin_link(&kind, iface, fd)?),
                    Err(_) => tracing::warn!(
                        interface = %iface,
                        program = name,
                        "legacy tc (kernel < 6.6) has no BPF link to pin: L4 forwarding on this interface stops with the agent"
                    ),
                }
            }
            links.push(super::l4_maps::L4Link { interface: iface.into(), program: name });
            Ok(())
        };
        attach(&mut self.ebpf, L4_NIC_PROGRAM, nic)?;
        for iface in reply_ifaces {
            attach(&mut self.ebpf, L4_REPLY_PROGRAM, iface)?;
        }
        let mut maps = super::l4_maps::L4Maps::take(&mut self.ebpf)?;
        maps.links = links;
        maps.tc_mode = if tcx { "tcx" } else { "legacy tc (clsact)" };
        Ok(maps)
    }

    /// A tc program's file descriptor, for BPF_PROG_TEST_RUN in the packet tests
    /// (loaded here if it is not yet).
    pub fn tc_program_fd(&mut self, name: &'static str) -> Result<std::os::fd::RawFd, EbpfError> {
        use aya::programs::SchedClassifier;
        use std::os::fd::{AsFd, AsRawFd};
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| EbpfError::Load { program: name, source })?;
        }
        let fd = prog.fd().map_err(|source| EbpfError::Load { program: name, source })?;
        Ok(fd.as_fd().as_raw_fd())
    }
}
