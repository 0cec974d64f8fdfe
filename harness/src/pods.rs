//! Pods, as flannel's CNI plugin with the bridge plugin would make them: per host a `cni0`
//! bridge holding the subnet's first address at the subnet file's MTU; each pod a
//! namespace with `eth0` on cni0, the next free address and a default route via cni0.

use std::net::Ipv4Addr;

use crate::contract::SubnetEnv;
use crate::lab::{Lab, LabError, Node};
use crate::names::Ipv4Net;
use crate::netns::Netns;
use crate::nl::Nl;

pub struct Pod {
    pub name: String,
    pub host: String,
    pub ns: Netns,
    pub nl: Nl,
    pub addr: Ipv4Addr,
}

/// Creates `count` pods on `host` from the host's subnet file.
pub async fn create(lab: &Lab, host: &Node, env: &SubnetEnv, count: u32) -> Result<Vec<Pod>, LabError> {
    let (gw, len) = env.subnet_ip.expect("caller checked the subnet file");
    let mtu = env.mtu.expect("caller checked the subnet file");
    let subnet = Ipv4Net::new(gw, len).expect("valid prefix");
    // `ip link add cni0 mtu MTU type bridge; ip addr add GW/LEN dev cni0; ip link set cni0 up`
    host.nl.add_bridge("cni0", mtu).await?;
    host.nl.add_address("cni0", gw, len).await?;
    host.nl.set_up("cni0").await?;
    let mut pods = Vec::new();
    for k in 1..=count {
        let name = format!("{}-p{k}", host.name);
        let ns = Netns::create(&lab.run.netns(&name))?;
        let nl = Nl::open(&ns)?;
        let veth = format!("vp{k}");
        host.nl.add_veth(&veth, "eth0", &ns, mtu).await?;
        host.nl.enslave(&veth, "cni0").await?;
        let addr = subnet.nth(1 + k);
        nl.set_up("lo").await?;
        nl.add_address("eth0", addr, len).await?;
        nl.set_up("eth0").await?;
        nl.add_route(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"), gw).await?;
        pods.push(Pod { name, host: host.name.clone(), ns, nl, addr });
    }
    Ok(pods)
}
