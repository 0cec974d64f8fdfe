//! Reading a host's kernel state and subnet file, as the contract checks it and as
//! artifacts show it.

use crate::error::Error;
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
}

/// Reads links, routes, neighbours, FDB entries and the subnet file of one host; IPv6
/// addresses, routes and neighbours too when `ipv6` (a dual-stack or IPv6-only net-conf).
pub async fn dump_host(node: &Node, subnet_file: &std::path::Path, ipv6: bool) -> Result<HostState, Error> {
    let mut state = HostState {
        links: node.nl.links().await?,
        addresses: node.nl.addresses().await?,
        routes: node.nl.routes().await?,
        neighbours: node.nl.neighbours().await?,
        fdb: node.nl.fdb().await?,
        subnet_file: std::fs::read_to_string(subnet_file).ok(),
        ..HostState::default()
    };
    if ipv6 {
        state.addresses6 = node.nl.addresses6().await?;
        state.routes6 = node.nl.routes6().await?;
        state.neighbours6 = node.nl.neighbours6().await?;
    }
    Ok(state)
}
