//! The host-gw backend: for every peer lease one route `<subnet> via <PublicIP>` on the
//! underlay interface. Works only when peers share an L2 segment: the kernel refuses a
//! gateway it cannot reach directly, and the agent then says so once per peer and goes on
//! serving the others.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::ipnet::Ipv4Net;
use crate::lease::{Lease, LeaseAttrs, LeaseEvent};

#[allow(async_fn_in_trait)]
pub trait HostGwKernel {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Whether the error means "this gateway is not on a directly connected network".
    fn is_unreachable_gateway(e: &Self::Error) -> bool;
    async fn add_route(&mut self, oif: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), Self::Error>;
    async fn del_route(&mut self, oif: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), Self::Error>;
    /// Routes through `oif` whose destination lies inside `network`.
    async fn routes_within(&mut self, oif: u32, network: Ipv4Net) -> Result<Vec<(Ipv4Net, Ipv4Addr)>, Self::Error>;
}

/// Packets travel unencapsulated: pods get the underlay's MTU.
pub fn overlay_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu
}

pub fn lease_attrs(public_ip: Ipv4Addr) -> LeaseAttrs {
    LeaseAttrs { public_ip, public_ipv6: None, backend_type: Some("host-gw".into()), backend_data: None }
}

pub struct HostGwNetwork<K: HostGwKernel> {
    kernel: K,
    oif: u32,
    network: Ipv4Net,
    own: Option<Ipv4Net>,
    /// Peers and whether their route is installed.
    peers: BTreeMap<Ipv4Net, (Ipv4Addr, bool)>,
}

impl<K: HostGwKernel> HostGwNetwork<K> {
    pub fn new(kernel: K, oif: u32, network: Ipv4Net) -> Self {
        HostGwNetwork { kernel, oif, network, own: None, peers: BTreeMap::new() }
    }

