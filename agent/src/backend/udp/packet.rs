//! The udp data path's decisions, without I/O: the peer table (who may send what, where
//! each subnet lives), where a packet from the TUN device goes, whether a datagram is
//! accepted, and the IPv4/ICMP arithmetic they need.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::ipnet::Ipv4Net;
use crate::lease::types::{Lease, LeaseEvent};

/// udp leases carry no BackendType at all (as flanneld writes them).
fn is_udp_lease(l: &Lease) -> bool {
    matches!(l.attrs.backend_type.as_deref(), None | Some("udp"))
}

/// Who may send what, and where each subnet lives.
#[derive(Debug, Clone)]
pub struct PeerTable {
    network: Ipv4Net,
    subnet_len: u8,
    own: Option<Ipv4Net>,
    /// subnet address → the peer's PublicIP
    by_subnet: HashMap<u32, Ipv4Addr>,
    /// PublicIP → subnet address
    by_ip: HashMap<Ipv4Addr, u32>,
}

impl PeerTable {
    pub fn new(network: Ipv4Net, subnet_len: u8) -> Self {
        PeerTable { network, subnet_len, own: None, by_subnet: HashMap::new(), by_ip: HashMap::new() }
    }

    pub fn len(&self) -> usize {
        self.by_subnet.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_subnet.is_empty()
    }

    pub fn set_own(&mut self, subnet: Ipv4Net) {
        self.own = Some(subnet);
        self.remove(subnet);
    }

    fn subnet_key(&self, ip: Ipv4Addr) -> u32 {
        u32::from(ip) & (u32::MAX << (32 - self.subnet_len as u32))
    }

    fn insert(&mut self, subnet: Ipv4Net, ip: Ipv4Addr) {
        self.remove(subnet);
        if let Some(old) = self.by_ip.insert(ip, u32::from(subnet.addr())) {
            self.by_subnet.remove(&old);
        }
        self.by_subnet.insert(u32::from(subnet.addr()), ip);
    }

    fn remove(&mut self, subnet: Ipv4Net) {
        if let Some(ip) = self.by_subnet.remove(&u32::from(subnet.addr())) {
            self.by_ip.remove(&ip);
        }
    }

    /// Applies one lease change; returns whether the table changed. Only the IPv4 half of
    /// a lease matters (an IPv6-only lease has none).
    pub fn apply(&mut self, ev: &LeaseEvent) -> bool {
        match ev {
            LeaseEvent::Added(l) => {
                let Some(subnet) = l.subnets.v4 else { return false };
                if Some(subnet) == self.own {
                    return false;
                }
                if !is_udp_lease(l) || subnet.prefix() != self.subnet_len {
                    let had = self.by_subnet.contains_key(&u32::from(subnet.addr()));
                    self.remove(subnet);
                    return had;
                }
                let same = self.by_subnet.get(&u32::from(subnet.addr())) == Some(&l.attrs.public_ip);
                self.insert(subnet, l.attrs.public_ip);
                !same
            }
            LeaseEvent::Removed(s) => {
                let Some(subnet) = s.v4 else { return false };
                let had = self.by_subnet.contains_key(&u32::from(subnet.addr()));
                self.remove(subnet);
                had
            }
        }
    }

    /// Replaces the table with a complete list of leases.
    pub fn resync(&mut self, leases: &[Lease]) {
        self.by_subnet.clear();
        self.by_ip.clear();
        for l in leases {
            self.apply(&LeaseEvent::Added(l.clone()));
        }
    }

    /// The peer that owns `dst`, if any.
    pub fn peer_for(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if !self.network.contains(dst) {
            return None;
        }
        self.by_subnet.get(&self.subnet_key(dst)).copied()
    }

    /// Whether `inner_src` may arrive from `outer_src`.
    pub fn accepts(&self, outer_src: Ipv4Addr, inner_src: Ipv4Addr) -> bool {
        self.by_ip.get(&outer_src).is_some_and(|s| *s == self.subnet_key(inner_src))
    }
}

/// What to do with a packet read from the TUN device.
#[derive(Debug, PartialEq, Eq)]
pub enum Egress {
    /// Send the (TTL-decremented) packet to this peer.
    Send(Ipv4Addr),
    /// Write this ICMP error back into the TUN device.
    Reply(Vec<u8>),
    Drop(&'static str),
}

/// Why a received datagram was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    NotIpv4,
    UnknownSender,
    SourceOutsidePeerSubnet,
}

pub fn ipv4_src(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[12], p[13], p[14], p[15])
}

pub fn ipv4_dst(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[16], p[17], p[18], p[19])
}

fn valid_ipv4(p: &[u8]) -> bool {
    p.len() >= 20 && p[0] >> 4 == 4 && (p[0] & 0x0f) >= 5 && p.len() >= ((p[0] & 0x0f) as usize) * 4
}

/// Decides where a packet from the TUN device goes, decrementing its TTL in place
/// (with an incremental checksum update, RFC 1624).
pub fn route_out(table: &PeerTable, pkt: &mut [u8], local: Ipv4Addr) -> Egress {
    if !valid_ipv4(pkt) {
        return Egress::Drop("not IPv4");
    }
    let dst = ipv4_dst(pkt);
    let Some(peer) = table.peer_for(dst) else {
        // ICMP destination unreachable, code 0 (net unreachable)
        return Egress::Reply(icmp_error(3, 0, local, pkt));
    };
    if pkt[8] <= 1 {
        return Egress::Reply(icmp_error(11, 0, local, pkt));
    }
    pkt[8] -= 1;
    // TTL is the high byte of the 16-bit word at offset 8: the sum drops by 0x0100.
    let sum = u16::from_be_bytes([pkt[10], pkt[11]]);
    let new = !((!sum as u32 + 0xfeff) % 0xffff) as u16;
    let new = if new == 0 { 0xffff } else { new };
    pkt[10..12].copy_from_slice(&new.to_be_bytes());
    Egress::Send(peer)
}

