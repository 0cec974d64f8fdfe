//! What the daemon asks of a backend, whichever it is ([`Network`]), and the fan-out to one
//! instance per address family written once ([`Dual`] over [`PerFamily`]): vxlan and
//! host-gw run an IPv4 and an IPv6 instance side by side; udp is IPv4 only.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Context;

use super::hostgw::{self, HostGwNetwork};
use super::udp::{self, UdpNetwork};
use super::vxlan::{self, VxlanNetwork};
use crate::error::chain;
use crate::firewall::Firewall;
use crate::ipnet::{Ipv4Net, Ipv6Net};
use crate::lease::types::{Lease, LeaseAttrs, LeaseEvent, Subnets};
use crate::netlink::Kernel;
use crate::notify::Change;

/// A backend as the daemon drives it: set up for the local lease, then kept in step with
/// the peers' leases and with the kernel.
#[allow(async_fn_in_trait)]
pub trait Network {
    /// The lease value this host publishes (vxlan: with its devices' MACs).
    fn lease_attrs(&self, public_ip: Ipv4Addr, public_ipv6: Option<Ipv6Addr>) -> LeaseAttrs;
    async fn set_local_subnets(&mut self, own: Subnets) -> anyhow::Result<()>;
    /// Every peer as etcd has them now.
    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()>;
    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()>;
    /// Hosts it serves as peers.
    fn peer_count(&self) -> usize;
    /// Whether its state lives in the kernel, so kernel notifications matter.
    fn follows_kernel(&self) -> bool {
        true
    }
    /// Restores kernel state someone removed; true when a device's MAC changed (to be
    /// published again). Failures are logged and retried at the next reconcile.
    async fn reconcile(&mut self) -> bool {
        false
    }
    /// The underlay interface was recreated under another index.
    fn set_underlay(&mut self, _index: u32) {}
    /// Whether a kernel notification moved its state away from what the peers want.
    fn diverges(&mut self, _c: &Change) -> bool {
        false
    }
    /// Whether `name` is one of its own devices (whose link events matter).
    fn is_device(&self, _name: &str) -> bool {
        false
    }
    /// vxlan: admits VXLAN datagrams only from the current peers.
    async fn sync_filter(&self, _fw: &mut Firewall) {}
    /// Its devices' MACs, for logs.
    fn macs(&self) -> String {
        String::new()
    }
}

/// One family's instance of a backend.
#[allow(async_fn_in_trait)]
pub trait PerFamily {
    type Net;
    async fn set_local(&mut self, subnet: Self::Net) -> anyhow::Result<()>;
    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()>;
    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()>;
    /// Ok(true) when its device's MAC changed.
    async fn reconcile(&mut self) -> Result<bool, String>;
    fn set_underlay(&mut self, index: u32);
    fn diverges(&mut self, c: &Change) -> bool;
    fn peer_count(&self) -> usize;
    /// Its device's name, when it has one.
    fn device(&self) -> Option<&str> {
        None
    }
}

/// An IPv4 and an IPv6 instance, each present when the net-conf enables its family.
pub struct Dual<A, B> {
    pub v4: Option<A>,
    pub v6: Option<B>,
}

impl<A: PerFamily<Net = Ipv4Net>, B: PerFamily<Net = Ipv6Net>> Dual<A, B> {
    async fn set_local(&mut self, own: Subnets) -> anyhow::Result<()> {
        if let (Some(n), Some(s)) = (self.v4.as_mut(), own.v4) {
            n.set_local(s).await?;
        }
        if let (Some(n), Some(s)) = (self.v6.as_mut(), own.v6) {
            n.set_local(s).await?;
        }
        Ok(())
    }

    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
        if let Some(n) = self.v4.as_mut() {
            n.resync(leases).await?;
        }
        if let Some(n) = self.v6.as_mut() {
            n.resync(leases).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()> {
        if let Some(n) = self.v4.as_mut() {
            n.handle(ev).await?;
        }
        if let Some(n) = self.v6.as_mut() {
            n.handle(ev).await?;
        }
        Ok(())
    }

    async fn reconcile(&mut self) -> bool {
        fn failed(family: &str, e: String) {
            tracing::warn!(error = e, family, "reconciling kernel state failed, retrying");
        }
        let mut changed = false;
        if let Some(n) = self.v4.as_mut() {
            match n.reconcile().await {
                Ok(c) => changed |= c,
                Err(e) => failed("IPv4", e),
            }
        }
        if let Some(n) = self.v6.as_mut() {
            match n.reconcile().await {
                Ok(c) => changed |= c,
                Err(e) => failed("IPv6", e),
            }
        }
        changed
    }

    fn set_underlay(&mut self, index: u32) {
        self.v4.iter_mut().for_each(|n| n.set_underlay(index));
        self.v6.iter_mut().for_each(|n| n.set_underlay(index));
    }

    /// Both families hear of it (each distrusts what it no longer knows).
    fn diverges(&mut self, c: &Change) -> bool {
        self.v4.as_mut().is_some_and(|n| n.diverges(c)) | self.v6.as_mut().is_some_and(|n| n.diverges(c))
    }

    /// Hosts, not entries: a dual-stack peer is in both families.
    fn peer_count(&self) -> usize {
        self.v4.as_ref().map_or(0, |n| n.peer_count()).max(self.v6.as_ref().map_or(0, |n| n.peer_count()))
    }

    fn is_device(&self, name: &str) -> bool {
        self.v4.as_ref().is_some_and(|n| n.device() == Some(name)) || self.v6.as_ref().is_some_and(|n| n.device() == Some(name))
    }
}

impl<N: crate::lease::types::Family> PerFamily for VxlanNetwork<Kernel, N> {
    type Net = N;
    async fn set_local(&mut self, subnet: N) -> anyhow::Result<()> {
        Ok(self.set_local_subnet(subnet).await?)
    }
    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
        Ok(VxlanNetwork::resync(self, leases).await?)
    }
    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()> {
        Ok(VxlanNetwork::handle(self, ev).await?)
    }
    async fn reconcile(&mut self) -> Result<bool, String> {
        VxlanNetwork::reconcile(self).await.map(|mac| mac.is_some()).map_err(|e| chain(&e))
    }
    fn set_underlay(&mut self, index: u32) {
        VxlanNetwork::set_underlay(self, index)
    }
    fn diverges(&mut self, c: &Change) -> bool {
        VxlanNetwork::diverges(self, c)
    }
    fn peer_count(&self) -> usize {
        self.peers().count()
    }
    fn device(&self) -> Option<&str> {
        Some(self.device_name())
    }
}

