//! The k3d-shaped topology of `design.md`, in network namespaces:
//!
//! ```text
//! {p}-client  eth0 198.18.0.1/24 --veth-- {p}-vm eth0 198.18.0.2/24 (the VM NIC, XDP here)
//! {p}-vm      br-k3d 172.18.0.1/16 (Docker's k3d network), route 10.42.0.0/16 via the node
//! {p}-node    eth0 172.18.0.2/16, cni0 10.42.0.1/24, forwarding on
//! {p}-pN      eth0 10.42.0.x/24, default via 10.42.0.1, an echo backend on the pod's ports
//! ```
//!
//! Creation first removes namespaces left by an interrupted run (same names), and
//! `Drop` removes them again: by name, never by pattern.

use std::net::Ipv4Addr;

use crate::backend::Backend;
use crate::netns::{exists, ip, ip_quiet, sysctl};

pub const CLIENT_IP: &str = "198.18.0.1";
pub const VM_IP: &str = "198.18.0.2";
pub const VM_BRIDGE_IP: &str = "172.18.0.1";
pub const NODE_IP: &str = "172.18.0.2";
pub const POD_GATEWAY: &str = "10.42.0.1";
pub const VM_NIC: &str = "eth0";
/// Pod namespaces checked for leftovers when a topology is created.
const MAX_PODS: usize = 64;

/// A pod to create: its name (shown by the backend), IP in 10.42.0.0/24, ports.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<u16>,
}

pub struct Topology {
    pub prefix: String,
    pub pods: Vec<(PodSpec, String)>,
    backends: Vec<Backend>,
    /// Set by [`Topology::abandon`]: drop leaves the namespaces.
    abandoned: bool,
}

impl Topology {
    pub fn client_ns(&self) -> String {
        format!("{}-client", self.prefix)
    }
    pub fn vm_ns(&self) -> String {
        format!("{}-vm", self.prefix)
    }
    pub fn node_ns(&self) -> String {
        format!("{}-node", self.prefix)
    }

    /// Every namespace of this topology.
    pub fn namespaces(&self) -> Vec<String> {
        Self::names(&self.prefix, self.pods.len())
    }

    /// Every namespace name this topology uses.
    fn names(prefix: &str, pods: usize) -> Vec<String> {
        let mut v = vec![format!("{prefix}-client"), format!("{prefix}-vm"), format!("{prefix}-node")];
        v.extend((0..pods).map(|i| format!("{prefix}-p{i}")));
        v
    }

    /// Builds the topology and starts a backend in every pod. `prefix` must be short
    /// (namespace names are `{prefix}-client`, `{prefix}-p12`, ...).
    pub fn create(prefix: &str, pods: &[PodSpec]) -> Self {
        Self::create_with(prefix, pods, |_| true)
    }

