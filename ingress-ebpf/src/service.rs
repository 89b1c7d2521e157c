//! Looking up an L4 service by its frontend and picking an endpoint from its Maglev
//! row: shared by the tc program on the NIC (hash of the flow) and the cgroup hooks for
//! local clients (hash of the socket).

use ingress_common::l4::{L4Endpoint, L4Frontend, L4Service, MAGLEV_M};
use ingress_common::proto;

use crate::maps::{L4_ENDPOINTS, L4_MAGLEV, L4_SERVICES};

/// The service of TCP frontend `addr:port` (network byte order), if it is one.
#[inline(always)]
pub fn tcp_service(addr: u32, port: u16) -> Option<L4Service> {
    let fe = L4Frontend { addr, port, proto: proto::TCP, _pad: 0 };
    // SAFETY: read-only copy of the value.
    unsafe { L4_SERVICES.get(&fe) }.copied()
}

/// The endpoint in slot `hash % MAGLEV_M` of the service's table row; None when the
/// service has no endpoint.
#[inline(always)]
pub fn pick(svc: &L4Service, hash: u32) -> Option<L4Endpoint> {
    if svc.endpoints == 0 {
        return None;
    }
    let slot = hash % MAGLEV_M;
    let id = *L4_MAGLEV.get(svc.table.checked_mul(MAGLEV_M)?.checked_add(slot)?)?;
    if id == 0 {
        return None;
    }
    // SAFETY: read-only copy of the value.
    unsafe { L4_ENDPOINTS.get(&id) }.copied()
}
