//! The pod leg in the kernel (`--pod-cgroup`, eBPF dataplane): the agent's pooled
//! HTTP/1.1 connections to pods skip TCP, IP, the veths and the bridges in both
//! directions. `ingress-ebpf/src/pod_leg.rs` puts every pod socket of a connection from
//! the agent's addresses into a SOCKHASH as it is established (sock_ops on the pods'
//! cgroup: the k3d node container's on the VM); the agent puts its end of a pooled
//! connection in when the connection goes back to the pool after an exchange without a
//! request body, so no byte of it is in flight: from then on what either end sends is
//! moved into the other end's receive queue by the sk_msg program. A connection whose
//! ends are not both in the map goes the normal way. Not pinned: the agent's sockets
//! end with it, and so does the map.
//!
//! What it does not do: bound what a pod sends ahead of the agent's reads. A pod
//! socket's sends land in the agent socket's receive queue without TCP's window (the
//! kernel's TCP memory limits still apply), so a pod answer the agent reads slowly (a
//! slow client) is held by the kernel, not by the pod.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, SockHash};
use aya::programs::{CgroupAttachMode, SkMsg, SockOps};
use ingress_common::maps::{
    POD_LEG_AGENTS_MAP, POD_LEG_MSG_PROGRAM, POD_LEG_OPS_PROGRAM, POD_LEG_SOCKS_MAP, POD_LEG_STATS_MAP,
};
use ingress_common::pod_leg::PodLegStats;
use ingress_common::splice::SpliceKey;

use super::loader::{Dataplane, program, take_map};
use super::splice::key_of;
use super::EbpfError;
use crate::telemetry::PodLegCounters;

/// The loaded pod leg: its maps, and what the agent did with them.
pub struct PodLeg {
    cgroup: String,
    socks: Mutex<SockHash<MapData, SpliceKey>>,
    agents: Mutex<(BpfHashMap<MapData, u32, u32>, HashSet<u32>)>,
    stats: PerCpuArray<MapData, PodLegStats>,
    joined: AtomicU64,
    join_errors: AtomicU64,
}

static POD_LEG: OnceLock<PodLeg> = OnceLock::new();

/// The pod leg, when the agent loaded it.
pub fn installed() -> Option<&'static PodLeg> {
    POD_LEG.get()
}

impl Dataplane {
    /// Loads the pod-leg programs: sk_msg on its SOCKHASH first (a socket takes the
    /// map's programs when it goes in), then sock_ops on the cgroup v2 directory
    /// `cgroup`. Afterwards [`installed`] returns it.
    pub fn load_pod_leg(&mut self, cgroup: &Path) -> Result<&'static PodLeg, EbpfError> {
        let shown = cgroup.display().to_string();
        let dir = std::fs::File::open(cgroup).map_err(|source| EbpfError::Cgroup { path: shown.clone(), source })?;
        let msg: &mut SkMsg = program(&mut self.ebpf, POD_LEG_MSG_PROGRAM)?;
        msg.load().map_err(|source| EbpfError::Load { program: POD_LEG_MSG_PROGRAM, source })?;
        let socks: SockHash<MapData, SpliceKey> = take_map(&mut self.ebpf, POD_LEG_SOCKS_MAP)?;
        let msg: &mut SkMsg = program(&mut self.ebpf, POD_LEG_MSG_PROGRAM)?;
        msg.attach(socks.fd()).map_err(|source| EbpfError::Load { program: POD_LEG_MSG_PROGRAM, source })?;
        let agents = take_map(&mut self.ebpf, POD_LEG_AGENTS_MAP)?;
        let stats = take_map(&mut self.ebpf, POD_LEG_STATS_MAP)?;
        let ops: &mut SockOps = program(&mut self.ebpf, POD_LEG_OPS_PROGRAM)?;
        ops.load().map_err(|source| EbpfError::Load { program: POD_LEG_OPS_PROGRAM, source })?;
        // a bpf_link: beside any other program on the cgroup (a CNI's); links take no attach flags (Single is flags 0)
        ops.attach(&dir, CgroupAttachMode::Single).map_err(|source| EbpfError::CgroupAttach {
            program: POD_LEG_OPS_PROGRAM,
            path: shown.clone(),
            source,
        })?;
        let leg = PodLeg {
            cgroup: shown,
            socks: Mutex::new(socks),
            agents: Mutex::new((agents, HashSet::new())),
            stats,
            joined: AtomicU64::new(0),
            join_errors: AtomicU64::new(0),
        };
        if POD_LEG.set(leg).is_err() {
            tracing::warn!("the pod leg was loaded twice; the first one stays");
        }
        let leg = POD_LEG.get().expect("set above");
        tracing::info!(cgroup = %leg.cgroup, "pod leg in the kernel: pooled pod connections skip the TCP/IP stack");
        Ok(leg)
    }
}

impl PodLeg {
    /// Called for a new connection to a pod from local address `local`: the pods'
    /// sockets of later connections from that address go into the map. `true` when the
    /// address was known before this connection was made (its pod end is in the map);
    /// `false` for the first connection from an address (or an IPv6 one).
    pub fn note_local(&self, local: SocketAddr) -> bool {
        let IpAddr::V4(ip) = local.ip() else { return false };
        let ip = u32::from_ne_bytes(ip.octets());
        let mut a = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if a.1.contains(&ip) {
            return true;
        }
        match a.0.insert(ip, 1, 0) {
            Ok(()) => {
                a.1.insert(ip);
                tracing::info!(address = %local.ip(), "pod leg: pod connections from this address are joined in the kernel");
            }
            Err(e) => {
                // not retried: its connections go the normal way, pooled as usual
                a.1.insert(ip);
                tracing::warn!(address = %local.ip(), error = %e, "pod leg: cannot add the agent's address; its pod connections go the normal way");
                return true;
            }
        }
        false
    }

    /// Puts the agent's end of a pooled connection in the map. Call only between
    /// exchanges, with nothing in flight either way. `false`: it stays on the normal path.
    pub fn join(&self, stream: &tokio::net::TcpStream) -> bool {
        let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else { return false };
        let Some(key) = key_of(local, remote) else { return false };
        let r = self.socks.lock().unwrap_or_else(|e| e.into_inner()).insert(key, stream.as_raw_fd(), 0);
        match r {
            Ok(()) => {
                self.joined.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                if self.join_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(%remote, error = %e, "pod leg: cannot put a pod connection in the map; it stays on the normal path");
                }
                false
            }
        }
    }

    pub fn counters(&self) -> PodLegCounters {
        let mut c = PodLegCounters {
            cgroup: self.cgroup.clone(),
            agent_sockets: self.joined.load(Ordering::Relaxed),
            agent_socket_errors: self.join_errors.load(Ordering::Relaxed),
            ..Default::default()
        };
        if let Ok(per_cpu) = self.stats.get(&0, 0) {
            for s in per_cpu.iter() {
                c.pod_sockets += s.pod_sockets;
                c.pod_socket_errors += s.pod_socket_errors;
                c.redirected_msgs += s.redirected_msgs;
                c.redirected_bytes += s.redirected_bytes;
                c.passed_msgs += s.passed_msgs;
            }
        }
        c
    }
}
