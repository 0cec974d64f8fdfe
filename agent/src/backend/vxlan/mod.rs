//! The vxlan backend: device `flannel.<VNI>`, and for every peer lease one onlink route,
//! one permanent neighbour and one FDB entry, or with DirectRouting one route through the
//! underlay for peers on a directly connected network ([`Path`]). Kernel access goes
//! through [`VxlanKernel`], so the bookkeeping here is tested against a recording fake.
//!
//! With IPv6 enabled a second device, `flannel-v6.<VNI>`, does the same for the IPv6
//! halves of leases over the IPv6 underlay (its VtepMAC is published as
//! `BackendV6Data`). [`VxlanNetwork`] is generic over the family, so each device is one
//! instance of it; with IPv4 disabled there is no `flannel.<VNI>`.
//!
//! [`VxlanNetwork::reconcile`] brings back what the kernel lost: routes deleted when the
//! underlay went down (upstream #1070), the device itself when the underlay was deleted
//! and recreated (the kernel deletes a vxlan device with its lower device), entries
//! removed by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

pub mod kernel;
pub mod options;
pub mod plan;

use crate::ipnet::Ipv4Net;
use crate::lease::types::{Family, Lease, LeaseAttrs, LeaseEvent};
pub use kernel::{DeviceState, VxlanDevice, VxlanKernel};
use plan::{choose_path, plan};
pub use plan::{InstalledPeers, Path, Peer, RouteTo};

pub use crate::netlink::Mac;
pub use options::Options;

/// The kernel's default VXLAN port, which flanneld keeps.
pub const DEFAULT_PORT: u16 = 8472;
/// Every IPv4 vxlan device of flannel is named `flannel.<VNI>`.
pub const DEVICE_PREFIX: &str = "flannel.";
/// Every IPv6 vxlan device of flannel is named `flannel-v6.<VNI>`.
pub const DEVICE_PREFIX_V6: &str = "flannel-v6.";

/// flanneld's name for the device of `vni`.
pub fn device_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}{vni}")
}

/// flanneld's name for the IPv6 device of `vni`.
pub fn device_name_v6(vni: u32) -> String {
    format!("{DEVICE_PREFIX_V6}{vni}")
}

/// VXLAN over IPv4 adds 50 bytes: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
pub const OVERHEAD: u32 = 50;
/// VXLAN over IPv6 adds 70 bytes: the outer IPv6 header is 40 bytes, not 20.
pub const OVERHEAD_V6: u32 = 70;
/// IPv6 needs links of at least 1280 bytes (RFC 8200); the kernel turns IPv6 off below.
pub const MIN_MTU_V6: u32 = 1280;

/// The IPv6 device MTU: `configured` (the backend's `MTU` option, shared with the IPv4
/// device) when it fits in the underlay with the 70 bytes of VXLAN over IPv6 and is at
/// least IPv6's 1280; else the underlay's less those 70 bytes.
pub fn device_mtu_v6(underlay_mtu: u32, configured: Option<u32>) -> Result<u32, String> {
    let max = underlay_mtu.saturating_sub(OVERHEAD_V6);
    match configured {
        None if max < MIN_MTU_V6 => Err(format!(
            "underlay MTU {underlay_mtu} leaves {max} for IPv6 pods after the {OVERHEAD_V6} bytes of vxlan over IPv6, less than IPv6's {MIN_MTU_V6}"
        )),
        None => Ok(max),
        Some(m) if m < MIN_MTU_V6 => Err(format!("`Backend.MTU` {m} is below {MIN_MTU_V6}, the smallest IPv6 MTU (`EnableIPv6` is on)")),
        Some(m) if m > max => Err(format!(
            "`Backend.MTU` {m} is above the underlay MTU {underlay_mtu} less the vxlan-over-IPv6 overhead of {OVERHEAD_V6} (at most {max})"
        )),
        Some(m) => Ok(m),
    }
}

/// The MTU left for pods over an underlay of `underlay_mtu`; None when under IPv4's minimum.
pub fn overlay_mtu(underlay_mtu: u32) -> Option<u32> {
    underlay_mtu.checked_sub(OVERHEAD).filter(|m| *m >= crate::backend::peers::MIN_MTU)
}

/// The device MTU: `configured` (the backend's `MTU` option) when it fits in the underlay
/// with the vxlan overhead and is at least IPv4's 68; else the underlay's less the overhead.
pub fn device_mtu(underlay_mtu: u32, configured: Option<u32>) -> Result<u32, String> {
    let max = underlay_mtu.saturating_sub(OVERHEAD);
    match configured {
        None => overlay_mtu(underlay_mtu)
            .ok_or_else(|| format!("underlay MTU {underlay_mtu} leaves less than {} for pods", crate::backend::peers::MIN_MTU)),
        Some(m) if m < 68 => Err(format!("`Backend.MTU` {m} is below 68, the smallest IPv4 MTU")),
        Some(m) if m > max => {
            Err(format!("`Backend.MTU` {m} is above the underlay MTU {underlay_mtu} less the vxlan overhead of {OVERHEAD} (at most {max})"))
        }
        Some(m) => Ok(m),
    }
}

