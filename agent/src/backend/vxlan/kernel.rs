//! The kernel side of vxlan: the operations a [`super::VxlanNetwork`] needs (the trait,
//! so the control logic is tested against a fake) and their implementation over netlink.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoVxlan, LinkAttribute};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::plan::{InstalledPeers, Peer, RouteTo};
use crate::ipnet::{IpNet, Ipv4Net};
use crate::netlink::*;

/// The vxlan device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The public address of this host in the device's family.
    pub local: IpAddr,
    pub underlay_index: u32,
    pub mtu: u32,
    /// Kernel GBP extension (`gbp`).
    pub gbp: bool,
    /// Kernel learning of source MACs (`learning`); flannel's default is off.
    pub learning: bool,
    /// The MAC to create the device with; None = a random one. Set once the device exists,
    /// so a device recreated later keeps the MAC peers know.
    pub mac: Option<Mac>,
}

/// The device as [`VxlanKernel::ensure_device`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceState {
    pub ifindex: u32,
    pub mac: Mac,
    /// Whether it was created (or recreated) by this call.
    pub created: bool,
}

/// The kernel operations of one family's vxlan device (`N`: [`Ipv4Net`] or
/// [`crate::ipnet::Ipv6Net`]).
#[allow(async_fn_in_trait)]
pub trait VxlanKernel<N: IpNet = Ipv4Net> {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Creates the device, or reuses an existing one with the same settings (keeping its
    /// MAC and setting the MTU).
    async fn ensure_device(&mut self, dev: &VxlanDevice) -> Result<DeviceState, Self::Error>;
    /// Puts `addr/32` (IPv6: `addr/128`) on the device, removing other addresses of the
    /// family (not IPv6 link-local ones), and sets it up.
    async fn configure_device(&mut self, ifindex: u32, addr: N::Addr) -> Result<(), Self::Error>;
    /// `ip route get IP`; None when the kernel has no route now.
    async fn route_to(&mut self, ip: N::Addr) -> Result<Option<RouteTo<N::Addr>>, Self::Error>;
    async fn add_peer(&mut self, ifindex: u32, peer: &Peer<N>) -> Result<(), Self::Error>;
    async fn add_direct(&mut self, underlay: u32, subnet: N, via: N::Addr) -> Result<(), Self::Error>;
    /// Peer entries on the device, and direct routes on `underlay` inside `network` when
    /// given; neighbours only when `neighbours` (reading them walks the kernel's whole
    /// table, every namespace's entries included).
    async fn installed(&mut self, ifindex: u32, direct: Option<(u32, N)>, neighbours: bool) -> Result<InstalledPeers<N>, Self::Error>;
    async fn del_route(&mut self, ifindex: u32, dst: N, gw: N::Addr) -> Result<(), Self::Error>;
    async fn del_neighbour(&mut self, ifindex: u32, ip: N::Addr, mac: Mac) -> Result<(), Self::Error>;
    async fn del_fdb(&mut self, ifindex: u32, mac: Mac, dst: N::Addr) -> Result<(), Self::Error>;
    async fn del_direct(&mut self, underlay: u32, dst: N, via: N::Addr) -> Result<(), Self::Error>;
}

impl<N: IpNet> VxlanKernel<N> for Kernel {
    type Error = NlError;

