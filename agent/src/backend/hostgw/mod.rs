//! The host-gw backend: for every peer lease one route `<subnet> via <PublicIP>` on the
//! underlay interface, and with IPv6 enabled one route `<IPv6 subnet> via <PublicIPv6>`
//! for every lease with an IPv6 half (one [`HostGwNetwork`] per family). Works only when
//! peers share an L2 segment: the kernel refuses a gateway it cannot reach directly, and
//! the agent then says so once per peer and goes on serving the others.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

pub mod kernel;

use crate::ipnet::Ipv4Net;
use crate::lease::types::{Family, Lease, LeaseAttrs, LeaseEvent};
pub use kernel::HostGwKernel;

/// host-gw takes no options besides `Type`.
pub fn parse_options(section: &crate::config::BackendSection) -> Result<(), crate::config::ConfigError> {
    section.only(&[])
}

/// Packets travel unencapsulated: pods get the underlay's MTU.
pub fn overlay_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu
}

pub fn lease_attrs(public_ip: Ipv4Addr) -> LeaseAttrs {
    lease_attrs_for(public_ip, None)
}

/// host-gw leases name the backend only; an IPv6-only host has PublicIP 0.0.0.0.
pub fn lease_attrs_for(public_ip: Ipv4Addr, public_ipv6: Option<Ipv6Addr>) -> LeaseAttrs {
    LeaseAttrs { public_ip, public_ipv6, backend_type: Some("host-gw".into()), backend_data: None, backend_v6_data: None }
}

pub struct HostGwNetwork<K, N = Ipv4Net>
where
    K: HostGwKernel<N>,
    N: Family,
{
    kernel: K,
    oif: u32,
    network: N,
    own: Option<N>,
    /// Peers and whether their route is installed.
    peers: BTreeMap<N, (N::Addr, bool)>,
}

impl<K: HostGwKernel<N>, N: Family> HostGwNetwork<K, N> {
    pub fn new(kernel: K, oif: u32, network: N) -> Self {
        HostGwNetwork { kernel, oif, network, own: None, peers: BTreeMap::new() }
    }

