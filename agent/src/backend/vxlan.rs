//! The vxlan backend: device `flannel.<VNI>`, and for every peer lease one onlink route,
//! one permanent neighbour and one FDB entry. Kernel access goes through [`VxlanKernel`],
//! so the bookkeeping here is tested against a recording fake.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::json;

use crate::ipnet::Ipv4Net;
use crate::lease::{Lease, LeaseAttrs, LeaseEvent};

pub type Mac = [u8; 6];

/// The kernel's default VXLAN port, which flanneld keeps.
pub const DEFAULT_PORT: u16 = 8472;
/// VXLAN over IPv4 adds 50 bytes: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
pub const OVERHEAD: u32 = 50;
/// Every vxlan device of flannel is named `flannel.<VNI>`.
pub const DEVICE_PREFIX: &str = "flannel.";

/// flanneld's name for the device of `vni`.
pub fn device_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}{vni}")
}

/// The MTU left for pods over an underlay of `underlay_mtu`; None when under IPv4's minimum.
pub fn overlay_mtu(underlay_mtu: u32) -> Option<u32> {
    underlay_mtu.checked_sub(OVERHEAD).filter(|m| *m >= super::MIN_MTU)
}

/// What one peer lease asks of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub vtep_mac: Mac,
}

impl Peer {
    /// The peer's VTEP address: the subnet's network address, as flanneld uses it.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.addr()
    }
}

/// The vxlan device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay_index: u32,
    pub mtu: u32,
}

/// Peer state found on the device (for reconciling after a restart).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstalledPeers {
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub neighbours: Vec<(Ipv4Addr, Mac)>,
    pub fdb: Vec<(Mac, Ipv4Addr)>,
}

#[allow(async_fn_in_trait)]
pub trait VxlanKernel {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Creates the device, or reuses an existing one with the same settings (keeping its
    /// MAC). Returns its ifindex and MAC.
    async fn ensure_device(&mut self, dev: &VxlanDevice) -> Result<(u32, Mac), Self::Error>;
    /// Puts `addr/32` on the device (removing other IPv4 addresses) and sets it up.
    async fn configure_device(&mut self, ifindex: u32, addr: Ipv4Addr) -> Result<(), Self::Error>;
    async fn add_peer(&mut self, ifindex: u32, peer: &Peer) -> Result<(), Self::Error>;
    async fn del_peer(&mut self, ifindex: u32, peer: &Peer) -> Result<(), Self::Error>;
    async fn installed(&mut self, ifindex: u32) -> Result<InstalledPeers, Self::Error>;
    async fn del_route(&mut self, ifindex: u32, dst: Ipv4Net, gw: Ipv4Addr) -> Result<(), Self::Error>;
    async fn del_neighbour(&mut self, ifindex: u32, ip: Ipv4Addr, mac: Mac) -> Result<(), Self::Error>;
    async fn del_fdb(&mut self, ifindex: u32, mac: Mac, dst: Ipv4Addr) -> Result<(), Self::Error>;
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

/// The lease attributes this host publishes.
pub fn lease_attrs(public_ip: Ipv4Addr, vni: u32, mac: &Mac) -> LeaseAttrs {
    LeaseAttrs {
        public_ip,
        public_ipv6: None,
        backend_type: Some("vxlan".into()),
        backend_data: Some(json!({"VNI": vni, "VtepMAC": format_mac(mac)})),
    }
}

/// Reads a peer out of a lease; None with a reason when the lease is not for us.
fn peer_of(lease: &Lease) -> Result<Peer, String> {
    if lease.attrs.backend_type.as_deref() != Some("vxlan") {
        return Err(format!("backend type {:?}, not vxlan", lease.attrs.backend_type));
    }
    let mac = lease
        .attrs
        .backend_data
        .as_ref()
        .and_then(|d| d.as_object())
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("VtepMAC")).map(|(_, v)| v))
        .and_then(|v| v.as_str())
        .and_then(parse_mac)
        .ok_or("no valid BackendData.VtepMAC")?;
    Ok(Peer { subnet: lease.subnet, public_ip: lease.attrs.public_ip, vtep_mac: mac })
}

/// The vxlan network of one host: the device plus the peers programmed on it.
pub struct VxlanNetwork<K: VxlanKernel> {
    kernel: K,
    ifindex: u32,
    own: Ipv4Net,
    peers: BTreeMap<Ipv4Net, Peer>,
}

