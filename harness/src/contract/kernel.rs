//! The kernel state each backend must leave on every host, in each family the net-conf
//! enables (one generic path, [`KernelFamily`]): the overlay device, exactly one route,
//! neighbour and FDB entry per peer (vxlan), one route per directly connected peer
//! (host-gw), the TUN device and one route (udp, IPv4 only). IPv6 entries are judged inside
//! the IPv6 pod network only: the kernel's own link-local routes and neighbours are not
//! flannel's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::finding::Finding;
use super::lease::{peers_of, LeaseView};
use super::netconf::*;
use super::subnet_file::SubnetEnv;
use crate::input::kinds::{Backend, Check};
use crate::input::names::{Family, Net};
use crate::lab::nl::{Address, FdbEntry, Neighbour, Route};
use crate::probe::{HostState, StateFamily};

/// Per-host counts of overlay entries, for reports and linear-growth checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Routes through the overlay device (host-gw: through the underlay).
    pub routes: usize,
    pub neighbours: usize,
    pub fdb: usize,
    /// vxlan DirectRouting: `SUBNET via PUBLIC_IP` routes on the underlay.
    pub direct: usize,
    /// The same for IPv6 (dual-stack and IPv6-only net-confs).
    pub routes6: usize,
    pub neighbours6: usize,
    pub fdb6: usize,
    pub direct6: usize,
}

/// What the kernel checks of one host look at: the net-conf, the host and its addresses,
/// its underlay MTU, the cluster's leases by PublicIP, and what the lab read from the host.
#[derive(Clone, Copy)]
pub struct HostView<'a> {
    pub conf: &'a NetConf,
    pub host: &'a str,
    pub host_ip: Ipv4Addr,
    /// The host's IPv6 underlay address (dual-stack topologies).
    pub host_ip6: Option<Ipv6Addr>,
    pub underlay_mtu: u32,
    pub leases: &'a BTreeMap<Ipv4Addr, LeaseView>,
    pub state: &'a HostState,
    /// The underlay interface (`eth0` in a lab; a real node's may be `ens3`).
    pub underlay: &'a str,
}

impl<'a> HostView<'a> {
    /// The leases of this host's peers under the configured backend.
    fn peers(&self) -> impl Iterator<Item = &'a LeaseView> + 'a {
        peers_of(self.conf, self.host_ip, self.leases)
    }

    fn own(&self) -> Option<&'a LeaseView> {
        self.leases.get(&self.host_ip)
    }

    fn link(&self, name: &str) -> Option<&'a crate::lab::nl::Link> {
        self.state.links.iter().find(|l| l.name == name)
    }
}

/// Checks the kernel state of one host against the backend's contract, in each family the
/// net-conf enables.
pub fn check_kernel(view: &HostView, out: &mut Vec<Finding>) -> Counts {
    let conf = view.conf;
    let mut bad = |check: Check, what: String| out.push(Finding::new(check, view.host, what));
    if conf.backend != Backend::Vxlan {
        stale_vxlan_devices(view.state, conf.backend, &mut bad);
    }
    let mut counts = Counts::default();
    if conf.enable_ipv4 {
        check_pod_mtu_fits(view, &mut bad);
        let c = check_family::<Ipv4Addr>(view, &mut bad);
        (counts.routes, counts.neighbours, counts.fdb, counts.direct) = (c.routes, c.neighbours, c.fdb, c.direct);
    }
    if conf.ipv6.is_some() {
        let c = check_family::<Ipv6Addr>(view, &mut bad);
        (counts.routes6, counts.neighbours6, counts.fdb6, counts.direct6) = (c.routes, c.neighbours, c.fdb, c.direct);
    }
    counts
}

/// One family's kernel state under the configured backend; the counts are that family's
/// (in the IPv4 fields of [`Counts`]).
pub(crate) fn check_family<A: KernelFamily>(view: &HostView, bad: &mut impl FnMut(Check, String)) -> Counts {
    match view.conf.backend {
        Backend::Vxlan => check_vxlan::<A>(view, bad),
        Backend::HostGw => check_hostgw::<A>(view, bad),
        Backend::Udp => A::check_udp(view, bad),
    }
}

