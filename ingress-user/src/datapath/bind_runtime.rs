//! Delayed binding driven by the agent (`--bind-in-kernel on`): attaches the kernel
//! pieces and keeps their maps in step with the routes.
//!
//! - `syncookie_xdp` goes into `BIND_SYN_PROGS` (the XDP guard tail-calls it for a SYN
//!   it passes); `bind_first` gets a TCX link on the NIC's ingress after the programs
//!   there (`l4_nic` included: what is not its returns TC_ACT_UNSPEC, the next program
//!   runs); `l4_reply` on the interfaces the routes to the pods leave by (unless the L4
//!   path attached it there already), so bound flows' replies are reverse-NATed.
//! - On every published set of routes: `BIND_BACKENDS`/`BIND_HOSTS` from
//!   [`super::bind::translate`], `SYNCOOKIE_TARGETS` (every VM address x listen port
//!   with an eligible host), `SYNCOOKIE_CONFIG`'s path MSS, and `pod_bind` in each
//!   endpoint's network namespace ([`super::pod_netns`]; detached when no endpoint of
//!   ours is left there).
//! - Bound flows whose endpoint left the routes (a pod removed) are marked in `L4_CT`
//!   ([`super::bind_plan::gone_flows`]): `bind_first` has the stack answer their next
//!   segment with a RST, so the client learns at once instead of retransmitting into an
//!   address nobody answers.
//! - The cookie keys: two random ones at start, one replaced every [`ROTATION`].
//!
//! With `--pin-path` (the eBPF dataplane always has one) every link is pinned
//! ([`super::bind_links`]) and so is `SYNCOOKIE_CONFIG` (its keys): bound connections keep
//! being forwarded while the agent is down, and the next agent puts its programs into the
//! same links and keeps the keys, so the cookies sent before the restart still validate.
//! `ingress detach` removes the pins.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use aya::maps::{HashMap, Map, MapData, PerCpuArray, ProgramArray};
use aya::programs::{SchedClassifier, Xdp};
use ingress_common::bind::{BindBackend, BindTarget};
use ingress_common::first_segment::FIRST_COUNTS;
use ingress_common::head::BindHostKey;
use ingress_common::l4::{L4CtEntry, L4CtKey};
use ingress_common::maps::{
    BIND_BACKENDS_MAP, BIND_FIRST_COUNTS_MAP, BIND_FIRST_NEEDS, BIND_FIRST_PROGRAM, BIND_FIRST_SINCE, BIND_HOSTS_MAP,
    BIND_SYN_PROGS_MAP, BIND_SYN_SLOT, L4_CT_MAP, L4_REPLY_PROGRAM, POD_BIND_NEEDS, POD_BIND_PROGRAM, POD_BIND_SINCE,
    SYNCOOKIE_PROGRAM,
};

use super::bind::{BindEntries, BindOptions};
use super::bind_links::{self, FIRST_KIND, Got, POD_KIND, REPLY_KIND, pod_target};
use super::bind_plan;
use super::loader::{program, take_map};
use super::pins::Pins;
use super::pod_netns;
use super::syncookie::{SynCookieMaps, random_key, target};
use super::{Dataplane, EbpfError};

/// How often a cookie key is replaced (a cookie validates for one to two periods).
pub const ROTATION: Duration = Duration::from_secs(60);

/// The names of `BIND_FIRST_COUNTS`' indexes (`first_segment::FIRST_*`), for `/stats`.
pub const FIRST_NAMES: [&str; FIRST_COUNTS as usize] = [
    "conntrack_hit",
    "no_cookie",
    "pure_ack",
    "bound",
    "fallback",
    "no_listener",
    "assign_failed",
    "bad_options",
    "no_endpoint",
    "map_error",
    "agent_socket",
    "early_dropped",
    "endpoint_gone",
];