    pub fn set_local_subnet(&mut self, subnet: Ipv4Net) {
        self.own = Some(subnet);
        self.peers.remove(&subnet);
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn wanted(&self, l: &Lease) -> bool {
        Some(l.subnet) != self.own && l.attrs.backend_type.as_deref() == Some("host-gw")
    }

    async fn install(&mut self, subnet: Ipv4Net, gw: Ipv4Addr) -> Result<(), K::Error> {
        let ok = match self.kernel.add_route(self.oif, subnet, gw).await {
            Ok(()) => {
                tracing::info!(%subnet, via = %gw, "peer route added");
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
        let desired: BTreeMap<Ipv4Net, Ipv4Addr> =
            leases.iter().filter(|l| self.wanted(l)).map(|l| (l.subnet, l.attrs.public_ip)).collect();
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
        match ev {
            LeaseEvent::Added(l) if Some(l.subnet) == self.own => Ok(()),
            LeaseEvent::Added(l) if !self.wanted(l) => self.remove(l.subnet).await,
            LeaseEvent::Added(l) => {
                match self.peers.get(&l.subnet) {
                    Some((gw, _)) if *gw == l.attrs.public_ip => return Ok(()),
                    Some(_) => self.remove(l.subnet).await?,
                    None => {}
                }
                self.install(l.subnet, l.attrs.public_ip).await
            }
            LeaseEvent::Removed(s) => self.remove(*s).await,
        }
    }

    /// The underlay was recreated under a new ifindex.
    pub fn set_underlay(&mut self, oif: u32) {
        self.oif = oif;
    }

    /// Re-adds peer routes the kernel lost (it deletes them when the underlay goes down)
    /// and retries peers that could not be routed before. Failures wait for the next call.
    pub async fn reconcile(&mut self) -> Result<(), K::Error> {
        let present = self.kernel.routes_within(self.oif, self.network).await?;
        let peers: Vec<(Ipv4Net, Ipv4Addr, bool)> = self.peers.iter().map(|(s, (gw, ok))| (*s, *gw, *ok)).collect();
        for (subnet, gw, was_installed) in peers {
            if was_installed && present.contains(&(subnet, gw)) {
                continue;
            }
            match self.kernel.add_route(self.oif, subnet, gw).await {
                Ok(()) => {
                    match was_installed {
                        true => tracing::info!(%subnet, via = %gw, "host-gw route to peer re-installed"),
                        false => tracing::info!(%subnet, via = %gw, "peer route added"),
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

    async fn remove(&mut self, subnet: Ipv4Net) -> Result<(), K::Error> {
        if let Some((gw, installed)) = self.peers.remove(&subnet) {
            if installed {
                self.kernel.del_route(self.oif, subnet, gw).await?;
                tracing::info!(%subnet, via = %gw, "peer route removed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum FakeError {
        #[error("unreachable")]
        Unreachable,
    }

    #[derive(Default)]
    struct Fake {
        routes: Vec<(Ipv4Net, Ipv4Addr)>,
        reachable: Option<Ipv4Net>,
    }

    impl HostGwKernel for &mut Fake {
        type Error = FakeError;
        fn is_unreachable_gateway(_: &FakeError) -> bool {
            true
        }
        async fn add_route(&mut self, _: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), FakeError> {
            if self.reachable.is_some_and(|n| !n.contains(gw)) {
                return Err(FakeError::Unreachable);
            }
            self.routes.retain(|(d, _)| *d != dst);
            self.routes.push((dst, gw));
            Ok(())
        }
        async fn del_route(&mut self, _: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), FakeError> {
            self.routes.retain(|r| *r != (dst, gw));
            Ok(())
        }
        async fn routes_within(&mut self, _: u32, network: Ipv4Net) -> Result<Vec<(Ipv4Net, Ipv4Addr)>, FakeError> {
            Ok(self.routes.iter().filter(|(d, _)| network.contains_net(d)).cloned().collect())
        }
    }

    fn lease(subnet: &str, ip: &str) -> Lease {
        Lease { subnet: subnet.parse().unwrap(), attrs: lease_attrs(ip.parse().unwrap()) }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn one_route_per_peer_and_stale_ones_go() {
        let mut fake = Fake { routes: vec![("10.244.9.0/24".parse().unwrap(), "192.168.99.9".parse().unwrap())], reachable: None };
        rt().block_on(async {
            let mut n = HostGwNetwork::new(&mut fake, 2, "10.244.0.0/16".parse().unwrap());
            n.set_local_subnet("10.244.1.0/24".parse().unwrap());
            n.resync(&[lease("10.244.1.0/24", "192.168.99.1"), lease("10.244.2.0/24", "192.168.99.2")]).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.3.0/24", "192.168.99.3"))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.3.0/24", "192.168.99.33"))).await.unwrap();
            n.handle(&LeaseEvent::Removed("10.244.2.0/24".parse().unwrap())).await.unwrap();
        });
        assert_eq!(fake.routes, vec![("10.244.3.0/24".parse().unwrap(), "192.168.99.33".parse().unwrap())]);
    }

    #[test]
    fn reconcile_restores_lost_routes() {
        let mut fake = Fake::default();
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
        let mut fake = Fake { routes: vec![], reachable: Some("192.168.99.0/24".parse().unwrap()) };
        rt().block_on(async {
            let mut n = HostGwNetwork::new(&mut fake, 2, "10.244.0.0/16".parse().unwrap());
            n.set_local_subnet("10.244.1.0/24".parse().unwrap());
            n.handle(&LeaseEvent::Added(lease("10.244.5.0/24", "192.168.100.5"))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2"))).await.unwrap();
            assert_eq!(n.peer_count(), 2);
            // removing the unreachable peer does not try to delete a route that never existed
            n.handle(&LeaseEvent::Removed("10.244.5.0/24".parse().unwrap())).await.unwrap();
        });
        assert_eq!(fake.routes, vec![("10.244.2.0/24".parse().unwrap(), "192.168.99.2".parse().unwrap())]);
    }
}
