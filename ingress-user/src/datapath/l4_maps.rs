//! The L4 maps as the agent uses them: carries out the operations of
//! [`super::l4::plan`] in their order, reads the per-service counters and the
//! conntrack table, and sweeps expired flows. What to write is decided in
//! [`super::l4`].

use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use ingress_common::l4::{L4CtEntry, L4CtKey, L4Endpoint, L4Frontend, L4Service, L4Stats, MAGLEV_M};
use ingress_common::maps::{L4_CT_MAP, L4_ENDPOINTS_MAP, L4_MAGLEV_MAP, L4_SERVICES_MAP, L4_STATS_MAP};

use super::EbpfError;
use super::l4::{L4Model, L4Op, Programmed, plan, sum_stats, sweep};

/// A tc program the agent attached: interface and program name (the link lives in the
/// program, inside the `Ebpf`, or in its pin under `--pin-path`).
#[derive(Debug)]
pub struct L4Link {
    pub interface: String,
    pub program: &'static str,
}

pub struct L4Maps {
    services: HashMap<MapData, L4Frontend, L4Service>,
    maglev: Array<MapData, u32>,
    endpoints: HashMap<MapData, u32, L4Endpoint>,
    ct: HashMap<MapData, L4CtKey, L4CtEntry>,
    stats: PerCpuArray<MapData, L4Stats>,
    programmed: Programmed,
    /// How TCX or legacy tc attached the programs, for logs and `/stats`.
    pub links: Vec<L4Link>,
    pub tc_mode: &'static str,
}

fn err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

