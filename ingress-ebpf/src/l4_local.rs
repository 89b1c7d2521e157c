//! cgroup sock_addr hooks for clients on the VM itself (kubectl with k3d's kubeconfig
//! dials `https://0.0.0.0:6550`): a TCP connect to a frontend (127.0.0.1, 0.0.0.0 or a
//! VM address, on an L4 port) is rewritten to an endpoint of that service before the
//! socket connects, so the connection goes straight to the target with no NAT at all;
//! getpeername gives back the address the process dialled. IPv6 sockets: `::ffff:a.b.c.d`,
//! `::1` and `::` are the IPv4 frontends a.b.c.d, 127.0.0.1 and 0.0.0.0, and connect to
//! the endpoint as `::ffff:endpoint` (a dual-stack socket). Every hook allows the call
//! (returns 1) whatever happens: it only ever rewrites a connect it owns.

use aya_ebpf::helpers::bpf_get_socket_cookie;
use aya_ebpf::macros::cgroup_sock_addr;
use aya_ebpf::programs::SockAddrContext;
use ingress_common::l4::flow_hash;
use ingress_common::local::L4LocalDial;

use crate::counters::count_local_flow;
use crate::maps::L4_LOCAL;
use crate::service::{pick, tcp_service};

const SOCK_STREAM: u32 = 1;
const ALLOW: i32 = 1;
/// `::ffff:0:0/96` in the third word of an IPv6 address (network byte order).
const V4_MAPPED: u32 = 0x0000_ffffu32.to_be();
const LOOPBACK4: u32 = 0x7f00_0001u32.to_be();

#[cgroup_sock_addr(connect4)]
pub fn l4_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passes to a connect4 program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return ALLOW;
    }
    let (addr, port) = (sa.user_ip4, sa.user_port as u16);
    if let Some((ep_addr, ep_port)) = rewrite_target(&ctx, addr, port, [0, 0, 0, addr], 4) {
        sa.user_ip4 = ep_addr;
        sa.user_port = ep_port as u32;
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn l4_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passes to a connect6 program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return ALLOW;
    }
    let ip6 = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
    let Some(addr) = ipv4_frontend_of(ip6) else {
        return ALLOW;
    };
    let port = sa.user_port as u16;
    if let Some((ep_addr, ep_port)) = rewrite_target(&ctx, addr, port, ip6, 6) {
        sa.user_ip6[0] = 0;
        sa.user_ip6[1] = 0;
        sa.user_ip6[2] = V4_MAPPED;
        sa.user_ip6[3] = ep_addr;
        sa.user_port = ep_port as u32;
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn l4_getpeername4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passes to a getpeername4 program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if let Some(d) = dialled(&ctx, 4) {
        sa.user_ip4 = d.addr[3];
        sa.user_port = d.port as u32;
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn l4_getpeername6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passes to a getpeername6 program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if let Some(d) = dialled(&ctx, 6) {
        sa.user_ip6[0] = d.addr[0];
        sa.user_ip6[1] = d.addr[1];
        sa.user_ip6[2] = d.addr[2];
        sa.user_ip6[3] = d.addr[3];
        sa.user_port = d.port as u32;
    }
    ALLOW
}

/// The endpoint a connect to IPv4 frontend `addr:port` goes to, after recording what
/// the socket dialled (`dial`, `family`) for getpeername. None: not a frontend, no
/// endpoint, or the record could not be kept (then the connect is left alone: a
/// rewritten socket that could not report its dialled peer would lie to its process).
#[inline(always)]
fn rewrite_target(ctx: &SockAddrContext, addr: u32, port: u16, dial: [u32; 4], family: u16) -> Option<(u32, u16)> {
    let svc = tcp_service(addr, port)?;
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // The socket's cookie stands in for the flow: each connect hashes on its own.
    let hash = flow_hash(cookie as u32, (cookie >> 32) as u32, port, port);
    let ep = pick(&svc, hash)?;
    let rec = L4LocalDial { addr: dial, port, family };
    L4_LOCAL.insert(&cookie, &rec, 0).ok()?;
    count_local_flow(svc.id);
    Some((ep.addr, ep.port))
}

/// What a socket of `family` dialled before its connect was rewritten.
#[inline(always)]
fn dialled(ctx: &SockAddrContext, family: u16) -> Option<L4LocalDial> {
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: read-only copy of the value.
    let d = unsafe { L4_LOCAL.get(&cookie) }.copied()?;
    (d.family == family).then_some(d)
}

/// The IPv4 frontend an IPv6 destination stands for: `::ffff:a.b.c.d` is a.b.c.d, `::1`
/// is 127.0.0.1, `::` is 0.0.0.0.
#[inline(always)]
fn ipv4_frontend_of(ip6: [u32; 4]) -> Option<u32> {
    if ip6[0] != 0 || ip6[1] != 0 {
        return None;
    }
    match (ip6[2], ip6[3]) {
        (V4_MAPPED, a) => Some(a),
        (0, 0) => Some(0),
        (0, a) if a == 1u32.to_be() => Some(LOOPBACK4),
        _ => None,
    }
}
