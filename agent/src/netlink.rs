//! The agent's netlink wrapper: each kernel operation once, typed, with the `ip` command
//! it is equivalent to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A link-layer (Ethernet) address.
pub type Mac = [u8; 6];

const MAIN_TABLE: u8 = 254;

#[derive(Debug, thiserror::Error)]
#[error("{op}")]
pub struct NlError {
    pub(crate) op: String,
    #[source]
    pub(crate) source: rtnetlink::Error,
}

impl NlError {
    pub(crate) fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

pub(crate) fn ctx(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NlError {
    let op = op.into();
    move |source| NlError { op, source }
}

/// Treats "already gone" as success for deletions.
pub(crate) fn gone_ok(r: Result<(), NlError>) -> Result<(), NlError> {
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
    /// Its first IPv4 address (always present when IPv4 is needed).
    pub addr: Option<Ipv4Addr>,
    /// Its first global-scope IPv6 address.
    pub addr6: Option<Ipv6Addr>,
}

/// What the network config needs of the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

/// The netlink family of `N`'s addresses.
pub(crate) fn family<N: IpNet>() -> AddressFamily {
    if N::BITS == 32 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

pub(crate) fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(crate) fn neighbour_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        // FDB destinations come back as raw bytes
        NeighbourAddress::Other(b) if b.len() == 4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        NeighbourAddress::Other(b) if b.len() == 16 => {
            let octets: [u8; 16] = b.as_slice().try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[derive(Clone)]
pub struct Kernel {
    pub(crate) handle: Handle,
}

impl Kernel {
    /// Opens a netlink connection in the agent's own network namespace.
    pub fn open() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Kernel { handle })
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

    /// `ip -6 addr show scope global`, without addresses that failed duplicate detection.
    pub async fn global_addresses6(&self) -> Result<Vec<(u32, Ipv6Addr, u8)>, NlError> {
        let msgs: Vec<AddressMessage> = self.handle.address().get().execute().try_collect().await.map_err(ctx("list addresses"))?;
        Ok(msgs
            .iter()
            .filter(|m| {
                m.header.family == AddressFamily::Inet6
                    && m.header.scope == AddressScope::Universe
                    && !m.header.flags.contains(AddressHeaderFlags::Dadfailed)
            })
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V6(ip)) => Some((m.header.index, *ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Picks the underlay: the first `--iface` entry (name, IPv4 or IPv6 address) that
    /// exists (with an IPv4 address when IPv4 is needed), else the interface of the IPv4
    /// default route, else, with IPv6 needed, that of the IPv6 default route. Its IPv6
    /// address is looked up but not demanded here: the caller names a missing one.
    pub async fn underlay(&self, ifaces: &[String], need: Families) -> Result<Option<Underlay>, NlError> {
        let links = self.links().await?;
        let addrs = self.addresses().await?;
        let addrs6 = self.global_addresses6().await?;
        let describe = |index: u32| -> Option<Underlay> {
            let link = links.iter().find(|l| l.header.index == index)?;
            let name = link_name(link)?;
            let mtu = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })?;
            let addr = addrs.iter().find(|(i, _, _)| *i == index).map(|(_, a, _)| *a);
            if need.ipv4 && addr.is_none() {
                return None;
            }
            let addr6 = addrs6.iter().find(|(i, _, _)| *i == index).map(|(_, a, _)| *a);
            Some(Underlay { name, index, mtu, addr, addr6 })
        };
        for want in ifaces {
            let index = match want.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => addrs.iter().find(|(_, a, _)| *a == ip).map(|(i, _, _)| *i),
                Ok(IpAddr::V6(ip)) => addrs6.iter().find(|(_, a, _)| *a == ip).map(|(i, _, _)| *i),
                Err(_) => links.iter().find(|l| link_name(l).as_deref() == Some(want)).map(|l| l.header.index),
            };
            if let Some(u) = index.and_then(describe) {
                return Ok(Some(u));
            }
        }
        if !ifaces.is_empty() {
            return Ok(None);
        }
        let default_oif = self.main_routes::<Ipv4Net>().await?.into_iter().find(|r| r.dst.prefix() == 0).and_then(|r| r.oif);
        if let Some(u) = default_oif.and_then(describe) {
            return Ok(Some(u));
        }
        if !need.ipv6 {
            return Ok(None);
        }
        let default6_oif = self.main_routes::<Ipv6Net>().await?.into_iter().find(|r| r.dst.prefix() == 0).and_then(|r| r.oif);
        Ok(default6_oif.and_then(describe))
    }

    /// `ip addr flush dev DEV; ip addr add ADDR/32 dev DEV; ip link set DEV up`, for the
    /// family of `addr` (IPv6: `/128`, and link-local addresses stay).
    pub async fn set_sole_address_up(&self, ifindex: u32, addr: IpAddr) -> Result<(), NlError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await
            .map_err(ctx("list device addresses"))?;
        let (fam, len) = match addr {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        let mut present = false;
        for m in msgs.into_iter().filter(|m| m.header.family == fam && m.header.scope != AddressScope::Link) {
            let this = m.attributes.iter().any(|a| matches!(a, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == addr))
                && m.header.prefix_len == len;
            if this {
                present = true;
            } else {
                gone_ok(self.handle.address().del(m).execute().await.map_err(ctx("remove stale device address")))?;
            }
        }
        if !present {
            let mut req = self.handle.address().add(ifindex, addr, len);
            if addr.is_ipv6() {
                // A /128 on a tunnel device: duplicate detection would only delay its use, and
                // the kernel's prefix route for it would be a main-table route IPv4's /32 has not.
                let m = req.message_mut();
                m.header.flags |= AddressHeaderFlags::Nodad;
                m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad | AddressFlags::Noprefixroute));
            }
            req.execute().await.map_err(ctx(format!("add {addr}/{len} to device")))?;
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
        self.set_sole_address_up(index, IpAddr::V4(addr)).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(network.addr(), network.prefix())
            .output_interface(index)
            .scope(netlink_packet_route::route::RouteScope::Link)
            .build();
        self.handle.route().add(route).replace().execute().await.map_err(ctx(format!("route {network} to `{name}`")))
    }

    /// Deletes every gateway route through `underlay` inside `network`.
    pub(crate) async fn remove_gateway_routes<N: IpNet>(&self, underlay: u32, network: N) -> Result<(), NlError> {
        for r in self.main_routes::<N>().await? {
            let Some(gw) = r.gateway else { continue };
            if r.oif == Some(underlay) && network.contains_net(&r.dst) {
                tracing::info!(dst = %r.dst, "removing a host-gw route of another backend");
                let msg = route_msg::<N>(underlay, r.dst, gw, false, Op::Delete);
                gone_ok(self.handle.route().del(msg).execute().await.map_err(ctx(format!("delete route to {}", r.dst))))?;
            }
        }
        Ok(())
    }

    pub(crate) async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NlError> {
        Ok(self.links().await?.into_iter().find(|l| link_name(l).as_deref() == Some(name)))
    }
}

/// One route of the main table in `N`'s family, decoded.
pub(crate) struct MainRoute<N: IpNet> {
    pub(crate) dst: N,
    pub(crate) gateway: Option<N::Addr>,
    pub(crate) oif: Option<u32>,
    pub(crate) onlink: bool,
}

impl Kernel {
    /// `ip -4 route show table main` (IPv6: `ip -6 …`)
    pub(crate) async fn main_routes<N: IpNet>(&self) -> Result<Vec<MainRoute<N>>, NlError> {
        let mut query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        query.header.address_family = family::<N>();
        let msgs: Vec<RouteMessage> = self.handle.route().get(query).execute().try_collect().await.map_err(ctx("list routes"))?;
        let zero = N::new(N::from_bits(0), 0).expect("valid");
        Ok(msgs
            .iter()
            .filter(|r| r.header.table == MAIN_TABLE && r.header.address_family == family::<N>())
            .map(|r| {
                let mut out = MainRoute { dst: zero, gateway: None, oif: None, onlink: r.header.flags.contains(RouteFlags::Onlink) };
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(d) => {
                            if let Some(d) = route_ip(d).and_then(N::from_ip) {
                                out.dst = N::new(d, r.header.destination_prefix_length).unwrap_or(out.dst)
                            }
                        }
                        RouteAttribute::Gateway(g) => out.gateway = route_ip(g).and_then(N::from_ip),
                        RouteAttribute::Oif(i) => out.oif = Some(*i),
                        _ => {}
                    }
                }
                out
            })
            .collect())
    }
}

