//! Reading a host's kernel state and subnet file, as the contract checks it and as
//! artifacts show it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::Error;
use crate::input::names::Family;
use crate::lab::neigh_get::Found;
use crate::lab::nl::{Address, FdbEntry, Link, Neighbour, Route};
use crate::lab::Node;

/// Everything the lab read from one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HostState {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<FdbEntry>,
    pub addresses6: Vec<Address<Ipv6Addr>>,
    pub routes6: Vec<Route<Ipv6Addr>>,
    pub neighbours6: Vec<Neighbour<Ipv6Addr>>,
    pub subnet_file: Option<String>,
    /// Whether `neighbours` (and `neighbours6`) hold every entry of the host, or only the
    /// ones a [`NeighbourQuery`] asked for.
    pub neighbours_complete: bool,
}

/// Neighbours to look up one by one instead of dumping the table: the entries the contract
/// expects on the vxlan devices (found with the MAC they have, or missing). Entries for
/// other addresses are not seen: a poll at size reads this way, a verdict reads everything.
#[derive(Debug, Clone, Default)]
pub struct NeighbourQuery {
    pub device: String,
    pub v4: Vec<Ipv4Addr>,
    pub device6: String,
    pub v6: Vec<Ipv6Addr>,
}

/// Reads links, routes, neighbours, FDB entries and the subnet file of one host; IPv6
/// addresses, routes and neighbours too when `ipv6` (a dual-stack or IPv6-only net-conf).
///
/// Neighbours: with `complete` the whole table is dumped; the entries a `query` names are
/// looked up one by one and take the place of what the dump said of them. A lookup is
/// exact; a dump of a table that changes under it (every namespace's ARP traffic lands in
/// the kernel's one table) can skip entries, so it is trusted only for entries nobody
/// expects. Without `complete`, only the query's entries are read.
pub async fn dump_host(
    node: &Node,
    subnet_file: &std::path::Path,
    ipv6: bool,
    query: Option<&NeighbourQuery>,
    complete: bool,
) -> Result<HostState, Error> {
    let mut state = HostState {
        links: node.nl.links().await?,
        addresses: node.nl.addresses().await?,
        routes: node.nl.routes().await?,
        fdb: node.nl.fdb().await?,
        subnet_file: std::fs::read_to_string(subnet_file).ok(),
        neighbours_complete: complete || query.is_none(),
        ..HostState::default()
    };
    if complete || query.is_none() {
        state.neighbours = node.nl.neighbours().await?;
    }
    if let Some(q) = query {
        look_up(node, &state.links, &mut state.neighbours, &q.device, &q.v4).await?;
    }
    if ipv6 {
        state.addresses6 = node.nl.addresses().await?;
        state.routes6 = node.nl.routes().await?;
        if complete || query.is_none() {
            state.neighbours6 = node.nl.neighbours().await?;
        }
        if let Some(q) = query {
            look_up(node, &state.links, &mut state.neighbours6, &q.device6, &q.v6).await?;
        }
    }
    Ok(state)
}

/// Looks the neighbours `ips` up on the device `device` (when the host has it): what a dump
/// said of them gives way to what the lookups found.
async fn look_up<A: Family>(node: &Node, links: &[Link], list: &mut Vec<Neighbour<A>>, device: &str, ips: &[A]) -> Result<(), Error> {
    let Some(i) = links.iter().find(|l| l.name == device).map(|l| l.index) else { return Ok(()) };
    let found = lookup(node, i, ips).await?;
    list.retain(|n| !(n.ifindex == i && ips.contains(&n.ip)));
    list.extend(found.into_iter().filter_map(|(ip, mac, permanent)| Some(Neighbour { ifindex: i, ip: A::from_ip(ip)?, mac, permanent })));
    list.sort();
    Ok(())
}

/// The entries for `ips` on `ifindex`, looked up in one batch off the runtime's threads.
async fn lookup<A: Family>(node: &Node, ifindex: u32, ips: &[A]) -> Result<Vec<Found>, Error> {
    if ips.is_empty() {
        return Ok(Vec::new());
    }
    let ips: Vec<IpAddr> = ips.iter().map(|a| (*a).into()).collect();
    let ns = node.ns.clone();
    tokio::task::spawn_blocking(move || crate::lab::neigh_get::neighbours_get(&ns, ifindex, ips))
        .await
        .map_err(|e| crate::lab_err!("neighbour lookups: {e}"))?
}

/// One family's entries in a [`HostState`], for checks written once for both families.
pub trait StateFamily: Family {
    fn addresses(s: &HostState) -> &[Address<Self>];
    fn routes(s: &HostState) -> &[Route<Self>];
    fn neighbours(s: &HostState) -> &[Neighbour<Self>];
}

impl StateFamily for Ipv4Addr {
    fn addresses(s: &HostState) -> &[Address<Self>] {
        &s.addresses
    }
    fn routes(s: &HostState) -> &[Route<Self>] {
        &s.routes
    }
    fn neighbours(s: &HostState) -> &[Neighbour<Self>] {
        &s.neighbours
    }
}

impl StateFamily for Ipv6Addr {
    fn addresses(s: &HostState) -> &[Address<Self>] {
        &s.addresses6
    }
    fn routes(s: &HostState) -> &[Route<Self>] {
        &s.routes6
    }
    fn neighbours(s: &HostState) -> &[Neighbour<Self>] {
        &s.neighbours6
    }
}
