//! Delayed binding's edge SYN cookie (ingress_common::syncookie, the XDP program
//! `syncookie_xdp`): its two maps and the program's fd. The agent does not attach the
//! program yet (`--bind-in-kernel` is refused); the packet tier loads and runs it.

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, MapData};
use aya::programs::Xdp;
use ingress_common::maps::{SYNCOOKIE_CONFIG_MAP, SYNCOOKIE_PROGRAM, SYNCOOKIE_TARGETS_MAP};
use ingress_common::syncookie::{SynCookieConfig, SynCookieTarget};

use super::loader::{program, take_map};
use super::{Dataplane, EbpfError};

/// The cookie program's maps: its config (keys, current slot, path MSS, window) and the
/// frontends whose SYNs it answers (empty: it answers none).
pub struct SynCookieMaps {
    config: Array<MapData, SynCookieConfig>,
    targets: HashMap<MapData, SynCookieTarget, u32>,
}

/// Pure: the map key of frontend `addr:port`.
pub fn target(addr: Ipv4Addr, port: u16) -> SynCookieTarget {
    SynCookieTarget { addr: u32::from_ne_bytes(addr.octets()), port: port.to_be(), _pad: 0 }
}

/// A fresh SipHash key from the kernel's random pool.
pub fn random_key() -> std::io::Result<[u64; 2]> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok([u64::from_ne_bytes(b[..8].try_into().expect("8")), u64::from_ne_bytes(b[8..].try_into().expect("8"))])
}

impl SynCookieMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, EbpfError> {
        Ok(Self { config: take_map(ebpf, SYNCOOKIE_CONFIG_MAP)?, targets: take_map(ebpf, SYNCOOKIE_TARGETS_MAP)? })
    }

    pub fn set_config(&mut self, cfg: &SynCookieConfig) -> Result<(), EbpfError> {
        self.config.set(0, cfg, 0).map_err(|source| EbpfError::Map { map: SYNCOOKIE_CONFIG_MAP, source })
    }

    pub fn config(&self) -> Result<SynCookieConfig, EbpfError> {
        self.config.get(&0, 0).map_err(|source| EbpfError::Map { map: SYNCOOKIE_CONFIG_MAP, source })
    }

    /// The targets map (delayed binding's runtime removes frontends through it).
    pub(super) fn targets_mut(&mut self) -> &mut HashMap<MapData, SynCookieTarget, u32> {
        &mut self.targets
    }

    pub fn add_target(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), EbpfError> {
        self.targets
            .insert(target(addr, port), 1, 0)
            .map_err(|source| EbpfError::Map { map: SYNCOOKIE_TARGETS_MAP, source })
    }
}

impl Dataplane {
    /// Loads (not attaches) the cookie program and returns its fd, for BPF_PROG_TEST_RUN.
    pub fn syncookie_program_fd(&mut self) -> Result<std::os::fd::RawFd, EbpfError> {
        use std::os::fd::{AsFd, AsRawFd};
        let prog: &mut Xdp = program(&mut self.ebpf, SYNCOOKIE_PROGRAM)?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| EbpfError::Load { program: SYNCOOKIE_PROGRAM, source })?;
        }
        let fd = prog.fd().map_err(|source| EbpfError::Load { program: SYNCOOKIE_PROGRAM, source })?;
        Ok(fd.as_fd().as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_in_network_byte_order_as_the_packet_has_them() {
        let t = target(Ipv4Addr::new(198, 18, 0, 2), 8080);
        assert_eq!(t.addr.to_ne_bytes(), [198, 18, 0, 2]);
        assert_eq!(t.port.to_ne_bytes(), 8080u16.to_be_bytes());
        let (a, b) = (random_key().unwrap(), random_key().unwrap());
        assert_ne!(a, b, "two fresh keys differ");
    }
}
