//! Facts about the VM's NIC that explain how XDP attached.

/// Why driver-mode XDP was refused on `interface`, with what to check: the kernel's
/// error, and for a veth the MTU rule (driver mode needs a frame that fits one page,
/// so an MTU of about 3,500 bytes at most with 4 KiB pages; a 9000-byte MTU on either
/// end falls back to generic mode).
pub(crate) fn generic_reason(interface: &str, error: &str) -> String {
    let is_veth = interface_driver(interface).as_deref() == Some("veth");
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{interface}/mtu")).ok();
    let mtu = mtu.as_deref().map(str::trim).unwrap_or("?");
    if is_veth {
        format!(
            "driver mode was refused ({error}); {interface} is a veth with MTU {mtu}: a veth takes driver-mode XDP only \
             when the MTU of both ends is at most about 3,500 bytes (one page per frame); lower the MTU (e.g. 1500) \
             or accept generic mode"
        )
    } else {
        format!(
            "driver mode was refused ({error}); the driver of {interface} (MTU {mtu}) may lack native XDP; generic mode \
             is slower"
        )
    }
}

/// On a veth, why XDP attaches in generic (skb) mode by choice; None for other
/// drivers. A veth's driver mode gains nothing there (the peer hands over an skb
/// either way) and costs bulk traffic dearly: while a driver-mode program is on a
/// veth, the kernel turns GSO off on its peer and copies every packet into a page of
/// its own, so a TCP sender into the agent sends MTU-sized packets one by one. In the
/// bench topology a 16 MiB WebSocket echo through the eBPF dataplane ran at half the
/// userspace dataplane's speed for that alone (issue 11); an XDP_PASS program in
/// driver mode cut a bulk transfer into a veth to about a third, generic mode did not.
pub(crate) fn veth_generic_reason(interface: &str) -> Option<String> {
    if interface_driver(interface).as_deref() != Some("veth") {
        return None;
    }
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{interface}/mtu")).ok();
    Some(veth_reason(interface, mtu.as_deref().map(str::trim).unwrap_or("?")))
}

/// The text of [`veth_generic_reason`] (pure).
pub(crate) fn veth_reason(interface: &str, mtu: &str) -> String {
    format!(
        "{interface} is a veth with MTU {mtu}: generic (skb) mode is chosen, as on a veth it costs nothing over driver \
         mode and keeps the peer's GSO (driver mode turns GSO off on the peer and copies every packet, so bulk \
         transfers into the agent crawl)"
    )
}

/// The driver of a network interface (`ethtool -i`: SIOCETHTOOL, ETHTOOL_GDRVINFO).
/// By hand: one ioctl; the ethtool crates pull in netlink stacks for this one field.
pub(crate) fn interface_driver(interface: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    let mut info = DrvInfo { cmd: 3, driver: [0; 32], rest: [0; 160] };
    // SAFETY: an ifreq zeroed, with the name copied in (bounded) and a pointer to `info`,
    // which outlives the ioctl; the socket is closed before returning.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        let name = interface.as_bytes();
        if name.len() >= req.ifr_name.len() {
            return None;
        }
        for (d, s) in req.ifr_name.iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