/// What the kernel checks need to know of one address family: where its pod network, its
/// peers' addresses and its vxlan device are, and which kernel entries are flannel's.
pub trait KernelFamily: StateFamily {
    /// In front of what a finding counts: `` or `IPv6 `.
    const LABEL: &'static str;
    /// The family's pod network (the net-conf enables it).
    fn network(conf: &NetConf) -> Net<Self>;
    /// A peer's subnet, PublicIP and VtepMAC in this family, when its lease has them.
    fn peer(l: &LeaseView) -> Option<(Net<Self>, Self, Option<&str>)>;
    /// The family's vxlan device name.
    fn vxlan_device(conf: &NetConf) -> String;
    /// What the family's vxlan device must be.
    fn device_want<'a>(view: &HostView<'a>) -> VxlanDeviceWant<'a>;
    /// Whether a route on a flannel device is the agent's to answer for: under IPv6 the
    /// kernel adds routes of its own (an address's prefix, link-local).
    fn judged_route(r: &Route<Self>, network: Net<Self>) -> bool;
    /// Whether a neighbour on a flannel device is the agent's (IPv6: not link-local ones).
    fn judged_neighbour(n: &Neighbour<Self>, network: Net<Self>) -> bool;
    /// The udp backend's state in this family (it has an IPv4 data path only).
    fn check_udp(view: &HostView, bad: &mut impl FnMut(Check, String)) -> Counts;
}

impl KernelFamily for Ipv4Addr {
    const LABEL: &'static str = "";
    fn network(conf: &NetConf) -> Net<Self> {
        conf.network
    }
    fn peer(l: &LeaseView) -> Option<(Net<Self>, Self, Option<&str>)> {
        (!l.public_ip.is_unspecified()).then_some((l.subnet, l.public_ip, l.vtep_mac.as_deref()))
    }
    fn vxlan_device(conf: &NetConf) -> String {
        conf.route_device()
    }
    fn device_want<'a>(view: &HostView<'a>) -> VxlanDeviceWant<'a> {
        VxlanDeviceWant {
            mtu: view.conf.device_mtu(view.underlay_mtu),
            mtu_why: String::new(),
            local: Some(view.host_ip.into()),
            vtep_mac: view.own().map(|o| o.vtep_mac.as_deref()),
            mac_field: "VtepMAC",
            missing_why: "",
        }
    }
    fn judged_route(_: &Route<Self>, _: Net<Self>) -> bool {
        true
    }
    fn judged_neighbour(_: &Neighbour<Self>, _: Net<Self>) -> bool {
        true
    }
    fn check_udp(view: &HostView, bad: &mut impl FnMut(Check, String)) -> Counts {
        check_udp(view, bad)
    }
}

impl KernelFamily for Ipv6Addr {
    const LABEL: &'static str = "IPv6 ";
    fn network(conf: &NetConf) -> Net<Self> {
        conf.ipv6.map(|n| n.network).unwrap_or(Net::new(Ipv6Addr::UNSPECIFIED, 0).expect("valid"))
    }
    fn peer(l: &LeaseView) -> Option<(Net<Self>, Self, Option<&str>)> {
        Some((l.subnet6?, l.public_ip6?, l.vtep_mac6.as_deref()))
    }
    fn vxlan_device(conf: &NetConf) -> String {
        conf.route_device6()
    }
    fn device_want<'a>(view: &HostView<'a>) -> VxlanDeviceWant<'a> {
        let conf = view.conf;
        VxlanDeviceWant {
            mtu: conf.device_mtu6(view.underlay_mtu),
            mtu_why: match conf.mtu {
                Some(_) => " (Backend.MTU)".into(),
                None => format!(" (underlay {} - {VXLAN6_OVERHEAD})", view.underlay_mtu),
            },
            local: view.host_ip6.map(Into::into),
            vtep_mac: view.own().map(|o| o.vtep_mac6.as_deref()),
            mac_field: "BackendV6Data.VtepMAC",
            missing_why: " (the net-conf enables IPv6)",
        }
    }
    fn judged_route(r: &Route<Self>, network: Net<Self>) -> bool {
        !r.by_kernel && network.contains_net(&r.dst)
    }
    fn judged_neighbour(n: &Neighbour<Self>, network: Net<Self>) -> bool {
        network.contains(n.ip)
    }
    fn check_udp(_: &HostView, bad: &mut impl FnMut(Check, String)) -> Counts {
        bad(Check::Device, "the udp backend has no IPv6 data path, but the net-conf enables IPv6".into());
        Counts::default()
    }
}

