//! Pods, as flannel's CNI plugin with the bridge plugin would make them: per host a `cni0`
//! bridge holding the subnet's first address at the subnet file's MTU; each pod a
//! namespace with `eth0` on cni0, the next free address and a default route via cni0.
//! The same `cni0` gives every host an address in its own subnet, which the data-plane
//! convergence check probes from and to.

use std::net::Ipv4Addr;

use crate::error::Error;
use crate::input::names::Ipv4Net;
use crate::lab::netns::Netns;
use crate::lab::nl::Nl;
use crate::lab::{Lab, Node};

pub const BRIDGE: &str = "cni0";

pub struct Pod {
    pub name: String,
    pub host: String,
    pub ns: Netns,
    pub nl: Nl,
    pub addr: Ipv4Addr,
}

/// A host's `cni0` as it was set up: the gateway address and its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub addr: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub mtu: u32,
}

/// Makes sure `cni0` exists with `gw`:
/// `ip link add cni0 mtu MTU type bridge; ip addr add GW/LEN dev cni0; ip link set cni0 up`.
/// A new MTU alone (a backend switch) is set on the bridge and leaves its pods attached; a
/// bridge set up for another subnet is replaced.
pub async fn ensure_bridge(host: &Node, gw: Gateway, previous: Option<Gateway>) -> Result<(), Error> {
    if previous == Some(gw) {
        return Ok(());
    }
    if previous.is_some_and(|p| p.addr == gw.addr && p.subnet == gw.subnet) {
        host.nl.set_mtu(BRIDGE, gw.mtu).await?;
        return Ok(());
    }
    if host.nl.index_of(BRIDGE).await.is_ok() {
        host.nl.del_link(BRIDGE).await?;
    }
    host.nl.add_bridge(BRIDGE, gw.mtu).await?;
    host.nl.add_address(BRIDGE, gw.addr, gw.subnet.prefix()).await?;
    host.nl.set_up(BRIDGE).await?;
    Ok(())
}

/// Creates `count` pods on `host` behind its `cni0` (see [`ensure_bridge`]).
pub async fn create(lab: &Lab, host: &Node, gw: Gateway, count: u32) -> Result<Vec<Pod>, Error> {
    let mut pods = Vec::new();
    for k in 1..=count {
        let name = format!("{}-p{k}", host.name);
        let pod = attach(lab, host, gw, &name, &format!("vp{k}"), gw.subnet.nth(1 + k), gw.mtu).await?;
        pods.push(pod);
    }
    Ok(pods)
}

/// A probe endpoint on `host`'s `cni0` whose interface MTU (`mtu`) is larger than the
/// overlay's, so that DF probes one byte over the overlay MTU leave it and meet the path
/// the overlay really offers. It takes the subnet's last address.
pub async fn create_probe(lab: &Lab, host: &Node, gw: Gateway, mtu: u32) -> Result<Pod, Error> {
    let addr = gw.subnet.nth((gw.subnet.size() - 2) as u32);
    attach(lab, host, gw, &format!("{}-mtu", host.name), "vpmtu", addr, mtu).await
}

async fn attach(lab: &Lab, host: &Node, gw: Gateway, name: &str, veth: &str, addr: Ipv4Addr, mtu: u32) -> Result<Pod, Error> {
    let ns = Netns::create(&lab.run.netns(name))?;
    let nl = Nl::open(&ns)?;
    host.nl.add_veth(veth, "eth0", &ns, mtu).await?;
    host.nl.enslave(veth, BRIDGE).await?;
    nl.set_up("lo").await?;
    nl.add_address("eth0", addr, gw.subnet.prefix()).await?;
    nl.set_up("eth0").await?;
    nl.add_route(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"), gw.addr).await?;
    Ok(Pod { name: name.to_string(), host: host.name.clone(), ns, nl, addr })
}
