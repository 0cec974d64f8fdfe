//! The harness's own netlink wrapper (it never shares code with the agent): the kernel
//! operations that build a lab, and decoded dumps of what an agent left behind. Each
//! operation names the `ip` command it stands for.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::Serialize;

use crate::error::Error;
use crate::input::names::Ipv4Net;
use crate::lab::netns::Netns;

pub const MAIN_TABLE: u32 = 254;

/// A netlink connection bound to one namespace.
#[derive(Clone)]
pub struct Nl {
    ns: String,
    handle: Handle,
}

pub type Mac = [u8; 6];

pub fn format_mac(m: &Mac) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// One interface, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub kind: Option<String>,
    pub mac: Option<String>,
    pub controller: Option<u32>,
    pub vxlan: Option<VxlanInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    pub learning: Option<bool>,
    pub underlay_index: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub onlink: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: Option<String>,
    pub permanent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub mac: String,
    pub dst: Option<Ipv4Addr>,
    pub permanent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub ifindex: u32,
    pub net: Ipv4Net,
    pub addr: Ipv4Addr,
}

impl Nl {
    pub fn open(ns: &Netns) -> Result<Nl, Error> {
        Ok(Nl { ns: ns.name().to_string(), handle: ns.netlink()? })
    }

    fn err(&self, op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error + '_ {
        let op = op.into();
        move |source| Error::Netlink { op, ns: self.ns.clone(), source }
    }

    /// `ip link add NAME mtu MTU type bridge`
    pub async fn add_bridge(&self, name: &str, mtu: u32) -> Result<(), Error> {
        let msg = LinkBridge::new(name).mtu(mtu).build();
        self.handle.link().add(msg).execute().await.map_err(self.err(format!("create bridge `{name}`")))
    }

    /// `ip link add NAME mtu MTU type veth peer name PEER mtu MTU netns PEER_NS`
    pub async fn add_veth(&self, name: &str, peer: &str, peer_ns: &Netns, mtu: u32) -> Result<(), Error> {
        self.add_veth_with_mac(name, peer, peer_ns, mtu, None).await
    }

