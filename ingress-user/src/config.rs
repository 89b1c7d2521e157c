//! Command-line values that need parsing: the `--listen ADDR=NAMESPACE/GATEWAY[:PORT]`
//! mapping of a host address to a Gateway's HTTP listeners.

use std::net::SocketAddr;
use std::str::FromStr;

use crate::resources::ObjectKey;

/// `ADDR=NAMESPACE/GATEWAY[:LISTENERPORT]`: serve on ADDR the HTTP listeners of the
/// Gateway (all of them, or only those whose `port` is LISTENERPORT). The VM's port
/// differs from the listener's on k3d (8080 -> 80), hence the explicit mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenMapping {
    pub addr: SocketAddr,
    pub gateway: ObjectKey,
    pub listener_port: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid --listen `{value}`: {reason} (expected ADDR=NAMESPACE/GATEWAY[:LISTENERPORT], e.g. 0.0.0.0:8080=openchoreo-control-plane/gateway-default:80)"
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