/// The subnet file's FLANNEL_MTU against the device pod traffic leaves through, as the
/// kernel has it now (not as the contract expects it: each may be right on its own and
/// still not fit each other): pods given a larger MTU than the device send packets it
/// cannot carry.
fn check_pod_mtu_fits(view: &HostView, bad: &mut impl FnMut(Check, String)) {
    let Some(mtu) = view.state.subnet_file.as_deref().and_then(|t| SubnetEnv::parse(t).mtu) else { return };
    let dev = match view.conf.backend {
        Backend::HostGw => view.underlay.to_string(),
        _ => view.conf.route_device(),
    };
    if let Some(link) = view.link(&dev).filter(|l| mtu > l.mtu) {
        let what =
            format!("subnet file FLANNEL_MTU is {mtu}, above the MTU of `{dev}` ({}): pods would send packets it cannot carry", link.mtu);
        bad(Check::SubnetFile, what);
    }
}

/// udp: TUN `flannel0` at underlay − 28 with the subnet's `.0/32`, exactly one route (the
/// whole network) through it, and no per-peer kernel state anywhere.
fn check_udp(view: &HostView, bad: &mut impl FnMut(Check, String)) -> Counts {
    let (conf, state) = (view.conf, view.state);
    let Some(dev) = state.links.iter().find(|l| l.name == UDP_DEVICE) else {
        bad(Check::Device, format!("no `{UDP_DEVICE}` device"));
        return Counts::default();
    };
    if dev.kind.as_deref() != Some("tun") {
        bad(Check::Device, format!("`{UDP_DEVICE}` is a {:?} device, expected tun", dev.kind));
    }
    let want_mtu = conf.device_mtu(view.underlay_mtu);
    if dev.mtu != want_mtu {
        bad(Check::Device, format!("`{UDP_DEVICE}` has MTU {}, expected {want_mtu}", dev.mtu));
    }
    if !dev.up {
        bad(Check::Device, format!("`{UDP_DEVICE}` is down"));
    }
    if let Some(own) = view.own() {
        let addrs: Vec<&Address> = state.addresses.iter().filter(|a| a.ifindex == dev.index).collect();
        if !addrs.iter().any(|a| a.addr == own.subnet.addr() && a.net.prefix() == 32) {
            bad(
                Check::Device,
                format!(
                    "`{UDP_DEVICE}` lacks {}/32 (has {:?})",
                    own.subnet.addr(),
                    addrs.iter().map(|a| format!("{}/{}", a.addr, a.net.prefix())).collect::<Vec<_>>()
                ),
            );
        }
    }
    let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(dev.index)).collect();
    let want = vec![format!("{} (no gateway)", conf.network)];
    let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
    compare(&mut |w| bad(Check::Routes, w), &format!("routes through {UDP_DEVICE}"), "", &want, &have);
    let stray: Vec<String> = state
        .routes
        .iter()
        .filter(|r| r.oif != Some(dev.index) && conf.network.contains_net(&r.dst) && r.dst != conf.network && r.gateway.is_some())
        .map(|r| format!("{} via {:?}", r.dst, r.gateway))
        .collect();
    if !stray.is_empty() {
        bad(Check::Routes, format!("per-peer routes outside {UDP_DEVICE}: {}", stray.join(", ")));
    }
    Counts { routes: routes.len(), ..Counts::default() }
}

