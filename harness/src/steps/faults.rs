//! Faults and deliberate damage: a cut link, node loss, and `break` (sabotage for the
//! negative controls).

use serde::Deserialize;

use super::{StepKind, StepResult, Trial};
use crate::agents::Agent;
use crate::input::case::{single_key_enum, Dur, Ref};
use crate::input::names::{Family, HostName, Net};
use crate::lab::nl::{Netem, Nl};
use crate::lab::udev::MacPolicy;
use crate::lab_err;

/// Cuts a host's underlay link at the bridge for a while, then restores it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CutLink {
    pub host: HostName,
    #[serde(rename = "for")]
    pub duration: Dur,
}

impl StepKind for CutLink {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.host)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let h = self;
        let host = h.host.as_str();
        t.lab.set_link(host, false).await?;
        tokio::time::sleep(h.duration.0).await;
        t.lab.set_link(host, true).await?;
        tracing::info!("{host}'s underlay link cut for {:?}", h.duration.0);
        t.restarted(format!("cut_link on {host}"));
        Ok(())
    }
}

/// Takes a host's own underlay interface down and up again (upstream #1070: routes through
/// it vanish with it, and the agent must put its own back).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlapLink {
    pub host: HostName,
    pub down_for: Dur,
}

impl StepKind for FlapLink {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.host)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let host = self.host.as_str();
        t.lab.flap_host_link(host, self.down_for.0).await?;
        tracing::info!("{host}'s underlay interface was down for {:?} and is up again", self.down_for.0);
        t.restarted(format!("flap_link on {host}"));
        Ok(())
    }
}

/// Deletes a host's underlay interface and creates it again (same name, MAC, address):
/// upstream #869/#1348/#2247, where flannel.1, created on top of it, vanished with it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecreateLink {
    pub host: HostName,
}

impl StepKind for RecreateLink {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.host)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let host = self.host.as_str();
        t.lab.recreate_host_link(host).await?;
        tracing::info!("{host}'s underlay interface was deleted and created again");
        t.restarted(format!("recreate_link on {host}"));
        Ok(())
    }
}

/// Impairs the named hosts' (default: every host's) outgoing underlay traffic on their
/// eth0: added delay and jitter, reordering and a rate limit through netem, loss through
/// nftables. All zero (`{}` with only `hosts`) removes the impairment; with `for`, every
/// impairment of those hosts is cleared after that long (like a cut link restored).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImpairLink {
    #[serde(default)]
    pub hosts: Vec<HostName>,
    #[serde(default)]
    pub delay: Option<Dur>,
    #[serde(default)]
    pub jitter: Option<Dur>,
    #[serde(default)]
    pub loss_percent: u32,
    #[serde(default)]
    pub reorder_percent: u32,
    #[serde(default)]
    pub rate_mbit: u32,
    /// How long the impairment lasts (absent: until the next `impair_link` clears it).
    #[serde(default, rename = "for")]
    pub duration: Option<Dur>,
}

impl StepKind for ImpairLink {
    fn refs(&self) -> Vec<Ref<'_>> {
        self.hosts.iter().map(Ref::Host).collect()
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let us = |d: &Option<Dur>| d.as_ref().map(|d| d.0.as_micros().min(u32::MAX as u128) as u32).unwrap_or(0);
        if self.loss_percent > 100 || self.reorder_percent > 100 {
            return Err("impair_link: percentages are 0..100".into());
        }
        if self.reorder_percent > 0 && self.delay.is_none() {
            return Err("impair_link: reordering needs a delay (netem reorders by sending some packets early)".into());
        }
        let n = Netem {
            delay_us: us(&self.delay),
            jitter_us: us(&self.jitter),
            reorder_percent: self.reorder_percent,
            rate_kbit: self.rate_mbit.saturating_mul(1000),
        };
        if self.duration.is_some() && n.is_none() && self.loss_percent == 0 {
            return Err("impair_link: `for` needs an impairment to last (delay, loss_percent, reorder_percent or rate_mbit)".into());
        }
        let hosts = t.hosts_or_all(&self.hosts)?;
        impair(&hosts, &n, self.loss_percent).await?;
        let on = if self.hosts.is_empty() {
            "every host".to_string()
        } else {
            self.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
        };
        tracing::info!("underlay impairment on {on}: {n:?}, loss {}%", self.loss_percent);
        if let Some(d) = &self.duration {
            // the fault's length is the point here, not a wait for a condition
            tokio::time::sleep(d.0).await;
            impair(&hosts, &Netem::default(), 0).await?;
            tracing::info!("underlay impairment on {on} lifted after {:?}", d.0);
            t.restarted(format!("impair_link on {on}"));
        }
        Ok(())
    }
}

