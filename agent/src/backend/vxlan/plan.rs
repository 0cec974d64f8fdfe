//! Which kernel entries the vxlan backend's peers need, compared with what the kernel
//! holds. One pure function serves the resync after a snapshot, the periodic reconcile
//! (entries lost to a link flap or deleted by hand) and the clean-up after a restart.
//!
//! A peer is reached one of two ways ([`Path`]):
//! - `Vxlan`: `ip route SUBNET via SUBNET.0 dev flannel.N onlink`, a permanent neighbour
//!   `SUBNET.0 lladdr VTEP_MAC` and an FDB entry `VTEP_MAC dst PUBLIC_IP`;
//! - `Direct` (DirectRouting, peer on a directly connected network): one route
//!   `SUBNET via PUBLIC_IP dev UNDERLAY`, and nothing on the vxlan device.
//!
//! The same holds for IPv6 on `flannel-v6.N` (gateway `SUBNET::`, the subnet's network
//! address): everything here is generic over the family's prefix type.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::ipnet::{IpNet, Ipv4Net};
use crate::netlink::Mac;
use crate::notify::Change;

/// How a peer's subnet is reached.
/// What one peer lease asks of this host, in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer<N: IpNet = Ipv4Net> {
    pub subnet: N,
    pub public_ip: N::Addr,
    pub vtep_mac: Mac,
}

impl<N: IpNet> Peer<N> {
    /// The peer's VTEP address: the subnet's network address, as flanneld uses it.
    pub fn gateway(&self) -> N::Addr {
        self.subnet.addr()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Vxlan,
    Direct,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Vxlan => "vxlan",
            Path::Direct => "direct",
        }
    }
}

/// The kernel's answer to "how do I reach this address" (`ip route get IP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTo<A = Ipv4Addr> {
    pub gateway: Option<A>,
    pub oif: Option<u32>,
}

/// flanneld's rule: a peer whose PublicIP is reached without a gateway is routed directly.
/// This agent also wants that route to leave through the underlay, since the direct route
/// names the underlay as its device.
pub fn choose_path<A>(direct_routing: bool, route: Option<RouteTo<A>>, underlay: u32) -> Option<Path> {
    if !direct_routing {
        return Some(Path::Vxlan);
    }
    let r = route?;
    Some(if r.gateway.is_none() && r.oif == Some(underlay) { Path::Direct } else { Path::Vxlan })
}

/// Peer entries found in the kernel: on the vxlan device (routes, permanent neighbours,
/// permanent FDB entries) and, with DirectRouting, gateway routes on the underlay that
/// lie inside the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPeers<N: IpNet = Ipv4Net> {
    pub routes: Vec<(N, N::Addr)>,
    pub neighbours: Vec<(N::Addr, Mac)>,
    pub fdb: Vec<(Mac, N::Addr)>,
    pub direct: Vec<(N, N::Addr)>,
}

impl<N: IpNet> Default for InstalledPeers<N> {
    fn default() -> Self {
        InstalledPeers { routes: Vec::new(), neighbours: Vec::new(), fdb: Vec::new(), direct: Vec::new() }
    }
}

/// What to change: entries no wanted peer explains, and peers missing some entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<N: IpNet = Ipv4Net> {
    pub stale: InstalledPeers<N>,
    pub missing: Vec<(Peer<N>, Path)>,
}

impl<N: IpNet> Default for Plan<N> {
    fn default() -> Self {
        Plan { stale: InstalledPeers::default(), missing: Vec::new() }
    }
}

