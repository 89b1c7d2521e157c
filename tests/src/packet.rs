//! A small packet builder (Ethernet, optional VLAN, IPv4/IPv6, TCP/UDP, ARP) with
//! correct checksums, and BPF_PROG_TEST_RUN to feed packets to a loaded program.

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
        }
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
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]); // id
                ip.extend_from_slice(&(self.frag_offset & 0x1fff).to_be_bytes());
                ip.extend_from_slice(&[self.ttl, proto, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
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
                let mut ip = vec![0x60, 0, 0, 0];
                ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                ip.extend_from_slice(&[proto, self.ttl]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let mut b = self.eth(ETH_P_IPV6);
                b.extend_from_slice(&ip);
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
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3 example: sum of these words is 0xddf2, checksum its complement
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
    }
}