/// What the kernel side holds while binding is on.
struct State {
    cookie: SynCookieMaps,
    hosts: HashMap<MapData, BindHostKey, BindTarget>,
    backends: HashMap<MapData, u32, BindBackend>,
    programmed: BindEntries,
    targets: BTreeSet<(Ipv4Addr, u16)>,
    /// (netns inode, ifindex) -> the pod_bind link and where it is.
    pod_links: BTreeMap<(u64, u32), (OwnedFd, String)>,
    /// Interface name -> l4_reply link (ours, not the L4 path's).
    reply_links: BTreeMap<String, OwnedFd>,
    endpoints: BTreeSet<Ipv4Addr>,
    /// Endpoints whose namespace has `pod_bind` (only their hosts are bound).
    covered: BTreeSet<Ipv4Addr>,
    path_mss: u16,
    /// `L4_CT`, a handle of our own (the L4 path may hold the object's).
    ct: HashMap<MapData, L4CtKey, L4CtEntry>,
    /// Endpoints routed through a namespace whose conntrack is strict (their hosts are
    /// not bound: `bind_plan::keep_loose`).
    strict: BTreeSet<Ipv4Addr>,
    /// The namespaces the routes to the endpoints go through.
    hops: Vec<Hop>,
}

pub struct BindRuntime {
    state: Mutex<State>,
    counts: PerCpuArray<MapData, u64>,
    _syn_progs: ProgramArray<MapData>,
    _nic_link: OwnedFd,
    pod_prog: OwnedFd,
    reply_prog: OwnedFd,
    nic: String,
    nic_addrs: Vec<Ipv4Addr>,
    /// Where the L4 path attached `l4_reply` already.
    l4_reply_ifaces: Vec<String>,
    opts: BindOptions,
    syncs: std::sync::atomic::AtomicU64,
    pins: Option<Pins>,
}

fn dup(fd: BorrowedFd<'_>, program: &'static str) -> Result<OwnedFd, EbpfError> {
    fd.try_clone_to_owned().map_err(|e| EbpfError::TcAttach {
        program,
        interface: String::new(),
        source: aya::programs::ProgramError::IOError(e),
    })
}

