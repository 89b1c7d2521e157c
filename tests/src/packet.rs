//! A small packet builder (Ethernet, optional VLAN or QinQ tags, IPv4 with options and
//! fragment flags, IPv6 with extension headers, TCP/UDP, ARP) with correct checksums
//! computed here (independently of the programs), and BPF_PROG_TEST_RUN to feed
//! packets to a loaded program.

use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp { src: u16, dst: u16, flags: u8, payload: Vec<u8> },
    Udp { src: u16, dst: u16, payload: Vec<u8> },
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// A packet under construction. `build()` computes lengths and checksums.
#[derive(Clone, Debug)]
pub struct Packet {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// IPv4 fragment offset in 8-byte units (0 = first fragment).
    pub frag_offset: u16,
    pub ttl: u8,
    /// IPv4 "more fragments" flag.
    pub more_fragments: bool,
    /// IPv4 options (padded to a multiple of 4 bytes by `build`).
    pub ip_options: Vec<u8>,
    /// IPv6 extension headers in order, between the fixed header and the L4 header.
    pub ext_headers: Vec<ExtHeader>,
    /// An outer 802.1ad tag before the 802.1Q one (QinQ).
    pub outer_vlan: Option<u16>,
}

/// An IPv6 extension header as `build` writes it (its next-header byte chains them).
#[derive(Clone, Debug)]
pub enum ExtHeader {
    /// Hop-by-hop options (0), `units` extra 8-byte units after the first (PadN filled).
    HopByHop { units: u8 },
    /// Routing (43), type 4 (segment routing) with `units` extra 8-byte units, 0 segments left.
    Routing { units: u8 },
    /// Destination options (60).
    DestOpts { units: u8 },
    /// Fragment (44): offset in 8-byte units, more-fragments flag.
    Fragment { offset: u16, more: bool },
    /// Authentication header (51), `len` in the AH's own units (4 bytes, minus 2).
    Auth { len: u8 },
}

impl ExtHeader {
    pub fn kind(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => 0,
            Self::Routing { .. } => 43,
            Self::DestOpts { .. } => 60,
            Self::Fragment { .. } => 44,
            Self::Auth { .. } => 51,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Self::HopByHop { units } | Self::DestOpts { units } => {
                let mut b = vec![next, *units];
                // one PadN option filling the rest of the header
                let pad = 8 * (*units as usize + 1) - 2;
                b.push(1);
                b.push((pad - 2) as u8);
                b.resize(2 + pad, 0);
                b
            }
            Self::Routing { units } => {
                let mut b = vec![next, *units, 4, 0];
                b.resize(8 * (*units as usize + 1), 0);
                b
            }
            Self::Fragment { offset, more } => {
                let mut b = vec![next, 0];
                b.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                b.extend_from_slice(&0x0102_0304u32.to_be_bytes());
                b
            }
            Self::Auth { len } => {
                let mut b = vec![next, *len, 0, 0];
                b.extend_from_slice(&0x100u32.to_be_bytes()); // SPI
                b.resize(4 * (*len as usize + 2), 0);
                b
            }
        }
    }
}

impl Packet {
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Self {
        Self::new(src, dst, L4::Tcp { src: sport, dst: dport, flags, payload: vec![] })
    }

    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Self {
        Self::new(src, dst, L4::Udp { src: sport, dst: dport, payload: payload.to_vec() })
    }

