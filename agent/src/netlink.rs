//! The agent's netlink wrapper: each kernel operation once, typed, with the `ip` command
//! it is equivalent to.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::backend::udp;
use crate::backend::vxlan::{self, DeviceState, InstalledPeers, Mac, Peer, RouteTo, VxlanDevice, VxlanKernel};
use crate::ipnet::Ipv4Net;

const MAIN_TABLE: u8 = 254;

#[derive(Debug, thiserror::Error)]
#[error("{op}")]
pub struct NlError {
    op: String,
    #[source]
    source: rtnetlink::Error,
}

impl NlError {
    fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

fn ctx(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NlError {
    let op = op.into();
    move |source| NlError { op, source }
}

/// Treats "already gone" as success for deletions.
fn gone_ok(r: Result<(), NlError>) -> Result<(), NlError> {
    match r {
        Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)) => Ok(()),
        other => other,
    }
}

/// The underlay interface the agent sends encapsulated traffic from.
#[derive(Debug, Clone)]
pub struct Underlay {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub addr: Ipv4Addr,
}

#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
}

/// A change to a network interface, from the kernel's link notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    pub index: u32,
    pub name: Option<String>,
    pub deleted: bool,
    pub up: bool,
}

impl Kernel {
    /// Opens a netlink connection in the agent's own network namespace.
    pub fn open() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Kernel { handle })
    }

    /// `ip monitor link`: every link notification of this namespace, on a connection of
    /// its own, until the receiver is dropped.
    pub fn link_changes() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<LinkChange>> {
        use netlink_packet_route::RouteNetlinkMessage;
        use rtnetlink::packet_core::NetlinkPayload;
        let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
        use rtnetlink::sys::AsyncSocket;
        conn.socket_mut().socket_mut().bind(&rtnetlink::sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))?;
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            // _handle must live as long as the connection is read
            let _keep = _handle;
            while let Some((msg, _)) = futures::StreamExt::next(&mut messages).await {
                let (link, deleted) = match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (l, false),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (l, true),
                    _ => continue,
                };
                let up = link.header.flags.contains(netlink_packet_route::link::LinkFlags::Up)
                    && link.header.flags.contains(netlink_packet_route::link::LinkFlags::LowerUp);
                let change = LinkChange { index: link.header.index, name: link_name(&link), deleted, up };
                if tx.send(change).is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    /// `ip link show`
    pub async fn links(&self) -> Result<Vec<LinkMessage>, NlError> {
        self.handle.link().get().execute().try_collect().await.map_err(ctx("list links"))
    }

    /// `ip -4 addr show`
    pub async fn addresses(&self) -> Result<Vec<(u32, Ipv4Addr, u8)>, NlError> {
        let msgs: Vec<AddressMessage> = self.handle.address().get().execute().try_collect().await.map_err(ctx("list addresses"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some((m.header.index, *ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Picks the underlay: the first `--iface` entry (name or address) that exists, else
    /// the interface of the IPv4 default route.
    pub async fn underlay(&self, ifaces: &[String]) -> Result<Option<Underlay>, NlError> {
        let links = self.links().await?;
        let addrs = self.addresses().await?;
        let describe = |index: u32| -> Option<Underlay> {
            let link = links.iter().find(|l| l.header.index == index)?;
            let name = link_name(link)?;
            let mtu = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })?;
            let addr = addrs.iter().find(|(i, _, _)| *i == index).map(|(_, a, _)| *a)?;
            Some(Underlay { name, index, mtu, addr })
        };
        for want in ifaces {
            let index = match want.parse::<Ipv4Addr>() {
                Ok(ip) => addrs.iter().find(|(_, a, _)| *a == ip).map(|(i, _, _)| *i),
                Err(_) => links.iter().find(|l| link_name(l).as_deref() == Some(want)).map(|l| l.header.index),
            };
            if let Some(u) = index.and_then(describe) {
                return Ok(Some(u));
            }
        }
        if !ifaces.is_empty() {
            return Ok(None);
        }
        let default_oif = self.main_routes().await?.into_iter().find(|r| r.dst.prefix() == 0).and_then(|r| r.oif);
        Ok(default_oif.and_then(describe))
    }

    /// `ip addr flush dev DEV; ip addr add ADDR/32 dev DEV; ip link set DEV up`
    pub async fn set_sole_address_up(&self, ifindex: u32, addr: Ipv4Addr) -> Result<(), NlError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await
            .map_err(ctx("list device addresses"))?;
        let mut present = false;
        for m in msgs.into_iter().filter(|m| m.header.family == AddressFamily::Inet) {
            let this = m.attributes.iter().any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == addr))
                && m.header.prefix_len == 32;
            if this {
                present = true;
            } else {
                gone_ok(self.handle.address().del(m).execute().await.map_err(ctx("remove stale device address")))?;
            }
        }
        if !present {
            self.handle.address().add(ifindex, IpAddr::V4(addr), 32).execute().await.map_err(ctx(format!("add {addr}/32 to device")))?;
        }
        self.handle.link().set(LinkUnspec::new_with_index(ifindex).up().build()).execute().await.map_err(ctx("set device up"))
    }

    /// The TUN device of the udp backend:
    /// `ip link set NAME mtu MTU; ip addr add ADDR/32 dev NAME; ip link set NAME up; ip route replace NETWORK dev NAME`
    pub async fn configure_tun(&self, name: &str, mtu: u32, addr: Ipv4Addr, network: Ipv4Net) -> Result<(), NlError> {
        let link = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| NlError { op: format!("find `{name}`"), source: rtnetlink::Error::RequestFailed })?;
        let index = link.header.index;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(ctx(format!("set mtu of `{name}`")))?;
        self.set_sole_address_up(index, addr).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(network.addr(), network.prefix())
            .output_interface(index)
            .scope(netlink_packet_route::route::RouteScope::Link)
            .build();
        self.handle.route().add(route).replace().execute().await.map_err(ctx(format!("route {network} to `{name}`")))
    }

    /// After a backend switch: removes what another backend left on this host — vxlan
    /// devices other than the one in use, a leftover `flannel0`, host-gw peer routes.
    /// (`ip link del flannel.1`, `ip route del SUBNET via IP dev eth0`)
    pub async fn remove_other_backends(&self, conf: &crate::config::NetConf, underlay: u32) -> Result<(), NlError> {
        use crate::config::BackendConf;
        let keep = match conf.backend {
            BackendConf::Vxlan { vni, .. } => Some(vxlan::device_name(vni)),
            BackendConf::Udp { .. } => Some(udp::DEVICE.to_string()),
            BackendConf::HostGw => None,
        };
        for l in self.links().await? {
            let name = link_name(&l).unwrap_or_default();
            let ours = name == udp::DEVICE || (name.starts_with(vxlan::DEVICE_PREFIX) && vxlan_settings(&l).is_some());
            if ours && Some(&name) != keep.as_ref() {
                tracing::info!(device = name, "removing the device of another backend");
                gone_ok(self.handle.link().del(l.header.index).execute().await.map_err(ctx(format!("delete `{name}`"))))?;
            }
        }
        let keeps_gateway_routes = matches!(conf.backend, BackendConf::HostGw | BackendConf::Vxlan { direct_routing: true, .. });
        if !keeps_gateway_routes {
            for r in self.main_routes().await? {
                let Some(gw) = r.gateway else { continue };
                if r.oif == Some(underlay) && conf.network.contains_net(&r.dst) {
                    tracing::info!(dst = %r.dst, "removing a host-gw route of another backend");
                    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(r.dst.addr(), r.dst.prefix())
                        .gateway(gw)
                        .output_interface(underlay)
                        .build();
                    gone_ok(self.handle.route().del(msg).execute().await.map_err(ctx(format!("delete route to {}", r.dst))))?;
                }
            }
        }
        Ok(())
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NlError> {
        Ok(self.links().await?.into_iter().find(|l| link_name(l).as_deref() == Some(name)))
    }
}