pub(crate) fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

pub(crate) fn link_mac(l: &LinkMessage) -> Option<Mac> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 => b.as_slice().try_into().ok(),
        _ => None,
    })
}

/// The settings of an existing vxlan link, for deciding whether it can be reused.
pub(crate) fn vxlan_settings(l: &LinkMessage) -> Option<Vec<InfoVxlan>> {
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

pub(crate) fn random_mac() -> Mac {
    let mut mac: Mac = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
    mac
}

/// What a route message is for: a deletion matches routes of any protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Delete,
}

/// `DST via GW dev OIF [onlink]` in `N`'s family.
pub(crate) fn route_msg<N: IpNet>(oif: u32, dst: N, gw: N::Addr, onlink: bool, op: Op) -> RouteMessage {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr().into(), dst.prefix())
        .and_then(|b| b.gateway(gw.into()))
        .expect("destination and gateway of one family")
        .output_interface(oif);
    if onlink {
        b = b.onlink();
    }
    let mut m = b.build();
    if op == Op::Delete {
        m.header.protocol = RouteProtocol::Unspec;
    }
    m
}

pub(crate) fn neighbour_dst(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

pub(crate) fn neighbour_msg(ifindex: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.ifindex = ifindex;
    m.attributes.push(NeighbourAttribute::Destination(neighbour_dst(ip)));
    m
}

pub(crate) fn fdb_msg(ifindex: u32, mac: Mac, dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes.push(NeighbourAttribute::Destination(neighbour_dst(dst)));
    m
}