    pub fn set_local_subnet(&mut self, subnet: N) {
        self.own = Some(subnet);
        self.peers.remove(&subnet);
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The peer route a lease asks for in this family: its subnet and public address,
    /// when it is a host-gw lease with both and not our own.
    fn wanted(&self, l: &Lease) -> Option<(N, N::Addr)> {
        let part = N::part(l)?;
        (Some(part.subnet) != self.own && part.backend_type == Some("host-gw")).then_some((part.subnet, part.public_ip?))
    }

    async fn install(&mut self, subnet: N, gw: N::Addr) -> Result<(), K::Error> {
        let ok = match self.kernel.add_route(self.oif, subnet, gw).await {
            Ok(()) => {
                crate::backend::peers::peer_log!(self.peers.len(), %subnet, via = %gw, "peer route added");
                true
            }
            Err(e) if K::is_unreachable_gateway(&e) => {
                tracing::warn!(%subnet, peer = %gw, "cannot route to peer: {gw} is not on a directly connected network (host-gw needs all hosts on one L2 segment)");
                false
            }
            Err(e) => return Err(e),
        };
        self.peers.insert(subnet, (gw, ok));
        Ok(())
    }

    pub async fn resync(&mut self, leases: &[Lease]) -> Result<(), K::Error> {
        let desired: BTreeMap<N, N::Addr> = leases.iter().filter_map(|l| self.wanted(l)).collect();
        for (dst, gw) in self.kernel.routes_within(self.oif, self.network).await? {
            if desired.get(&dst) != Some(&gw) {
                self.kernel.del_route(self.oif, dst, gw).await?;
            }
        }
        self.peers.clear();
        for (subnet, gw) in desired {
            self.install(subnet, gw).await?;
        }
        Ok(())
    }

    pub async fn handle(&mut self, ev: &LeaseEvent) -> Result<(), K::Error> {
        // nothing of this family in the lease, or our own
        let Some(subnet) = crate::backend::peers::event_subnet::<N>(ev, self.own) else { return Ok(()) };
        match ev {
            LeaseEvent::Added(l) => match self.wanted(l) {
                None => self.remove(subnet).await,
                Some((subnet, public_ip)) => {
                    match self.peers.get(&subnet) {
                        Some((gw, _)) if *gw == public_ip => return Ok(()),
                        Some(_) => self.remove(subnet).await?,
                        None => {}
                    }
                    self.install(subnet, public_ip).await
                }
            },
            LeaseEvent::Removed(_) => self.remove(subnet).await,
        }
    }

    /// Whether a kernel notification moved the routes away from the peers': a peer's route
    /// deleted, or a route into the network through the underlay that no peer explains.
    pub fn diverges(&self, c: &crate::notify::Change) -> bool {
        let crate::notify::Change::Route(r) = c else { return matches!(c, crate::notify::Change::Overflow) };
        let Some(dst) = N::from_ip(r.dst).and_then(|a| N::new(a, r.prefix)) else { return false };
        if r.oif != Some(self.oif) || !self.network.contains_net(&dst) || Some(dst) == self.own {
            return false;
        }
        let wanted = self.peers.get(&dst).is_some_and(|(gw, _)| r.gateway.and_then(N::from_ip) == Some(*gw));
        // a wanted route gone, or an unwanted one there
        r.deleted == wanted
    }

    /// The underlay was recreated under a new ifindex.
    pub fn set_underlay(&mut self, oif: u32) {
        self.oif = oif;
    }

    /// Re-adds peer routes the kernel lost (it deletes them when the underlay goes down)
    /// and retries peers that could not be routed before. Failures wait for the next call.
    pub async fn reconcile(&mut self) -> Result<(), K::Error> {
        let present = self.kernel.routes_within(self.oif, self.network).await?;
        let peers: Vec<(N, N::Addr, bool)> = self.peers.iter().map(|(s, (gw, ok))| (*s, *gw, *ok)).collect();
        for (subnet, gw, was_installed) in peers {
            if was_installed && present.contains(&(subnet, gw)) {
                continue;
            }
            match self.kernel.add_route(self.oif, subnet, gw).await {
                Ok(()) => {
                    match was_installed {
                        true => tracing::info!(%subnet, via = %gw, "host-gw route to peer re-installed"),
                        false => crate::backend::peers::peer_log!(self.peers.len(), %subnet, via = %gw, "peer route added"),
                    }
                    self.peers.insert(subnet, (gw, true));
                }
                Err(e) => {
                    tracing::debug!(%subnet, via = %gw, error = %e, "peer route still cannot be added");
                    self.peers.insert(subnet, (gw, false));
                }
            }
        }
        Ok(())
    }

    async fn remove(&mut self, subnet: N) -> Result<(), K::Error> {
        if let Some((gw, installed)) = self.peers.remove(&subnet) {
            if installed {
                self.kernel.del_route(self.oif, subnet, gw).await?;
                crate::backend::peers::peer_log!(self.peers.len(), %subnet, via = %gw, "peer route removed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipnet::IpNet;
    use crate::ipnet::Ipv6Net;
    use crate::lease::types::Subnets;

    #[derive(Debug, thiserror::Error)]
    enum FakeError {
        #[error("unreachable")]
        Unreachable,
    }

    struct Fake<N: IpNet = Ipv4Net> {
        routes: Vec<(N, N::Addr)>,
        reachable: Option<N>,
    }

    impl<N: IpNet> Default for Fake<N> {
        fn default() -> Self {
            Fake { routes: Vec::new(), reachable: None }
        }
    }

    impl<N: IpNet> HostGwKernel<N> for &mut Fake<N> {
        type Error = FakeError;
        fn is_unreachable_gateway(_: &FakeError) -> bool {
            true
        }
        async fn add_route(&mut self, _: u32, dst: N, gw: N::Addr) -> Result<(), FakeError> {
            if self.reachable.is_some_and(|n| !n.contains(gw)) {
                return Err(FakeError::Unreachable);
            }
            self.routes.retain(|(d, _)| *d != dst);
            self.routes.push((dst, gw));
            Ok(())
        }
        async fn del_route(&mut self, _: u32, dst: N, gw: N::Addr) -> Result<(), FakeError> {
            self.routes.retain(|r| *r != (dst, gw));
            Ok(())
        }
        async fn routes_within(&mut self, _: u32, network: N) -> Result<Vec<(N, N::Addr)>, FakeError> {
            Ok(self.routes.iter().filter(|(d, _)| network.contains_net(d)).cloned().collect())
        }
    }

    fn lease(subnet: &str, ip: &str) -> Lease {
        Lease { subnets: Subnets::v4(subnet.parse().unwrap()), attrs: lease_attrs(ip.parse().unwrap()) }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn one_route_per_peer_and_stale_ones_go() {
        let mut fake =
            Fake::<Ipv4Net> { routes: vec![("10.244.9.0/24".parse().unwrap(), "192.168.99.9".parse().unwrap())], reachable: None };
        rt().block_on(async {
            let mut n = HostGwNetwork::new(&mut fake, 2, "10.244.0.0/16".parse().unwrap());
            n.set_local_subnet("10.244.1.0/24".parse().unwrap());
            n.resync(&[lease("10.244.1.0/24", "192.168.99.1"), lease("10.244.2.0/24", "192.168.99.2")]).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.3.0/24", "192.168.99.3"))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.3.0/24", "192.168.99.33"))).await.unwrap();
            n.handle(&LeaseEvent::Removed(Subnets::v4("10.244.2.0/24".parse().unwrap()))).await.unwrap();
        });
        assert_eq!(fake.routes, vec![("10.244.3.0/24".parse().unwrap(), "192.168.99.33".parse().unwrap())]);
    }

    #[test]
    fn reconcile_restores_lost_routes() {
        let mut fake = Fake::<Ipv4Net>::default();
        rt().block_on(async {
            let mut n = HostGwNetwork::new(&mut fake, 2, "10.244.0.0/16".parse().unwrap());
            n.set_local_subnet("10.244.1.0/24".parse().unwrap());
            n.resync(&[lease("10.244.2.0/24", "192.168.99.2"), lease("10.244.3.0/24", "192.168.99.3")]).await.unwrap();
            n.kernel.routes.clear(); // the underlay went down and up
            n.reconcile().await.unwrap();
        });
        assert_eq!(fake.routes.len(), 2);
    }

    #[test]
    fn unreachable_peer_is_skipped_and_others_served() {
        let mut fake = Fake::<Ipv4Net> { routes: vec![], reachable: Some("192.168.99.0/24".parse().unwrap()) };
        rt().block_on(async {
            let mut n = HostGwNetwork::new(&mut fake, 2, "10.244.0.0/16".parse().unwrap());
            n.set_local_subnet("10.244.1.0/24".parse().unwrap());
            n.handle(&LeaseEvent::Added(lease("10.244.5.0/24", "192.168.100.5"))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2"))).await.unwrap();
            assert_eq!(n.peer_count(), 2);
            // removing the unreachable peer does not try to delete a route that never existed
            n.handle(&LeaseEvent::Removed(Subnets::v4("10.244.5.0/24".parse().unwrap()))).await.unwrap();
        });
        assert_eq!(fake.routes, vec![("10.244.2.0/24".parse().unwrap(), "192.168.99.2".parse().unwrap())]);
    }

    /// A lease with both halves, as a dual-stack host-gw peer writes it.
    fn dual(v4: &str, ip: &str, v6: &str, ip6: &str) -> Lease {
        Lease {
            subnets: Subnets { v4: Some(v4.parse().unwrap()), v6: Some(v6.parse().unwrap()) },
            attrs: lease_attrs_for(ip.parse().unwrap(), Some(ip6.parse().unwrap())),
        }
    }

    #[test]
    fn ipv6_routes_follow_the_ipv6_halves_of_leases() {
        let mut fake =
            Fake::<Ipv6Net> { routes: vec![("fd00:10:244:9::/64".parse().unwrap(), "fd00:1::9".parse().unwrap())], reachable: None };
        rt().block_on(async {
            let mut n = HostGwNetwork::new(&mut fake, 2, "fd00:10:244::/56".parse::<Ipv6Net>().unwrap());
            n.set_local_subnet("fd00:10:244:1::/64".parse().unwrap());
            let only6 = Lease {
                subnets: Subnets { v4: None, v6: Some("fd00:10:244:3::/64".parse().unwrap()) },
                attrs: lease_attrs_for(Ipv4Addr::UNSPECIFIED, Some("fd00:1::3".parse().unwrap())),
            };
            n.resync(&[
                dual("10.244.1.0/24", "192.168.99.1", "fd00:10:244:1::/64", "fd00:1::1"),
                dual("10.244.2.0/24", "192.168.99.2", "fd00:10:244:2::/64", "fd00:1::2"),
                lease("10.244.4.0/24", "192.168.99.4"), // IPv4 only: nothing for IPv6
                only6,
            ])
            .await
            .unwrap();
            assert_eq!(n.peer_count(), 2);
            // an IPv4-only event does not touch IPv6 routes; removing the dual lease does
            n.handle(&LeaseEvent::Removed(Subnets::v4("10.244.2.0/24".parse().unwrap()))).await.unwrap();
            assert_eq!(n.peer_count(), 2);
            let key = Subnets { v4: Some("10.244.2.0/24".parse().unwrap()), v6: Some("fd00:10:244:2::/64".parse().unwrap()) };
            n.handle(&LeaseEvent::Removed(key)).await.unwrap();
        });
        assert_eq!(fake.routes, vec![("fd00:10:244:3::/64".parse().unwrap(), "fd00:1::3".parse().unwrap())]);
    }

    #[test]
    fn ipv4_network_ignores_ipv6_only_leases() {
        let mut fake = Fake::<Ipv4Net>::default();
        rt().block_on(async {
            let mut n = HostGwNetwork::new(&mut fake, 2, "10.244.0.0/16".parse().unwrap());
            n.set_local_subnet("10.244.1.0/24".parse().unwrap());
            let only6 = Lease {
                subnets: Subnets { v4: None, v6: Some("fd00:10:244:3::/64".parse().unwrap()) },
                attrs: lease_attrs_for(Ipv4Addr::UNSPECIFIED, Some("fd00:1::3".parse().unwrap())),
            };
            n.handle(&LeaseEvent::Added(only6)).await.unwrap();
            n.handle(&LeaseEvent::Added(dual("10.244.2.0/24", "192.168.99.2", "fd00:10:244:2::/64", "fd00:1::2"))).await.unwrap();
            assert_eq!(n.peer_count(), 1);
        });
        assert_eq!(fake.routes, vec![("10.244.2.0/24".parse().unwrap(), "192.168.99.2".parse().unwrap())]);
    }
}