/// Sets every one of `hosts`' underlay netem (none: removed) and loss.
async fn impair(hosts: &[&crate::lab::Node], n: &Netem, loss_percent: u32) -> StepResult {
    for node in hosts {
        node.nl.set_netem(crate::lab::UNDERLAY_IF, n).await?;
        crate::lab::tools::set_loss(node, loss_percent)?;
    }
    Ok(())
}

/// What an operator's host firewall does, in every host namespace or the named ones:
/// `forward_policy: drop` (Docker's default, upstream #609/#799), `drop_udp_port: N` (a
/// firewall dropping inbound UDP to N, e.g. vxlan's 8472, upstream #2388), `flush_forward`
/// (the FORWARD chain flushed by another tool). Applied with
/// the `iptables` command (the operator's tool); the rules die with the namespaces.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    #[serde(default)]
    pub hosts: Vec<HostName>,
    #[serde(default)]
    pub forward_policy: Option<Policy>,
    #[serde(default)]
    pub drop_udp_port: Option<u16>,
    /// `iptables -F FORWARD`: someone else's tool flushing the chain the agent's jump to
    /// its forward rules lives in (a firewall reload).
    #[serde(default)]
    pub flush_forward: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Accept,
    Drop,
}

impl StepKind for Firewall {
    fn refs(&self) -> Vec<Ref<'_>> {
        self.hosts.iter().map(Ref::Host).collect()
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let mut rules: Vec<Vec<String>> = Vec::new();
        if let Some(p) = self.forward_policy {
            rules.push(vec!["-P".into(), "FORWARD".into(), if p == Policy::Drop { "DROP" } else { "ACCEPT" }.into()]);
        }
        if let Some(port) = self.drop_udp_port {
            rules.push(["-I", "INPUT", "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"].map(String::from).to_vec());
        }
        if self.flush_forward {
            rules.push(vec!["-F".into(), "FORWARD".into()]);
        }
        if rules.is_empty() {
            return Err("firewall: give `forward_policy`, `drop_udp_port` or `flush_forward`".into());
        }
        let hosts = t.hosts_or_all(&self.hosts)?;
        for node in hosts {
            for args in &rules {
                let mut argv = vec!["-w".to_string()];
                argv.extend(args.iter().cloned());
                crate::lab::tools::run_tool(&node.ns, "iptables", argv, None).map_err(|e| lab_err!("{}: {e}", node.name))?;
            }
            tracing::info!("{}: firewall {}", node.name, rules.iter().map(|r| r.join(" ")).collect::<Vec<_>>().join("; "));
        }
        Ok(())
    }
}

/// Stops every agent the way its profile says (a node drained, flanneld stopped): the
/// agents must clean up what they own on exit. Later steps judge what is left.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopAgents {}

impl StepKind for StopAgents {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        if t.agents.is_empty() {
            return Err("stop_agents: no agents run".into());
        }
        for a in &mut t.agents {
            a.stop();
        }
        let hosts: Vec<String> = t.agents.drain(..).map(|a| a.host).collect();
        t.restart_all_due = true;
        tracing::info!("stopped the agents on {}", hosts.join(", "));
        Ok(())
    }
}

/// Node loss: SIGKILL the host's agent and delete its lease; from then on the host is
/// out of the cluster and peers must drop it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoveHost {
    pub host: HostName,
}

impl StepKind for RemoveHost {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.host)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let h = self;
        let host = h.host.to_string();
        if let Some(i) = t.agents.iter().position(|a| a.host == host) {
            let mut a = t.agents.remove(i);
            a.child.kill();
        }
        // upstream's 24 h lease cannot be shortened: node loss is a revocation
        t.revoke_lease(&host).await?;
        t.removed.insert(host.clone());
        tracing::info!("{host} removed: agent killed, lease revoked");
        t.restarted(format!("remove_host {host}"));
        Ok(())
    }
}

/// Emulates udev's `MACAddressPolicy=persistent` on every host from now on: a `flannel.*`
/// device whose MAC the kernel chose at random gets another MAC once the host's subnet
/// file exists (after the agent published its lease). Upstream #1795's trigger.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UdevMacPolicy {}

impl StepKind for UdevMacPolicy {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        for node in &t.lab.hosts {
            let policy = MacPolicy::start(&node.ns, &node.name, Agent::subnet_file_path(node))?;
            t.udev.push(policy);
        }
        tracing::info!("udev MAC policy emulated on {} hosts", t.lab.hosts.len());
        Ok(())
    }
}

/// Deliberate damage, for negative controls: `- break: {delete_fdb: {host: h2}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break(pub Sabotage);

impl<'de> Deserialize<'de> for Break {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Sabotage::deserialize(d).map(Break)
    }
}

