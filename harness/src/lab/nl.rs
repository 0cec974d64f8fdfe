//! The harness's own netlink wrapper (it never shares code with the agent): the kernel
//! operations that build a lab, and decoded dumps of what an agent left behind. Each
//! operation names the `ip` command it stands for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
use crate::input::names::{Family, Net};
use crate::lab::netns::Netns;

pub const MAIN_TABLE: u32 = 254;

/// A netlink connection bound to one namespace.
#[derive(Clone)]
pub struct Nl {
    ns: String,
    handle: Handle,
}

pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

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
    /// The local address of a vxlan device over IPv6 (`flannel-v6.N`).
    pub local6: Option<Ipv6Addr>,
    pub learning: Option<bool>,
    pub underlay_index: Option<u32>,
    /// Group Based Policy extension on (a flag attribute: present or not).
    pub gbp: bool,
}

/// A route of the main table, of family `A`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Route<A: Family = Ipv4Addr> {
    pub dst: Net<A>,
    pub gateway: Option<A>,
    pub oif: Option<u32>,
    pub onlink: bool,
    /// Added by the kernel itself (`proto kernel`), e.g. for an address's own prefix.
    pub by_kernel: bool,
}

/// A neighbour (ARP or NDP) entry of family `A`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Neighbour<A: Family = Ipv4Addr> {
    pub ifindex: u32,
    pub ip: A,
    pub mac: Option<String>,
    pub permanent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub mac: String,
    /// The remote VTEP: IPv4 on `flannel.N`, IPv6 on `flannel-v6.N`.
    pub dst: Option<IpAddr>,
    pub permanent: bool,
}

/// A decoded route of either family, before it is typed.
struct AnyRoute {
    dst: Option<(IpAddr, u8)>,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    onlink: bool,
    by_kernel: bool,
}

/// An address of family `A` on an interface, with the prefix it is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address<A: Family = Ipv4Addr> {
    pub ifindex: u32,
    pub net: Net<A>,
    pub addr: A,
}