impl Dataplane {
    /// Loads the binding programs (refused, naming the kernel function, without
    /// `bpf_sk_assign_tcp_reqsk`), puts the cookie program into the guard's tail-call
    /// slot and attaches `bind_first` to `nic`. The maps are empty: nothing is bound
    /// before [`BindRuntime::sync`].
    pub fn attach_bind(
        &mut self,
        nic: &str,
        l4_reply_ifaces: &[String],
        opts: BindOptions,
    ) -> Result<BindRuntime, EbpfError> {
        self.require_kfuncs(BIND_FIRST_PROGRAM, BIND_FIRST_NEEDS, BIND_FIRST_SINCE)?;
        self.require_kfuncs(POD_BIND_PROGRAM, POD_BIND_NEEDS, POD_BIND_SINCE)?;
        let first = self.bind_first_program_fd()?;
        let pod = self.kfunc_tc_program_fd(POD_BIND_PROGRAM, POD_BIND_NEEDS, POD_BIND_SINCE)?;
        let reply = self.tc_program_fd(L4_REPLY_PROGRAM)?;
        // SAFETY: the fds belong to programs inside `self.ebpf`, alive for this call;
        // each is duplicated at once and the borrow ends here.
        let (first, pod, reply) =
            unsafe { (BorrowedFd::borrow_raw(first), BorrowedFd::borrow_raw(pod), BorrowedFd::borrow_raw(reply)) };
        let (first, pod_prog, reply_prog) =
            (dup(first, BIND_FIRST_PROGRAM)?, dup(pod, POD_BIND_PROGRAM)?, dup(reply, L4_REPLY_PROGRAM)?);
        self.syncookie_program_fd()?;
        let mut syn_progs: ProgramArray<MapData> = take_map(&mut self.ebpf, BIND_SYN_PROGS_MAP)?;
        let cookie_prog: &mut Xdp = program(&mut self.ebpf, SYNCOOKIE_PROGRAM)?;
        let cookie_fd = cookie_prog.fd().map_err(|source| EbpfError::Load { program: SYNCOOKIE_PROGRAM, source })?;
        syn_progs
            .set(BIND_SYN_SLOT, cookie_fd, 0)
            .map_err(|source| EbpfError::Map { map: BIND_SYN_PROGS_MAP, source })?;
        let first_prog: &mut SchedClassifier = program(&mut self.ebpf, BIND_FIRST_PROGRAM)?;
        let ct = l4_ct(first_prog)?;
        let tc_err = |e: std::io::Error, program: &'static str, iface: &str| EbpfError::TcAttach {
            program,
            interface: iface.into(),
            source: aya::programs::ProgramError::IOError(e),
        };
        let ifindex = pod_netns::ifindex(nic).map_err(|e| tc_err(e, BIND_FIRST_PROGRAM, nic))?;
        let pins = self.pins.clone();
        let (nic_link, got) = bind_links::adopt_or_attach(pins.as_ref(), FIRST_KIND, nic, first.as_fd(), || {
            pod_netns::tcx_ingress_link(first.as_fd(), ifindex)
        })
        .map_err(|e| tc_err(e, BIND_FIRST_PROGRAM, nic))?;
        drop(first);
        let nic_addrs = super::l4_maps::interface_ipv4(nic).map_err(|e| tc_err(e, BIND_FIRST_PROGRAM, nic))?;
        let mut cookie = SynCookieMaps::take(&mut self.ebpf)?;
        let key = |what| random_key().map_err(|e| tc_err(e, what, nic));
        let fresh = [key(SYNCOOKIE_PROGRAM)?, key(SYNCOOKIE_PROGRAM)?];
        // SYNCOOKIE_CONFIG is pinned: an earlier agent's keys are there
        let cfg = bind_plan::start_config(cookie.config().ok(), fresh, 1460);
        let kept_keys = cfg.keys != fresh;
        cookie.set_config(&cfg)?;
        let mut pod_links = BTreeMap::new();
        if let Some(p) = &pins {
            for ((netns, ifindex), link) in bind_links::adopt_pod_links(p, pod_prog.as_fd()) {
                let what = format!("netns {netns} ifindex {ifindex} (adopted)");
                tracing::info!(pod = %what, "pod_bind: this agent's program put into the pinned link");
                pod_links.insert((netns, ifindex), (link, what));
            }
        }
        let state = State {
            cookie,
            hosts: take_map(&mut self.ebpf, BIND_HOSTS_MAP)?,
            backends: take_map(&mut self.ebpf, BIND_BACKENDS_MAP)?,
            programmed: BindEntries::default(),
            targets: BTreeSet::new(),
            pod_links,
            reply_links: BTreeMap::new(),
            endpoints: BTreeSet::new(),
            covered: BTreeSet::new(),
            path_mss: cfg.path_mss,
            ct,
            strict: BTreeSet::new(),
            hops: Vec::new(),
        };
        let how = match got {
            Got::Adopted => "put into the link pinned by an earlier agent (no gap)",
            Got::Attached => "attached",
        };
        tracing::info!(interface = %nic, kept_keys, "kernel binding: syncookie_xdp behind the XDP guard, bind_first (tcx) on the NIC {how}");
        Ok(BindRuntime {
            state: Mutex::new(state),
            counts: take_map(&mut self.ebpf, BIND_FIRST_COUNTS_MAP)?,
            _syn_progs: syn_progs,
            _nic_link: nic_link,
            pod_prog,
            reply_prog,
            nic: nic.into(),
            nic_addrs,
            l4_reply_ifaces: l4_reply_ifaces.to_vec(),
            opts,
            syncs: std::sync::atomic::AtomicU64::new(0),
            pins,
        })
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

/// A handle of its own on the `L4_CT` that the loaded `first` uses, found by the
/// program's map ids (the L4 path takes the object's map when it runs).
fn l4_ct(first: &SchedClassifier) -> Result<HashMap<MapData, L4CtKey, L4CtEntry>, EbpfError> {
    let load = |source| EbpfError::Load { program: BIND_FIRST_PROGRAM, source };
    let ids = first.info().map_err(load)?.map_ids().map_err(load)?.unwrap_or_default();
    for id in ids {
        let data = MapData::from_id(id).map_err(map_err(L4_CT_MAP))?;
        if data.info().map_err(map_err(L4_CT_MAP))?.name_as_str() == Some(L4_CT_MAP) {
            return HashMap::try_from(Map::LruHashMap(data)).map_err(map_err(L4_CT_MAP));
        }
    }
    Err(EbpfError::MissingMap(L4_CT_MAP))
}

/// A namespace on this machine that endpoints' routes from here go through (the next
/// hop's: on k3d the node), and those endpoints.
#[derive(Clone, Debug)]
struct Hop {
    netns: u64,
    endpoints: Vec<Ipv4Addr>,
}

/// The namespaces the routes to `endpoints` go through. Found when the endpoints change.
fn conntrack_hops(endpoints: &BTreeSet<Ipv4Addr>) -> Vec<Hop> {
    let routes =
        std::fs::read_to_string("/proc/net/route").map(|t| super::l4::parse_proc_routes(&t)).unwrap_or_default();
    let hops: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = endpoints.iter().fold(BTreeMap::new(), |mut m, a| {
        if let Some(g) = super::l4::route_gateway(&routes, *a) {
            m.entry(g).or_insert_with(Vec::new).push(*a);
        }
        m
    });
    pod_netns::find(&hops.keys().copied().collect())
        .into_iter()
        .map(|h| Hop {
            netns: h.netns,
            endpoints: h.addrs.iter().flat_map(|g| hops.get(g)).flatten().copied().collect(),
        })
        .collect()
}

/// The endpoints behind a hop whose conntrack is strict
/// (`net.netfilter.nf_conntrack_tcp_loose=0`): it has not seen the handshake the cookie
/// answered, so a bound flow's first segment is INVALID there, and kube-proxy's
/// `--ctstate INVALID -j DROP` drops it and every retransmission. Read when the endpoints
/// change and every [`CONNTRACK_RECHECK`] ([`BindRuntime::recheck_conntrack`]).
fn strict_endpoints(hops: &[Hop]) -> BTreeSet<Ipv4Addr> {
    let mut strict = BTreeSet::new();
    for hop in hops {
        let loose = pod_netns::sysctl_in(hop.netns, "net/netfilter/nf_conntrack_tcp_loose");
        if let Ok(Some(v)) = &loose
            && v == "0"
        {
            strict.extend(hop.endpoints.iter().copied());
        }
    }
    strict
}

/// How often the agent reads `nf_conntrack_tcp_loose` again on the endpoints' hops.
pub const CONNTRACK_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Marks the bound flows of the endpoints in `gone` (no longer in the routes) so that
/// `bind_first` has the stack answer their next segment with a RST; returns how many.
fn end_flows(st: &mut State, gone: &BTreeSet<Ipv4Addr>) -> usize {
    let entries: Vec<(L4CtKey, L4CtEntry)> = st.ct.iter().filter_map(Result::ok).collect();
    let (mark, remove) = bind_plan::gone_flows(entries, gone);
    let mut marked = 0;
    for (k, e) in &mark {
        // BPF_EXIST: an entry evicted meanwhile is not made again
        match st.ct.insert(k, e, 2) {
            Ok(()) => marked += 1,
            Err(e) => tracing::debug!(error = %e, "a bound flow's entry went before it was marked"),
        }
    }
    for k in &remove {
        let _ = st.ct.remove(k);
    }
    marked
}

impl BindRuntime {
    /// Reads `nf_conntrack_tcp_loose` again on the endpoints' hops; true when it changed
    /// for some endpoint (then the caller syncs again, which binds or unbinds their hosts).
    pub fn recheck_conntrack(&self) -> bool {
        let mut st = self.state.lock().expect("bind state");
        let strict = strict_endpoints(&st.hops);
        if strict == st.strict {
            return false;
        }
        tracing::warn!(strict = ?strict, before = ?st.strict, "nf_conntrack_tcp_loose changed on the way to the endpoints: hosts behind a strict conntrack are served by the agent, the others bound");
        st.strict = strict;
        true
    }