    fn new(src: &str, dst: &str, l4: L4) -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            vlan: None,
            src: src.parse().expect("source IP"),
            dst: dst.parse().expect("destination IP"),
            l4,
            frag_offset: 0,
            ttl: 64,
            more_fragments: false,
            ip_options: vec![],
            ext_headers: vec![],
            outer_vlan: None,
        }
    }

    /// Adds an IPv6 extension header after those already added.
    pub fn ext(mut self, h: ExtHeader) -> Self {
        self.ext_headers.push(h);
        self
    }

    /// IPv4 options (NOPs and an end-of-list here; `bytes` padded to 4).
    pub fn ip_options(mut self, bytes: &[u8]) -> Self {
        self.ip_options = bytes.to_vec();
        while self.ip_options.len() % 4 != 0 {
            self.ip_options.push(0);
        }
        self
    }

    pub fn more_fragments(mut self) -> Self {
        self.more_fragments = true;
        self
    }

    /// QinQ: an outer 802.1ad tag `outer` and the inner 802.1Q tag `inner`.
    pub fn qinq(mut self, outer: u16, inner: u16) -> Self {
        self.outer_vlan = Some(outer);
        self.vlan = Some(inner);
        self
    }

    /// Offset of the IP header in the built frame.
    pub fn l3_offset(&self) -> usize {
        14 + 4 * (self.vlan.is_some() as usize + self.outer_vlan.is_some() as usize)
    }

    pub fn payload(mut self, data: &[u8]) -> Self {
        match &mut self.l4 {
            L4::Tcp { payload, .. } | L4::Udp { payload, .. } => *payload = data.to_vec(),
        }
        self
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }

    pub fn fragment(mut self, offset_units: u16) -> Self {
        self.frag_offset = offset_units;
        self
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        match &self.l4 {
            L4::Tcp { src, dst, flags, payload } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&src.to_be_bytes());
                b.extend_from_slice(&dst.to_be_bytes());
                b.extend_from_slice(&1u32.to_be_bytes()); // seq
                b.extend_from_slice(&(if flags & ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
                b.push(5 << 4); // data offset
                b.push(*flags);
                b.extend_from_slice(&64240u16.to_be_bytes()); // window
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                b.extend_from_slice(payload);
                (6, b)
            }
            L4::Udp { src, dst, payload } => {
                let mut b = Vec::with_capacity(8 + payload.len());
                b.extend_from_slice(&src.to_be_bytes());
                b.extend_from_slice(&dst.to_be_bytes());
                b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                (17, b)
            }
        }
    }

    fn eth(&self, ethertype: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.dst_mac);
        b.extend_from_slice(&self.src_mac);
        if let Some(id) = self.outer_vlan {
            b.extend_from_slice(&0x88a8u16.to_be_bytes());
            b.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        if let Some(id) = self.vlan {
            b.extend_from_slice(&0x8100u16.to_be_bytes());
            b.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        b.extend_from_slice(&ethertype.to_be_bytes());
        b
    }

    pub fn build(&self) -> Vec<u8> {
        let (proto, mut l4) = self.l4_bytes();
        let csum_off = if proto == 6 { 16 } else { 6 };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, proto]);
                pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                pseudo.extend_from_slice(&l4);
                let c = finish_udp(proto, checksum(&pseudo));
                l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
                let hlen = 20 + self.ip_options.len();
                let mut ip = vec![0x40 | (hlen / 4) as u8, 0];
                ip.extend_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]); // id
                let mf = if self.more_fragments { 0x2000 } else { 0 };
                ip.extend_from_slice(&((self.frag_offset & 0x1fff) | mf).to_be_bytes());
                ip.extend_from_slice(&[self.ttl, proto, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&self.ip_options);
                let c = checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                let mut b = self.eth(ETH_P_IP);
                b.extend_from_slice(&ip);
                b.extend_from_slice(&l4);
                b
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, proto]);
                pseudo.extend_from_slice(&l4);
                let c = finish_udp(proto, checksum(&pseudo));
                l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
                let mut ext = Vec::new();
                for (i, h) in self.ext_headers.iter().enumerate() {
                    let next = self.ext_headers.get(i + 1).map(ExtHeader::kind).unwrap_or(proto);
                    ext.extend_from_slice(&h.bytes(next));
                }
                let first = self.ext_headers.first().map(ExtHeader::kind).unwrap_or(proto);
                let mut ip = vec![0x60, 0, 0, 0];
                ip.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[first, self.ttl]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let mut b = self.eth(ETH_P_IPV6);
                b.extend_from_slice(&ip);
                b.extend_from_slice(&ext);
                b.extend_from_slice(&l4);
                b
            }
            _ => panic!("source and destination must be the same IP version"),
        }
    }
}

/// UDP sends a computed 0 as 0xffff (0 means "no checksum").
fn finish_udp(proto: u8, c: u16) -> u16 {
    if proto == 17 && c == 0 { 0xffff } else { c }
}

/// An ARP request (not IP).
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0xff; 6]);
    b.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    b.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    b.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    b.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    b.extend_from_slice(&sender);
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&target);
    b
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word =
            if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug)]
pub struct TestRun {
    pub retval: u32,
    pub data_out: Vec<u8>,
    pub duration_ns: u32,
}

