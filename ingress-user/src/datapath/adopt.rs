//! Links across agent restarts. A stopped or killed agent leaves its pinned links
//! attached (the data path keeps running on the pinned maps); the next agent puts its
//! freshly loaded program into the same link with BPF_LINK_UPDATE. That swap is
//! atomic in the kernel: every packet runs either the old or the new program, never
//! none and never both, so there is no gap and no second XDP program competing for
//! the interface (a second attach would fail with EBUSY anyway). The alternative,
//! detach then attach, would let packets through unguarded in between.

use aya::programs::links::FdLink;
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{ProgramError, Xdp};
use ingress_common::maps::XDP_PROGRAM;

use super::EbpfError;
use super::interface::generic_reason;
use super::loader::{Dataplane, program};
use super::pinning::xdp_link_kind;
use super::pins::Pins;
use crate::telemetry::XdpInfo;

/// Puts this agent's XDP program into the link an earlier agent pinned for
/// `interface`, if there is one that is still attached. True when adopted.
pub(super) fn adopt_xdp(d: &mut Dataplane, pins: &Pins, interface: &str) -> Result<bool, EbpfError> {
    for mode in ["driver", "generic"] {
        let kind = xdp_link_kind(mode);
        let Some(fd_link) = pins.pinned_link(&kind, interface)? else {
            continue;
        };
        let link = match XdpLink::try_from(fd_link) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%interface, error = %e, "the pinned XDP link is not an XDP link; replacing its pin");
                pins.remove_link_pin(&kind, interface);
                continue;
            }
        };
        let prog: &mut Xdp = program(&mut d.ebpf, XDP_PROGRAM)?;
        match prog.attach_to_link(link) {
            Ok(_) => {
                tracing::info!(
                    %interface,
                    mode,
                    "XDP program attached: replaced the program of the link pinned by an earlier agent (BPF_LINK_UPDATE, no gap)"
                );
                let why_generic = (mode == "generic").then(|| {
                    super::interface::veth_generic_reason(interface)
                        .unwrap_or_else(|| generic_reason(interface, "the earlier agent's attach fell back to it"))
                });
                d.xdp = Some(XdpInfo { interface: interface.into(), mode: mode.into(), why_generic });
                return Ok(true);
            }
            Err(e) if is_errno(&e, libc::ENOLINK) => {
                // the interface it was attached to is gone (re-created since)
                tracing::info!(%interface, "the pinned XDP link's interface is gone; attaching anew");
                pins.remove_link_pin(&kind, interface);
            }
            Err(source) => {
                return Err(EbpfError::Adopt { interface: interface.into(), dir: pins.dir().into(), source });
            }
        }
    }
    Ok(false)
}

/// Pins the XDP link just attached to `interface`, so it outlives the agent.
pub(super) fn pin_xdp(
    d: &mut Dataplane,
    pins: &Pins,
    interface: &str,
    link: XdpLinkId,
    mode: &str,
) -> Result<(), EbpfError> {
    let prog: &mut Xdp = program(&mut d.ebpf, XDP_PROGRAM)?;
    let link = prog.take_link(link).map_err(|source| EbpfError::Load { program: XDP_PROGRAM, source })?;
    match FdLink::try_from(link) {
        Ok(fd) => {
            // the pin holds the attachment from now on; this descriptor may close
            let pinned = pins.pin_link(&xdp_link_kind(mode), interface, fd)?;
            drop(pinned);
        }
        Err(_) => tracing::warn!(
            %interface,
            "XDP is attached through netlink (this kernel has no XDP links, before 5.9): it cannot be pinned and stays \
             attached after the agent exits; the next agent replaces it, `ingress detach --interface {interface}` \
             does not see it"
        ),
    }
    Ok(())
}

fn is_errno(e: &ProgramError, errno: i32) -> bool {
    matches!(e, ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno))
}