/// One IPv4 route of the main table, decoded.
struct MainRoute {
    dst: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
    onlink: bool,
}

impl Kernel {
    /// `ip -4 route show table main`
    async fn main_routes(&self) -> Result<Vec<MainRoute>, NlError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(ctx("list routes"))?;
        Ok(msgs
            .iter()
            .filter(|r| r.header.table == MAIN_TABLE)
            .map(|r| {
                let mut out = MainRoute {
                    dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"),
                    gateway: None,
                    oif: None,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                };
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                            out.dst = Ipv4Net::new(*d, r.header.destination_prefix_length).unwrap_or(out.dst)
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => out.gateway = Some(*g),
                        RouteAttribute::Oif(i) => out.oif = Some(*i),
                        _ => {}
                    }
                }
                out
            })
            .collect())
    }
}

fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn link_mac(l: &LinkMessage) -> Option<Mac> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 => b.as_slice().try_into().ok(),
        _ => None,
    })
}

/// The settings of an existing vxlan link, for deciding whether it can be reused.
fn vxlan_settings(l: &LinkMessage) -> Option<Vec<InfoVxlan>> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => {
            let is_vxlan = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
            let data = infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
                _ => None,
            });
            if is_vxlan {
                Some(data.unwrap_or_default())
            } else {
                None
            }
        }
        _ => None,
    })
}