/// host-gw, per family: one route `SUBNET via PUBLIC_IP dev eth0` per peer whose PublicIP
/// is on a directly connected network (the kernel refuses the others), none for the rest.
fn check_hostgw<A: KernelFamily>(view: &HostView, bad: &mut impl FnMut(Check, String)) -> Counts {
    let underlay = view.underlay;
    let Some(eth) = view.link(underlay) else {
        bad(Check::Device, format!("no `{underlay}`"));
        return Counts::default();
    };
    let network = A::network(view.conf);
    // peers that published this family's half; the lease checks name the ones that did not
    let peers: Vec<_> = view.peers().filter_map(A::peer).collect();
    let want: Vec<String> =
        peers.iter().filter(|p| directly_connected(view.state, eth.index, p.1)).map(|(s, gw, _)| format!("{s} via {gw}")).collect();
    let routes: Vec<&Route<A>> = A::routes(view.state)
        .iter()
        .filter(|r| r.oif == Some(eth.index) && A::judged_route(r, network) && network.contains_net(&r.dst))
        .collect();
    let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
    let unreachable = peers.len() - want.len();
    let note = if unreachable > 0 { format!(" ({unreachable} peers not directly reachable)") } else { String::new() };
    compare(&mut |w| bad(Check::Routes, w), &format!("{}routes on {underlay}", A::LABEL), &note, &want, &have);
    Counts { routes: routes.len(), ..Counts::default() }
}

/// Whether `ip` is on a network the interface `ifindex` is directly connected to (a host
/// address, /32 or /128, connects to nothing).
pub fn directly_connected<A: StateFamily>(state: &HostState, ifindex: u32, ip: A) -> bool {
    A::addresses(state).iter().any(|a| a.ifindex == ifindex && a.net.prefix() < A::BITS && a.net.contains(ip))
}

/// vxlan, per family: the device, and exactly one route, neighbour and FDB entry per peer
/// lease, and nothing else on the device; with DirectRouting, peers on a directly connected
/// network get one underlay route instead.
fn check_vxlan<A: KernelFamily>(view: &HostView, bad: &mut impl FnMut(Check, String)) -> Counts {
    let (conf, state, label) = (view.conf, view.state, A::LABEL);
    let want_dev = A::device_want(view);
    let dev_name = A::vxlan_device(conf);
    let Some(dev) = view.link(&dev_name) else {
        bad(Check::Device, format!("no `{dev_name}` device{}", want_dev.missing_why));
        return Counts::default();
    };
    let network = A::network(conf);
    let all_peers: Vec<_> = view.peers().filter_map(A::peer).collect();
    let eth = view.link(view.underlay).map(|l| l.index);
    let is_direct = |ip: A| conf.direct_routing && eth.is_some_and(|i| directly_connected(state, i, ip));
    let (direct, peers): (Vec<_>, Vec<_>) = all_peers.into_iter().partition(|p| is_direct(p.1));
    let mut direct_routes = 0;
    if let Some(eth) = eth.filter(|_| conf.direct_routing) {
        let routes: Vec<&Route<A>> =
            A::routes(state).iter().filter(|r| r.oif == Some(eth) && A::judged_route(r, network) && network.contains_net(&r.dst)).collect();
        let want: Vec<String> = direct.iter().map(|(s, gw, _)| format!("{s} via {gw}")).collect();
        let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
        let note = format!(" (DirectRouting: {} of {} peers directly connected)", direct.len(), direct.len() + peers.len());
        compare(&mut |w| bad(Check::Routes, w), &format!("direct {label}routes on {}", view.underlay), &note, &want, &have);
        direct_routes = routes.len();
    }
    check_vxlan_device(conf, dev, &want_dev, bad);
    let idx = dev.index;
    let mac = |m: Option<&str>| m.unwrap_or("?").to_string();
    // routes: `SUBNET via SUBNET.0 dev flannel.1 onlink`, exactly one per peer
    let routes: Vec<&Route<A>> = A::routes(state).iter().filter(|r| r.oif == Some(idx) && A::judged_route(r, network)).collect();
    let want: Vec<String> = peers.iter().map(|(s, _, _)| format!("{s} via {}", s.addr())).collect();
    let have: Vec<String> = routes.iter().map(|r| onlink_key(route_key(r), r.onlink)).collect();
    compare(&mut |w| bad(Check::Routes, w), &format!("{label}routes on {dev_name}"), "", &want, &have);
    // neighbours: `SUBNET.0 lladdr VTEPMAC PERMANENT`
    let neigh: Vec<&Neighbour<A>> = A::neighbours(state).iter().filter(|x| x.ifindex == idx && A::judged_neighbour(x, network)).collect();
    let want: Vec<String> = peers.iter().map(|(s, _, m)| format!("{} lladdr {}", s.addr(), mac(*m))).collect();
    let have: Vec<String> = neigh.iter().map(|x| neighbour_key(x.ip, x.mac.as_deref(), x.permanent)).collect();
    compare(&mut |w| bad(Check::Neighbours, w), &format!("{label}neighbours on {dev_name}"), "", &want, &have);
    // fdb: `VTEPMAC dst PUBLICIP self permanent`
    // with Learning on, entries the kernel learned from traffic are its own business
    let fdb: Vec<&FdbEntry> = state.fdb.iter().filter(|e| e.ifindex == idx && e.dst.is_some() && (e.permanent || !conf.learning)).collect();
    let want: Vec<String> = peers.iter().map(|(_, ip, m)| format!("{} dst {ip}", mac(*m))).collect();
    let have: Vec<String> = fdb.iter().map(|e| fdb_key(e)).collect();
    compare(&mut |w| bad(Check::Fdb, w), &format!("{label}FDB entries on {dev_name}"), "", &want, &have);
    // no whole-network route through the device
    if A::routes(state).iter().any(|r| r.dst == network && r.oif == Some(idx)) {
        bad(Check::Routes, format!("a route for the whole network {network} points at {dev_name}"));
    }
    Counts { routes: routes.len(), neighbours: neigh.len(), fdb: fdb.len(), direct: direct_routes, ..Counts::default() }
}