impl<K: VxlanKernel> VxlanNetwork<K> {
    /// Creates or reuses the device. Returns the network and the device MAC to publish.
    pub async fn open(mut kernel: K, dev: &VxlanDevice) -> Result<(Self, Mac), K::Error> {
        let (ifindex, mac) = kernel.ensure_device(dev).await?;
        let own = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32).expect("valid");
        Ok((VxlanNetwork { kernel, ifindex, own, peers: BTreeMap::new() }, mac))
    }

    /// Gives the device its address once the local subnet is known.
    pub async fn set_local_subnet(&mut self, subnet: Ipv4Net) -> Result<(), K::Error> {
        self.own = subnet;
        self.peers.remove(&subnet);
        self.kernel.configure_device(self.ifindex, subnet.addr()).await
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Brings the kernel in line with a complete list of leases: peers not in the list
    /// go, including entries a previous run left on the device.
    pub async fn resync(&mut self, leases: &[Lease]) -> Result<(), K::Error> {
        let mut desired = BTreeMap::new();
        for l in leases.iter().filter(|l| l.subnet != self.own) {
            match peer_of(l) {
                Ok(p) => {
                    desired.insert(p.subnet, p);
                }
                Err(why) => tracing::debug!(subnet = %l.subnet, why, "lease ignored"),
            }
        }
        let installed = self.kernel.installed(self.ifindex).await?;
        let wanted_route = |d: &Ipv4Net, gw: &Ipv4Addr| desired.get(d).is_some_and(|p| p.gateway() == *gw);
        for (dst, gw) in installed.routes.iter().filter(|(d, g)| !wanted_route(d, g)) {
            self.kernel.del_route(self.ifindex, *dst, *gw).await?;
        }
        for (ip, mac) in &installed.neighbours {
            if !desired.values().any(|p| p.gateway() == *ip && p.vtep_mac == *mac) {
                self.kernel.del_neighbour(self.ifindex, *ip, *mac).await?;
            }
        }
        for (mac, dst) in &installed.fdb {
            if !desired.values().any(|p| p.vtep_mac == *mac && p.public_ip == *dst) {
                self.kernel.del_fdb(self.ifindex, *mac, *dst).await?;
            }
        }
        self.peers.clear();
        for p in desired.into_values() {
            self.kernel.add_peer(self.ifindex, &p).await?;
            self.peers.insert(p.subnet, p);
        }
        Ok(())
    }

    /// Follows one lease change.
    pub async fn handle(&mut self, ev: &LeaseEvent) -> Result<(), K::Error> {
        match ev {
            LeaseEvent::Added(l) if l.subnet == self.own => Ok(()),
            LeaseEvent::Added(l) => match peer_of(l) {
                Err(why) => {
                    tracing::debug!(subnet = %l.subnet, why, "lease ignored");
                    // A lease that changed to something we cannot use no longer routes here.
                    self.remove(l.subnet).await
                }
                Ok(p) => {
                    match self.peers.get(&p.subnet) {
                        Some(old) if *old == p => return Ok(()),
                        Some(old) => {
                            let old = *old;
                            if old.vtep_mac != p.vtep_mac {
                                self.kernel.del_fdb(self.ifindex, old.vtep_mac, old.public_ip).await?;
                            }
                        }
                        None => {}
                    }
                    tracing::info!(subnet = %p.subnet, public_ip = %p.public_ip, mac = format_mac(&p.vtep_mac), "peer added");
                    self.kernel.add_peer(self.ifindex, &p).await?;
                    self.peers.insert(p.subnet, p);
                    Ok(())
                }
            },
            LeaseEvent::Removed(subnet) => self.remove(*subnet).await,
        }
    }

    async fn remove(&mut self, subnet: Ipv4Net) -> Result<(), K::Error> {
        if let Some(p) = self.peers.remove(&subnet) {
            tracing::info!(subnet = %p.subnet, public_ip = %p.public_ip, "peer removed");
            self.kernel.del_peer(self.ifindex, &p).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum Op {
        Add(Ipv4Net, Mac),
        Del(Ipv4Net),
        DelRoute(Ipv4Net),
        DelNeigh(Ipv4Addr),
        DelFdb(Mac),
    }

    #[derive(Default)]
    struct Fake {
        ops: Vec<Op>,
        installed: InstalledPeers,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake")]
    struct FakeError;

    impl VxlanKernel for &mut Fake {
        type Error = FakeError;
        async fn ensure_device(&mut self, _: &VxlanDevice) -> Result<(u32, Mac), FakeError> {
            Ok((7, [2, 0, 0, 0, 0, 1]))
        }
        async fn configure_device(&mut self, _: u32, _: Ipv4Addr) -> Result<(), FakeError> {
            Ok(())
        }
        async fn add_peer(&mut self, _: u32, p: &Peer) -> Result<(), FakeError> {
            self.ops.push(Op::Add(p.subnet, p.vtep_mac));
            Ok(())
        }
        async fn del_peer(&mut self, _: u32, p: &Peer) -> Result<(), FakeError> {
            self.ops.push(Op::Del(p.subnet));
            Ok(())
        }
        async fn installed(&mut self, _: u32) -> Result<InstalledPeers, FakeError> {
            Ok(self.installed.clone())
        }
        async fn del_route(&mut self, _: u32, d: Ipv4Net, _: Ipv4Addr) -> Result<(), FakeError> {
            self.ops.push(Op::DelRoute(d));
            Ok(())
        }
        async fn del_neighbour(&mut self, _: u32, ip: Ipv4Addr, _: Mac) -> Result<(), FakeError> {
            self.ops.push(Op::DelNeigh(ip));
            Ok(())
        }
        async fn del_fdb(&mut self, _: u32, mac: Mac, _: Ipv4Addr) -> Result<(), FakeError> {
            self.ops.push(Op::DelFdb(mac));
            Ok(())
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn lease(subnet: &str, ip: &str, mac: Mac) -> Lease {
        Lease { subnet: net(subnet), attrs: lease_attrs(ip.parse().unwrap(), 1, &mac) }
    }

    fn dev() -> VxlanDevice {
        VxlanDevice { name: "flannel.1".into(), vni: 1, port: 8472, local: "192.168.99.1".parse().unwrap(), underlay_index: 2, mtu: 1450 }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn follows_add_change_and_remove() {
        let mut fake = Fake::default();
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev()).await.unwrap();
            n.set_local_subnet(net("10.244.1.0/24")).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.1.0/24", "192.168.99.1", [2, 0, 0, 0, 0, 1]))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2]))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 2]))).await.unwrap();
            n.handle(&LeaseEvent::Added(lease("10.244.2.0/24", "192.168.99.2", [2, 0, 0, 0, 0, 9]))).await.unwrap();
            n.handle(&LeaseEvent::Removed(net("10.244.2.0/24"))).await.unwrap();
            n.handle(&LeaseEvent::Removed(net("10.244.3.0/24"))).await.unwrap();
        });
        assert_eq!(
            fake.ops,
            vec![
                Op::Add(net("10.244.2.0/24"), [2, 0, 0, 0, 0, 2]),
                Op::DelFdb([2, 0, 0, 0, 0, 2]),
                Op::Add(net("10.244.2.0/24"), [2, 0, 0, 0, 0, 9]),
                Op::Del(net("10.244.2.0/24")),
            ]
        );
    }

    #[test]
    fn ignores_other_backends_and_malformed_data() {
        let mut fake = Fake::default();
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev()).await.unwrap();
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
            ops: Vec::new(),
            installed: InstalledPeers {
                routes: vec![(net("10.244.2.0/24"), "10.244.2.0".parse().unwrap()), (net("10.244.9.0/24"), "10.244.9.0".parse().unwrap())],
                neighbours: vec![("10.244.9.0".parse().unwrap(), [2, 0, 0, 0, 0, 9])],
                fdb: vec![([2, 0, 0, 0, 0, 9], "192.168.99.9".parse().unwrap())],
            },
        };
        block_on(async {
            let (mut n, _) = VxlanNetwork::open(&mut fake, &dev()).await.unwrap();
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
    fn macs_round_trip() {
        assert_eq!(parse_mac("2e:74:64:fe:4b:db"), Some([0x2e, 0x74, 0x64, 0xfe, 0x4b, 0xdb]));
        assert_eq!(format_mac(&[0x2e, 0x74, 0x64, 0xfe, 0x4b, 0xdb]), "2e:74:64:fe:4b:db");
        assert_eq!(parse_mac("2e:74:64:fe:4b"), None);
        assert_eq!(parse_mac("2e:74:64:fe:4b:db:00"), None);
    }
}