fn random_mac() -> Mac {
    let mut mac: Mac = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
    mac
}

fn route_msg(ifindex: u32, dst: Ipv4Net, gw: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.addr(), dst.prefix())
        .gateway(gw)
        .output_interface(ifindex)
        .onlink()
        .build()
}

fn neighbour_msg(ifindex: u32, ip: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = ifindex;
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    m
}

fn fdb_msg(ifindex: u32, mac: Mac, dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    m
}

impl VxlanKernel for Kernel {
    type Error = NlError;

    /// `ip link add flannel.1 address MAC mtu M type vxlan id 1 local IP dev eth0 dstport 8472 nolearning [gbp]`
    async fn ensure_device(&mut self, dev: &VxlanDevice) -> Result<DeviceState, NlError> {
        if let Some(existing) = self.link_by_name(&dev.name).await? {
            let reusable = vxlan_settings(&existing).is_some_and(|s| {
                s.contains(&InfoVxlan::Id(dev.vni))
                    && s.contains(&InfoVxlan::Port(dev.port))
                    && s.contains(&InfoVxlan::Local(dev.local))
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
        let mut msg = LinkVxlan::new(&dev.name, dev.vni).dev(dev.underlay_index).local(dev.local).port(dev.port).learning(dev.learning);
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

    async fn configure_device(&mut self, ifindex: u32, addr: Ipv4Addr) -> Result<(), NlError> {
        self.set_sole_address_up(ifindex, addr).await
    }

    /// `ip neigh replace GW lladdr MAC dev flannel.1 nud permanent`;
    /// `bridge fdb replace MAC dev flannel.1 dst PUBLIC_IP self permanent`;
    /// `ip route replace SUBNET via GW dev flannel.1 onlink`
    async fn add_peer(&mut self, ifindex: u32, p: &Peer) -> Result<(), NlError> {
        self.handle
            .neighbours()
            .add(ifindex, IpAddr::V4(p.gateway()))
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
            .destination(IpAddr::V4(p.public_ip))
            .replace()
            .execute()
            .await
            .map_err(ctx(format!("add fdb entry for {} to {}", p.subnet, p.public_ip)))?;
        self.handle
            .route()
            .add(route_msg(ifindex, p.subnet, p.gateway()))
            .replace()
            .execute()
            .await
            .map_err(ctx(format!("add route to {}", p.subnet)))
    }

    /// `ip route get IP`
    async fn route_to(&mut self, ip: Ipv4Addr) -> Result<Option<RouteTo>, NlError> {
        let req = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(ip, 32).build();
        let r: Result<Vec<RouteMessage>, NlError> =
            self.handle.route().get(req).execute().try_collect().await.map_err(ctx(format!("look up the route to {ip}")));
        let msgs = match r {
            Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) | Some(libc::ENETDOWN)) => return Ok(None),
            other => other?,
        };
        Ok(msgs.first().map(|m| {
            let mut out = RouteTo { gateway: None, oif: None };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => out.gateway = Some(*g),
                    RouteAttribute::Oif(i) => out.oif = Some(*i),
                    _ => {}
                }
            }
            out
        }))
    }