pub fn format_mac(m: &Mac) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The lease attributes an IPv4-only host publishes.
pub fn lease_attrs(public_ip: Ipv4Addr, vni: u32, mac: &Mac) -> LeaseAttrs {
    lease_attrs_for(public_ip, None, vni, Some(mac), None)
}

/// The lease attributes this host publishes: `BackendData` for `flannel.<VNI>`'s MAC,
/// `BackendV6Data` for `flannel-v6.<VNI>`'s, each present when that device is.
/// (An IPv6-only host has PublicIP 0.0.0.0.)
pub fn lease_attrs_for(public_ip: Ipv4Addr, public_ipv6: Option<Ipv6Addr>, vni: u32, mac: Option<&Mac>, mac6: Option<&Mac>) -> LeaseAttrs {
    let data = |m: &Mac| json!({"VNI": vni, "VtepMAC": format_mac(m)});
    LeaseAttrs { public_ip, public_ipv6, backend_type: Some("vxlan".into()), backend_data: mac.map(data), backend_v6_data: mac6.map(data) }
}

/// `VtepMAC` (any case) out of `BackendData`/`BackendV6Data`.
fn vtep_mac(data: Option<&Value>) -> Option<Mac> {
    data.and_then(|d| d.as_object())
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("VtepMAC")).map(|(_, v)| v))
        .and_then(|v| v.as_str())
        .and_then(parse_mac)
}

/// Reads a peer of family `N` out of a lease; an error with a reason when the lease has
/// nothing for this family's device.
fn peer_of<N: Family>(lease: &Lease) -> Result<Peer<N>, String> {
    let part = N::part(lease).ok_or_else(|| format!("no {} subnet", N::FAMILY))?;
    if part.backend_type != Some("vxlan") {
        return Err(format!("backend type {:?}, not vxlan", part.backend_type));
    }
    let data = if N::BITS == 32 { "BackendData" } else { "BackendV6Data" };
    let mac = vtep_mac(part.backend_data).ok_or_else(|| format!("no valid {data}.VtepMAC"))?;
    let public_ip = part.public_ip.ok_or_else(|| format!("no {} public address", N::FAMILY))?;
    Ok(Peer { subnet: part.subnet, public_ip, vtep_mac: mac })
}

/// The vxlan network of one host in one family: the device plus the peers programmed on it.
pub struct VxlanNetwork<K, N = Ipv4Net>
where
    K: VxlanKernel<N>,
    N: Family,
{
    kernel: K,
    dev: VxlanDevice,
    ifindex: u32,
    network: N,
    direct_routing: bool,
    own: Option<N>,
    peers: BTreeMap<N, (Peer<N>, Path)>,
    /// The device's neighbours are the ones the agent added: it created the device, or
    /// read them all since, and no notification said otherwise. Then a check skips reading
    /// them (a read walks the kernel's whole neighbour table, every namespace's).
    neighbours_trusted: bool,
}

impl<K: VxlanKernel<N>, N: Family> VxlanNetwork<K, N> {
    /// Creates or reuses the device. Returns the network and the device MAC to publish.
    pub async fn open(mut kernel: K, dev: &VxlanDevice, network: N, direct_routing: bool) -> Result<(Self, Mac), K::Error> {
        let state = kernel.ensure_device(dev).await?;
        if !state.created {
            tracing::info!(device = dev.name, "reusing existing vxlan device");
        }
        let dev = VxlanDevice { mac: Some(state.mac), ..dev.clone() };
        let neighbours_trusted = state.created;
        Ok((
            VxlanNetwork {
                kernel,
                dev,
                ifindex: state.ifindex,
                network,
                direct_routing,
                own: None,
                peers: BTreeMap::new(),
                neighbours_trusted,
            },
            state.mac,
        ))
    }

