//! Reading a host's kernel state and subnet file, as the contract checks it and as
//! artifacts show it.

use crate::error::Error;
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
    pub subnet_file: Option<String>,
}

/// Reads links, routes, neighbours, FDB entries and the subnet file of one host.
pub async fn dump_host(node: &Node, subnet_file: &std::path::Path) -> Result<HostState, Error> {
    Ok(HostState {
        links: node.nl.links().await?,
        addresses: node.nl.addresses().await?,
        routes: node.nl.routes().await?,
        neighbours: node.nl.neighbours().await?,
        fdb: node.nl.fdb().await?,
        subnet_file: std::fs::read_to_string(subnet_file).ok(),
    })
}