/// Checks a datagram received from `from` before it is written to the TUN device.
pub fn accept_in(table: &PeerTable, from: Ipv4Addr, pkt: &[u8]) -> Result<(), Rejected> {
    if !valid_ipv4(pkt) {
        return Err(Rejected::NotIpv4);
    }
    if !table.by_ip.contains_key(&from) {
        return Err(Rejected::UnknownSender);
    }
    if !table.accepts(from, ipv4_src(pkt)) {
        return Err(Rejected::SourceOutsidePeerSubnet);
    }
    Ok(())
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        sum += (*b as u32) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP error from `from` to the sender of `orig`, quoting its header and 8 bytes.
pub fn icmp_error(ty: u8, code: u8, from: Ipv4Addr, orig: &[u8]) -> Vec<u8> {
    let ihl = ((orig[0] & 0x0f) as usize) * 4;
    let quote = &orig[..(ihl + 8).min(orig.len())];
    let total = 20 + 8 + quote.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 1; // ICMP
    p[12..16].copy_from_slice(&from.octets());
    p[16..20].copy_from_slice(&orig[12..16]);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = ty;
    p[21] = code;
    p[28..].copy_from_slice(quote);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::udp::lease_attrs;

    fn table() -> PeerTable {
        let mut t = PeerTable::new("10.244.0.0/16".parse().unwrap(), 24);
        t.set_own("10.244.1.0/24".parse().unwrap());
        let lease = |s: &str, ip: &str| Lease {
            subnets: crate::lease::types::Subnets::v4(s.parse().unwrap()),
            attrs: lease_attrs(ip.parse().unwrap()),
        };
        t.resync(&[lease("10.244.1.0/24", "192.168.99.1"), lease("10.244.2.0/24", "192.168.99.2")]);
        t
    }

    fn packet(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0x12, 0x34, 0, 0, ttl, 1, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn routes_to_the_peer_and_decrements_ttl_with_a_valid_checksum() {
        let t = table();
        let mut p = packet([10, 244, 1, 2], [10, 244, 2, 2], 64);
        assert_eq!(route_out(&t, &mut p, "10.244.1.0".parse().unwrap()), Egress::Send("192.168.99.2".parse().unwrap()));
        assert_eq!(p[8], 63);
        assert_eq!(checksum(&p[..20]), 0, "header checksum still valid");
    }

    #[test]
    fn unknown_subnet_gets_net_unreachable_and_ttl_1_time_exceeded() {
        let t = table();
        let mut p = packet([10, 244, 1, 2], [10, 244, 9, 2], 64);
        let Egress::Reply(icmp) = route_out(&t, &mut p, "10.244.1.0".parse().unwrap()) else { panic!() };
        assert_eq!((icmp[20], icmp[21]), (3, 0));
        assert_eq!(ipv4_dst(&icmp), "10.244.1.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(checksum(&icmp[..20]), 0);
        assert_eq!(checksum(&icmp[20..]), 0);
        assert_eq!(&icmp[28..48], &p[..20], "quotes the original header");
        let mut p = packet([10, 244, 1, 2], [10, 244, 2, 2], 1);
        let Egress::Reply(icmp) = route_out(&t, &mut p, "10.244.1.0".parse().unwrap()) else { panic!() };
        assert_eq!(icmp[20], 11);
    }

    #[test]
    fn accepts_only_peers_sending_from_their_own_subnet() {
        let t = table();
        let from_peer = "192.168.99.2".parse().unwrap();
        assert_eq!(accept_in(&t, from_peer, &packet([10, 244, 2, 7], [10, 244, 1, 2], 64)), Ok(()));
        assert_eq!(accept_in(&t, from_peer, &packet([10, 244, 3, 7], [10, 244, 1, 2], 64)), Err(Rejected::SourceOutsidePeerSubnet));
        assert_eq!(
            accept_in(&t, "192.168.99.254".parse().unwrap(), &packet([10, 244, 2, 7], [10, 244, 1, 2], 64)),
            Err(Rejected::UnknownSender)
        );
        assert_eq!(accept_in(&t, from_peer, &[0x60, 0, 0]), Err(Rejected::NotIpv4));
    }

    #[test]
    fn table_follows_events_and_ignores_other_backends() {
        let mut t = table();
        let mut vx = Lease {
            subnets: crate::lease::types::Subnets::v4("10.244.3.0/24".parse().unwrap()),
            attrs: lease_attrs("192.168.99.3".parse().unwrap()),
        };
        vx.attrs.backend_type = Some("vxlan".into());
        assert!(!t.apply(&LeaseEvent::Added(vx)));
        assert_eq!(t.len(), 1);
        let moved = Lease {
            subnets: crate::lease::types::Subnets::v4("10.244.2.0/24".parse().unwrap()),
            attrs: lease_attrs("192.168.99.22".parse().unwrap()),
        };
        assert!(t.apply(&LeaseEvent::Added(moved)));
        assert!(!t.accepts("192.168.99.2".parse().unwrap(), "10.244.2.5".parse().unwrap()), "old address forgotten");
        assert!(t.accepts("192.168.99.22".parse().unwrap(), "10.244.2.5".parse().unwrap()));
        assert!(t.apply(&LeaseEvent::Removed(crate::lease::types::Subnets::v4("10.244.2.0/24".parse().unwrap()))));
        assert!(t.is_empty());
    }
}
