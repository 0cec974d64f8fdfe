//! The kernel state each backend must leave on every host (IPv4; `v6` has the IPv6 half):
//! the overlay device, exactly one route, neighbour and FDB entry per peer (vxlan), one
//! route per directly connected peer (host-gw), the TUN device and one route (udp).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::finding::Finding;
use super::lease::{peers_of, LeaseView};
use super::netconf::*;
use super::subnet_file::SubnetEnv;
use crate::input::kinds::{Backend, Check};
use crate::input::names::Ipv4Net;
use crate::lab::nl::{Address, FdbEntry, Neighbour, Route};
use crate::lab::UNDERLAY_IF;
use crate::probe::HostState;

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

/// Checks the kernel state of one host against the backend's contract.
pub fn check_kernel(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    underlay_mtu: u32,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    if !conf.enable_ipv4 {
        // IPv6-only: the IPv6 checks judge this host
        if conf.backend != Backend::Vxlan {
            stale_vxlan_devices(state, conf.backend, &mut |check, what| out.push(Finding::new(check, host, what)));
        }
        return Counts::default();
    }
    check_pod_mtu_fits(conf, host, state, out);
    match conf.backend {
        Backend::Vxlan => check_vxlan(conf, host, host_ip, underlay_mtu, leases, state, out),
        Backend::HostGw => check_hostgw(conf, host, host_ip, leases, state, out),
        Backend::Udp => check_udp(conf, host, host_ip, underlay_mtu, leases, state, out),
    }
}

/// The subnet file's FLANNEL_MTU against the device pod traffic leaves through, as the
/// kernel has it now (not as the contract expects it: each may be right on its own and
/// still not fit each other): pods given a larger MTU than the device send packets it
/// cannot carry.
fn check_pod_mtu_fits(conf: &NetConf, host: &str, state: &HostState, out: &mut Vec<Finding>) {
    let Some(mtu) = state.subnet_file.as_deref().and_then(|t| SubnetEnv::parse(t).mtu) else { return };
    let dev = conf.route_device();
    if let Some(link) = state.links.iter().find(|l| l.name == dev).filter(|l| mtu > l.mtu) {
        let what =
            format!("subnet file FLANNEL_MTU is {mtu}, above the MTU of `{dev}` ({}): pods would send packets it cannot carry", link.mtu);
        out.push(Finding::new(Check::SubnetFile, host, what));
    }
}