    /// Programs the maps and the pod side for `table` served on `listen` (by slot).
    pub fn sync(&self, table: &crate::routing::Table, listen: &[std::net::SocketAddr]) {
        let ports: Vec<u16> = listen.iter().map(|a| a.port()).collect();
        let entries = super::bind::translate(table, &ports, self.opts);
        let mut st = self.state.lock().expect("bind state");
        let endpoints = bind_plan::endpoint_addrs(&entries);
        // endpoints no eligible host has now and no backend of the table names (a pod still
        // named is alive: a host that stopped being eligible keeps its bound connections)
        let named = table.ipv4_endpoints();
        let gone: BTreeSet<Ipv4Addr> =
            st.endpoints.iter().filter(|a| !endpoints.contains(a) && !named.contains(a)).copied().collect();
        if endpoints != st.endpoints || st.covered != endpoints {
            self.sync_pods(&mut st, &endpoints);
        }
        let entries = bind_plan::keep_loose(bind_plan::keep_covered(entries, &st.covered), &st.strict);
        let targets = bind_plan::targets(listen, &entries, &self.nic_addrs);
        let applied = self.apply(&mut st, entries, targets);
        // after the maps: no new flow is bound to an endpoint that left
        if !gone.is_empty() {
            let flows = end_flows(&mut st, &gone);
            tracing::info!(endpoints = ?gone, flows, "kernel binding: bound flows of endpoints that left end with a RST at their next segment");
        }
        match applied {
            Ok(()) => {
                self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "programming the kernel binding maps failed; retried with the next update")
            }
        }
    }