    /// Like [`Nl::add_veth`], with the peer's MAC set in the create request.
    pub async fn add_veth_with_mac(&self, name: &str, peer: &str, peer_ns: &Netns, mtu: u32, peer_mac: Option<Mac>) -> Result<(), Error> {
        let mut peer_b = LinkMessageBuilder::<LinkUnspec>::new().name(peer).mtu(mtu).setns_by_fd(peer_ns.fd().as_raw_fd());
        if let Some(mac) = peer_mac {
            peer_b = peer_b.address(mac.to_vec());
        }
        let peer_msg = peer_b.build();
        let msg = LinkVeth::new(name, peer).mtu(mtu).set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg))).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(self.err(format!("create veth `{name}` with peer `{peer}` in netns `{}`", peer_ns.name())))
    }

    pub async fn index_of(&self, name: &str) -> Result<u32, Error> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(m.header.index),
            Ok(None) => {
                Err(Error::Netlink { op: format!("find link `{name}`"), ns: self.ns.clone(), source: rtnetlink::Error::RequestFailed })
            }
            Err(e) => Err(self.err(format!("find link `{name}`"))(e)),
        }
    }

    /// `ip link set NAME up`
    pub async fn set_up(&self, name: &str) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle.link().set(msg).execute().await.map_err(self.err(format!("set `{name}` up")))
    }

    /// `ip link set NAME down`
    pub async fn set_down(&self, name: &str) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.handle.link().set(msg).execute().await.map_err(self.err(format!("set `{name}` down")))
    }

    /// `ip link set NAME master BRIDGE up`
    pub async fn enslave(&self, name: &str, bridge: &str) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        let br = self.index_of(bridge).await?;
        let msg = LinkUnspec::new_with_index(index).controller(br).up().build();
        self.handle.link().set(msg).execute().await.map_err(self.err(format!("attach `{name}` to bridge `{bridge}`")))
    }

    /// `ip link del NAME`
    pub async fn del_link(&self, name: &str) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        self.handle.link().del(index).execute().await.map_err(self.err(format!("delete `{name}`")))
    }

    /// `ip link set NAME mtu MTU`
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle.link().set(msg).execute().await.map_err(self.err(format!("set mtu {mtu} on `{name}`")))
    }

    /// `ip addr add ADDR/LEN dev NAME`
    pub async fn add_address(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .map_err(self.err(format!("add {addr}/{prefix} to `{name}`")))
    }

    /// `ip route add DST via GW` (or `default via GW` for 0.0.0.0/0)
    pub async fn add_route(&self, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), Error> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst.addr(), dst.prefix()).gateway(gw).build();
        self.handle.route().add(msg).execute().await.map_err(self.err(format!("add route {dst} via {gw}")))
    }

    /// `ip route del DST via GW dev IFINDEX` (used by negative controls)
    pub async fn del_route(&self, r: &Route) -> Result<(), Error> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(r.dst.addr(), r.dst.prefix());
        match r.gateway {
            Some(gw) => b = b.gateway(gw),
            None => b = b.scope(netlink_packet_route::route::RouteScope::Link),
        }
        if let Some(oif) = r.oif {
            b = b.output_interface(oif);
        }
        self.handle.route().del(b.build()).execute().await.map_err(self.err(format!("delete route {}", r.dst)))
    }

    /// `bridge fdb del MAC dev IFINDEX dst DST self` (used by negative controls)
    pub async fn del_fdb(&self, e: &FdbEntry) -> Result<(), Error> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = e.ifindex;
        m.header.flags = netlink_packet_route::neighbour::NeighbourFlags::Own;
        let mac: Vec<u8> = e.mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac));
        if let Some(dst) = e.dst {
            m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        }
        self.handle.neighbours().del(m).execute().await.map_err(self.err(format!("delete fdb entry {}", e.mac)))
    }

    /// `ip neigh del IP dev IFINDEX` (used by negative controls)
    pub async fn del_neighbour(&self, n: &Neighbour) -> Result<(), Error> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = n.ifindex;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(n.ip)));
        self.handle.neighbours().del(m).execute().await.map_err(self.err(format!("delete neighbour {}", n.ip)))
    }

    /// `ip -d link show`
    pub async fn links(&self) -> Result<Vec<Link>, Error> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await.map_err(self.err("list links"))?;
        Ok(msgs.iter().map(decode_link).collect())
    }

    /// `ip -4 addr show`
    pub async fn addresses(&self) -> Result<Vec<Address>, Error> {
        let msgs: Vec<AddressMessage> = self.handle.address().get().execute().try_collect().await.map_err(self.err("list addresses"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet)
            .filter_map(|m| {
                let addr = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })?;
                Some(Address { ifindex: m.header.index, net: Ipv4Net::new(addr, m.header.prefix_len)?, addr })
            })
            .collect())
    }

    /// `ip -4 route show table main`
    pub async fn routes(&self) -> Result<Vec<Route>, Error> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list routes"))?;
        let mut out = Vec::new();
        for m in &msgs {
            let table = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(m.header.table as u32);
            if table != MAIN_TABLE {
                continue;
            }
            let mut r = Route {
                dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"),
                gateway: None,
                oif: None,
                onlink: m.header.flags.contains(RouteFlags::Onlink),
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        r.dst = Ipv4Net::new(*d, m.header.destination_prefix_length).unwrap_or(r.dst)
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
                    RouteAttribute::Oif(i) => r.oif = Some(*i),
                    _ => {}
                }
            }
            out.push(r);
        }
        out.sort();
        Ok(out)
    }

    /// `ip -4 neigh show`
    pub async fn neighbours(&self) -> Result<Vec<Neighbour>, Error> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list neighbours"))?;
        let mut out: Vec<Neighbour> = msgs
            .iter()
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                Some(Neighbour { ifindex: m.header.ifindex, ip, mac: lladdr(m), permanent: m.header.state == NeighbourState::Permanent })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// `bridge fdb show`
    pub async fn fdb(&self) -> Result<Vec<FdbEntry>, Error> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list fdb"))?;
        let mut out: Vec<FdbEntry> = msgs
            .iter()
            .filter_map(|m| {
                let dst = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    }
                    _ => None,
                });
                Some(FdbEntry { ifindex: m.header.ifindex, mac: lladdr(m)?, dst, permanent: m.header.state == NeighbourState::Permanent })
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

fn lladdr(m: &NeighbourMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok().map(|m: Mac| format_mac(&m)),
        _ => None,
    })
}

fn decode_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        up: m.header.flags.contains(netlink_packet_route::link::LinkFlags::Up),
        kind: None,
        mac: None,
        controller: None,
        vxlan: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) => l.mac = b.as_slice().try_into().ok().map(|m: Mac| format_mac(&m)),
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let mut x = VxlanInfo { vni: None, port: None, local: None, learning: None, underlay_index: None };
                            for o in v {
                                match o {
                                    InfoVxlan::Id(id) => x.vni = Some(*id),
                                    InfoVxlan::Port(p) => x.port = Some(*p),
                                    InfoVxlan::Local(ip) => x.local = Some(*ip),
                                    InfoVxlan::Learning(b) => x.learning = Some(*b),
                                    InfoVxlan::Link(i) => x.underlay_index = Some(*i),
                                    _ => {}
                                }
                            }
                            l.vxlan = Some(x);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Tun => "tun".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}
