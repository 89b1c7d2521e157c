//! Host routes over netlink (rtnetlink, no `ip` command): read the main table, apply a
//! [`pod_routes::plan`], and [`remove_our_routes`] for `ingress detach`. Every route
//! the agent adds carries [`ROUTE_PROTOCOL`]; nothing else is ever replaced or deleted.
//! Works in the network namespace of the calling process.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::pod_routes::{self, Cidr, InstalledRoute, PodRoute, ROUTE_PROTOCOL, RoutePlan};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink (rtnetlink) socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot list the routes of the main table over netlink: {0}")]
    List(Box<rtnetlink::Error>),
    #[error("cannot list this host's addresses over netlink: {0}")]
    Addresses(Box<rtnetlink::Error>),
    #[error("cannot {what} route {route}: {source}{hint}")]
    Change { what: &'static str, route: String, source: Box<rtnetlink::Error>, hint: &'static str },
}

/// A netlink connection on the current tokio runtime.
pub fn connect() -> Result<Handle, RouteError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn hint(e: &rtnetlink::Error) -> &'static str {
    match errno(e) {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        Some(libc::ENETUNREACH | libc::EINVAL) => {
            " (is the gateway on a directly connected network of this host, of the same IP family?)"
        }
        Some(libc::EEXIST) => " (a route to that destination exists already)",
        _ => "",
    }
}

/// The unicast routes of the main table, both families, as the planner sees them.
pub async fn installed(handle: &Handle) -> Result<Vec<InstalledRoute>, RouteError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessage::default();
        q.header.address_family = family;
        let mut dump = handle.route().get(q).execute();
        while let Some(m) = dump.try_next().await.map_err(|e| RouteError::List(Box::new(e)))? {
            if let Some(r) = to_installed(&m) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// A route message of the main table as an [`InstalledRoute`]; `None` for other
/// tables, types (local, broadcast, ...) and messages without a usable destination.
fn to_installed(m: &RouteMessage) -> Option<InstalledRoute> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(m.header.table as u32);
    if table != RouteHeader::RT_TABLE_MAIN as u32 || m.header.kind != RouteType::Unicast {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let len = m.header.destination_prefix_length;
    let dst = m.attributes.iter().find_map(|a| if let RouteAttribute::Destination(d) = a { ip(d) } else { None });
    let dst = match (dst, m.header.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) if len == 0 => IpAddr::from([0u8; 4]),
        (None, AddressFamily::Inet6) if len == 0 => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    let via = m.attributes.iter().find_map(|a| if let RouteAttribute::Gateway(g) = a { ip(g) } else { None });
    let cidr = Cidr::new(dst, len).ok()?;
    Some(InstalledRoute { cidr, via, protocol: u8::from(m.header.protocol) })
}

fn message(cidr: Cidr, via: Option<IpAddr>, protocol: u8) -> RouteMessage {
    let b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(cidr.addr, cidr.len)
        .expect("a Cidr is a valid destination for its own family");
    let b = match via {
        Some(v) => b.gateway(v).expect("the gateway has the destination's family (checked at parse)"),
        None => b,
    };
    b.protocol(RouteProtocol::from(protocol)).build()
}

/// What [`sync`] did.
#[derive(Debug, Default)]
pub struct Applied {
    pub plan: RoutePlan,
    pub errors: Vec<String>,
}

/// Applies a plan: adds and replaces first, deletes last. Every change is tried; the
/// failures are returned as messages naming the route and the kernel's error.
pub async fn apply(handle: &Handle, plan: &RoutePlan) -> Vec<String> {
    let mut errors = Vec::new();
    for (r, replace) in plan.add.iter().map(|r| (r, false)).chain(plan.replace.iter().map(|r| (r, true))) {
        let mut req = handle.route().add(message(r.cidr, Some(r.via), ROUTE_PROTOCOL));
        if replace {
            req = req.replace();
        }
        match req.execute().await {
            Ok(()) => tracing::info!(route = %r, protocol = ROUTE_PROTOCOL, replace, "host route installed"),
            Err(source) => errors.push(
                RouteError::Change {
                    what: if replace { "replace" } else { "add" },
                    route: r.to_string(),
                    hint: hint(&source),
                    source: Box::new(source),
                }
                .to_string(),
            ),
        }
    }
    for r in &plan.delete {
        if let Err(e) = delete(handle, r).await {
            errors.push(e.to_string());
        }
    }
    errors
}

/// Deletes one of our routes. The request carries our protocol, and the kernel deletes
/// only a route of that protocol (IPv4 and IPv6 both match it when it is set): a second
/// guard, besides the planner, that someone else's identical route is never removed.
async fn delete(handle: &Handle, r: &InstalledRoute) -> Result<(), RouteError> {
    debug_assert!(r.ours(), "only routes with our protocol are ever deleted");
    let route = match r.via {
        Some(v) => format!("{} via {v}", r.cidr),
        None => r.cidr.to_string(),
    };
    match handle.route().del(message(r.cidr, r.via, r.protocol)).execute().await {
        Ok(()) => {
            tracing::info!(%route, "host route removed");
            Ok(())
        }
        // gone already (removed by hand meanwhile): nothing to do
        Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
        Err(source) => Err(RouteError::Change { what: "remove", route, hint: hint(&source), source: Box::new(source) }),
    }
}

/// Brings the main table to `wanted`: reads it, plans ([`pod_routes::plan`]), applies.
/// Conflicts (someone else's route to a wanted CIDR) are logged and left alone.
pub async fn sync(handle: &Handle, wanted: &[PodRoute]) -> Result<Applied, RouteError> {
    let plan = pod_routes::plan(wanted, &installed(handle).await?);
    for c in &plan.conflicts {
        tracing::warn!("host route: {c}");
    }
    for f in &plan.foreign {
        tracing::info!(route = %f, "host route exists already (not ours): left as it is and never removed");
    }
    let errors = apply(handle, &plan).await;
    for e in &errors {
        tracing::error!("{e}");
    }
    Ok(Applied { plan, errors })
}

/// The addresses of this host (every interface), so that a Node that is this host gets
/// no route ([`pod_routes::wanted_from_nodes`]).
pub async fn local_addresses(handle: &Handle) -> Result<Vec<IpAddr>, RouteError> {
    let mut out = Vec::new();
    let mut dump = handle.address().get().execute();
    while let Some(m) = dump.try_next().await.map_err(|e| RouteError::Addresses(Box::new(e)))? {
        for a in &m.attributes {
            if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = a {
                out.push(*ip);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Removes every route of the main table that carries the agent's protocol
/// ([`ROUTE_PROTOCOL`]), in this network namespace, and returns them; routes of any
/// other protocol (also identical ones someone else added) stay. For `ingress detach`.
pub async fn remove_our_routes() -> Result<Vec<InstalledRoute>, RouteError> {
    let handle = connect()?;
    let ours: Vec<InstalledRoute> = installed(&handle).await?.into_iter().filter(InstalledRoute::ours).collect();
    let mut errors = Vec::new();
    for r in &ours {
        if let Err(e) = delete(&handle, r).await {
            errors.push(e);
        }
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(ours),
    }
}

/// [`remove_our_routes`] on a runtime of its own, for callers outside tokio (the
/// synchronous `ingress detach`).
pub fn remove_our_routes_blocking() -> Result<Vec<InstalledRoute>, RouteError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RouteError::Socket)?;
    rt.block_on(remove_our_routes())
}