    fn apply(&self, st: &mut State, entries: BindEntries, targets: BTreeSet<(Ipv4Addr, u16)>) -> Result<(), EbpfError> {
        for d in &entries.decisions {
            match &d.decision {
                Ok(_) => tracing::info!(port = d.port, host = %d.hostname, "kernel binding: eligible"),
                Err(why) => tracing::debug!(port = d.port, host = %d.hostname, "kernel binding: no: {why}"),
            }
        }
        // targets that went first: no new cookie for a frontend without hosts
        for t in st.targets.difference(&targets).copied().collect::<Vec<_>>() {
            st.cookie.remove_target(t.0, t.1)?;
            st.targets.remove(&t);
        }
        let diff = bind_plan::diff(&st.programmed, &entries);
        for id in &diff.put_backends {
            let (_, b) = entries.backends.iter().find(|(i, _)| i == id).expect("diff of these entries");
            st.backends.insert(id, b, 0).map_err(map_err(BIND_BACKENDS_MAP))?;
        }
        for i in &diff.put_hosts {
            let (k, t) = &entries.hosts[*i];
            st.hosts.insert(k, t, 0).map_err(map_err(BIND_HOSTS_MAP))?;
        }
        for k in &diff.remove_hosts {
            st.hosts.remove(k).map_err(map_err(BIND_HOSTS_MAP))?;
        }
        for id in &diff.remove_backends {
            st.backends.remove(id).map_err(map_err(BIND_BACKENDS_MAP))?;
        }
        for t in targets.difference(&st.targets.clone()) {
            st.cookie.add_target(t.0, t.1)?;
            st.targets.insert(*t);
        }
        st.programmed = entries;
        Ok(())
    }

