//! Targeted impairment for [`super::ImpairedLink`]: the first packet of a kind (a SYN-ACK,
//! the handshake's pure ACK, a segment with payload) dropped or sent twice, once per
//! connection or once per link, decided by a pure classification of the packet's bytes
//! (an IPv4 datagram, as NFQUEUE hands it over) so it is unit-tested.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::Fate;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment's facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub flags: u8,
    /// Payload bytes (after the TCP header and its options).
    pub payload: usize,
}

impl Segment {
    /// The connection, the same in both directions.
    pub fn connection(&self) -> (SocketAddrV4, SocketAddrV4) {
        if (self.src.ip(), self.src.port()) <= (self.dst.ip(), self.dst.port()) {
            (self.src, self.dst)
        } else {
            (self.dst, self.src)
        }
    }
}

/// The TCP segment in an IPv4 datagram; `None` for anything else (IPv6, other protocols,
/// fragments after the first, truncated or inconsistent headers).
pub fn classify(packet: &[u8]) -> Option<Segment> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let frag_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
    if ihl < 20 || tot_len < ihl || tot_len > packet.len() || packet[9] != 6 || frag_offset != 0 {
        return None;
    }
    let tcp = &packet[ihl..tot_len];
    if tcp.len() < 20 {
        return None;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return None;
    }
    let addr = |o: usize| Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]);
    let port = |o: usize| u16::from_be_bytes([tcp[o], tcp[o + 1]]);
    Some(Segment {
        src: SocketAddrV4::new(addr(12), port(0)),
        dst: SocketAddrV4::new(addr(16), port(2)),
        flags: tcp[13],
        payload: tcp.len() - doff,
    })
}

/// Which packets a [`Target`] picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SYN and ACK set (no RST).
    SynAck,
    /// ACK only (no SYN, FIN or RST) and no payload: the first one of a connection is the
    /// handshake's third packet.
    PureAck,
    /// A segment with payload (no SYN or RST; a FIN may ride on it).
    Data,
}

impl Kind {
    pub fn matches(self, s: &Segment) -> bool {
        let f = s.flags;
        match self {
            Kind::SynAck => f & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK,
            Kind::PureAck => f & (TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK) == TCP_ACK && s.payload == 0,
            Kind::Data => f & (TCP_SYN | TCP_RST) == 0 && s.payload > 0,
        }
    }
}

/// What happens to a picked packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    /// Let it through and send a copy right after it.
    Duplicate,
}

/// How often a [`Target`] picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The first matching packet of every connection.
    Connection,
    /// The first matching packet on the link, then nothing.
    Link,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub action: Action,
    pub scope: Scope,
}

/// A [`Target`]'s memory: the connections it already picked from.
#[derive(Debug)]
pub struct Picker {
    target: Target,
    picked: HashSet<(SocketAddrV4, SocketAddrV4)>,
    done: bool,
}

impl Picker {
    pub fn new(target: Target) -> Self {
        Self { target, picked: HashSet::new(), done: false }
    }