pub fn plan<N: IpNet>(wanted: &[(Peer<N>, Path)], installed: &InstalledPeers<N>) -> Plan<N> {
    let vxlan = || wanted.iter().filter(|(_, path)| *path == Path::Vxlan).map(|(p, _)| p);
    let direct = || wanted.iter().filter(|(_, path)| *path == Path::Direct).map(|(p, _)| p);
    let stale = InstalledPeers {
        routes: installed.routes.iter().filter(|(d, g)| !vxlan().any(|p| p.subnet == *d && p.gateway() == *g)).copied().collect(),
        neighbours: installed
            .neighbours
            .iter()
            .filter(|(ip, m)| !vxlan().any(|p| p.gateway() == *ip && p.vtep_mac == *m))
            .copied()
            .collect(),
        fdb: installed.fdb.iter().filter(|(m, dst)| !vxlan().any(|p| p.vtep_mac == *m && p.public_ip == *dst)).copied().collect(),
        direct: installed.direct.iter().filter(|(d, via)| !direct().any(|p| p.subnet == *d && p.public_ip == *via)).copied().collect(),
    };
    let missing = wanted
        .iter()
        .filter(|(p, path)| match path {
            Path::Vxlan => {
                !installed.routes.contains(&(p.subnet, p.gateway()))
                    || !installed.neighbours.contains(&(p.gateway(), p.vtep_mac))
                    || !installed.fdb.contains(&(p.vtep_mac, p.public_ip))
            }
            Path::Direct => !installed.direct.contains(&(p.subnet, p.public_ip)),
        })
        .copied()
        .collect();
    Plan { stale, missing }
}