impl StepKind for Break {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(self.0.host())]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.sabotage(&self.0).await
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OnHost {
    pub host: HostName,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PodMtu {
    pub host: HostName,
    pub mtu: u32,
}

/// Deliberate damage, for negative controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sabotage {
    /// Deletes one FDB entry on the host's overlay device.
    DeleteFdb(OnHost),
    /// Deletes one route through the host's overlay device.
    DeleteRoute(OnHost),
    /// Deletes one permanent neighbour on the host's overlay device.
    DeleteNeighbour(OnHost),
    /// Sets `eth0` of the host's first pod to this MTU.
    SetPodMtu(PodMtu),
    /// SIGKILLs the host's agent.
    KillAgent(OnHost),
    /// Sets the MTU of the host's overlay device (flannel.VNI, flannel0, or eth0 for
    /// host-gw) behind the agent's back; the subnet file stays right.
    SetDeviceMtu(DeviceMtu),
    /// Sets the MTU of the host's underlay port on its segment's bridge: frames larger than
    /// that vanish on the wire (a black hole no host's state shows).
    SetUnderlayMtu(PodMtu),
    /// The IPv6 twins of the first three: one IPv6 peer route (on `flannel-v6.VNI`, or on
    /// eth0 for host-gw), one IPv6 neighbour, one FDB entry with an IPv6 destination.
    DeleteRoute6(OnHost),
    DeleteNeighbour6(OnHost),
    DeleteFdb6(OnHost),
    /// Deletes the host's `cni0` (as a misbehaving implementation might): the pods' gateway
    /// and the address the data-plane checks probe from.
    DeleteCni0(OnHost),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeviceMtu {
    pub host: HostName,
    /// Bytes added to (or, negative, taken from) the device's current MTU.
    pub by: i32,
    /// The IPv6 overlay device (`flannel-v6.VNI`) instead of the IPv4 one.
    #[serde(default)]
    pub ipv6: bool,
}

single_key_enum!(Sabotage, "sabotage", {
    "delete_fdb" => DeleteFdb(OnHost),
    "delete_route" => DeleteRoute(OnHost),
    "delete_neighbour" => DeleteNeighbour(OnHost),
    "set_pod_mtu" => SetPodMtu(PodMtu),
    "kill_agent" => KillAgent(OnHost),
    "set_device_mtu" => SetDeviceMtu(DeviceMtu),
    "set_underlay_mtu" => SetUnderlayMtu(PodMtu),
    "delete_route6" => DeleteRoute6(OnHost),
    "delete_neighbour6" => DeleteNeighbour6(OnHost),
    "delete_fdb6" => DeleteFdb6(OnHost),
    "delete_cni0" => DeleteCni0(OnHost),
});

impl Sabotage {
    /// The host it damages.
    pub fn host(&self) -> &HostName {
        match self {
            Sabotage::DeleteFdb(h)
            | Sabotage::DeleteRoute(h)
            | Sabotage::DeleteNeighbour(h)
            | Sabotage::KillAgent(h)
            | Sabotage::DeleteRoute6(h)
            | Sabotage::DeleteNeighbour6(h)
            | Sabotage::DeleteFdb6(h)
            | Sabotage::DeleteCni0(h) => &h.host,
            Sabotage::SetPodMtu(p) | Sabotage::SetUnderlayMtu(p) => &p.host,
            Sabotage::SetDeviceMtu(p) => &p.host,
        }
    }
}

/// Deletes one route through the device `idx` to a subnet of `network`; what it did, or
/// None when there was none.
async fn delete_route<A: Family>(nl: &Nl, idx: u32, network: Net<A>) -> Result<Option<String>, crate::error::Error> {
    let Some(r) = nl.routes::<A>().await?.into_iter().find(|r| r.oif == Some(idx) && network.contains_net(&r.dst)) else {
        return Ok(None);
    };
    nl.del_route(&r).await?;
    Ok(Some(format!("deleted {} route {}", A::NAME, r.dst)))
}

/// Deletes one permanent neighbour in `network` on the device `idx`; what it did, or None.
async fn delete_neighbour<A: Family>(nl: &Nl, idx: u32, network: Net<A>) -> Result<Option<String>, crate::error::Error> {
    let Some(n) = nl.neighbours::<A>().await?.into_iter().find(|n| n.ifindex == idx && n.permanent && network.contains(n.ip)) else {
        return Ok(None);
    };
    nl.del_neighbour(&n).await?;
    Ok(Some(format!("deleted {} neighbour {}", A::NAME, n.ip)))
}

impl Trial<'_> {
    async fn sabotage(&mut self, s: &Sabotage) -> StepResult {
        let conf = self.conf()?.clone();
        let host = s.host().as_str();
        // Damage to the agent's own state stays only while the agent cannot repair it (the
        // reference reconciles within seconds, its device's MTU too): its process group is
        // frozen first, and stays frozen to the end of the trial (stopping it thaws it).
        // Not under udp, whose data path runs inside the agent (and which reconciles
        // nothing): a frozen udp agent would break more than the control means to.
        let repairable =
            !matches!(s, Sabotage::SetPodMtu(_) | Sabotage::SetUnderlayMtu(_) | Sabotage::KillAgent(_) | Sabotage::DeleteCni0(_));
        if repairable && conf.backend != crate::contract::Backend::Udp {
            if let Some(a) = self.agents.iter().find(|a| a.host == host) {
                a.child.signal(nix::sys::signal::Signal::SIGSTOP);
                tracing::info!("froze the agent on {host} (pid {}) so the damage stays", a.child.pid());
            }
        }
        let node = self.host(host)?;
        let dev = conf.route_device();
        let idx = match s {
            Sabotage::SetPodMtu(_)
            | Sabotage::KillAgent(_)
            | Sabotage::SetDeviceMtu(_)
            | Sabotage::SetUnderlayMtu(_)
            | Sabotage::DeleteCni0(_) => 0,
            Sabotage::DeleteRoute6(_) | Sabotage::DeleteNeighbour6(_) | Sabotage::DeleteFdb6(_) => {
                node.nl.index_of(&conf.route_device6()).await?
            }
            _ => node.nl.index_of(&dev).await?,
        };
        let net6 = conf.ipv6.map(|n| n.network);
        let what = match s {
            Sabotage::DeleteFdb(_) => {
                let fdb = node.nl.fdb().await?;
                let e = fdb.into_iter().find(|e| e.ifindex == idx && e.dst.is_some()).ok_or("no FDB entry to delete")?;
                node.nl.del_fdb(&e).await?;
                format!("deleted FDB entry {} dst {:?}", e.mac, e.dst)
            }
            Sabotage::DeleteRoute(_) => delete_route(&node.nl, idx, conf.network).await?.ok_or("no peer route to delete")?,
            Sabotage::DeleteNeighbour(_) => delete_neighbour(&node.nl, idx, conf.network).await?.ok_or("no neighbour to delete")?,
            Sabotage::DeleteRoute6(_) => {
                let net6 = net6.ok_or("delete_route6 needs a net-conf with EnableIPv6")?;
                delete_route(&node.nl, idx, net6).await?.ok_or("no IPv6 peer route to delete")?
            }
            Sabotage::DeleteNeighbour6(_) => {
                let net6 = net6.ok_or("delete_neighbour6 needs a net-conf with EnableIPv6")?;
                delete_neighbour(&node.nl, idx, net6).await?.ok_or("no IPv6 neighbour to delete")?
            }
            Sabotage::DeleteFdb6(_) => {
                let e = node
                    .nl
                    .fdb()
                    .await?
                    .into_iter()
                    .find(|e| e.ifindex == idx && e.dst.is_some_and(|d| d.is_ipv6()))
                    .ok_or("no IPv6 FDB entry to delete")?;
                node.nl.del_fdb(&e).await?;
                format!("deleted FDB entry {} dst {:?}", e.mac, e.dst)
            }
            Sabotage::DeleteCni0(_) => {
                node.nl.del_link(crate::lab::pods::BRIDGE).await?;
                format!("deleted `{}`", crate::lab::pods::BRIDGE)
            }
            Sabotage::SetPodMtu(p) => {
                let pod = self.pods.iter().find(|x| x.host == host).ok_or("no pod on that host: add create_pods first")?;
                pod.nl.set_mtu("eth0", p.mtu).await?;
                format!("set {} eth0 MTU to {}", pod.name, p.mtu)
            }
            Sabotage::SetDeviceMtu(p) => {
                let dev = if p.ipv6 { conf.route_device6() } else { dev };
                let links = node.nl.links().await?;
                let now = links.iter().find(|l| l.name == dev).map(|l| l.mtu).ok_or_else(|| format!("no `{dev}` on {host}"))?;
                let to = now.checked_add_signed(p.by).ok_or("MTU out of range")?;
                node.nl.set_mtu(&dev, to).await?;
                format!("set {dev} MTU from {now} to {to} (the subnet file is unchanged)")
            }
            Sabotage::SetUnderlayMtu(p) => {
                self.lab.set_port_mtu(host, p.mtu).await?;
                format!("set the bridge port of {host}'s underlay link to MTU {}", p.mtu)
            }
            Sabotage::KillAgent(_) => {
                let agent = self.agents.iter_mut().find(|a| a.host == host).ok_or("no agent on that host: add start_agents first")?;
                let pid = agent.child.pid();
                agent.child.kill();
                agent.exit_planned = true;
                format!("SIGKILLed agent pid {pid}")
            }
        };
        tracing::info!("sabotage on {host}: {what}");
        Ok(())
    }
}