    /// The fate of the next packet on the link (`None`: not a TCP segment, passed).
    pub fn fate(&mut self, seg: Option<&Segment>) -> Fate {
        let Some(s) = seg else { return Fate::Pass };
        if self.done || !self.target.kind.matches(s) {
            return Fate::Pass;
        }
        match self.target.scope {
            Scope::Link => self.done = true,
            Scope::Connection => {
                if !self.picked.insert(s.connection()) {
                    return Fate::Pass;
                }
            }
        }
        match self.target.action {
            Action::Drop => Fate::Drop,
            Action::Duplicate => Fate::Duplicate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 + TCP datagram (checksums left zero: the classifier does not read them).
    fn packet(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        flags: u8,
        options: usize,
        payload: usize,
    ) -> Vec<u8> {
        let doff = 20 + options;
        let tot = 20 + doff + payload;
        let mut p = vec![0u8; tot];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = ((doff / 4) as u8) << 4;
        p[33] = flags;
        p
    }

    const C: [u8; 4] = [198, 18, 0, 1];
    const V: [u8; 4] = [198, 18, 0, 2];

    #[test]
    fn the_classifier_reads_tuple_flags_and_payload_past_the_options() {
        let s = classify(&packet(C, 40000, V, 9080, TCP_ACK | 0x08, 12, 300)).expect("a segment");
        assert_eq!(s.src, "198.18.0.1:40000".parse().unwrap());
        assert_eq!(s.dst, "198.18.0.2:9080".parse().unwrap());
        assert_eq!((s.flags, s.payload), (TCP_ACK | 0x08, 300));
        // padding after tot_len (Ethernet minimum frames) is not payload
        let mut padded = packet(C, 1, V, 2, TCP_ACK, 0, 0);
        padded.extend([0u8; 6]);
        assert_eq!(classify(&padded).unwrap().payload, 0);
        // the same connection both ways
        let back = classify(&packet(V, 9080, C, 40000, TCP_ACK, 0, 0)).unwrap();
        assert_eq!(back.connection(), s.connection());
    }

    #[test]
    fn the_classifier_refuses_what_is_not_a_whole_ipv4_tcp_header() {
        let good = packet(C, 1, V, 2, TCP_ACK, 0, 10);
        assert!(classify(&good).is_some());
        let mut udp = good.clone();
        udp[9] = 17;
        let mut v6 = good.clone();
        v6[0] = 0x60;
        let mut frag = good.clone();
        frag[7] = 0x10; // offset 16 * 8
        let mut short_doff = good.clone();
        short_doff[32] = 4 << 4;
        let mut long_doff = good.clone();
        long_doff[32] = 15 << 4; // 60 bytes of header in a 30-byte segment
        let mut long_tot = good.clone();
        long_tot[2..4].copy_from_slice(&1000u16.to_be_bytes());
        for (name, p) in [
            ("udp", udp),
            ("ipv6", v6),
            ("fragment", frag),
            ("doff < 5", short_doff),
            ("doff past the end", long_doff),
            ("tot_len past the end", long_tot),
            ("truncated", good[..30].to_vec()),
            ("empty", vec![]),
        ] {
            assert_eq!(classify(&p), None, "{name}");
        }
    }

    #[test]
    fn kinds_pick_syn_acks_pure_acks_and_data() {
        let seg = |flags, payload| classify(&packet(C, 1, V, 2, flags, 12, payload)).unwrap();
        let cases = [
            (seg(TCP_SYN, 0), [false, false, false]),
            (seg(TCP_SYN | TCP_ACK, 0), [true, false, false]),
            (seg(TCP_ACK, 0), [false, true, false]),
            (seg(TCP_ACK | 0x08, 100), [false, false, true]),
            (seg(TCP_ACK | TCP_FIN | 0x08, 100), [false, false, true]),
            (seg(TCP_ACK | TCP_FIN, 0), [false, false, false]),
            (seg(TCP_RST | TCP_ACK, 0), [false, false, false]),
            (seg(TCP_RST | TCP_ACK, 10), [false, false, false]),
            (seg(TCP_SYN | TCP_ACK | TCP_RST, 0), [false, false, false]),
        ];
        for (s, want) in cases {
            let got = [Kind::SynAck, Kind::PureAck, Kind::Data].map(|k| k.matches(&s));
            assert_eq!(got, want, "{s:?}");
        }
    }

    #[test]
    fn a_picker_acts_once_per_connection_or_once_per_link() {
        let data = |sport| classify(&packet(C, sport, V, 9080, TCP_ACK | 0x08, 12, 500)).unwrap();
        let ack = classify(&packet(C, 1000, V, 9080, TCP_ACK, 12, 0)).unwrap();
        let mut per_conn = Picker::new(Target { kind: Kind::Data, action: Action::Drop, scope: Scope::Connection });
        let fates: Vec<Fate> =
            [Some(ack), Some(data(1000)), Some(data(1000)), Some(data(1001)), None, Some(data(1001))]
                .iter()
                .map(|s| per_conn.fate(s.as_ref()))
                .collect();
        use Fate::{Drop, Pass};
        assert_eq!(fates, vec![Pass, Drop, Pass, Drop, Pass, Pass]);
        let mut per_link = Picker::new(Target { kind: Kind::Data, action: Action::Duplicate, scope: Scope::Link });
        let fates: Vec<Fate> = [data(1000), data(1001), data(1000)].iter().map(|s| per_link.fate(Some(s))).collect();
        assert_eq!(fates, vec![Fate::Duplicate, Pass, Pass]);
    }
}