impl L4Maps {
    /// Takes the L4 maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, EbpfError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, EbpfError> {
            let map = ebpf.take_map(name).ok_or(EbpfError::MissingMap(name))?;
            T::try_from(map).map_err(err(name))
        }
        Ok(Self {
            services: take(ebpf, L4_SERVICES_MAP)?,
            maglev: take(ebpf, L4_MAGLEV_MAP)?,
            endpoints: take(ebpf, L4_ENDPOINTS_MAP)?,
            ct: take(ebpf, L4_CT_MAP)?,
            stats: take(ebpf, L4_STATS_MAP)?,
            programmed: Programmed::default(),
            links: Vec::new(),
            tc_mode: "",
        })
    }

    /// Programs the maps for `model` served on `frontends`; returns the number of map
    /// operations. On an error the operations before it stay applied (each one leaves
    /// the maps consistent) and the next sync starts over from the same state.
    pub fn sync(&mut self, model: &L4Model, frontends: &[Ipv4Addr]) -> Result<usize, EbpfError> {
        let (ops, next) = plan(&self.programmed, model, frontends);
        for op in &ops {
            self.apply(op)?;
        }
        self.programmed = next;
        Ok(ops.len())
    }

    fn apply(&mut self, op: &L4Op) -> Result<(), EbpfError> {
        match op {
            L4Op::PutEndpoint(id, e) => self.endpoints.insert(id, e, 0).map_err(err(L4_ENDPOINTS_MAP)),
            L4Op::PutTable { row, slots } => {
                let base = row * MAGLEV_M;
                for (i, id) in slots.iter().enumerate() {
                    self.maglev.set(base + i as u32, id, 0).map_err(err(L4_MAGLEV_MAP))?;
                }
                Ok(())
            }
            L4Op::PutService(f, s) => self.services.insert(f, s, 0).map_err(err(L4_SERVICES_MAP)),
            L4Op::DeleteService(f) => self.services.remove(f).map_err(err(L4_SERVICES_MAP)),
            L4Op::DeleteEndpoint(id) => self.endpoints.remove(id).map_err(err(L4_ENDPOINTS_MAP)),
        }
    }

    /// Counters of service `id`, summed over CPUs.
    pub fn stats(&self, id: u32) -> Result<L4Stats, EbpfError> {
        let per_cpu = self.stats.get(&id, 0).map_err(err(L4_STATS_MAP))?;
        Ok(sum_stats(per_cpu.iter()))
    }

    /// Every conntrack entry (a snapshot; the programs keep changing it).
    pub fn conntrack(&self) -> Vec<(L4CtKey, L4CtEntry)> {
        self.ct.iter().filter_map(Result::ok).collect()
    }

    /// Deletes expired flows; returns how many entries went.
    pub fn sweep(&mut self, now_ns: u64) -> usize {
        let gone = sweep(&self.conntrack(), now_ns);
        gone.iter()
            .filter(|k| {
                // A packet may have refreshed the flow since the snapshot: read it again.
                let still = match self.ct.get(k, 0) {
                    Ok(e) => {
                        k.dir != ingress_common::l4::CT_DIR_ORIG || ingress_common::l4::ct_expired(&e, monotonic_ns())
                    }
                    Err(_) => false,
                };
                still && self.ct.remove(k).is_ok()
            })
            .count()
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the programs' `bpf_ktime_get_coarse_ns`
/// (which lags it by less than a tick).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The running L4 data path: the maps, the mappings, the frontend addresses; the route
/// source calls [`L4Runtime::sync`] with every published set of resources.
pub struct L4Runtime {
    maps: std::sync::Mutex<L4Maps>,
    mappings: Vec<super::l4::L4Mapping>,
    frontends: Vec<Ipv4Addr>,
    reply_ifaces: Vec<String>,
    model: std::sync::Mutex<L4Model>,
    programmed: std::sync::atomic::AtomicU64,
}

impl L4Runtime {
    pub fn new(
        maps: L4Maps,
        mappings: Vec<super::l4::L4Mapping>,
        frontends: Vec<Ipv4Addr>,
        reply_ifaces: Vec<String>,
    ) -> Self {
        Self {
            maps: std::sync::Mutex::new(maps),
            mappings,
            frontends,
            reply_ifaces,
            model: std::sync::Mutex::new(L4Model::default()),
            programmed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Resolves the mappings with `res` and programs the maps.
    pub fn sync(&self, res: &crate::resources::Resources) {
        let model = super::l4::resolve(&self.mappings, |ns, name, port| {
            crate::routing::resolve_service_endpoints(res, ns, name, port)
        });
        for p in &model.problems {
            tracing::warn!("{p}");
        }
        self.warn_unattached_routes(&model);
        let mut last = self.model.lock().expect("l4 model");
        if *last == model {
            return;
        }
        match self.maps.lock().expect("l4 maps").sync(&model, &self.frontends) {
            Ok(n) => {
                for s in &model.services {
                    tracing::info!(l4 = %s.label, endpoints = s.endpoints.len(), "L4 port programmed");
                }
                tracing::debug!(operations = n, "L4 maps updated");
                *last = model;
                self.programmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "programming the L4 maps failed; retried with the next update"),
        }
    }

    /// A target whose route leaves through an interface without `l4_reply` would have
    /// its replies go out un-NATed: say so.
    fn warn_unattached_routes(&self, model: &L4Model) {
        let routes =
            std::fs::read_to_string("/proc/net/route").map(|t| super::l4::parse_proc_routes(&t)).unwrap_or_default();
        for s in &model.services {
            for e in &s.endpoints {
                if let Some(i) = super::l4::route_iface(&routes, *e.ip())
                    && !self.reply_ifaces.contains(&i)
                {
                    tracing::warn!(l4 = %s.label, endpoint = %e, interface = %i, "the route to this endpoint leaves through an interface the reply program is not attached to (see --l4-reply-interface)");
                }
            }
        }
    }

    /// The interfaces `l4_reply` is attached to (delayed binding reuses them).
    pub fn reply_ifaces(&self) -> &[String] {
        &self.reply_ifaces
    }

    pub fn sweep(&self) -> usize {
        self.maps.lock().expect("l4 maps").sweep(monotonic_ns())
    }

    pub fn view(&self) -> crate::telemetry::l4::L4View {
        let maps = self.maps.lock().expect("l4 maps");
        let model = self.model.lock().expect("l4 model");
        let ct = maps.conntrack();
        let (flows, entries) = super::l4::occupancy(&ct, monotonic_ns());
        let ports = self
            .mappings
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let s = maps.stats(i as u32).unwrap_or_default();
                crate::telemetry::l4::L4PortCounters {
                    port: m.port,
                    target: m.to_string(),
                    endpoints: model.services.get(i).map(|s| s.endpoints.len() as u64).unwrap_or(0),
                    flows: s.flows,
                    packets: s.packets,
                    bytes: s.bytes,
                    reply_packets: s.reply_packets,
                    reply_bytes: s.reply_bytes,
                    no_endpoint: s.no_endpoint,
                    fib_fallback: s.fib_fallback,
                    conntrack_errors: s.ct_errors,
                }
            })
            .collect();
        crate::telemetry::l4::L4View {
            programmed: self.programmed.load(std::sync::atomic::Ordering::Relaxed),
            tc_mode: maps.tc_mode.into(),
            attached: maps.links.iter().map(|l| format!("{} on {}", l.program, l.interface)).collect(),
            ports,
            conntrack_flows: flows,
            conntrack_entries: entries,
            conntrack_capacity: u64::from(ingress_common::maps::L4_CT_MAX_ENTRIES),
        }
    }
}

/// The IPv4 addresses of `iface` (the frontends of the L4 ports on the NIC).
pub fn interface_ipv4(iface: &str) -> std::io::Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; every pointer is checked.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = &*p;
            if !a.ifa_addr.is_null()
                && i32::from((*a.ifa_addr).sa_family) == libc::AF_INET
                && std::ffi::CStr::from_ptr(a.ifa_name).to_bytes() == iface.as_bytes()
            {
                let sin = &*(a.ifa_addr as *const libc::sockaddr_in);
                out.push(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()));
            }
            p = a.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    Ok(out)
}

/// Whether IPv4 forwarding is on for `iface` (the FIB lookup of the programs needs it;
/// Docker turns it on).
pub fn forwarding_enabled(iface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding")).is_ok_and(|s| s.trim() == "1")
}

/// The interfaces of the routes to `targets` (where replies come back from).
pub fn reply_interfaces(targets: &[std::net::SocketAddrV4]) -> Vec<String> {
    let routes =
        std::fs::read_to_string("/proc/net/route").map(|t| super::l4::parse_proc_routes(&t)).unwrap_or_default();
    let mut out: Vec<String> = targets.iter().filter_map(|t| super::l4::route_iface(&routes, *t.ip())).collect();
    out.sort();
    out.dedup();
    out
}