/// What one family's vxlan device must be besides the net-conf's options: its MTU (and why,
/// when not underlay − 50), its local address, and the MAC its own lease publishes.
pub struct VxlanDeviceWant<'a> {
    pub mtu: u32,
    pub mtu_why: String,
    pub local: Option<std::net::IpAddr>,
    /// The own lease's VtepMAC, when the host has a lease.
    pub vtep_mac: Option<Option<&'a str>>,
    /// Where the lease publishes it (`VtepMAC`, `BackendV6Data.VtepMAC`).
    pub mac_field: &'static str,
    /// Said after "no device", e.g. why the device is expected at all.
    pub missing_why: &'static str,
}

/// A vxlan device of either family against the net-conf: MTU, up, VNI, port, learning, GBP,
/// local address, and the MAC its lease publishes.
fn check_vxlan_device(conf: &NetConf, dev: &crate::lab::nl::Link, want: &VxlanDeviceWant, bad: &mut impl FnMut(Check, String)) {
    let dev_name = &dev.name;
    if dev.mtu != want.mtu {
        bad(Check::Device, format!("`{dev_name}` has MTU {}, expected {}{}", dev.mtu, want.mtu, want.mtu_why));
    }
    if !dev.up {
        bad(Check::Device, format!("`{dev_name}` is down"));
    }
    match &dev.vxlan {
        None => bad(Check::Device, format!("`{dev_name}` is not a vxlan device (kind {:?})", dev.kind)),
        Some(v) => {
            if v.vni != Some(conf.vni) {
                bad(Check::Device, format!("`{dev_name}` has VNI {:?}, expected {}", v.vni, conf.vni));
            }
            if v.port != Some(conf.port) {
                bad(Check::Device, format!("`{dev_name}` uses UDP port {:?}, expected {}", v.port, conf.port));
            }
            if v.learning != Some(conf.learning) {
                let w = if conf.learning { "on (Learning: true)" } else { "off" };
                bad(Check::Device, format!("`{dev_name}` has learning {:?}, expected {w}", v.learning));
            }
            if v.gbp != conf.gbp {
                bad(Check::Device, format!("`{dev_name}` has GBP {}, expected {} (Backend.GBP)", v.gbp, conf.gbp));
            }
            let local = v.local.map(std::net::IpAddr::V4).or(v.local6.map(std::net::IpAddr::V6));
            if want.local.is_some() && local != want.local {
                let w = want.local.map(|a| a.to_string()).unwrap_or_default();
                bad(Check::Device, format!("`{dev_name}` has local {:?}, expected {w}", local.map(|a| a.to_string())));
            }
        }
    }
    if let (Some(published), Some(mac)) = (want.vtep_mac, &dev.mac) {
        if published != Some(mac.as_str()) {
            bad(Check::Device, format!("`{dev_name}` MAC {mac} differs from the {} {published:?} in its lease", want.mac_field));
        }
    }
}