    /// Like [`Topology::create`], starting the echo backend only in pods where
    /// `echo(pod)` (the benchmark runs nginx in some).
    pub fn create_with(prefix: &str, pods: &[PodSpec], echo: impl Fn(&PodSpec) -> bool) -> Self {
        assert!(prefix.len() <= 12 && !prefix.is_empty(), "short, non-empty prefix");
        assert!(pods.len() <= MAX_PODS, "at most {MAX_PODS} pods");
        // Leftovers of an interrupted run may have had more pods than this one.
        remove_namespaces(&Self::names(prefix, pods.len().max(MAX_PODS)));
        // Registered before anything is created so a panic mid-way still cleans up.
        let mut topo = Topology { prefix: prefix.to_string(), pods: vec![], backends: vec![], abandoned: false };
        let (client, vm, node) = (topo.client_ns(), topo.vm_ns(), topo.node_ns());
        for ns in [&client, &vm, &node] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // client <-> vm: the VM's NIC
        ip(&["link", "add", VM_NIC, "netns", &vm, "type", "veth", "peer", "name", "eth0", "netns", &client]);
        ip(&["-n", &client, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"]);
        ip(&["-n", &client, "link", "set", "eth0", "up"]);
        ip(&["-n", &vm, "addr", "add", &format!("{VM_IP}/24"), "dev", VM_NIC]);
        ip(&["-n", &vm, "link", "set", VM_NIC, "up"]);
        // vm: the Docker-like bridge of the k3d network, and the node on it
        ip(&["-n", &vm, "link", "add", "br-k3d", "type", "bridge"]);
        ip(&["-n", &vm, "addr", "add", &format!("{VM_BRIDGE_IP}/16"), "dev", "br-k3d"]);
        ip(&["-n", &vm, "link", "set", "br-k3d", "up"]);
        ip(&["link", "add", "vnode0", "netns", &vm, "type", "veth", "peer", "name", "eth0", "netns", &node]);
        ip(&["-n", &vm, "link", "set", "vnode0", "master", "br-k3d", "up"]);
        ip(&["-n", &vm, "route", "add", "10.42.0.0/16", "via", NODE_IP]);
        // node: k3s with a cni bridge for the pods
        ip(&["-n", &node, "addr", "add", &format!("{NODE_IP}/16"), "dev", "eth0"]);
        ip(&["-n", &node, "link", "set", "eth0", "up"]);
        ip(&["-n", &node, "route", "add", "default", "via", VM_BRIDGE_IP]);
        ip(&["-n", &node, "link", "add", "cni0", "type", "bridge"]);
        ip(&["-n", &node, "addr", "add", &format!("{POD_GATEWAY}/24"), "dev", "cni0"]);
        ip(&["-n", &node, "link", "set", "cni0", "up"]);
        sysctl(&node, "net/ipv4/ip_forward", "1");
        for (i, pod) in pods.iter().enumerate() {
            let ns = format!("{prefix}-p{i}");
            ip(&["netns", "add", &ns]);
            topo.pods.push((pod.clone(), ns.clone()));
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let veth = format!("veth{i}");
            ip(&["link", "add", &veth, "netns", &node, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["-n", &node, "link", "set", &veth, "master", "cni0", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", pod.ip), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "default", "via", POD_GATEWAY]);
            if echo(pod) {
                topo.backends.push(Backend::start(&ns, &pod.name, &pod.ports));
            }
        }
        topo
    }

    /// The echo backend of pod number `i` (in creation order, when all pods have one).
    pub fn backend(&self, i: usize) -> &Backend {
        &self.backends[i]
    }

    /// Lets the client reach pod IPs directly through the VM (the benchmark's
    /// "direct" path): a client route to 10.42.0.0/16 and forwarding in the VM.
    pub fn enable_direct_path(&self) {
        ip(&["-n", &self.client_ns(), "route", "add", "10.42.0.0/16", "via", VM_IP]);
        sysctl(&self.vm_ns(), "net/ipv4/ip_forward", "1");
    }

    /// Gives the client namespace's eth0 another address in 198.18.0.0/24 (a second
    /// source for the guard's tests); removed with the namespace.
    pub fn add_client_address(&self, addr: &str) {
        ip(&["-n", &self.client_ns(), "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    }

    /// Sets the MTU of the pod network (the node's cni bridge, its veths, the pods'
    /// eth0), as flannel's 1450 on k3d.
    pub fn set_pod_mtu(&self, mtu: u16) {
        let (node, mtu) = (self.node_ns(), mtu.to_string());
        ip(&["-n", &node, "link", "set", "cni0", "mtu", &mtu]);
        for (i, (_, ns)) in self.pods.iter().enumerate() {
            ip(&["-n", &node, "link", "set", &format!("veth{i}"), "mtu", &mtu]);
            ip(&["-n", ns, "link", "set", "eth0", "mtu", &mtu]);
        }
    }

    /// Stops the backends (joining their threads) and leaves the namespaces behind,
    /// as an interrupted run would: for testing that `create` cleans them up.
    pub fn abandon(mut self) {
        for b in self.backends.drain(..) {
            b.stop();
        }
        self.abandoned = true;
    }

    /// Removes every namespace of the topology (idempotent).
    pub fn destroy(&mut self) {
        for b in self.backends.drain(..) {
            b.stop();
        }
        remove_namespaces(&Self::names(&self.prefix, self.pods.len()));
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.abandoned {
            return;
        }
        self.destroy();
    }
}

/// Deletes the named namespaces that exist. Deleting a namespace removes its veths
/// (and their peers) with it.
pub fn remove_namespaces(names: &[String]) {
    for ns in names {
        if exists(ns) {
            ip_quiet(&["netns", "del", ns]);
        }
    }
}