    /// `pod_bind` in every namespace holding an endpoint, `l4_reply` where the routes to
    /// them leave, the path MSS from the MTUs on the way.
    fn sync_pods(&self, st: &mut State, endpoints: &BTreeSet<Ipv4Addr>) {
        let found = pod_netns::find(endpoints);
        let wanted: BTreeSet<(u64, u32)> = found.iter().map(|p| (p.netns, p.ifindex)).collect();
        let gone: Vec<(u64, u32)> = st.pod_links.keys().filter(|k| !wanted.contains(k)).copied().collect();
        for k in gone {
            if let Some((_, what)) = st.pod_links.remove(&k) {
                bind_links::unpin(self.pins.as_ref(), POD_KIND, &pod_target(k.0, k.1));
                tracing::info!(pod = %what, "pod_bind detached (no endpoint of a bound host there now)");
            }
        }
        for p in &found {
            let what = format!("{} in netns {} ({:?})", p.ifname, p.netns, p.addrs);
            if let Some((_, w)) = st.pod_links.get_mut(&(p.netns, p.ifindex)) {
                *w = what;
                continue;
            }
            let attached = bind_links::adopt_or_attach(
                self.pins.as_ref(),
                POD_KIND,
                &pod_target(p.netns, p.ifindex),
                self.pod_prog.as_fd(),
                || pod_netns::tcx_ingress_link_in(p.netns, self.pod_prog.as_fd(), p.ifindex),
            );
            match attached {
                Ok((link, got)) => {
                    tracing::info!(pod = %what, ?got, "pod_bind (tcx)");
                    st.pod_links.insert((p.netns, p.ifindex), (link, what));
                }
                Err(e) => {
                    tracing::warn!(pod = %what, error = %e, "cannot attach pod_bind: connections to this pod are not bound")
                }
            }
        }
        for a in endpoints {
            if !found.iter().any(|p| p.addrs.contains(a)) {
                tracing::warn!(endpoint = %a, "no network namespace on this machine holds this endpoint: its connections are not bound");
            }
        }
        let targets: Vec<std::net::SocketAddrV4> =
            endpoints.iter().map(|a| std::net::SocketAddrV4::new(*a, 0)).collect();
        let reply_ifaces = super::l4_maps::reply_interfaces(&targets);
        let mut mtus: Vec<u32> = found.iter().map(|p| p.mtu).collect();
        for i in &reply_ifaces {
            if let Ok(m) = pod_netns::mtu(i) {
                mtus.push(m);
            }
            if self.l4_reply_ifaces.contains(i) || st.reply_links.contains_key(i) || *i == self.nic {
                continue;
            }
            if !super::l4_maps::forwarding_enabled(i) {
                tracing::warn!(interface = %i, "IPv4 forwarding is off on the pod side: bound flows cannot be forwarded (sysctl -w net.ipv4.ip_forward=1)");
            }
            let attached = pod_netns::ifindex(i).and_then(|x| {
                bind_links::adopt_or_attach(self.pins.as_ref(), REPLY_KIND, i, self.reply_prog.as_fd(), || {
                    pod_netns::tcx_ingress_link(self.reply_prog.as_fd(), x)
                })
            });
            match attached {
                Ok((link, got)) => {
                    tracing::info!(interface = %i, ?got, "l4_reply (tcx) for bound flows' replies");
                    st.reply_links.insert(i.clone(), link);
                }
                Err(e) => {
                    tracing::warn!(interface = %i, error = %e, "cannot attach l4_reply: replies of bound flows through here are not reverse-NATed")
                }
            }
        }
        let mss = bind_plan::path_mss(&mtus);
        if mss != st.path_mss || st.endpoints.is_empty() {
            match st.cookie.config() {
                Ok(mut c) => {
                    c.path_mss = mss;
                    if let Err(e) = st.cookie.set_config(&c) {
                        tracing::error!(error = %e, "cannot set the SYN cookie's path MSS");
                    } else {
                        st.path_mss = mss;
                        tracing::info!(path_mss = mss, "SYN cookie: pod path MSS");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the SYN cookie config"),
            }
        }
        st.hops = conntrack_hops(endpoints);
        st.strict = strict_endpoints(&st.hops);
        if !st.strict.is_empty() {
            tracing::warn!(endpoints = ?st.strict, "conntrack on their way is strict (nf_conntrack_tcp_loose=0): hosts with these endpoints are served by the agent, not bound in the kernel");
        }
        st.endpoints = endpoints.clone();
        st.covered = found
            .iter()
            .filter(|p| st.pod_links.contains_key(&(p.netns, p.ifindex)))
            .flat_map(|p| p.addrs.iter().copied())
            .collect();
    }

    /// Replaces one cookie key (the other slot), which becomes current.
    pub fn rotate(&self) -> Result<(), EbpfError> {
        let key = random_key().map_err(|e| EbpfError::TcAttach {
            program: SYNCOOKIE_PROGRAM,
            interface: self.nic.clone(),
            source: aya::programs::ProgramError::IOError(e),
        })?;
        let mut st = self.state.lock().expect("bind state");
        let c = bind_plan::rotated(&st.cookie.config()?, key);
        st.cookie.set_config(&c)
    }

    /// `BIND_FIRST_COUNTS` summed over CPUs, by `first_segment::FIRST_*`.
    pub fn counts(&self) -> Vec<u64> {
        (0..FIRST_COUNTS).map(|i| self.counts.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)).collect()
    }

    /// Each host's decision as last programmed (for `ingress routes`).
    pub fn decisions(&self) -> Vec<super::bind::HostDecision> {
        self.state.lock().expect("bind state").programmed.decisions.clone()
    }

    /// For `/stats` and `ingress stats`.
    pub fn view(&self) -> crate::telemetry::bind::BindView {
        let st = self.state.lock().expect("bind state");
        let counts = self.counts();
        crate::telemetry::bind::BindView {
            syncs: self.syncs.load(std::sync::atomic::Ordering::Relaxed),
            attached: std::iter::once(format!("{BIND_FIRST_PROGRAM} on {}", self.nic))
                .chain(st.reply_links.keys().map(|i| format!("{L4_REPLY_PROGRAM} on {i}")))
                .chain(st.pod_links.values().map(|(_, w)| format!("{POD_BIND_PROGRAM} on {w}")))
                .collect(),
            hosts: st.programmed.hosts.len() as u64,
            targets: st.targets.iter().map(|(a, p)| format!("{a}:{p}")).collect(),
            path_mss: st.path_mss,
            first_segment: FIRST_NAMES.iter().zip(counts).map(|(n, c)| ((*n).to_string(), c)).collect(),
        }
    }
}

impl SynCookieMaps {
    pub fn remove_target(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), EbpfError> {
        self.targets_mut()
            .remove(&target(addr, port))
            .map_err(|source| EbpfError::Map { map: ingress_common::maps::SYNCOOKIE_TARGETS_MAP, source })
    }
}
