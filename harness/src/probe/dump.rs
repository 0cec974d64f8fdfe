//! Reading a host's kernel state and subnet file, as the contract checks it and as
//! artifacts show it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::Error;
use crate::lab::neigh_get::Found;
use crate::lab::nl::{Address, Address6, FdbEntry, Link, Neighbour, Neighbour6, Route, Route6};
use crate::lab::Node;

/// Everything the lab read from one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HostState {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<FdbEntry>,
    pub addresses6: Vec<Address6>,
    pub routes6: Vec<Route6>,
    pub neighbours6: Vec<Neighbour6>,
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
    let index = |name: &str| state.links.iter().find(|l| l.name == name).map(|l| l.index);
    if let Some((q, i)) = query.and_then(|q| Some((q, index(&q.device)?))) {
        let found = lookup(node, i, &q.v4).await?;
        replace_looked_up(
            &mut state.neighbours,
            found,
            |n| n.ifindex == i && q.v4.contains(&n.ip),
            |ip, mac, permanent| Some(Neighbour { ifindex: i, ip: v4(ip)?, mac, permanent }),
        );
    }
    if ipv6 {
        state.addresses6 = node.nl.addresses6().await?;
        state.routes6 = node.nl.routes6().await?;
        if complete || query.is_none() {
            state.neighbours6 = node.nl.neighbours6().await?;
        }
        if let Some((q, i)) = query.and_then(|q| Some((q, index(&q.device6)?))) {
            let found = lookup(node, i, &q.v6).await?;
            replace_looked_up(
                &mut state.neighbours6,
                found,
                |n| n.ifindex == i && q.v6.contains(&n.ip),
                |ip, mac, permanent| Some(Neighbour6 { ifindex: i, ip: v6(ip)?, mac, permanent }),
            );
        }
    }
    Ok(state)
}

/// The entries for `ips` on `ifindex`, looked up in one batch off the runtime's threads.
async fn lookup<A: Copy + Into<IpAddr>>(node: &Node, ifindex: u32, ips: &[A]) -> Result<Vec<Found>, Error> {
    if ips.is_empty() {
        return Ok(Vec::new());
    }
    let ips: Vec<IpAddr> = ips.iter().map(|a| (*a).into()).collect();
    let ns = node.ns.clone();
    tokio::task::spawn_blocking(move || crate::lab::neigh_get::neighbours_get(&ns, ifindex, ips))
        .await
        .map_err(|e| crate::lab_err!("neighbour lookups: {e}"))?
}

/// What a dump said of the looked-up entries (`asked`) gives way to what the lookups found.
fn replace_looked_up<T: Ord>(
    list: &mut Vec<T>,
    found: Vec<Found>,
    asked: impl Fn(&T) -> bool,
    entry: impl Fn(IpAddr, Option<String>, bool) -> Option<T>,
) {
    list.retain(|n| !asked(n));
    list.extend(found.into_iter().filter_map(|(ip, mac, permanent)| entry(ip, mac, permanent)));
    list.sort();
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}