    /// `ip link add flannel.1 address MAC mtu M type vxlan id 1 local IP dev eth0 dstport 8472 nolearning [gbp]`
    /// (IPv6: `flannel-v6.1 … local IPV6 …`)
    async fn ensure_device(&mut self, dev: &VxlanDevice) -> Result<DeviceState, NlError> {
        if let Some(existing) = self.link_by_name(&dev.name).await? {
            let local = match dev.local {
                IpAddr::V4(a) => InfoVxlan::Local(a),
                IpAddr::V6(a) => InfoVxlan::Local6(a),
            };
            let reusable = vxlan_settings(&existing).is_some_and(|s| {
                s.contains(&InfoVxlan::Id(dev.vni))
                    && s.contains(&InfoVxlan::Port(dev.port))
                    && s.contains(&local)
                    && s.contains(&InfoVxlan::Link(dev.underlay_index))
                    && s.contains(&InfoVxlan::Learning(dev.learning))
                    && s.contains(&InfoVxlan::Gbp) == dev.gbp
            });
            let mtu = existing.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            });
            match (reusable, link_mac(&existing)) {
                (true, Some(mac)) => {
                    if mtu != Some(dev.mtu) {
                        let msg = LinkUnspec::new_with_index(existing.header.index).mtu(dev.mtu).build();
                        self.handle.link().set(msg).execute().await.map_err(ctx(format!("set mtu of `{}`", dev.name)))?;
                    }
                    return Ok(DeviceState { ifindex: existing.header.index, mac, created: false });
                }
                _ => {
                    tracing::warn!(device = dev.name, "existing device has other settings, recreating it");
                    self.handle
                        .link()
                        .del(existing.header.index)
                        .execute()
                        .await
                        .map_err(ctx(format!("delete incompatible `{}`", dev.name)))?;
                }
            }
        }
        let mac = dev.mac.unwrap_or_else(random_mac);
        let mut msg = LinkVxlan::new(&dev.name, dev.vni).dev(dev.underlay_index).port(dev.port).learning(dev.learning);
        msg = match dev.local {
            IpAddr::V4(a) => msg.local(a),
            IpAddr::V6(a) => msg.local6(a),
        };
        if dev.gbp {
            msg = msg.gbp();
        }
        let msg = msg.mtu(dev.mtu).address(mac.to_vec()).build();
        self.handle.link().add(msg).execute().await.map_err(ctx(format!("create vxlan device `{}`", dev.name)))?;
        let link = self
            .link_by_name(&dev.name)
            .await?
            .ok_or_else(|| NlError { op: format!("find `{}` after creating it", dev.name), source: rtnetlink::Error::RequestFailed })?;
        Ok(DeviceState { ifindex: link.header.index, mac: link_mac(&link).unwrap_or(mac), created: true })
    }

    async fn configure_device(&mut self, ifindex: u32, addr: N::Addr) -> Result<(), NlError> {
        self.set_sole_address_up(ifindex, addr.into()).await
    }

    /// `ip neigh replace GW lladdr MAC dev flannel.1 nud permanent`;
    /// `bridge fdb replace MAC dev flannel.1 dst PUBLIC_IP self permanent`;
    /// `ip route replace SUBNET via GW dev flannel.1 onlink` (the same with `-6` on `flannel-v6.1`)
    async fn add_peer(&mut self, ifindex: u32, p: &Peer<N>) -> Result<(), NlError> {
        self.handle
            .neighbours()
            .add(ifindex, p.gateway().into())
            .link_layer_address(&p.vtep_mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(ctx(format!("add neighbour {} for {}", p.gateway(), p.subnet)))?;
        self.handle
            .neighbours()
            .add_bridge(ifindex, &p.vtep_mac)
            .flags(NeighbourFlags::Own)
            .destination(p.public_ip.into())
            .replace()
            .execute()
            .await
            .map_err(ctx(format!("add fdb entry for {} to {}", p.subnet, p.public_ip)))?;
        self.handle
            .route()
            .add(route_msg::<N>(ifindex, p.subnet, p.gateway(), true, Op::Add))
            .replace()
            .execute()
            .await
            .map_err(ctx(format!("add route to {}", p.subnet)))
    }

    /// `ip route get IP`
    async fn route_to(&mut self, ip: N::Addr) -> Result<Option<RouteTo<N::Addr>>, NlError> {
        let host = N::new(ip, N::BITS).expect("valid prefix");
        let req = RouteMessageBuilder::<IpAddr>::new().destination_prefix(ip.into(), N::BITS).expect("valid prefix").build();
        let r: Result<Vec<RouteMessage>, NlError> =
            self.handle.route().get(req).execute().try_collect().await.map_err(ctx(format!("look up the route to {host}")));
        let msgs = match r {
            Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) | Some(libc::ENETDOWN)) => return Ok(None),
            other => other?,
        };
        Ok(msgs.first().map(|m| {
            let mut out = RouteTo { gateway: None, oif: None };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Gateway(g) => out.gateway = route_ip(g).and_then(N::from_ip),
                    RouteAttribute::Oif(i) => out.oif = Some(*i),
                    _ => {}
                }
            }
            out
        }))
    }

    /// `ip route replace SUBNET via PUBLIC_IP dev UNDERLAY`
    async fn add_direct(&mut self, underlay: u32, subnet: N, via: N::Addr) -> Result<(), NlError> {
        crate::backend::hostgw::kernel::HostGwKernel::<N>::add_route(self, underlay, subnet, via).await
    }

    /// `ip route del SUBNET via PUBLIC_IP dev UNDERLAY`
    async fn del_direct(&mut self, underlay: u32, subnet: N, via: N::Addr) -> Result<(), NlError> {
        crate::backend::hostgw::kernel::HostGwKernel::<N>::del_route(self, underlay, subnet, via).await
    }

    async fn installed(&mut self, ifindex: u32, direct: Option<(u32, N)>, neighbours: bool) -> Result<InstalledPeers<N>, NlError> {
        let mut out = InstalledPeers::default();
        for r in self.main_routes::<N>().await? {
            let Some(g) = r.gateway else { continue };
            if r.onlink && r.oif == Some(ifindex) {
                out.routes.push((r.dst, g));
            } else if let Some((underlay, network)) = direct {
                if r.oif == Some(underlay) && network.contains_net(&r.dst) {
                    out.direct.push((r.dst, g));
                }
            }
        }
        let neigh: Vec<NeighbourMessage> = match neighbours {
            false => Vec::new(),
            true => self
                .handle
                .neighbours()
                .get()
                .set_address_family(family::<N>())
                .execute()
                .try_collect()
                .await
                .map_err(ctx("list neighbours"))?,
        };
        for n in neigh.iter().filter(|n| n.header.ifindex == ifindex && n.header.state == NeighbourState::Permanent) {
            let ip = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(d) => neighbour_ip(d).and_then(N::from_ip),
                _ => None,
            });
            let mac = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
                _ => None,
            });
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.neighbours.push((ip, mac));
            }
        }
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(ctx("list fdb"))?;
        // learned entries (with Learning on) are the kernel's, not ours
        for n in fdb.iter().filter(|n| n.header.ifindex == ifindex && n.header.state == NeighbourState::Permanent) {
            let dst = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(d) => neighbour_ip(d).and_then(N::from_ip),
                _ => None,
            });
            let mac = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
                _ => None,
            });
            if let (Some(dst), Some(mac)) = (dst, mac) {
                out.fdb.push((mac, dst));
            }
        }
        Ok(out)
    }

    /// `ip route del DST via GW dev flannel.1`
    async fn del_route(&mut self, ifindex: u32, dst: N, gw: N::Addr) -> Result<(), NlError> {
        let msg = route_msg::<N>(ifindex, dst, gw, true, Op::Delete);
        gone_ok(self.handle.route().del(msg).execute().await.map_err(ctx(format!("delete route to {dst}"))))
    }

    /// `ip neigh del IP dev flannel.1`
    async fn del_neighbour(&mut self, ifindex: u32, ip: N::Addr, _mac: Mac) -> Result<(), NlError> {
        let msg = neighbour_msg(ifindex, ip.into());
        gone_ok(self.handle.neighbours().del(msg).execute().await.map_err(ctx(format!("delete neighbour {ip}"))))
    }

    /// `bridge fdb del MAC dev flannel.1 dst DST self`
    async fn del_fdb(&mut self, ifindex: u32, mac: Mac, dst: N::Addr) -> Result<(), NlError> {
        let msg = fdb_msg(ifindex, mac, dst.into());
        gone_ok(self.handle.neighbours().del(msg).execute().await.map_err(ctx(format!("delete fdb entry to {dst}"))))
    }
}