/// Whether a kernel notification moves this device's state away from what `peers` want
/// (the agent then reconciles; its own changes never do): a wanted route, permanent
/// neighbour or FDB entry on the device (`ifindex`), or a wanted direct route on the
/// underlay (`direct`: its index and the network), deleted or changed; or an entry there
/// that no peer explains appearing.
pub fn diverges<N: IpNet>(peers: &BTreeMap<N, (Peer<N>, Path)>, ifindex: u32, direct: Option<(u32, N)>, c: &Change) -> bool {
    let addr = |ip: IpAddr| N::from_ip(ip);
    match c {
        Change::Route(r) => {
            let Some(dst) = addr(r.dst).and_then(|a| N::new(a, r.prefix)) else { return false };
            let want_gw = if r.oif == Some(ifindex) {
                peers.get(&dst).filter(|(_, path)| *path == Path::Vxlan).map(|(p, _)| p.gateway())
            } else if direct.is_some_and(|(underlay, network)| r.oif == Some(underlay) && network.contains_net(&dst)) {
                peers.get(&dst).filter(|(_, path)| *path == Path::Direct).map(|(p, _)| p.public_ip)
            } else {
                return false;
            };
            let wanted = want_gw.is_some() && want_gw == r.gateway.and_then(addr);
            // a wanted entry gone, or an unwanted one there
            r.deleted == wanted
        }
        Change::Neighbour(n) if n.ifindex == ifindex => {
            let Some(ip) = addr(n.ip) else { return false };
            let want = peers.values().find(|(p, path)| *path == Path::Vxlan && p.gateway() == ip).map(|(p, _)| p.vtep_mac);
            match n.deleted {
                true => want.is_some(),
                // the kernel's own (non-permanent) entries are not the agent's business
                false => n.permanent && want != n.mac,
            }
        }
        Change::Fdb(f) if f.ifindex == ifindex && f.permanent => {
            let dst = f.dst.and_then(addr);
            let wanted = peers.values().any(|(p, path)| *path == Path::Vxlan && p.vtep_mac == f.mac && Some(p.public_ip) == dst);
            f.deleted == wanted
        }
        Change::Overflow => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipnet::Ipv6Net;

    fn peer(n: u8) -> Peer {
        Peer {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            public_ip: Ipv4Addr::new(192, 168, 99, n),
            vtep_mac: [2, 0, 0, 0, 0, n],
        }
    }

    fn vxlan_entries(p: &Peer, into: &mut InstalledPeers) {
        into.routes.push((p.subnet, p.gateway()));
        into.neighbours.push((p.gateway(), p.vtep_mac));
        into.fdb.push((p.vtep_mac, p.public_ip));
    }

    #[test]
    fn only_changes_away_from_the_wanted_state_diverge() {
        use crate::notify::{FdbChange, NeighbourChange, RouteChange};
        let (p2, p3) = (peer(2), peer(3));
        let peers: BTreeMap<Ipv4Net, (Peer, Path)> = [(p2.subnet, (p2, Path::Vxlan)), (p3.subnet, (p3, Path::Direct))].into();
        let direct = Some((2, "10.244.0.0/16".parse().unwrap()));
        let d = |c: Change| diverges(&peers, 9, direct, &c);
        let route = |deleted, dst: &str, gw: &str, oif| {
            Change::Route(RouteChange {
                deleted,
                dst: dst.parse().unwrap(),
                prefix: 24,
                gateway: Some(gw.parse().unwrap()),
                oif: Some(oif),
            })
        };
        // the agent's own additions and the kernel's answers to them: nothing to do
        assert!(!d(route(false, "10.244.2.0", "10.244.2.0", 9)));
        assert!(!d(route(false, "10.244.3.0", "192.168.99.3", 2)));
        // a wanted route deleted, on the device or the underlay; a stranger added
        assert!(d(route(true, "10.244.2.0", "10.244.2.0", 9)));
        assert!(d(route(true, "10.244.3.0", "192.168.99.3", 2)));
        assert!(d(route(false, "10.244.7.0", "10.244.7.0", 9)));
        // an unwanted route deleted (the agent's own clean-up), or routes elsewhere: nothing
        assert!(!d(route(true, "10.244.7.0", "10.244.7.0", 9)));
        assert!(!d(route(true, "192.168.5.0", "192.168.99.1", 2)));
        let neigh = |deleted, ip: &str, mac: u8, permanent| {
            Change::Neighbour(NeighbourChange { deleted, ifindex: 9, ip: ip.parse().unwrap(), mac: Some([2, 0, 0, 0, 0, mac]), permanent })
        };
        assert!(!d(neigh(false, "10.244.2.0", 2, true)));
        assert!(d(neigh(false, "10.244.2.0", 5, true)), "a changed MAC");
        assert!(d(neigh(true, "10.244.2.0", 2, true)));
        assert!(!d(neigh(false, "10.244.9.9", 9, false)), "the kernel's own entries");
        assert!(d(neigh(false, "10.244.3.0", 3, true)), "a direct peer has no neighbour on the device");
        let fdb = |deleted, mac: u8, dst: &str| {
            Change::Fdb(FdbChange { deleted, ifindex: 9, mac: [2, 0, 0, 0, 0, mac], dst: Some(dst.parse().unwrap()), permanent: true })
        };
        assert!(!d(fdb(false, 2, "192.168.99.2")));
        assert!(d(fdb(true, 2, "192.168.99.2")));
        assert!(d(fdb(false, 2, "192.168.99.7")), "a stale destination");
        assert!(!d(fdb(true, 8, "192.168.99.8")), "a stale entry going away");
        assert!(d(Change::Overflow));
    }

    #[test]
    fn direct_only_without_gateway_through_the_underlay() {
        let on_link: RouteTo = RouteTo { gateway: None, oif: Some(2) };
        let routed = RouteTo { gateway: Some(Ipv4Addr::new(192, 168, 99, 254)), oif: Some(2) };
        let elsewhere: RouteTo = RouteTo { gateway: None, oif: Some(5) };
        assert_eq!(choose_path(true, Some(on_link), 2), Some(Path::Direct));
        assert_eq!(choose_path(true, Some(routed), 2), Some(Path::Vxlan));
        assert_eq!(choose_path(true, Some(elsewhere), 2), Some(Path::Vxlan));
        assert_eq!(choose_path(true, None::<RouteTo>, 2), None, "no route now (link down): keep what is installed");
        assert_eq!(choose_path(false, Some(on_link), 2), Some(Path::Vxlan));
    }

    #[test]
    fn complete_state_needs_nothing() {
        let mut inst = InstalledPeers::default();
        vxlan_entries(&peer(2), &mut inst);
        inst.direct.push((peer(3).subnet, peer(3).public_ip));
        assert_eq!(plan(&[(peer(2), Path::Vxlan), (peer(3), Path::Direct)], &inst), Plan::default());
    }

    #[test]
    fn lost_routes_are_missing_and_foreign_entries_stale() {
        let mut inst = InstalledPeers::default();
        vxlan_entries(&peer(2), &mut inst);
        vxlan_entries(&peer(9), &mut inst); // a peer that left while we were down
        inst.routes.retain(|(d, _)| *d != peer(2).subnet); // lost its route
        inst.direct.push((peer(8).subnet, peer(8).public_ip));
        // peer 3 switched to direct: its old vxlan entries are stale
        vxlan_entries(&peer(3), &mut inst);
        let p = plan(&[(peer(2), Path::Vxlan), (peer(3), Path::Direct)], &inst);
        assert_eq!(p.missing, vec![(peer(2), Path::Vxlan), (peer(3), Path::Direct)]);
        assert_eq!(p.stale.routes, vec![(peer(9).subnet, peer(9).gateway()), (peer(3).subnet, peer(3).gateway())]);
        assert_eq!(p.stale.neighbours, vec![(peer(9).gateway(), peer(9).vtep_mac), (peer(3).gateway(), peer(3).vtep_mac)]);
        assert_eq!(p.stale.fdb, vec![(peer(9).vtep_mac, peer(9).public_ip), (peer(3).vtep_mac, peer(3).public_ip)]);
        assert_eq!(p.stale.direct, vec![(peer(8).subnet, peer(8).public_ip)]);
    }

    #[test]
    fn changed_mac_leaves_the_old_fdb_entry_stale() {
        let mut inst = InstalledPeers::default();
        vxlan_entries(&peer(2), &mut inst);
        let mut moved = peer(2);
        moved.vtep_mac = [2, 0, 0, 0, 0, 0x22];
        let p = plan(&[(moved, Path::Vxlan)], &inst);
        assert_eq!(p.missing, vec![(moved, Path::Vxlan)]);
        assert_eq!(p.stale.fdb, vec![(peer(2).vtep_mac, peer(2).public_ip)]);
        assert_eq!(p.stale.neighbours, vec![(peer(2).gateway(), peer(2).vtep_mac)]);
        assert!(p.stale.routes.is_empty());
    }

    fn peer6(n: u8) -> Peer<Ipv6Net> {
        Peer {
            subnet: format!("fd00:10:244:{n:x}::/64").parse().unwrap(),
            public_ip: format!("fd00:1::{n:x}").parse().unwrap(),
            vtep_mac: [2, 0, 0, 0, 6, n],
        }
    }

    #[test]
    fn ipv6_peers_plan_the_same_entries() {
        let p = peer6(2);
        assert_eq!(p.gateway().to_string(), "fd00:10:244:2::", "the subnet's network address");
        let mut inst = InstalledPeers::<Ipv6Net>::default();
        inst.routes.push((p.subnet, p.gateway()));
        inst.neighbours.push((p.gateway(), p.vtep_mac));
        inst.fdb.push((p.vtep_mac, p.public_ip));
        assert_eq!(plan(&[(p, Path::Vxlan)], &inst), Plan::default());
        // a peer that left, one that is new, one reached directly now
        let gone = peer6(9);
        inst.routes.push((gone.subnet, gone.gateway()));
        inst.neighbours.push((gone.gateway(), gone.vtep_mac));
        inst.fdb.push((gone.vtep_mac, gone.public_ip));
        let p = plan(&[(peer6(2), Path::Vxlan), (peer6(3), Path::Vxlan), (peer6(4), Path::Direct)], &inst);
        assert_eq!(p.missing, vec![(peer6(3), Path::Vxlan), (peer6(4), Path::Direct)]);
        assert_eq!(p.stale.routes, vec![(gone.subnet, gone.gateway())]);
        assert_eq!(p.stale.neighbours, vec![(gone.gateway(), gone.vtep_mac)]);
        assert_eq!(p.stale.fdb, vec![(gone.vtep_mac, gone.public_ip)]);
        let on_link = RouteTo { gateway: None::<std::net::Ipv6Addr>, oif: Some(2) };
        assert_eq!(choose_path(true, Some(on_link), 2), Some(Path::Direct));
    }
}