/// The netlink address family of `A`.
fn address_family<A: Family>() -> AddressFamily {
    match A::BITS {
        32 => AddressFamily::Inet,
        _ => AddressFamily::Inet6,
    }
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

    /// `ip link add NAME mtu MTU address MAC type bridge`: a bridge whose MAC is set, so it
    /// keeps it as ports join (a bridge without one takes its lowest port's MAC, and
    /// neighbours that cached the old one lose it as their gateway).
    pub async fn add_bridge_with_mac(&self, name: &str, mtu: u32, mac: Mac) -> Result<(), Error> {
        let msg = LinkBridge::new(name).mtu(mtu).address(mac.to_vec()).build();
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

    /// `ip addr del ADDR/PREFIX dev NAME`
    pub async fn del_address(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        let op = format!("delete {addr}/{prefix} from `{name}`");
        let mut dump = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(m) = dump.try_next().await.map_err(self.err(op.clone()))? {
            let has = m.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(a)) if *a == addr));
            if has && m.header.prefix_len == prefix {
                return self.handle.address().del(m).execute().await.map_err(self.err(op));
            }
        }
        Err(Error::Lab(format!("{op}: no such address")))
    }

    /// `ip route add DST via GW` (or `default via GW` for 0.0.0.0/0 and ::/0)
    pub async fn add_route<A: Family>(&self, dst: Net<A>, gw: A) -> Result<(), Error> {
        let invalid = |e| Error::Lab(format!("route {dst} via {gw}: {e:?}"));
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr().into(), dst.prefix())
            .map_err(invalid)?
            .gateway(gw.into())
            .map_err(invalid)?
            .build();
        self.handle.route().add(msg).execute().await.map_err(self.err(format!("add route {dst} via {gw}")))
    }

    /// `ip addr add ADDR/LEN dev NAME nodad`: usable at once, with no IPv6 duplicate
    /// address detection delaying it (the lab assigns every address itself).
    pub async fn add_address<A: Family>(&self, name: &str, addr: A, prefix: u8) -> Result<(), Error> {
        let index = self.index_of(name).await?;
        let mut req = self.handle.address().add(index, addr.into(), prefix);
        req.message_mut().header.flags |= netlink_packet_route::address::AddressHeaderFlags::Nodad;
        req.execute().await.map_err(self.err(format!("add {addr}/{prefix} to `{name}`")))
    }

    /// `ip route del DST via GW dev IFINDEX` (used by negative controls); an IPv4 route
    /// without a gateway is matched at link scope, as `ip route del` does.
    pub async fn del_route<A: Family>(&self, r: &Route<A>) -> Result<(), Error> {
        let invalid = |e| Error::Lab(format!("route {}: {e:?}", r.dst));
        let mut b = RouteMessageBuilder::<IpAddr>::new().destination_prefix(r.dst.addr().into(), r.dst.prefix()).map_err(invalid)?;
        match r.gateway {
            Some(gw) => b = b.gateway(gw.into()).map_err(invalid)?,
            None if A::BITS == 32 => b = b.scope(netlink_packet_route::route::RouteScope::Link),
            None => {}
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
        let mac = parse_mac(&e.mac).ok_or_else(|| Error::Lab(format!("FDB entry with a malformed MAC `{}`", e.mac)))?;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        match e.dst {
            Some(IpAddr::V4(dst)) => m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst))),
            Some(IpAddr::V6(dst)) => m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(dst))),
            None => {}
        }
        self.handle.neighbours().del(m).execute().await.map_err(self.err(format!("delete fdb entry {}", e.mac)))
    }

    /// `tc qdisc replace dev LINK root netem delay D jitter J reorder R% gap 5 rate RATE`,
    /// or `tc qdisc del dev LINK root` when `n` impairs nothing. Kernels built without
    /// sch_netem answer ENOENT, reported as such. netem's options are
    /// a raw `tc_netem_qopt` followed by its own attributes, built here by hand.
    pub async fn set_netem(&self, link: &str, n: &Netem) -> Result<(), Error> {
        use futures::StreamExt;
        use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
        use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
        let index = self.index_of(link).await?;
        let op = format!("set netem {n:?} on {link}");
        if n.is_none() {
            let h = self.handle.clone();
            let mut del = h.qdisc().del(index as i32);
            del.message_mut().header.parent = TcHandle::ROOT;
            return match del.execute().await {
                Ok(()) => Ok(()),
                // nothing to delete: the link has its default qdisc already
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT || e.raw_code() == -libc::EINVAL => Ok(()),
                Err(source) => Err(Error::Netlink { op, ns: self.ns.clone(), source }),
            };
        }
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::ROOT;
        msg.attributes.push(TcAttribute::Kind("netem".into()));
        msg.attributes
            .push(TcAttribute::Other(rtnetlink::packet_core::DefaultNla::new(2 /* TCA_OPTIONS */, n.options(psched_ticks_per_us()))));
        let mut req = NetlinkMessage::from(netlink_packet_route::RouteNetlinkMessage::NewQueueDiscipline(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut h = self.handle.clone();
        let mut resp = h.request(req).map_err(|source| Error::Netlink { op: op.clone(), ns: self.ns.clone(), source })?;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if e.raw_code() == -libc::ENOENT {
                    return Err(Error::Lab(format!(
                        "{op}: this kernel has no netem qdisc (sch_netem), so delay, jitter, reordering and rate limits cannot be emulated here"
                    )));
                }
                if e.code.is_some() {
                    return Err(Error::Netlink { op, ns: self.ns.clone(), source: rtnetlink::Error::NetlinkError(e) });
                }
            }
        }
        Ok(())
    }

    /// `ip neigh del IP dev IFINDEX` (used by negative controls)
    pub async fn del_neighbour<A: Family>(&self, n: &Neighbour<A>) -> Result<(), Error> {
        let (ifindex, ip): (u32, IpAddr) = (n.ifindex, n.ip.into());
        let mut m = NeighbourMessage::default();
        m.header.ifindex = ifindex;
        match ip {
            IpAddr::V4(v4) => {
                m.header.family = AddressFamily::Inet;
                m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)));
            }
            IpAddr::V6(v6) => {
                m.header.family = AddressFamily::Inet6;
                m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)));
            }
        }
        self.handle.neighbours().del(m).execute().await.map_err(self.err(format!("delete neighbour {ip}")))
    }

    /// `ip -d link show`
    pub async fn links(&self) -> Result<Vec<Link>, Error> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await.map_err(self.err("list links"))?;
        Ok(msgs.iter().map(decode_link).collect())
    }

    /// `ip -4 addr show`, `ip -6 addr show`
    pub async fn addresses<A: Family>(&self) -> Result<Vec<Address<A>>, Error> {
        Ok(self
            .addresses_any()
            .await?
            .into_iter()
            .filter_map(|(ifindex, ip, plen)| {
                let addr = A::from_ip(ip)?;
                Some(Address { ifindex, net: Net::new(addr, plen)?, addr })
            })
            .collect())
    }

    async fn addresses_any(&self) -> Result<Vec<(u32, IpAddr, u8)>, Error> {
        let msgs: Vec<AddressMessage> = self.handle.address().get().execute().try_collect().await.map_err(self.err("list addresses"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let v4 = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip @ IpAddr::V4(_)) => Some(*ip),
                    _ => None,
                });
                let ip = v4.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                Some((m.header.index, ip, m.header.prefix_len))
            })
            .collect())
    }

    /// `ip -4 route show table main`, `ip -6 route show table main`
    pub async fn routes<A: Family>(&self) -> Result<Vec<Route<A>>, Error> {
        let mut query = RouteMessageBuilder::<IpAddr>::new().build();
        query.header.address_family = address_family::<A>();
        let raw = self.routes_any(query).await?;
        let mut out: Vec<Route<A>> = raw
            .into_iter()
            .map(|r| Route {
                dst: r.dst.and_then(|(d, len)| Net::new(A::from_ip(d)?, len)).unwrap_or(Net::new(A::from_bits(0), 0).expect("valid")),
                gateway: r.gateway.and_then(A::from_ip),
                oif: r.oif,
                onlink: r.onlink,
                by_kernel: r.by_kernel,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The main table's routes of the family `query` asks for.
    async fn routes_any(&self, query: RouteMessage) -> Result<Vec<AnyRoute>, Error> {
        let msgs: Vec<RouteMessage> = self.handle.route().get(query).execute().try_collect().await.map_err(self.err("list routes"))?;
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
            let mut r = AnyRoute {
                dst: None,
                gateway: None,
                oif: None,
                onlink: m.header.flags.contains(RouteFlags::Onlink),
                by_kernel: m.header.protocol == netlink_packet_route::route::RouteProtocol::Kernel,
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        r.dst = Some((IpAddr::V4(*d), m.header.destination_prefix_length))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => {
                        r.dst = Some((IpAddr::V6(*d), m.header.destination_prefix_length))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(IpAddr::V4(*g)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => r.gateway = Some(IpAddr::V6(*g)),
                    RouteAttribute::Oif(i) => r.oif = Some(*i),
                    _ => {}
                }
            }
            out.push(r);
        }
        Ok(out)
    }

    /// `ip -4 neigh show`, `ip -6 neigh show`
    pub async fn neighbours<A: Family>(&self) -> Result<Vec<Neighbour<A>>, Error> {
        let mut out: Vec<Neighbour<A>> = self
            .neighbours_any(address_family::<A>())
            .await?
            .into_iter()
            .filter_map(|(ifindex, ip, mac, permanent)| Some(Neighbour { ifindex, ip: A::from_ip(ip)?, mac, permanent }))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn neighbours_any(&self, family: AddressFamily) -> Result<Vec<(u32, IpAddr, Option<String>, bool)>, Error> {
        let msgs: Vec<NeighbourMessage> =
            self.handle.neighbours().get().set_address_family(family).execute().try_collect().await.map_err(self.err("list neighbours"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                    _ => None,
                })?;
                Some((m.header.ifindex, ip, lladdr(m), m.header.state == NeighbourState::Permanent))
            })
            .collect())
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
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
                        4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(|a| IpAddr::V4(a.into())),
                        16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(|a| IpAddr::V6(a.into())),
                        _ => None,
                    },
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
                            let mut x = VxlanInfo {
                                vni: None,
                                port: None,
                                local: None,
                                local6: None,
                                learning: None,
                                underlay_index: None,
                                gbp: false,
                            };
                            for o in v {
                                match o {
                                    InfoVxlan::Id(id) => x.vni = Some(*id),
                                    InfoVxlan::Port(p) => x.port = Some(*p),
                                    InfoVxlan::Local(ip) => x.local = Some(*ip),
                                    InfoVxlan::Local6(ip) => x.local6 = Some(*ip),
                                    InfoVxlan::Learning(b) => x.learning = Some(*b),
                                    InfoVxlan::Link(i) => x.underlay_index = Some(*i),
                                    InfoVxlan::Gbp => x.gbp = true,
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

/// What netem does to a link's outgoing packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Netem {
    pub delay_us: u32,
    pub jitter_us: u32,
    pub reorder_percent: u32,
    pub rate_kbit: u32,
}

impl Netem {
    pub fn is_none(&self) -> bool {
        *self == Netem::default()
    }

    /// `TCA_OPTIONS` of netem: `struct tc_netem_qopt { latency, limit, loss (0: loss is
    /// done with nftables, which every kernel here has), gap, duplicate,
    /// jitter }` (times in scheduler ticks, probabilities scaled to u32), then
    /// `TCA_NETEM_REORDER {probability, correlation}` and `TCA_NETEM_RATE {rate (bytes/s),
    /// packet_overhead, cell_size, cell_overhead}` when asked for.
    pub fn options(&self, ticks_per_us: f64) -> Vec<u8> {
        let prob = |pct: u32| ((pct.min(100) as u64 * u32::MAX as u64) / 100) as u32;
        let ticks = |us: u32| (us as f64 * ticks_per_us) as u32;
        let gap = if self.reorder_percent > 0 { 5 } else { 0 };
        let mut out = Vec::new();
        for v in [ticks(self.delay_us), 1000, 0, gap, 0, ticks(self.jitter_us)] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        let mut nla = |kind: u16, words: &[u32]| {
            out.extend_from_slice(&(4 + 4 * words.len() as u16).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            for w in words {
                out.extend_from_slice(&w.to_ne_bytes());
            }
        };
        if self.reorder_percent > 0 {
            nla(3 /* TCA_NETEM_REORDER */, &[prob(self.reorder_percent), 0]);
        }
        if self.rate_kbit > 0 {
            nla(6 /* TCA_NETEM_RATE */, &[self.rate_kbit.saturating_mul(125), 0, 0, 0]);
        }
        out
    }
}

/// Packet scheduler ticks per microsecond, from /proc/net/psched (`t2us us2t …`); 15.625 on
/// today's kernels.
fn psched_ticks_per_us() -> f64 {
    let text = std::fs::read_to_string("/proc/net/psched").unwrap_or_default();
    let mut it = text.split_whitespace().map(|w| u32::from_str_radix(w, 16).ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(t2us), Some(us2t)) if us2t > 0 => t2us as f64 / us2t as f64,
        _ => 15.625,
    }
}

#[cfg(test)]
mod netem_tests {
    use super::*;

    #[test]
    fn netem_options_are_qopt_then_attributes() {
        let n = Netem { delay_us: 100_000, jitter_us: 0, reorder_percent: 25, rate_kbit: 8000 };
        let o = n.options(15.625);
        let word = |i: usize| u32::from_ne_bytes(o[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(word(0), 1_562_500, "100 ms in ticks");
        assert_eq!(word(1), 1000);
        assert_eq!(word(2), 0, "loss is nftables' job");
        assert_eq!(word(3), 5, "a gap makes reordering possible");
        assert_eq!(&o[24..26], &12u16.to_ne_bytes());
        assert_eq!(&o[26..28], &3u16.to_ne_bytes());
        assert_eq!(&o[36..38], &20u16.to_ne_bytes());
        assert_eq!(&o[38..40], &6u16.to_ne_bytes());
        assert_eq!(word(10), 1_000_000, "8000 kbit/s in bytes/s");
        assert_eq!(o.len(), 56);
        assert!(Netem::default().is_none());
        assert_eq!(parse_mac("0e:ca:0a:00:00:01"), Some([0x0e, 0xca, 0x0a, 0, 0, 1]));
        assert_eq!(parse_mac("0e:ca"), None);
        assert_eq!(parse_mac("0e:ca:0a:00:00:01:02"), None);
    }
}