    /// Gives the device its address once the local subnet is known.
    pub async fn set_local_subnet(&mut self, subnet: N) -> Result<(), K::Error> {
        self.own = Some(subnet);
        self.peers.remove(&subnet);
        self.kernel.configure_device(self.ifindex, subnet.addr()).await
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer<N>> {
        self.peers.values().map(|(p, _)| p)
    }

    /// The PublicIPs of every current peer (for the source filter).
    pub fn peer_ips(&self) -> BTreeSet<N::Addr> {
        self.peers().map(|p| p.public_ip).collect()
    }

    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// The device's MAC, to publish as `VtepMAC`.
    pub fn mac(&self) -> Option<Mac> {
        self.dev.mac
    }

    /// The underlay was recreated under a new ifindex: the device must follow it.
    pub fn set_underlay(&mut self, index: u32) {
        self.dev.underlay_index = index;
    }

    /// Whether a kernel notification moved this device's state away from the peers' (see
    /// [`plan::diverges`]): then a reconcile is due, and it reads everything.
    pub fn diverges(&mut self, c: &crate::notify::Change) -> bool {
        let d = plan::diverges(&self.peers, self.ifindex, self.direct_scope(), c);
        self.neighbours_trusted &= !d;
        d
    }

    fn direct_scope(&self) -> Option<(u32, N)> {
        self.direct_routing.then_some((self.dev.underlay_index, self.network))
    }

    /// The path for `p` now; when the kernel has no route to it (the underlay is down),
    /// the path it already has, and false.
    async fn path_for(&mut self, p: &Peer<N>, current: Option<Path>) -> (Path, bool) {
        if !self.direct_routing {
            return (Path::Vxlan, true);
        }
        let route = match self.kernel.route_to(p.public_ip).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(peer = %p.public_ip, error = %e, "route lookup failed");
                None
            }
        };
        match choose_path(true, route, self.dev.underlay_index) {
            Some(path) => (path, true),
            None => (current.unwrap_or(Path::Vxlan), false),
        }
    }

    /// Brings the kernel in line with a complete list of leases: peers not in the list
    /// go, including entries a previous run left behind.
    pub async fn resync(&mut self, leases: &[Lease]) -> Result<(), K::Error> {
        let mut desired = BTreeMap::new();
        let own = self.own;
        for l in leases {
            let Some(subnet) = N::subnet_of(&l.subnets).filter(|s| Some(*s) != own) else { continue };
            match peer_of::<N>(l) {
                Ok(p) => {
                    let current = self.peers.get(&p.subnet).map(|(_, path)| *path);
                    let (path, _) = self.path_for(&p, current).await;
                    desired.insert(p.subnet, (p, path));
                }
                Err(why) => tracing::debug!(%subnet, why, "lease ignored"),
            }
        }
        self.peers = desired;
        self.converge(false, &BTreeSet::new()).await
    }

    /// Checks the device and every peer's entries and restores what is missing; logs each
    /// restoration. Returns the device's MAC when it had to change (to be republished).
    pub async fn reconcile(&mut self) -> Result<Option<Mac>, K::Error> {
        let before = self.dev.mac;
        let state = self.kernel.ensure_device(&self.dev).await?;
        if state.created || state.ifindex != self.ifindex {
            tracing::warn!(device = self.dev.name, ifindex = state.ifindex, mac = format_mac(&state.mac), "vxlan device re-created");
            self.ifindex = state.ifindex;
        }
        if let Some(own) = self.own {
            self.kernel.configure_device(self.ifindex, own.addr()).await?;
        }
        self.dev.mac = Some(state.mac);
        let peers: Vec<(Peer<N>, Path)> = self.peers.values().copied().collect();
        let mut unreachable = BTreeSet::new();
        for (p, path) in peers {
            let (now, reachable) = self.path_for(&p, Some(path)).await;
            if !reachable {
                unreachable.insert(p.subnet);
            }
            if now != path {
                tracing::info!(subnet = %p.subnet, from = path.name(), to = now.name(), "peer path changed");
                self.peers.insert(p.subnet, (p, now));
            }
        }
        self.converge(true, &unreachable).await?;
        Ok((before != Some(state.mac)).then_some(state.mac))
    }

    /// Removes stale entries and adds missing ones, except direct routes of peers in
    /// `unreachable` (the kernel has no route to them while the underlay is down). A failing
    /// entry is logged and left for the next reconcile.
    async fn converge(&mut self, report_missing: bool, unreachable: &BTreeSet<N>) -> Result<(), K::Error> {
        let mut installed = self.kernel.installed(self.ifindex, self.direct_scope(), !self.neighbours_trusted).await?;
        let wanted: Vec<(Peer<N>, Path)> = self.peers.values().copied().collect();
        if self.neighbours_trusted {
            installed.neighbours = wanted.iter().filter(|(_, path)| *path == Path::Vxlan).map(|(p, _)| (p.gateway(), p.vtep_mac)).collect();
        }
        self.neighbours_trusted = true;
        let p = plan(&wanted, &installed);
        let (ifindex, underlay) = (self.ifindex, self.dev.underlay_index);
        let k = &mut self.kernel;
        for (dst, gw) in &p.stale.routes {
            warn_on(k.del_route(ifindex, *dst, *gw).await, "delete stale route", dst);
        }
        for (ip, mac) in &p.stale.neighbours {
            self.neighbours_trusted &= warn_on(k.del_neighbour(ifindex, *ip, *mac).await, "delete stale neighbour", ip);
        }
        for (mac, dst) in &p.stale.fdb {
            warn_on(k.del_fdb(ifindex, *mac, *dst).await, "delete stale fdb entry", dst);
        }
        for (dst, via) in &p.stale.direct {
            warn_on(k.del_direct(underlay, *dst, *via).await, "delete stale direct route", dst);
        }
        for (peer, path) in p.missing {
            if path == Path::Direct && unreachable.contains(&peer.subnet) {
                continue;
            }
            let r = match path {
                Path::Vxlan => k.add_peer(ifindex, &peer).await,
                Path::Direct => k.add_direct(underlay, peer.subnet, peer.public_ip).await,
            };
            let ok = warn_on(r, "install peer entries", &peer.subnet);
            self.neighbours_trusted &= ok;
            if ok && report_missing {
                match path {
                    Path::Direct => tracing::info!(subnet = %peer.subnet, via = %peer.public_ip, "direct route to peer re-installed"),
                    Path::Vxlan => tracing::info!(subnet = %peer.subnet, public_ip = %peer.public_ip, "vxlan peer entries re-installed"),
                }
            }
        }
        Ok(())
    }

    /// Follows one lease change.
    pub async fn handle(&mut self, ev: &LeaseEvent) -> Result<(), K::Error> {
        // nothing of this family in the lease, or our own
        let Some(subnet) = crate::backend::peers::event_subnet::<N>(ev, self.own) else { return Ok(()) };
        match ev {
            LeaseEvent::Added(l) => match peer_of::<N>(l) {
                Err(why) => {
                    tracing::debug!(%subnet, why, "lease ignored");
                    // A lease that changed to something we cannot use no longer routes here.
                    self.remove(subnet).await
                }
                Ok(p) => {
                    let current = self.peers.get(&p.subnet).copied();
                    let (path, _) = self.path_for(&p, current.map(|(_, path)| path)).await;
                    match current {
                        Some(old) if old == (p, path) => return Ok(()),
                        // vxlan to vxlan: replaced in place below; only a changed MAC or
                        // address leaves an FDB entry behind
                        Some((old, Path::Vxlan)) if path == Path::Vxlan && (old.vtep_mac, old.public_ip) != (p.vtep_mac, p.public_ip) => {
                            self.kernel.del_fdb(self.ifindex, old.vtep_mac, old.public_ip).await?
                        }
                        Some((_, Path::Vxlan)) if path == Path::Vxlan => {}
                        Some((old, old_path)) => self.del_entries(&old, old_path).await?,
                        None => {}
                    }
                    crate::backend::peers::peer_log!(self.peers.len(), subnet = %p.subnet, public_ip = %p.public_ip, mac = format_mac(&p.vtep_mac), path = path.name(), "peer added");
                    let r = match path {
                        Path::Vxlan => self.kernel.add_peer(self.ifindex, &p).await,
                        Path::Direct => self.kernel.add_direct(self.dev.underlay_index, p.subnet, p.public_ip).await,
                    };
                    self.peers.insert(p.subnet, (p, path));
                    self.neighbours_trusted &= warn_on(r, "install peer entries", &p.subnet);
                    Ok(())
                }
            },
            LeaseEvent::Removed(_) => self.remove(subnet).await,
        }
    }

    async fn del_entries(&mut self, p: &Peer<N>, path: Path) -> Result<(), K::Error> {
        match path {
            Path::Vxlan => {
                self.kernel.del_route(self.ifindex, p.subnet, p.gateway()).await?;
                self.kernel.del_neighbour(self.ifindex, p.gateway(), p.vtep_mac).await?;
                self.kernel.del_fdb(self.ifindex, p.vtep_mac, p.public_ip).await
            }
            Path::Direct => self.kernel.del_direct(self.dev.underlay_index, p.subnet, p.public_ip).await,
        }
    }

    async fn remove(&mut self, subnet: N) -> Result<(), K::Error> {
        if let Some((p, path)) = self.peers.remove(&subnet) {
            crate::backend::peers::peer_log!(self.peers.len(), subnet = %p.subnet, public_ip = %p.public_ip, path = path.name(), "peer removed");
            self.del_entries(&p, path).await?;
        }
        Ok(())
    }
}