/// A route as compared on a vxlan device, flagging one that is not onlink.
pub(crate) fn onlink_key(key: String, onlink: bool) -> String {
    if onlink {
        key
    } else {
        format!("{key} (not onlink)")
    }
}

/// `IP lladdr MAC`, flagging a neighbour that is not permanent.
pub(crate) fn neighbour_key(ip: impl fmt::Display, mac: Option<&str>, permanent: bool) -> String {
    format!("{ip} lladdr {}{}", mac.unwrap_or("?"), if permanent { "" } else { " (not permanent)" })
}

/// `MAC dst IP`, flagging an entry that is not permanent.
pub(crate) fn fdb_key(e: &FdbEntry) -> String {
    format!("{} dst {}{}", e.mac, e.dst.map(|d| d.to_string()).unwrap_or_default(), if e.permanent { "" } else { " (not permanent)" })
}

/// The neighbours the contract expects on a host's vxlan devices (each peer's gateway, in
/// each family the net-conf enables), to be looked up one by one by a poll at size; none
/// for the other backends, which own no neighbours.
pub fn neighbour_query(conf: &NetConf, host_ip: Ipv4Addr, leases: &BTreeMap<Ipv4Addr, LeaseView>) -> crate::probe::NeighbourQuery {
    let mut q = crate::probe::NeighbourQuery { device: conf.route_device(), device6: conf.route_device6(), ..Default::default() };
    if conf.backend == Backend::Vxlan {
        for p in peers_of(conf, host_ip, leases) {
            if conf.enable_ipv4 && !p.public_ip.is_unspecified() {
                q.v4.push(p.subnet.addr());
            }
            if let Some(s6) = p.subnet6.filter(|_| conf.ipv6.is_some()) {
                q.v6.push(s6.addr());
            }
        }
    }
    q
}

/// A vxlan backend's device left behind under another backend.
fn stale_vxlan_devices(state: &HostState, backend: Backend, bad: &mut impl FnMut(Check, String)) {
    let ours = |n: &str| n.starts_with("flannel.") || n.starts_with("flannel-v6.");
    for l in state.links.iter().filter(|l| l.vxlan.is_some() && ours(&l.name)) {
        bad(Check::StaleState, format!("vxlan device `{}` present under the {backend} backend", l.name));
    }
}

/// `DST via GW` as entries are compared and reported.
fn route_key<A: Family>(r: &Route<A>) -> String {
    match r.gateway {
        Some(g) => format!("{} via {g}", r.dst),
        None => format!("{} (no gateway)", r.dst),
    }
}

/// Compares the entries a host must have with those it has, both written the same way, as
/// multisets: an entry present twice (two routes to one subnet with other metrics) counts
/// as a duplicate. One finding names how many of the wanted ones it has, the missing, the
/// unexpected and the duplicated.
pub(crate) fn compare(bad: &mut impl FnMut(String), what: &str, note: &str, want: &[String], have: &[String]) {
    let mut left: Vec<&String> = have.iter().collect();
    let mut missing = Vec::new();
    for w in want {
        match left.iter().position(|h| *h == w) {
            Some(i) => {
                left.remove(i);
            }
            None => missing.push(w.clone()),
        }
    }
    let (dup, extra): (Vec<String>, Vec<String>) = left.into_iter().cloned().partition(|h| want.contains(h));
    if !missing.is_empty() || !extra.is_empty() || !dup.is_empty() {
        bad(format!(
            "{} of {} {what}{note} (found {}){}{}{}",
            want.len() - missing.len(),
            want.len(),
            have.len(),
            list(" missing", &missing),
            list(" unexpected", &extra),
            list(" duplicated", &dup)
        ));
    }
}

fn list(label: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(";{label}: {}", items.join(", "))
    }
}