    /// `ip route replace SUBNET via PUBLIC_IP dev UNDERLAY`
    async fn add_direct(&mut self, underlay: u32, subnet: Ipv4Net, via: Ipv4Addr) -> Result<(), NlError> {
        crate::backend::HostGwKernel::add_route(self, underlay, subnet, via).await
    }

    /// `ip route del SUBNET via PUBLIC_IP dev UNDERLAY`
    async fn del_direct(&mut self, underlay: u32, subnet: Ipv4Net, via: Ipv4Addr) -> Result<(), NlError> {
        crate::backend::HostGwKernel::del_route(self, underlay, subnet, via).await
    }

    async fn installed(&mut self, ifindex: u32, direct: Option<(u32, Ipv4Net)>) -> Result<InstalledPeers, NlError> {
        let mut out = InstalledPeers::default();
        for r in self.main_routes().await? {
            let Some(g) = r.gateway else { continue };
            if r.onlink && r.oif == Some(ifindex) {
                out.routes.push((r.dst, g));
            } else if let Some((underlay, network)) = direct {
                if r.oif == Some(underlay) && network.contains_net(&r.dst) {
                    out.direct.push((r.dst, g));
                }
            }
        }
        let neigh: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(ctx("list neighbours"))?;
        for n in neigh.iter().filter(|n| n.header.ifindex == ifindex && n.header.state == NeighbourState::Permanent) {
            let ip = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
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
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
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
    async fn del_route(&mut self, ifindex: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), NlError> {
        gone_ok(self.handle.route().del(route_msg(ifindex, dst, gw)).execute().await.map_err(ctx(format!("delete route to {dst}"))))
    }

    /// `ip neigh del IP dev flannel.1`
    async fn del_neighbour(&mut self, ifindex: u32, ip: Ipv4Addr, _mac: Mac) -> Result<(), NlError> {
        gone_ok(self.handle.neighbours().del(neighbour_msg(ifindex, ip)).execute().await.map_err(ctx(format!("delete neighbour {ip}"))))
    }

    /// `bridge fdb del MAC dev flannel.1 dst DST self`
    async fn del_fdb(&mut self, ifindex: u32, mac: Mac, dst: Ipv4Addr) -> Result<(), NlError> {
        gone_ok(self.handle.neighbours().del(fdb_msg(ifindex, mac, dst)).execute().await.map_err(ctx(format!("delete fdb entry to {dst}"))))
    }
}

impl crate::backend::HostGwKernel for Kernel {
    type Error = NlError;

    fn is_unreachable_gateway(e: &NlError) -> bool {
        // "Network is unreachable", or "Nexthop has invalid gateway" on newer kernels
        matches!(e.errno(), Some(libc::ENETUNREACH) | Some(libc::EINVAL))
    }

    /// `ip route replace DST via GW dev OIF`
    async fn add_route(&mut self, oif: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), NlError> {
        let msg =
            RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst.addr(), dst.prefix()).gateway(gw).output_interface(oif).build();
        self.handle.route().add(msg).replace().execute().await.map_err(ctx(format!("add route to {dst} via {gw}")))
    }

    /// `ip route del DST via GW dev OIF`
    async fn del_route(&mut self, oif: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), NlError> {
        let msg =
            RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst.addr(), dst.prefix()).gateway(gw).output_interface(oif).build();
        gone_ok(self.handle.route().del(msg).execute().await.map_err(ctx(format!("delete route to {dst} via {gw}"))))
    }

    async fn routes_within(&mut self, oif: u32, network: Ipv4Net) -> Result<Vec<(Ipv4Net, Ipv4Addr)>, NlError> {
        let out = self
            .main_routes()
            .await?
            .into_iter()
            .filter(|r| r.oif == Some(oif) && network.contains_net(&r.dst))
            .filter_map(|r| r.gateway.map(|g| (r.dst, g)))
            .collect();
        Ok(out)
    }
}
