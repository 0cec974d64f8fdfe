//! Kernel change notifications the agent follows instead of polling: links, routes,
//! neighbours and FDB entries (rtnetlink multicast groups), and nftables ruleset changes
//! (nfnetlink). Each subscription is a socket of its own, read on a thread of its own, with
//! a large receive buffer; when the kernel had to drop notifications (ENOBUFS) the reader
//! says so ([`Change::Overflow`], [`RulesetChange::Overflow`]), so the caller falls back to
//! a full check instead of trusting what it saw.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::{protocols, Socket, SocketAddr};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::netlink::Mac;
use crate::netlink::{link_name, neighbour_ip, route_ip};

/// rtnetlink groups (`RTMGRP_*`).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// `NFNLGRP_NFTABLES`
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// Each notification socket's receive buffer: a convergence burst of a thousand peers
/// (three entries each, about 100 bytes a notification) fits several times over.
const RCVBUF: libc::c_int = 8 << 20;
const MAIN_TABLE: u32 = 254;

/// A change to a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    pub index: u32,
    pub name: Option<String>,
    pub deleted: bool,
    pub up: bool,
}

/// A route added or deleted (main table routes only are reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub deleted: bool,
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// A neighbour (IPv4 ARP or IPv6 NDP entry) added, changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourChange {
    pub deleted: bool,
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Option<Mac>,
    pub permanent: bool,
}

/// An FDB entry added, changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbChange {
    pub deleted: bool,
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: Option<IpAddr>,
    pub permanent: bool,
}

/// One rtnetlink notification the agent cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Link(LinkChange),
    Route(RouteChange),
    Neighbour(NeighbourChange),
    Fdb(FdbChange),
    /// The kernel dropped notifications: what was seen is incomplete.
    Overflow,
}

/// One nftables notification: the table it is about (None for generation messages) and
/// the netlink port of whoever made the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesetChange {
    Table { name: Option<String>, portid: u32 },
    Overflow,
}

/// Opens a notification socket of `protocol`, joined to `groups` (a bitmask) and `extra`
/// group numbers, with a large forced receive buffer.
fn subscribe(protocol: isize, groups: u32, extra: &[u32]) -> std::io::Result<Socket> {
    let mut sock = Socket::new(protocol)?;
    sock.bind(&SocketAddr::new(0, groups))?;
    for g in extra {
        sock.add_membership(*g)?;
    }
    // SAFETY: setsockopt with a c_int we own; SO_RCVBUFFORCE needs CAP_NET_ADMIN, else
    // the plain SO_RCVBUF (capped by rmem_max) is the best there is.
    unsafe {
        let v = RCVBUF;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let fd = sock.as_raw_fd();
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &v as *const _ as *const libc::c_void, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &v as *const _ as *const libc::c_void, len);
        }
    }
    Ok(sock)
}

/// Reads `sock` on a thread of its own until the receiver is gone, passing every datagram
/// through `parse`; ENOBUFS becomes `overflow`.
fn read_loop<T: Clone + Send + 'static>(
    sock: Socket,
    name: &str,
    parse: impl Fn(&[u8], &mut Vec<T>) + Send + 'static,
    overflow: T,
) -> std::io::Result<UnboundedReceiver<T>> {
    let (tx, rx): (UnboundedSender<T>, _) = unbounded_channel();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut out = Vec::new();
        loop {
            match sock.recv_from_full() {
                Ok((buf, _)) => {
                    parse(&buf, &mut out);
                    for c in out.drain(..) {
                        if tx.send(c).is_err() {
                            return;
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if tx.send(overflow.clone()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading kernel notifications failed; falling back to periodic checks");
                    let _ = tx.send(overflow.clone());
                    return;
                }
            }
        }
    })?;
    Ok(rx)
}

/// `ip monitor link route neigh`: link notifications, and with `entries` also routes,
/// neighbours and FDB entries, of this namespace.
pub fn kernel_changes(entries: bool) -> std::io::Result<UnboundedReceiver<Change>> {
    let groups = if entries { RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE } else { RTMGRP_LINK };
    let sock = subscribe(protocols::NETLINK_ROUTE, groups, &[])?;
    read_loop(sock, "rtnl-notify", parse_route_messages, Change::Overflow)
}

/// `nft monitor`: a notification per change to any nftables table of this namespace
/// (iptables-nft rules included).
pub fn ruleset_changes() -> std::io::Result<UnboundedReceiver<RulesetChange>> {
    let sock = subscribe(protocols::NETLINK_NETFILTER, 0, &[NFNLGRP_NFTABLES])?;
    read_loop(sock, "nft-notify", parse_nft_messages, RulesetChange::Overflow)
}

/// Each netlink message in one datagram: (type, pid, the whole message).
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let rest = buf.get(off..)?;
        if rest.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        let pid = u32::from_ne_bytes(rest[12..16].try_into().ok()?);
        off += (len + 3) & !3;
        Some((ty, pid, &rest[..len]))
    })
}