/// `union bpf_attr` as BPF_PROG_TEST_RUN reads it (include/uapi/linux/bpf.h, 5.10+).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs the program `prog_fd` on `packet` `repeat` times (>= 1) in the kernel.
pub fn test_run(prog_fd: std::os::fd::RawFd, packet: &[u8], repeat: u32) -> std::io::Result<TestRun> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: attr points to a valid, fully initialised bpf_attr prefix whose buffers
    // outlive the call; the kernel writes only within data_size_out.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun { retval: attr.retval, data_out: out, duration_ns: attr.duration })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tcp_checksums_verify() {
        let p = Packet::tcp("198.18.0.1", 40000, "198.18.0.2", 8080, SYN).payload(b"hello").build();
        assert_eq!(p.len(), 14 + 20 + 20 + 5);
        assert_eq!(checksum(&p[14..34]), 0, "IPv4 header checksum verifies to 0");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[26..34]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((p.len() - 34) as u16).to_be_bytes());
        pseudo.extend_from_slice(&p[34..]);
        assert_eq!(checksum(&pseudo), 0, "TCP checksum verifies to 0");
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), 8080);
        assert_eq!(p[47], SYN);
    }

    #[test]
    fn ipv6_udp_and_vlan_layouts() {
        let p = Packet::udp("fd00::1", 5353, "fd00::2", 53, b"q").build();
        assert_eq!(u16::from_be_bytes([p[12], p[13]]), ETH_P_IPV6);
        assert_eq!(p[20], 17);
        assert_eq!(u16::from_be_bytes([p[56], p[57]]), 53);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[22..54]);
        pseudo.extend_from_slice(&9u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        pseudo.extend_from_slice(&p[54..]);
        assert_eq!(checksum(&pseudo), 0);
        let v = Packet::tcp("10.0.0.1", 1, "10.0.0.2", 2, SYN).vlan(42).build();
        assert_eq!(u16::from_be_bytes([v[12], v[13]]), 0x8100);
        assert_eq!(u16::from_be_bytes([v[16], v[17]]), ETH_P_IP);
    }

    #[test]
    fn ipv4_options_fragments_and_qinq_layouts() {
        let p = Packet::tcp("10.0.0.1", 1, "10.0.0.2", 2, SYN).ip_options(&[1, 1, 1]).more_fragments().build();
        assert_eq!(p[14], 0x46, "IHL 6 with one word of options");
        assert_eq!(u16::from_be_bytes([p[16], p[17]]) as usize, p.len() - 14, "total length");
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 0x2000, "MF, offset 0");
        assert_eq!(checksum(&p[14..38]), 0, "IPv4 header checksum over the options");
        assert_eq!(u16::from_be_bytes([p[40], p[41]]), 2, "TCP after the options");
        let q = Packet::udp("10.0.0.1", 1, "10.0.0.2", 53, b"").qinq(100, 200).build();
        assert_eq!(u16::from_be_bytes([q[12], q[13]]), 0x88a8);
        assert_eq!(u16::from_be_bytes([q[16], q[17]]), 0x8100);
        assert_eq!(u16::from_be_bytes([q[20], q[21]]), ETH_P_IP);
    }

    #[test]
    fn ipv6_extension_headers_chain_to_the_l4_header() {
        let p = Packet::tcp("fd00::1", 1000, "fd00::2", 8080, SYN)
            .ext(ExtHeader::HopByHop { units: 0 })
            .ext(ExtHeader::Routing { units: 2 })
            .ext(ExtHeader::Fragment { offset: 0, more: false })
            .ext(ExtHeader::Auth { len: 4 })
            .ext(ExtHeader::DestOpts { units: 1 })
            .build();
        // walk the chain the way RFC 8200 defines it
        let (mut next, mut off) = (p[20], 54);
        let mut kinds = vec![];
        while next != 6 {
            kinds.push(next);
            let len = match next {
                44 => 8,
                51 => (p[off + 1] as usize + 2) * 4,
                _ => (p[off + 1] as usize + 1) * 8,
            };
            next = p[off];
            off += len;
        }
        assert_eq!(kinds, [0, 43, 44, 51, 60]);
        assert_eq!(off, 54 + 8 + 24 + 8 + 24 + 16);
        assert_eq!(u16::from_be_bytes([p[off + 2], p[off + 3]]), 8080);
        assert_eq!(u16::from_be_bytes([p[18], p[19]]) as usize, p.len() - 54, "payload length");
        // the TCP checksum covers only the upper layer
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[22..54]);
        pseudo.extend_from_slice(&((p.len() - off) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        pseudo.extend_from_slice(&p[off..]);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3 example: sum of these words is 0xddf2, checksum its complement
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
    }
}