/// Logs a failed kernel change as a warning (the next reconcile retries); true on success.
fn warn_on<E: std::error::Error + 'static>(r: Result<(), E>, what: &str, object: &dyn std::fmt::Display) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = crate::error::chain(&e), "{what} for {object} failed; retrying at the next reconcile");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipnet::IpNet;
    use crate::ipnet::Ipv6Net;
    use crate::lease::types::Subnets;

    #[derive(Debug, Clone, PartialEq)]
    enum Op<N: IpNet = Ipv4Net> {
        Add(N, Mac),
        Direct(N, N::Addr),
        DelRoute(N),
        DelNeigh(N::Addr),
        DelFdb(Mac),
        DelDirect(N),
        Create(u32, Option<Mac>),
    }

    /// Records changes; keeps `installed` in step so reconcile sees its own work.
    struct Fake<N: IpNet = Ipv4Net> {
        ops: Vec<Op<N>>,
        installed: InstalledPeers<N>,
        /// PublicIPs reachable without a gateway through ifindex 2
        on_link: Vec<N::Addr>,
        link_down: bool,
        device_gone: bool,
        next_mac: Option<Mac>,
        /// The addresses given to the device.
        addresses: Vec<N::Addr>,
    }

    impl<N: IpNet> Default for Fake<N> {
        fn default() -> Self {
            Fake {
                ops: Vec::new(),
                installed: InstalledPeers::default(),
                on_link: Vec::new(),
                link_down: false,
                device_gone: false,
                next_mac: None,
                addresses: Vec::new(),
            }
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake: network is down")]
    struct FakeError;

    impl<N: IpNet> VxlanKernel<N> for &mut Fake<N> {
        type Error = FakeError;
        async fn ensure_device(&mut self, dev: &VxlanDevice) -> Result<DeviceState, FakeError> {
            if self.device_gone {
                self.device_gone = false;
                self.ops.push(Op::Create(dev.underlay_index, dev.mac));
                let mac = dev.mac.or(self.next_mac).unwrap_or([2, 0, 0, 0, 0, 1]);
                return Ok(DeviceState { ifindex: 8, mac, created: true });
            }
            Ok(DeviceState { ifindex: 7, mac: dev.mac.unwrap_or([2, 0, 0, 0, 0, 1]), created: false })
        }
        async fn configure_device(&mut self, _: u32, addr: N::Addr) -> Result<(), FakeError> {
            self.addresses.push(addr);
            Ok(())
        }
        async fn route_to(&mut self, ip: N::Addr) -> Result<Option<RouteTo<N::Addr>>, FakeError> {
            if self.link_down {
                return Ok(None);
            }
            // the underlay's router, 192.168.99.254 or fd00:1::fe
            let router = if N::BITS == 32 { 0xc0a8_63fe } else { 0xfd00_0001_0000_0000_0000_0000_0000_00fe };
            let gateway = (!self.on_link.contains(&ip)).then(|| N::from_bits(router));
            Ok(Some(RouteTo { gateway, oif: Some(2) }))
        }
        async fn add_peer(&mut self, _: u32, p: &Peer<N>) -> Result<(), FakeError> {
            self.ops.push(Op::Add(p.subnet, p.vtep_mac));
            self.installed.routes.push((p.subnet, p.gateway()));
            self.installed.neighbours.push((p.gateway(), p.vtep_mac));
            self.installed.fdb.push((p.vtep_mac, p.public_ip));
            Ok(())
        }
        async fn add_direct(&mut self, _: u32, subnet: N, via: N::Addr) -> Result<(), FakeError> {
            if self.link_down {
                return Err(FakeError);
            }
            self.ops.push(Op::Direct(subnet, via));
            self.installed.direct.push((subnet, via));
            Ok(())
        }
        async fn installed(&mut self, _: u32, _: Option<(u32, N)>, _: bool) -> Result<InstalledPeers<N>, FakeError> {
            Ok(self.installed.clone())
        }
        async fn del_route(&mut self, _: u32, d: N, _: N::Addr) -> Result<(), FakeError> {
            self.ops.push(Op::DelRoute(d));
            self.installed.routes.retain(|(r, _)| *r != d);
            Ok(())
        }
        async fn del_neighbour(&mut self, _: u32, ip: N::Addr, _: Mac) -> Result<(), FakeError> {
            self.ops.push(Op::DelNeigh(ip));
            self.installed.neighbours.retain(|(n, _)| *n != ip);
            Ok(())
        }
        async fn del_fdb(&mut self, _: u32, mac: Mac, _: N::Addr) -> Result<(), FakeError> {
            self.ops.push(Op::DelFdb(mac));
            self.installed.fdb.retain(|(m, _)| *m != mac);
            Ok(())
        }
        async fn del_direct(&mut self, _: u32, d: N, _: N::Addr) -> Result<(), FakeError> {
            self.ops.push(Op::DelDirect(d));
            self.installed.direct.retain(|(r, _)| *r != d);
            Ok(())
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn lease(subnet: &str, ip: &str, mac: Mac) -> Lease {
        Lease { subnets: Subnets::v4(net(subnet)), attrs: lease_attrs(ip.parse().unwrap(), 1, &mac) }
    }

    fn dev() -> VxlanDevice {
        VxlanDevice {
            name: "flannel.1".into(),
            vni: 1,
            port: 8472,
            local: "192.168.99.1".parse().unwrap(),
            underlay_index: 2,
            mtu: 1450,
            gbp: false,
            learning: false,
            mac: None,
        }
    }

    const NETWORK: &str = "10.244.0.0/16";

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    /// Collapses what a test did into the ops and drops the add/del bookkeeping.
    fn del_peer_ops<N: IpNet>(subnet: N, p: &Peer<N>) -> Vec<Op<N>> {
        vec![Op::DelRoute(subnet), Op::DelNeigh(p.gateway()), Op::DelFdb(p.vtep_mac)]
    }

    #[test]
    fn follows_add_change_and_remove() {
        let mut fake = Fake::default();
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev(), net(NETWORK), false).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.1.0/24", "192.168.99.1", [2, 0, 0, 0, 0, 1]))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2]))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2]))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 9]))).await.unwrap();
            n.handle(&LeaseEvent::Removed(Subnets::v4(net("10.244.2.0/24")))).await.unwrap();
            n.handle(&LeaseEvent::Removed(Subnets::v4(net("10.244.3.0/24")))).await.unwrap();
        });
        let p9 = Peer { subnet: net("10.244.2.0/24"), public_ip: "192.168.99.2".parse().unwrap(), vtep_mac: [2, 0, 0, 0, 0, 9] };
        let mut want = vec![
            Op::Add(net("10.244.2.0/24"), [2, 0, 0, 0, 0, 2]),
            Op::DelFdb([2, 0, 0, 0, 0, 2]),
            Op::Add(net("10.244.2.0/24"), [2, 0, 0, 0, 0, 9]),
        ];
        want.extend(del_peer_ops(net("10.244.2.0/24"), &p9));
        assert_eq!(fake.ops, want);
    }

    #[test]
    fn ignores_other_backends_and_malformed_data() {
        let mut fake = Fake::default();
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev(), net(NETWORK), false).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            let mut hostgw = lease("10.244.4.0/24", "192.168.99.4", [2, 0, 0, 0, 0, 4]);
            hostgw.attrs.backend_type = Some("host-gw".into());
            hostgw.attrs.backend_data = None;
            n.handle(&LeaseEvent::Added(hostgw)).await.unwrap();
            let mut bad = lease("10.244.5.0/24", "192.168.99.5", [0; 6]);
            bad.attrs.backend_data = Some(json!({"VtepMAC": "zz"}));
            n.handle(&LeaseEvent::Added(bad)).await.unwrap();
            assert_eq!(n.peers().count(), 0);
        });
        assert!(fake.ops.is_empty());
    }

    #[test]
    fn resync_removes_leftovers_and_installs_every_peer() {
        let mut fake = Fake {
            installed: InstalledPeers {
                routes: vec![(net("10.244.2.0/24"), "10.244.2.0".parse().unwrap()), (net("10.244.9.0/24"), "10.244.9.0".parse().unwrap())],
                neighbours: vec![("10.244.9.0".parse().unwrap(), [2, 0, 0, 0, 0, 9])],
                fdb: vec![([2, 0, 0, 0, 0, 9], "192.168.99.9".parse().unwrap())],
                direct: vec![],
            },
            ..Fake::default()
        };
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev(), net(NETWORK), false).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            let leases = [
                lease("10.244.1.0/24", "192.168.99.1", [2, 0, 0, 0, 0, 1]),
                lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2]),
                lease("10.244.3.0/24", "192.168.99.3", [2, 0, 0, 0, 0, 3]),
            ];
            n.resync(&leases).await.unwrap();
            assert_eq!(n.peers().count(), 2);
        });
        assert_eq!(
            fake.ops,
            vec![
                Op::DelRoute(net("10.244.9.0/24")),
                Op::DelNeigh("10.244.9.0".parse().unwrap()),
                Op::DelFdb([2, 0, 0, 0, 0, 9]),
                Op::Add(net("10.244.2.0/24"), [2, 0, 0, 0, 0, 2]),
                Op::Add(net("10.244.3.0/24"), [2, 0, 0, 0, 0, 3]),
            ]
        );
    }

    #[test]
    fn direct_routing_picks_a_path_per_peer_and_removes_the_right_kind() {
        let mut fake = Fake { on_link: vec!["192.168.99.2".parse().unwrap()], ..Fake::default() };
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev(), net(NETWORK), true).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            let leases =
                [lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2]), lease("10.244.3.0/24", "10.9.0.3", [2, 0, 0, 0, 0, 3])];
            n.resync(&leases).await.unwrap();
            n.handle(&LeaseEvent::Removed(Subnets::v4(net("10.244.2.0/24")))).await.unwrap();
            n.handle(&LeaseEvent::Removed(Subnets::v4(net("10.244.3.0/24")))).await.unwrap();
        });
        let p3 = Peer { subnet: net("10.244.3.0/24"), public_ip: "10.9.0.3".parse().unwrap(), vtep_mac: [2, 0, 0, 0, 0, 3] };
        let mut want = vec![
            Op::Direct(net("10.244.2.0/24"), "192.168.99.2".parse().unwrap()),
            Op::Add(net("10.244.3.0/24"), [2, 0, 0, 0, 0, 3]),
            Op::DelDirect(net("10.244.2.0/24")),
        ];
        want.extend(del_peer_ops(net("10.244.3.0/24"), &p3));
        assert_eq!(fake.ops, want);
        assert_eq!(fake.installed, InstalledPeers::default());
    }

    #[test]
    fn routes_lost_in_a_link_flap_come_back() {
        let mut fake = Fake { on_link: vec!["192.168.99.2".parse().unwrap()], ..Fake::default() };
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev(), net(NETWORK), true).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            n.resync(&[lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2])]).await.unwrap();
            // link goes down: the kernel drops the route, and there is no route to the peer
            n.kernel.installed.direct.clear();
            n.kernel.link_down = true;
            assert_eq!(n.reconcile().await.unwrap(), None);
            assert!(n.kernel.installed.direct.is_empty(), "cannot add while down, and stays direct");
            n.kernel.link_down = false;
            n.reconcile().await.unwrap();
            assert_eq!(n.kernel.installed.direct, vec![(net("10.244.2.0/24"), "192.168.99.2".parse().unwrap())]);
            let before = n.kernel.ops.len();
            n.reconcile().await.unwrap();
            assert_eq!(n.kernel.ops.len(), before, "nothing to do when complete");
        });
    }

    #[test]
    fn recreated_device_keeps_its_mac_and_gets_every_peer_back() {
        let mut fake = Fake::default();
        block_on(async {
            let (mut n, mac) = VxlanNetwork::open(&mut fake, &dev(), net(NETWORK), false).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            n.resync(&[lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2])]).await.unwrap();
            // underlay deleted and recreated as ifindex 12: the kernel took flannel.1 with it
            n.kernel.installed = InstalledPeers::default();
            n.kernel.device_gone = true;
            n.set_underlay(12);
            assert_eq!(n.reconcile().await.unwrap(), None, "same MAC: nothing to republish");
            assert_eq!(n.kernel.ops[n.kernel.ops.len() - 2], Op::Create(12, Some(mac)));
            assert_eq!(n.kernel.installed.fdb, vec![([2, 0, 0, 0, 0, 2], "192.168.99.2".parse().unwrap())]);
        });
    }

    #[test]
    fn configured_mtu_must_fit_the_underlay() {
        assert_eq!(device_mtu(1500, None), Ok(1450));
        assert_eq!(device_mtu(1500, Some(1400)), Ok(1400));
        assert_eq!(device_mtu(1500, Some(1450)), Ok(1450));
        assert!(device_mtu(1500, Some(1451)).unwrap_err().contains("at most 1450"));
        assert!(device_mtu(1500, Some(67)).unwrap_err().contains("below 68"));
        assert!(device_mtu(600, None).is_err());
    }

    #[test]
    fn macs_round_trip() {
        assert_eq!(parse_mac("2e:74:64:fe:4b:db"), Some([0x2e, 0x74, 0x64, 0xfe, 0x4b, 0xdb]));
        assert_eq!(format_mac(&[0x2e, 0x74, 0x64, 0xfe, 0x4b, 0xdb]), "2e:74:64:fe:4b:db");
        assert_eq!(parse_mac("2e:74:64:fe:4b"), None);
        assert_eq!(parse_mac("2e:74:64:fe:4b:db:00"), None);
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn dev6() -> VxlanDevice {
        VxlanDevice { name: "flannel-v6.1".into(), local: "fd00:1::1".parse().unwrap(), mtu: 1430, ..dev() }
    }

    /// A dual-stack vxlan lease: IPv4 MAC `[2,0,0,0,4,n]`, IPv6 MAC `[2,0,0,0,6,n]`.
    fn dual(n: u8) -> Lease {
        Lease {
            subnets: Subnets { v4: Some(net(&format!("10.244.{n}.0/24"))), v6: Some(net6(&format!("fd00:10:244:{n:x}::/64"))) },
            attrs: lease_attrs_for(
                format!("192.168.99.{n}").parse().unwrap(),
                Some(format!("fd00:1::{n:x}").parse().unwrap()),
                1,
                Some(&[2, 0, 0, 0, 4, n]),
                Some(&[2, 0, 0, 0, 6, n]),
            ),
        }
    }

    /// An IPv6-only vxlan lease (PublicIP 0.0.0.0, no BackendData).
    fn only6(n: u8) -> Lease {
        Lease {
            subnets: Subnets { v4: None, v6: Some(net6(&format!("fd00:10:244:{n:x}::/64"))) },
            attrs: lease_attrs_for(
                Ipv4Addr::UNSPECIFIED,
                Some(format!("fd00:1::{n:x}").parse().unwrap()),
                1,
                None,
                Some(&[2, 0, 0, 0, 6, n]),
            ),
        }
    }

    const NETWORK6: &str = "fd00:10:244::/56";

    #[test]
    fn ipv6_device_programs_the_ipv6_halves_of_leases() {
        let mut fake = Fake::<Ipv6Net>::default();
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev6(), net6(NETWORK6), false).await.unwrap();
            n.set_local_subnet(net6("fd00:10:244:1::/64")).await.unwrap();
            let mut no_v6_data = dual(4);
            no_v6_data.attrs.backend_v6_data = None;
            n.resync(&[dual(1), dual(2), only6(3), no_v6_data, lease("10.244.5.0/24", "192.168.99.5", [2, 0, 0, 0, 0, 5])]).await.unwrap();
            assert_eq!(n.peers().count(), 2, "own lease, one without BackendV6Data and an IPv4-only one are not peers");
            assert_eq!(n.peer_ips(), ["fd00:1::2".parse().unwrap(), "fd00:1::3".parse().unwrap()].into());
            // an IPv4-only event leaves the IPv6 peers alone
            n.handle(&LeaseEvent::Removed(Subnets::v4(net("10.244.2.0/24")))).await.unwrap();
            n.handle(&LeaseEvent::Removed(dual(2).subnets)).await.unwrap();
        });
        assert_eq!(fake.addresses, vec!["fd00:10:244:1::".parse::<Ipv6Addr>().unwrap()], "the subnet's network address, /128");
        let p2 = Peer { subnet: net6("fd00:10:244:2::/64"), public_ip: "fd00:1::2".parse().unwrap(), vtep_mac: [2, 0, 0, 0, 6, 2] };
        let mut want =
            vec![Op::Add(net6("fd00:10:244:2::/64"), [2, 0, 0, 0, 6, 2]), Op::Add(net6("fd00:10:244:3::/64"), [2, 0, 0, 0, 6, 3])];
        want.extend(del_peer_ops(p2.subnet, &p2));
        assert_eq!(fake.ops, want);
        assert_eq!(fake.installed.routes, vec![(net6("fd00:10:244:3::/64"), "fd00:10:244:3::".parse().unwrap())]);
        assert_eq!(fake.installed.neighbours, vec![("fd00:10:244:3::".parse().unwrap(), [2, 0, 0, 0, 6, 3])]);
        assert_eq!(fake.installed.fdb, vec![([2, 0, 0, 0, 6, 3], "fd00:1::3".parse().unwrap())]);
    }

    #[test]
    fn ipv4_device_ignores_ipv6_only_leases_and_uses_backend_data() {
        let mut fake = Fake::default();
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev(), net(NETWORK), false).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            n.handle(&LeaseEvent::Added(only6(3))).await.unwrap();
            n.handle(&LeaseEvent::Added(dual(2))).await.unwrap();
            n.handle(&LeaseEvent::Removed(only6(3).subnets)).await.unwrap();
        });
        assert_eq!(fake.ops, vec![Op::Add(net("10.244.2.0/24"), [2, 0, 0, 0, 4, 2])]);
    }

    #[test]
    fn ipv6_direct_routing_goes_via_the_public_ipv6() {
        let mut fake = Fake::<Ipv6Net> { on_link: vec!["fd00:1::2".parse().unwrap()], ..Fake::default() };
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev6(), net6(NETWORK6), true).await.unwrap();
            n.set_local_subnet(net6("fd00:10:244:1::/64")).await.unwrap();
            n.resync(&[dual(2), only6(3)]).await.unwrap();
            // the link flaps: routes come back at the next reconcile
            n.kernel.installed.direct.clear();
            n.reconcile().await.unwrap();
        });
        assert_eq!(
            fake.ops,
            vec![
                Op::Direct(net6("fd00:10:244:2::/64"), "fd00:1::2".parse().unwrap()),
                Op::Add(net6("fd00:10:244:3::/64"), [2, 0, 0, 0, 6, 3]),
                Op::Direct(net6("fd00:10:244:2::/64"), "fd00:1::2".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn lease_values_per_family() {
        let v = serde_json::to_string(&dual(2).attrs).unwrap();
        assert_eq!(
            v,
            r#"{"PublicIP":"192.168.99.2","PublicIPv6":"fd00:1::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:04:02"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:06:02"}}"#
        );
        let v = serde_json::to_string(&only6(3).attrs).unwrap();
        assert_eq!(
            v,
            r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:1::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:06:03"}}"#
        );
        let v = serde_json::to_string(&lease_attrs("192.168.99.1".parse().unwrap(), 1, &[2, 0, 0, 0, 0, 1])).unwrap();
        assert_eq!(
            v,
            r#"{"PublicIP":"192.168.99.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#
        );
    }

    #[test]
    fn ipv6_device_mtu_leaves_room_for_the_ipv6_header() {
        assert_eq!(device_mtu_v6(1500, None), Ok(1430));
        assert_eq!(device_mtu_v6(9000, None), Ok(8930));
        assert_eq!(device_mtu_v6(1500, Some(1400)), Ok(1400));
        assert!(device_mtu_v6(1500, Some(1431)).unwrap_err().contains("at most 1430"));
        assert!(device_mtu_v6(1500, Some(1279)).unwrap_err().contains("below 1280"));
        assert!(device_mtu_v6(1340, None).unwrap_err().contains("less than IPv6's 1280"));
        assert_eq!(device_name_v6(1), "flannel-v6.1");
    }
}
