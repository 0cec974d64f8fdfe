//! Reading the underlay capture back: the frames of one window of the pcap file (between
//! two [`Capture::sync`](super::capture::Capture::sync) marks), each decoded into what the
//! wire shows. Decoding is pure: a UDP datagram (whose payload can then be read as VXLAN or
//! as a bare IPv4 packet), another IPv4 packet, or something else (ARP, IPv6).

use std::net::Ipv4Addr;
use std::path::Path;

use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::udp::UdpPacket;
use pnet_packet::Packet;

use super::capture::HEADER_LEN;
use crate::error::Result;
use crate::lab_err;

pub use crate::lab::nl::Mac;

/// What one captured frame shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Udp(Datagram),
    /// An IPv4 packet other than UDP (ICMP, TCP, …).
    Ip {
        src_mac: Mac,
        dst_mac: Mac,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
    },
    /// Not IPv4 (ARP, IPv6, …).
    Other,
}

/// A UDP datagram over IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// The payload's length as the UDP header states it (the capture keeps only its start).
    pub len: usize,
    /// The captured start of the payload.
    pub payload: Vec<u8>,
}

/// A datagram's payload read as VXLAN (RFC 7348).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub flags: u8,
    pub vni: u32,
    pub inner_src_mac: Mac,
    pub inner_dst_mac: Mac,
    /// The inner frame's IPv4 source and destination, when it carries IPv4.
    pub inner: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl Datagram {
    /// The payload as a VXLAN header and inner Ethernet frame; None when it is too short
    /// or its reserved bits are not zero (it is not VXLAN).
    pub fn vxlan(&self) -> Option<Vxlan> {
        let p = &self.payload;
        if p.len() < 8 + 14 || p[1..4] != [0, 0, 0] || p[7] != 0 {
            return None;
        }
        let inner = EthernetPacket::new(&p[8..])?;
        let ip = (inner.get_ethertype() == EtherTypes::Ipv4).then(|| Ipv4Packet::new(inner.payload())).flatten();
        Some(Vxlan {
            flags: p[0],
            vni: u32::from_be_bytes([0, p[4], p[5], p[6]]),
            inner_src_mac: inner.get_source().octets(),
            inner_dst_mac: inner.get_destination().octets(),
            inner: ip.map(|ip| (ip.get_source(), ip.get_destination())),
        })
    }

    /// The payload as exactly one bare IPv4 packet (flannel's udp backend): version 4, a
    /// valid header and header checksum, and a total length equal to the payload's.
    pub fn bare_ipv4(&self) -> std::result::Result<(Ipv4Addr, Ipv4Addr), String> {
        let p = &self.payload;
        if p.len() < 20 {
            return Err(format!("a {}-byte payload is shorter than an IPv4 header", p.len()));
        }
        let (version, ihl) = (p[0] >> 4, usize::from(p[0] & 0x0f));
        if version != 4 {
            return Err(format!("the payload starts with IP version {version}, not 4 (first byte {:#04x})", p[0]));
        }
        if ihl < 5 || ihl * 4 > p.len() {
            return Err(format!("the payload's IPv4 header length {} is not valid", ihl * 4));
        }
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if total != self.len {
            return Err(format!("the inner packet's total length is {total} bytes, the datagram carries {}", self.len));
        }
        let ip = Ipv4Packet::new(p).ok_or("the payload is not an IPv4 packet")?;
        if pnet_packet::ipv4::checksum(&ip) != ip.get_checksum() {
            return Err("the inner IPv4 header checksum is wrong".into());
        }
        Ok((ip.get_source(), ip.get_destination()))
    }
}

/// Decodes one captured frame.
pub fn decode(frame: &[u8]) -> Wire {
    let Some(eth) = EthernetPacket::new(frame) else { return Wire::Other };
    if eth.get_ethertype() != EtherTypes::Ipv4 {
        return Wire::Other;
    }
    let Some(ip) = Ipv4Packet::new(eth.payload()) else { return Wire::Other };
    let (src_mac, dst_mac) = (eth.get_source().octets(), eth.get_destination().octets());
    let (src, dst) = (ip.get_source(), ip.get_destination());
    let header = usize::from(ip.get_header_length()) * 4;
    let body = eth.payload().get(header..).unwrap_or(&[]);
    if ip.get_next_level_protocol() == IpNextHeaderProtocols::Udp {
        if let Some(udp) = UdpPacket::new(body) {
            return Wire::Udp(Datagram {
                src_mac,
                dst_mac,
                src,
                dst,
                sport: udp.get_source(),
                dport: udp.get_destination(),
                len: usize::from(udp.get_length()).saturating_sub(8),
                payload: body.get(8..).unwrap_or(&[]).to_vec(),
            });
        }
    }
    Wire::Ip { src_mac, dst_mac, src, dst, protocol: ip.get_next_level_protocol().0 }
}

