//! The pod leg in the kernel (`--pod-cgroup`): the agent's pooled HTTP/1.1 connections
//! to pods and the pods' ends of them sit in one SOCKHASH, keyed by
//! [`SpliceKey`] (each socket as it sees itself), and an sk_msg program moves what one
//! end sends straight into the other end's receive queue, past TCP, IP, the veths and
//! the bridges. The keys and counters both sides share.

use core::mem::size_of;

use crate::splice::SpliceKey;

/// The key of the socket at the other end of `own`'s connection, as that socket sees
/// itself: addresses swapped, the ports swapped and each put in its slot's byte order
/// (`local_port` host order, `remote_port` network order in the low 16 bits).
#[inline(always)]
pub fn peer_key(own: &SpliceKey) -> SpliceKey {
    SpliceKey {
        local_ip4: own.remote_ip4,
        remote_ip4: own.local_ip4,
        local_port: u16::from_be(own.remote_port as u16) as u32,
        remote_port: (own.local_port as u16).to_be() as u32,
    }
}

/// What the pod-leg programs did, summed over CPUs by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodLegStats {
    /// Pods' sockets of connections from the agent's addresses put in the map (sock_ops).
    pub pod_sockets: u64,
    /// Pods' sockets the map refused (full, or a socket it cannot hold).
    pub pod_socket_errors: u64,
    /// Messages (one per send call) moved into the peer's receive queue, and their bytes.
    pub redirected_msgs: u64,
    pub redirected_bytes: u64,
    /// Messages sent the normal way: the peer is not in the map (not joined yet).
    pub passed_msgs: u64,
}
const _: () = assert!(size_of::<PodLegStats>() == 40);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Copy, no padding (size check above).
    unsafe impl aya::Pod for super::PodLegStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_key_is_the_other_end_seen_from_itself() {
        // the agent 172.18.0.1:40000 -> the pod 10.42.0.21:8080, as sockets see themselves
        let agent = SpliceKey {
            local_ip4: u32::from_ne_bytes([172, 18, 0, 1]),
            remote_ip4: u32::from_ne_bytes([10, 42, 0, 21]),
            local_port: 40000,
            remote_port: 8080u16.to_be() as u32,
        };
        let pod = SpliceKey {
            local_ip4: u32::from_ne_bytes([10, 42, 0, 21]),
            remote_ip4: u32::from_ne_bytes([172, 18, 0, 1]),
            local_port: 8080,
            remote_port: 40000u16.to_be() as u32,
        };
        assert_eq!(peer_key(&agent), pod);
        assert_eq!(peer_key(&pod), agent);
    }
}