/// udp: TUN `flannel0` at underlay − 28 with the subnet's `.0/32`, exactly one route (the
/// whole network) through it, and no per-peer kernel state anywhere.
fn check_udp(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    underlay_mtu: u32,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    let mut bad = |check: Check, what: String| out.push(Finding::new(check, host, what));
    stale_vxlan_devices(state, conf.backend, &mut bad);
    let Some(dev) = state.links.iter().find(|l| l.name == UDP_DEVICE) else {
        bad(Check::Device, format!("no `{UDP_DEVICE}` device"));
        return Counts::default();
    };
    if dev.kind.as_deref() != Some("tun") {
        bad(Check::Device, format!("`{UDP_DEVICE}` is a {:?} device, expected tun", dev.kind));
    }
    let want_mtu = conf.device_mtu(underlay_mtu);
    if dev.mtu != want_mtu {
        bad(Check::Device, format!("`{UDP_DEVICE}` has MTU {}, expected {want_mtu}", dev.mtu));
    }
    if !dev.up {
        bad(Check::Device, format!("`{UDP_DEVICE}` is down"));
    }
    if let Some(own) = leases.get(&host_ip) {
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

/// host-gw: one route `SUBNET via PUBLIC_IP dev eth0` per peer whose PublicIP is on a
/// directly connected network (the kernel refuses the others), none for the rest, and no
/// flannel vxlan device.
fn check_hostgw(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    let mut bad = |check: Check, what: String| out.push(Finding::new(check, host, what));
    let Some(eth) = state.links.iter().find(|l| l.name == UNDERLAY_IF) else {
        bad(Check::Device, format!("no `{UNDERLAY_IF}`"));
        return Counts::default();
    };
    stale_vxlan_devices(state, conf.backend, &mut bad);
    let peers: Vec<&LeaseView> = peers_of(conf, host_ip, leases).filter(|l| !l.public_ip.is_unspecified()).collect();
    let want: Vec<(Ipv4Net, Ipv4Addr)> =
        peers.iter().filter(|p| directly_connected(state, eth.index, p.public_ip)).map(|p| (p.subnet, p.public_ip)).collect();
    let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(eth.index) && conf.network.contains_net(&r.dst)).collect();
    let want: Vec<String> = want.iter().map(|(d, g)| format!("{d} via {g}")).collect();
    let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
    let unreachable = peers.len() - want.len();
    let note = if unreachable > 0 { format!(" ({unreachable} peers not directly reachable)") } else { String::new() };
    compare(&mut |w| bad(Check::Routes, w), &format!("routes on {UNDERLAY_IF}"), &note, &want, &have);
    Counts { routes: routes.len(), ..Counts::default() }
}

/// Whether `ip` is on a network the interface `ifindex` is directly connected to.
pub fn directly_connected(state: &HostState, ifindex: u32, ip: Ipv4Addr) -> bool {
    state.addresses.iter().any(|a| a.ifindex == ifindex && a.net.contains(ip))
}

/// vxlan: the device, and exactly one route, neighbour and FDB entry per peer lease, and
/// nothing else on the device.
fn check_vxlan(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    underlay_mtu: u32,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    let mut bad = |check: Check, what: String| out.push(Finding::new(check, host, what));
    let dev_name = conf.route_device();
    let Some(dev) = state.links.iter().find(|l| l.name == dev_name) else {
        bad(Check::Device, format!("no `{dev_name}` device"));
        return Counts::default();
    };
    let own = leases.get(&host_ip);
    let all_peers: Vec<&LeaseView> = peers_of(conf, host_ip, leases).filter(|l| !l.public_ip.is_unspecified()).collect();
    // DirectRouting: peers on a directly connected network get an underlay route instead
    let eth = state.links.iter().find(|l| l.name == UNDERLAY_IF).map(|l| l.index);
    let is_direct = |p: &LeaseView| conf.direct_routing && eth.is_some_and(|i| directly_connected(state, i, p.public_ip));
    let (direct, peers): (Vec<&LeaseView>, Vec<&LeaseView>) = all_peers.into_iter().partition(|p| is_direct(p));
    let mut direct_routes = 0;
    if let Some(eth) = eth.filter(|_| conf.direct_routing) {
        let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(eth) && conf.network.contains_net(&r.dst)).collect();
        let want: Vec<String> = direct.iter().map(|p| format!("{} via {}", p.subnet, p.public_ip)).collect();
        let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
        let note = format!(" (DirectRouting: {} of {} peers directly connected)", direct.len(), direct.len() + peers.len());
        compare(&mut |w| bad(Check::Routes, w), &format!("direct routes on {UNDERLAY_IF}"), &note, &want, &have);
        direct_routes = routes.len();
    }
    let want = VxlanDeviceWant {
        mtu: conf.device_mtu(underlay_mtu),
        mtu_why: String::new(),
        local: Some(host_ip.into()),
        vtep_mac: own.map(|o| o.vtep_mac.as_deref()),
        mac_field: "VtepMAC",
    };
    check_vxlan_device(conf, dev, &want, &mut bad);
    let idx = dev.index;
    // routes: `SUBNET via SUBNET.0 dev flannel.1 onlink`, exactly one per peer
    let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(idx)).collect();
    let want: Vec<String> = peers.iter().map(|p| format!("{} via {}", p.subnet, p.subnet.addr())).collect();
    let have: Vec<String> = routes.iter().map(|r| onlink_key(route_key(r), r.onlink)).collect();
    compare(&mut |w| bad(Check::Routes, w), &format!("routes on {dev_name}"), "", &want, &have);
    // neighbours: `SUBNET.0 lladdr VTEPMAC PERMANENT`
    let neigh: Vec<&Neighbour> = state.neighbours.iter().filter(|x| x.ifindex == idx).collect();
    let want: Vec<String> = peers.iter().map(|p| format!("{} lladdr {}", p.subnet.addr(), p.vtep_mac.as_deref().unwrap_or("?"))).collect();
    let have: Vec<String> = neigh.iter().map(|x| neighbour_key(x.ip, x.mac.as_deref(), x.permanent)).collect();
    compare(&mut |w| bad(Check::Neighbours, w), &format!("neighbours on {dev_name}"), "", &want, &have);
    // fdb: `VTEPMAC dst PUBLICIP self permanent`
    // with Learning on, entries the kernel learned from traffic are its own business
    let fdb: Vec<&FdbEntry> = state.fdb.iter().filter(|e| e.ifindex == idx && e.dst.is_some() && (e.permanent || !conf.learning)).collect();
    let want: Vec<String> = peers.iter().map(|p| format!("{} dst {}", p.vtep_mac.as_deref().unwrap_or("?"), p.public_ip)).collect();
    let have: Vec<String> = fdb.iter().map(|e| fdb_key(e)).collect();
    compare(&mut |w| bad(Check::Fdb, w), &format!("FDB entries on {dev_name}"), "", &want, &have);
    // no whole-network route through the device
    if state.routes.iter().any(|r| r.dst == conf.network && r.oif == Some(idx)) {
        bad(Check::Routes, format!("a route for the whole network {} points at {dev_name}", conf.network));
    }
    Counts { routes: routes.len(), neighbours: neigh.len(), fdb: fdb.len(), direct: direct_routes, ..Counts::default() }
}

/// What one family's vxlan device must be besides the net-conf's options: its MTU (and why,
/// when not underlay − 50), its local address, and the MAC its own lease publishes.
pub(crate) struct VxlanDeviceWant<'a> {
    pub mtu: u32,
    pub mtu_why: String,
    pub local: Option<std::net::IpAddr>,
    /// The own lease's VtepMAC, when the host has a lease.
    pub vtep_mac: Option<Option<&'a str>>,
    /// Where the lease publishes it (`VtepMAC`, `BackendV6Data.VtepMAC`).
    pub mac_field: &'static str,
}

/// A vxlan device of either family against the net-conf: MTU, up, VNI, port, learning, GBP,
/// local address, and the MAC its lease publishes.
pub(crate) fn check_vxlan_device(conf: &NetConf, dev: &crate::lab::nl::Link, want: &VxlanDeviceWant, bad: &mut impl FnMut(Check, String)) {
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
fn route_key(r: &Route) -> String {
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