/// The frames written to `path` between byte offsets `from` and `to` (two sync marks).
pub fn read_window(path: &Path, from: u64, to: u64) -> Result<Vec<Wire>> {
    let bytes = std::fs::read(path).map_err(|e| lab_err!("read the underlay capture {}: {e}", path.display()))?;
    let (from, to) = (from as usize, to as usize);
    if to > bytes.len() || from > to || (from as u64) < HEADER_LEN {
        return Err(lab_err!("the underlay capture {} holds {} bytes, not the window {from}..{to}", path.display(), bytes.len()));
    }
    let mut window = bytes[..HEADER_LEN as usize].to_vec();
    window.extend_from_slice(&bytes[from..to]);
    let mut reader =
        pcap_file::pcap::PcapReader::new(std::io::Cursor::new(window)).map_err(|e| lab_err!("read the underlay capture: {e}"))?;
    let mut out = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.map_err(|e| lab_err!("read the underlay capture {}: {e}", path.display()))?;
        out.push(decode(&p.data));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An Ethernet/IPv4 frame around `payload` (UDP when ports are given).
    pub(crate) fn frame(src: Ipv4Addr, dst: Ipv4Addr, ports: Option<(u16, u16)>, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some((sp, dp)) = ports {
            body.extend_from_slice(&sp.to_be_bytes());
            body.extend_from_slice(&dp.to_be_bytes());
            body.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
            body.extend_from_slice(&[0, 0]);
        }
        body.extend_from_slice(payload);
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&ip_header(src, dst, if ports.is_some() { 17 } else { 1 }, body.len()));
        f.extend_from_slice(&body);
        f
    }

    /// A valid 20-byte IPv4 header for a body of `len` bytes.
    pub(crate) fn ip_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&((len + 20) as u16).to_be_bytes());
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        let sum = pnet_packet::ipv4::checksum(&Ipv4Packet::new(&h).unwrap());
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h
    }

    /// A VXLAN payload carrying an inner IPv4 ICMP packet between pod addresses.
    pub(crate) fn vxlan_payload(vni: u32, src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0x08, 0, 0, 0];
        p.extend_from_slice(&vni.to_be_bytes()[1..]);
        p.push(0);
        p.extend_from_slice(&dst_mac);
        p.extend_from_slice(&src_mac);
        p.extend_from_slice(&[0x08, 0x00]);
        p.extend_from_slice(&ip_header(src, dst, 1, 8));
        p.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        p
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn vxlan_frames_are_read_to_their_inner_addresses() {
        let (m1, m2) = ([0x0e, 1, 1, 1, 1, 1], [0x0e, 2, 2, 2, 2, 2]);
        let f =
            frame(a("192.168.99.1"), a("192.168.99.2"), Some((40000, 8472)), &vxlan_payload(7, m1, m2, a("10.244.1.1"), a("10.244.2.1")));
        let Wire::Udp(d) = decode(&f) else { panic!("not udp") };
        assert_eq!((d.src, d.dst, d.dport), (a("192.168.99.1"), a("192.168.99.2"), 8472));
        let v = d.vxlan().unwrap();
        assert_eq!((v.flags, v.vni, v.inner_src_mac, v.inner_dst_mac), (0x08, 7, m1, m2));
        assert_eq!(v.inner, Some((a("10.244.1.1"), a("10.244.2.1"))));
        assert!(d.bare_ipv4().is_err(), "a VXLAN payload is no bare IPv4 packet");
    }

    #[test]
    fn bare_ipv4_payloads_are_checked_whole() {
        let mut inner = ip_header(a("10.244.1.1"), a("10.244.2.1"), 1, 8);
        inner.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        let f = frame(a("192.168.99.1"), a("192.168.99.2"), Some((8285, 8285)), &inner);
        let Wire::Udp(d) = decode(&f) else { panic!() };
        assert_eq!(d.bare_ipv4(), Ok((a("10.244.1.1"), a("10.244.2.1"))));
        assert!(d.vxlan().is_none(), "a bare IPv4 packet is not VXLAN");
        for (byte, value, why) in [(0usize, 0x65u8, "IP version 6"), (3, 0x99, "total length"), (8, 1, "checksum")] {
            let mut bad = inner.clone();
            bad[byte] = value;
            let Wire::Udp(d) = decode(&frame(a("192.168.99.1"), a("192.168.99.2"), Some((8285, 8285)), &bad)) else { panic!() };
            assert!(d.bare_ipv4().unwrap_err().contains(why), "{why}: {:?}", d.bare_ipv4());
        }
        let mut extra = inner.clone();
        extra.extend_from_slice(&[0; 4]);
        let Wire::Udp(d) = decode(&frame(a("192.168.99.1"), a("192.168.99.2"), Some((8285, 8285)), &extra)) else { panic!() };
        assert!(d.bare_ipv4().unwrap_err().contains("the datagram carries 32"), "{:?}", d.bare_ipv4());
    }

    #[test]
    fn other_packets_are_told_apart() {
        let f = frame(a("10.244.1.2"), a("10.244.2.2"), None, &[8, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(decode(&f), Wire::Ip { protocol: 1, .. }));
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(decode(&arp), Wire::Other);
        assert_eq!(decode(&[0u8; 5]), Wire::Other);
    }
}