fn parse_route_messages(buf: &[u8], out: &mut Vec<Change>) {
    for (_, _, msg) in messages(buf) {
        let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg) else { continue };
        let NetlinkPayload::InnerMessage(inner) = m.payload else { continue };
        let change = match inner {
            RouteNetlinkMessage::NewLink(l) => Some(Change::Link(link_change(&l, false))),
            RouteNetlinkMessage::DelLink(l) => Some(Change::Link(link_change(&l, true))),
            RouteNetlinkMessage::NewRoute(r) => route_change(&r, false).map(Change::Route),
            RouteNetlinkMessage::DelRoute(r) => route_change(&r, true).map(Change::Route),
            RouteNetlinkMessage::NewNeighbour(n) => neighbour_change(&n, false),
            RouteNetlinkMessage::DelNeighbour(n) => neighbour_change(&n, true),
            _ => None,
        };
        out.extend(change);
    }
}

fn link_change(l: &LinkMessage, deleted: bool) -> LinkChange {
    let up = l.header.flags.contains(LinkFlags::Up) && l.header.flags.contains(LinkFlags::LowerUp);
    LinkChange { index: l.header.index, name: link_name(l), deleted, up }
}

fn route_change(r: &RouteMessage, deleted: bool) -> Option<RouteChange> {
    let table = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    if table.unwrap_or(u32::from(r.header.table)) != MAIN_TABLE {
        return None;
    }
    let mut c = RouteChange {
        deleted,
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        prefix: r.header.destination_prefix_length,
        gateway: None,
        oif: None,
    };
    if r.header.address_family == AddressFamily::Inet6 {
        c.dst = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    }
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => c.dst = route_ip(d)?,
            RouteAttribute::Gateway(g) => c.gateway = route_ip(g),
            RouteAttribute::Oif(i) => c.oif = Some(*i),
            _ => {}
        }
    }
    Some(c)
}

fn neighbour_change(n: &NeighbourMessage, deleted: bool) -> Option<Change> {
    let mut dst = None;
    let mut mac: Option<Mac> = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(d) => dst = neighbour_ip(d),
            NeighbourAttribute::LinkLayerAddress(b) => mac = b.as_slice().try_into().ok(),
            _ => {}
        }
    }
    let (ifindex, permanent) = (n.header.ifindex, n.header.state == NeighbourState::Permanent);
    match n.header.family {
        AddressFamily::Bridge => Some(Change::Fdb(FdbChange { deleted, ifindex, mac: mac?, dst, permanent })),
        _ => Some(Change::Neighbour(NeighbourChange { deleted, ifindex, ip: dst?, mac, permanent })),
    }
}

/// The table an nftables notification is about: attribute 1 of every object message
/// (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, `NFTA_SET_TABLE`,
/// `NFTA_SET_ELEM_LIST_TABLE`, …), after the 4-byte `nfgenmsg`.
fn parse_nft_messages(buf: &[u8], out: &mut Vec<RulesetChange>) {
    for (ty, pid, msg) in messages(buf) {
        if ty >> 8 != NFNL_SUBSYS_NFTABLES {
            continue;
        }
        let mut name = None;
        let mut attrs = msg.get(20..).unwrap_or(&[]);
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
            if len < 4 || len > attrs.len() {
                break;
            }
            if kind == 1 {
                let v = &attrs[4..len];
                name = Some(String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v)).into_owned());
                break;
            }
            attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
        }
        out.push(RulesetChange::Table { name, portid: pid });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message: header, then `body`.
    fn msg(ty: u16, pid: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&pid.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn nftables_notifications_name_their_table_and_sender() {
        // NFT_MSG_NEWRULE in table "filter" from port 4242, then NFT_MSG_NEWSETELEM in
        // "flannel-agent-vxlan" from port 7, in one datagram
        let mut rule = vec![2, 0, 0, 0];
        rule.extend(attr(1, b"filter\0"));
        rule.extend(attr(2, b"FORWARD\0"));
        let mut elem = vec![2, 0, 0, 0];
        elem.extend(attr(1, b"flannel-agent-vxlan\0"));
        let mut buf = msg(10 << 8 | 6, 4242, &rule);
        buf.extend(msg(10 << 8 | 12, 7, &elem));
        buf.extend(msg(9 << 8 | 1, 1, &[0; 8])); // another subsystem: ignored
        let mut out = Vec::new();
        parse_nft_messages(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                RulesetChange::Table { name: Some("filter".into()), portid: 4242 },
                RulesetChange::Table { name: Some("flannel-agent-vxlan".into()), portid: 7 },
            ]
        );
    }

    #[test]
    fn truncated_datagrams_yield_what_is_whole() {
        let buf = msg(10 << 8 | 6, 1, &[2, 0, 0, 0]);
        assert_eq!(messages(&buf[..10]).count(), 0);
        assert_eq!(messages(&buf).count(), 1);
    }
}
