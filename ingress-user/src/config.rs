//! Command-line values that need parsing: the `--listen ADDR=NAMESPACE/GATEWAY[:PORT]`
//! mapping of a host address to a Gateway's HTTP or HTTPS listeners.

use std::net::SocketAddr;
use std::str::FromStr;

use crate::resources::ObjectKey;

/// `ADDR=NAMESPACE/GATEWAY[:LISTENERPORT]`: serve on ADDR the HTTP or HTTPS listeners
/// of the Gateway (all of them, or only those whose `port` is LISTENERPORT). The VM's
/// port differs from the listener's on k3d (8080 -> 80, 8443 -> 443), hence the
/// explicit mapping. An HTTPS listener among them makes ADDR speak TLS (routing/tls.rs);
/// a mapping without LISTENERPORT on a Gateway with both serves its HTTP listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenMapping {
    pub addr: SocketAddr,
    pub gateway: ObjectKey,
    pub listener_port: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid --listen `{value}`: {reason} (expected ADDR=NAMESPACE/GATEWAY[:LISTENERPORT], e.g. 0.0.0.0:8080=openchoreo-control-plane/gateway-default:80, or for its HTTPS listener 0.0.0.0:8443=openchoreo-control-plane/gateway-default:443)"
)]
pub struct ListenMappingError {
    value: String,
    reason: String,
}

impl FromStr for ListenMapping {
    type Err = ListenMappingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ListenMappingError { value: s.to_string(), reason: reason.to_string() };
        let (addr, target) = s.split_once('=').ok_or_else(|| err("missing `=`"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| err("ADDR is not IP:PORT"))?;
        let (ns, rest) = target.split_once('/').ok_or_else(|| err("missing `/` between NAMESPACE and GATEWAY"))?;
        let (name, port) = match rest.split_once(':') {
            Some((n, p)) => (n, Some(p.parse::<u16>().map_err(|_| err("LISTENERPORT is not a port number"))?)),
            None => (rest, None),
        };
        if ns.is_empty() || name.is_empty() {
            return Err(err("empty NAMESPACE or GATEWAY"));
        }
        Ok(Self { addr, gateway: ObjectKey::new(ns, name), listener_port: port })
    }
}

impl std::fmt::Display for ListenMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.addr, self.gateway)?;
        if let Some(p) = self.listener_port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mappings() {
        let m: ListenMapping = "0.0.0.0:8080=openchoreo-control-plane/gateway-default:80".parse().unwrap();
        assert_eq!(m.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(m.gateway, ObjectKey::new("openchoreo-control-plane", "gateway-default"));
        assert_eq!(m.listener_port, Some(80));
        assert_eq!(m.to_string(), "0.0.0.0:8080=openchoreo-control-plane/gateway-default:80");
        let m: ListenMapping = "[::1]:9080=dp/gw".parse().unwrap();
        assert_eq!(m.listener_port, None);
    }

    #[test]
    fn rejects_bad_mappings_with_reason() {
        for (bad, why) in [
            ("8080=ns/gw", "ADDR is not IP:PORT"),
            ("0.0.0.0:8080", "missing `=`"),
            ("0.0.0.0:8080=gw", "missing `/`"),
            ("0.0.0.0:8080=ns/gw:http", "LISTENERPORT"),
            ("0.0.0.0:8080=/gw", "empty"),
        ] {
            let e = bad.parse::<ListenMapping>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

/// `PORT=CIDR` of `--deny` / `--allow`: a destination port and a source network (IPv4
/// or IPv6; a bare address is a /32 or /128). Host bits are cleared (`10.1.2.3/8` is
/// `10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortCidr {
    pub port: u16,
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid `{value}`: {reason} (expected PORT=CIDR, e.g. 8080=203.0.113.0/24 or 8080=2001:db8::/32)")]
pub struct PortCidrError {
    value: String,
    reason: String,
}

impl FromStr for PortCidr {
    type Err = PortCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| PortCidrError { value: s.to_string(), reason };
        let (port, cidr) = s.split_once('=').ok_or_else(|| err("missing `=`".into()))?;
        let port: u16 = port.trim().parse().map_err(|_| err(format!("PORT `{port}` is not a port number")))?;
        if port == 0 {
            return Err(err("PORT 0 is not a port".into()));
        }
        let (addr, prefix) = match cidr.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (cidr, None),
        };
        let addr: std::net::IpAddr =
            addr.parse().map_err(|_| err(format!("`{addr}` is not an IPv4 or IPv6 address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(err(format!("prefix length `/{p}` is not 0..={max}"))),
            },
        };
        Ok(Self { port, addr: mask(addr, prefix), prefix })
    }
}

impl std::fmt::Display for PortCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}/{}", self.port, self.addr, self.prefix)
    }
}

/// `addr` with the bits after the first `prefix` cleared.
fn mask(addr: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    use std::net::IpAddr;
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[cfg(test)]
mod port_cidr_tests {
    use super::*;

    #[test]
    fn parses_v4_v6_and_bare_addresses_and_clears_host_bits() {
        let c: PortCidr = "8080=10.1.2.3/8".parse().unwrap();
        assert_eq!((c.port, c.addr, c.prefix), (8080, "10.0.0.0".parse().unwrap(), 8));
        assert_eq!(c.to_string(), "8080=10.0.0.0/8");
        let c: PortCidr = "443=2001:db8:ffff::1/32".parse().unwrap();
        assert_eq!((c.addr, c.prefix), ("2001:db8::".parse().unwrap(), 32));
        let c: PortCidr = "9080=198.18.0.3".parse().unwrap();
        assert_eq!(c.prefix, 32);
        let c: PortCidr = "9080=fd00::7".parse().unwrap();
        assert_eq!((c.addr, c.prefix), ("fd00::7".parse().unwrap(), 128));
        let c: PortCidr = "1=0.0.0.0/0".parse().unwrap();
        assert_eq!(c.prefix, 0);
    }

    #[test]
    fn rejects_bad_values_saying_what_is_wrong() {
        for (bad, why) in [
            ("10.0.0.0/8", "missing `=`"),
            ("http=10.0.0.0/8", "PORT `http` is not a port number"),
            ("70000=10.0.0.0/8", "PORT `70000`"),
            ("0=10.0.0.0/8", "PORT 0"),
            ("8080=10.0.0/8", "`10.0.0` is not an IPv4 or IPv6 address"),
            ("8080=10.0.0.0/33", "`/33` is not 0..=32"),
            ("8080=fd00::/129", "`/129` is not 0..=128"),
            ("8080=10.0.0.0/x", "`/x`"),
        ] {
            let e = bad.parse::<PortCidr>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(bad), "the error names the value: {e}");
        }
    }
}

// The config file (`ingress run --config FILE`): parsing, the merge with the flags, and
// what a reload changes.
pub mod file;
pub mod reload;
pub mod settings;
