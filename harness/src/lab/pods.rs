//! Pods, as flannel's CNI plugin with the bridge plugin would make them: per host a `cni0`
//! bridge holding the subnet's first address at the subnet file's MTU; each pod a
//! namespace with `eth0` on cni0, the next free address and a default route via cni0.
//! The same `cni0` gives every host an address in its own subnet, which the data-plane
//! convergence check probes from and to.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::Error;
use crate::input::names::{Ipv4Net, Ipv6Net};
use crate::lab::netns::Netns;
use crate::lab::nl::Nl;
use crate::lab::{Lab, Node};

pub use crate::lab::cni::BRIDGE;

pub struct Pod {
    pub name: String,
    pub host: String,
    pub ns: Netns,
    pub nl: Nl,
    /// The pod's IPv4 address (none in an IPv6-only cluster).
    pub addr: Option<Ipv4Addr>,
    /// The pod's IPv6 address when the subnet file names an IPv6 subnet.
    pub addr6: Option<Ipv6Addr>,
}

impl Pod {
    /// The pod's IPv4 address, for steps that speak IPv4 only.
    pub fn v4(&self) -> Result<Ipv4Addr, String> {
        self.addr.ok_or_else(|| format!("pod {} has no IPv4 address (an IPv6-only cluster): this step speaks IPv4 only", self.name))
    }
}

/// A host's `cni0` as it was set up: the gateway address and its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    /// `FLANNEL_SUBNET`: cni0's IPv4 address and the subnet (none when IPv6-only).
    pub v4: Option<(Ipv4Addr, Ipv4Net)>,
    /// `FLANNEL_IPV6_SUBNET`: cni0's IPv6 address and the subnet (dual-stack, IPv6-only).
    pub v6: Option<(Ipv6Addr, Ipv6Net)>,
    pub mtu: u32,
}

/// Makes sure `cni0` exists with `gw`:
/// `ip link add cni0 mtu MTU address MAC type bridge; ip addr add GW/LEN dev cni0; ip link set cni0 up`.
/// A new MTU alone (a backend switch) is set on the bridge and leaves its pods attached; a
/// bridge set up for another subnet is replaced.
pub async fn ensure_bridge(host: &Node, gw: Gateway, previous: Option<Gateway>) -> Result<(), Error> {
    if previous == Some(gw) {
        return Ok(());
    }
    if previous.is_some_and(|p| p.v4 == gw.v4 && p.v6 == gw.v6) {
        host.nl.set_mtu(BRIDGE, gw.mtu).await?;
        return Ok(());
    }
    if host.nl.index_of(BRIDGE).await.is_ok() {
        host.nl.del_link(BRIDGE).await?;
    }
    // a set MAC: pods added later (the DF probe endpoint, a CNI pod) must not change the
    // gateway's MAC under the pods that cached it
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfc) | 0x02;
    host.nl.add_bridge_with_mac(BRIDGE, gw.mtu, mac).await?;
    if let Some((a, s)) = gw.v4 {
        host.nl.add_address(BRIDGE, a, s.prefix()).await?;
    }
    if let Some((a6, s6)) = gw.v6 {
        host.nl.add_address(BRIDGE, a6, s6.prefix()).await?;
    }
    host.nl.set_up(BRIDGE).await?;
    Ok(())
}

/// Who wires a host's pods.
#[derive(Debug, Clone)]
pub enum Wiring {
    /// The lab: a veth on `cni0`, the next addresses, default routes via the gateway.
    Lab,
    /// The CNI `bridge` plugin from `plugins` with this network configuration.
    Cni { plugins: std::path::PathBuf, conf: serde_json::Value },
}

/// Creates `count` pods on `host` behind its `cni0` (see [`ensure_bridge`]), numbered after
/// the `first` − 1 it has.
pub async fn create(lab: &Lab, host: &Node, gw: Gateway, count: u32, wiring: &Wiring) -> Result<Vec<Pod>, Error> {
    let mut pods = Vec::new();
    for k in 1..=count {
        let name = format!("{}-p{k}", host.name);
        let pod = match wiring {
            Wiring::Lab => {
                let addr6 = gw.v6.map(|(_, s6)| s6.nth(1 + u128::from(k)));
                let addr = gw.v4.map(|(_, s)| s.nth(1 + k));
                attach(lab, host, gw, &name, &format!("vp{k}"), (addr, addr6), gw.mtu).await?
            }
            Wiring::Cni { plugins, conf } => {
                let ns = Netns::create(&lab.run.netns(&name))?;
                // the lab assigns no address twice: duplicate address detection only costs time
                ns.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
                let (addr, addr6) = crate::lab::cni::add(plugins, &host.ns, &ns, conf).map_err(|e| Error::Lab(format!("{name}: {e}")))?;
                let nl = Nl::open(&ns)?;
                Pod { name, host: host.name.clone(), ns, nl, addr, addr6 }
            }
        };
        pods.push(pod);
    }
    Ok(pods)
}

/// A probe endpoint on `host`'s `cni0` whose interface MTU (`mtu`) is larger than the
/// overlay's, so that DF probes one byte over the overlay MTU leave it and meet the path
/// the overlay really offers. It takes the subnet's last address.
pub async fn create_probe(lab: &Lab, host: &Node, gw: Gateway, mtu: u32) -> Result<Pod, Error> {
    let addr = gw.v4.map(|(_, s)| s.nth((s.size() - 2) as u32));
    let addr6 = gw.v6.map(|(_, s6)| s6.nth(0xfffe));
    attach(lab, host, gw, &format!("{}-mtu", host.name), "vpmtu", (addr, addr6), mtu).await
}

async fn attach(
    lab: &Lab,
    host: &Node,
    gw: Gateway,
    name: &str,
    veth: &str,
    (addr, addr6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
    mtu: u32,
) -> Result<Pod, Error> {
    let ns = Netns::create(&lab.run.netns(name))?;
    let nl = Nl::open(&ns)?;
    host.nl.add_veth(veth, "eth0", &ns, mtu).await?;
    host.nl.enslave(veth, BRIDGE).await?;
    nl.set_up("lo").await?;
    nl.set_up("eth0").await?;
    if let (Some(a), Some((gw4, s))) = (addr, gw.v4) {
        nl.add_address("eth0", a, s.prefix()).await?;
        nl.add_route(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"), gw4).await?;
    }
    if let (Some(a6), Some((gw6, s6))) = (addr6, gw.v6) {
        nl.add_address("eth0", a6, s6.prefix()).await?;
        nl.add_route(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0).expect("valid"), gw6).await?;
    }
    Ok(Pod { name: name.to_string(), host: host.name.clone(), ns, nl, addr, addr6 })
}
