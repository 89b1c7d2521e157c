//! Delayed binding (issue 14) for the tests and the benchmark: the agent's flags, whether
//! this kernel can bind, the client side's pass-through XDP program a veth NIC needs, and
//! waiting until the agent has bound hosts. Used by `tests/netns_kernel_bind.rs` and
//! `netbench`'s `Ck` path.

use std::time::{Duration, Instant};

use ingress::telemetry::bind::BindView;

use crate::agent::Agent;
use crate::netns::in_ns;
use crate::topology::{VM_IP, VM_NIC};

/// The agent's flags for kernel binding on the topology's NIC (X-Forwarded headers off:
/// a host whose requests get added headers is not eligible).
pub const BIND_ARGS: [&str; 6] = ["--interface", VM_NIC, "--forwarded-headers", "off", "--bind-in-kernel", "on"];

/// Why this kernel cannot bind, or None when it can (`bpf_sk_assign_tcp_reqsk`, Linux
/// 6.11+ with BTF).
pub fn unsupported() -> Option<&'static str> {
    match ingress::datapath::kfunc::kernel_has_functions(ingress_common::maps::POD_BIND_NEEDS) {
        Some(v) if v.iter().all(|b| *b) => None,
        _ => Some("this kernel lacks bpf_sk_assign_tcp_reqsk (Linux 6.11+ with BTF)"),
    }
}

/// A veth property, not the agent's: a frame sent back with XDP_TX by a driver-mode XDP
/// program on a veth (the cookie SYN-ACK) is dropped unless the peer's receive side runs
/// NAPI, which it does only with an XDP program of its own (or GRO, which needs ethtool).
/// So the client's end (`eth0` of namespace `client_ns`) gets one that passes
/// everything: `syncookie_xdp` with no targets. A VM's real NIC (virtio-net, ...) needs
/// nothing of the kind. The program stays attached while the returned object lives.
pub fn client_side_xdp(client_ns: &str) -> ingress::datapath::Dataplane {
    use aya::programs::{Xdp, XdpMode};
    let mut d = ingress::datapath::load().expect("the object");
    d.syncookie_program_fd().expect("syncookie_xdp loads");
    in_ns(client_ns, || {
        let x: &mut Xdp = d.ebpf.program_mut(ingress_common::maps::SYNCOOKIE_PROGRAM).unwrap().try_into().unwrap();
        x.attach("eth0", XdpMode::Driver).expect("a pass-through XDP program on the client's veth end");
    });
    d
}

/// The agent's kernel-binding block of `/stats`.
pub fn bind_view(a: &Agent) -> BindView {
    a.stats().bind.expect("/stats has the kernel binding block with --bind-in-kernel on")
}

/// Waits (bounded, 10 s) until the agent has bound hosts and the cookie answers the VM's
/// port 9080 with its three kinds of links attached.
pub fn wait_bound(a: &Agent) -> BindView {
    let start = Instant::now();
    loop {
        let v = bind_view(a);
        if v.hosts > 0 && v.targets.iter().any(|t| t == &format!("{VM_IP}:9080")) && v.attached.len() >= 3 {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "nothing bound after 10 s: {v:?}\n{}", a.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}