impl<N: crate::lease::types::Family> PerFamily for HostGwNetwork<Kernel, N> {
    type Net = N;
    async fn set_local(&mut self, subnet: N) -> anyhow::Result<()> {
        self.set_local_subnet(subnet);
        Ok(())
    }
    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
        Ok(HostGwNetwork::resync(self, leases).await?)
    }
    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()> {
        Ok(HostGwNetwork::handle(self, ev).await?)
    }
    async fn reconcile(&mut self) -> Result<bool, String> {
        HostGwNetwork::reconcile(self).await.map(|()| false).map_err(|e| chain(&e))
    }
    fn set_underlay(&mut self, index: u32) {
        HostGwNetwork::set_underlay(self, index)
    }
    fn diverges(&mut self, c: &Change) -> bool {
        HostGwNetwork::diverges(self, c)
    }
    fn peer_count(&self) -> usize {
        HostGwNetwork::peer_count(self)
    }
}

/// The [`Network`] methods a backend with one instance per family (a `fam: Dual<…>`
/// field) hands to them, written once.
macro_rules! per_family {
    () => {
        async fn set_local_subnets(&mut self, own: Subnets) -> anyhow::Result<()> {
            self.fam.set_local(own).await
        }
        async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
            self.fam.resync(leases).await
        }
        async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()> {
            self.fam.handle(ev).await
        }
        fn peer_count(&self) -> usize {
            self.fam.peer_count()
        }
        async fn reconcile(&mut self) -> bool {
            self.fam.reconcile().await
        }
        fn set_underlay(&mut self, index: u32) {
            self.fam.set_underlay(index)
        }
        fn diverges(&mut self, c: &Change) -> bool {
            self.fam.diverges(c)
        }
    };
}

/// vxlan: `flannel.<VNI>` and/or `flannel-v6.<VNI>`.
pub struct VxlanBackend {
    pub fam: Dual<VxlanNetwork<Kernel, Ipv4Net>, VxlanNetwork<Kernel, Ipv6Net>>,
    pub vni: u32,
    pub port: u16,
}

impl Network for VxlanBackend {
    fn lease_attrs(&self, public_ip: Ipv4Addr, public_ipv6: Option<Ipv6Addr>) -> LeaseAttrs {
        let mac = self.fam.v4.as_ref().and_then(|n| n.mac());
        let mac6 = self.fam.v6.as_ref().and_then(|n| n.mac());
        vxlan::lease_attrs_for(public_ip, public_ipv6, self.vni, mac.as_ref(), mac6.as_ref())
    }
    per_family!();
    fn is_device(&self, name: &str) -> bool {
        self.fam.is_device(name)
    }
    async fn sync_filter(&self, fw: &mut Firewall) {
        let peers: Option<BTreeSet<Ipv4Addr>> = self.fam.v4.as_ref().map(|n| n.peer_ips());
        let peers6: Option<BTreeSet<Ipv6Addr>> = self.fam.v6.as_ref().map(|n| n.peer_ips());
        fw.set_vxlan_peers(self.port, peers.as_ref(), peers6.as_ref()).await;
    }
    fn macs(&self) -> String {
        let v4 = self.fam.v4.iter().map(|n| (n.device_name(), n.mac()));
        let v6 = self.fam.v6.iter().map(|n| (n.device_name(), n.mac()));
        v4.chain(v6).map(|(d, m)| format!("{d} {}", m.map(|m| vxlan::format_mac(&m)).unwrap_or_default())).collect::<Vec<_>>().join(", ")
    }
}

/// host-gw: gateway routes through the underlay, per family.
pub struct HostGwBackend {
    pub fam: Dual<HostGwNetwork<Kernel, Ipv4Net>, HostGwNetwork<Kernel, Ipv6Net>>,
}

impl Network for HostGwBackend {
    fn lease_attrs(&self, public_ip: Ipv4Addr, public_ipv6: Option<Ipv6Addr>) -> LeaseAttrs {
        hostgw::lease_attrs_for(public_ip, public_ipv6)
    }
    per_family!();
}

/// udp: peers live in the agent's own table, not in the kernel.
impl Network for UdpNetwork {
    fn lease_attrs(&self, public_ip: Ipv4Addr, _public_ipv6: Option<Ipv6Addr>) -> LeaseAttrs {
        udp::lease_attrs(public_ip)
    }
    async fn set_local_subnets(&mut self, own: Subnets) -> anyhow::Result<()> {
        Ok(self.set_local_subnet(own.v4.context("the udp backend needs an IPv4 subnet")?).await?)
    }
    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
        UdpNetwork::resync(self, leases);
        Ok(())
    }
    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()> {
        UdpNetwork::handle(self, ev);
        Ok(())
    }
    fn peer_count(&self) -> usize {
        UdpNetwork::peer_count(self)
    }
    fn follows_kernel(&self) -> bool {
        false
    }
}
