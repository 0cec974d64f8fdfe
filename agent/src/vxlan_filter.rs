//! The vxlan source filter (hardening beyond flanneld, which accepts VXLAN from anyone on
//! the underlay): one nftables table of the agent's own,
//!
//! ```text
//! table ip flannel-agent-vxlan {
//!     set peers { type ipv4_addr; elements = { <every peer's PublicIP> } }
//!     chain input { type filter hook input priority filter; policy accept;
//!                   udp dport <vxlan port> ip saddr != @peers counter drop }
//! }
//! ```
//!
//! kept in step with leases by adding and deleting set elements, checked (`nft -j list`)
//! at every reconcile and rebuilt atomically when someone changed it, deleted on exit.
//! Scripts and the listing check are pure; [`nft`] runs the binary.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::Value;

pub const TABLE: &str = "flannel-agent-vxlan";
pub const SET: &str = "peers";
pub const CHAIN: &str = "input";
const BINARY: &str = "nft";

pub use crate::tool::ToolError as NftError;

fn elements(peers: &BTreeSet<Ipv4Addr>) -> String {
    peers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

/// The whole table, replacing any previous one in the same transaction.
pub fn table_script(port: u16, peers: &BTreeSet<Ipv4Addr>) -> String {
    let elems = match peers.is_empty() {
        true => String::new(),
        false => format!("\t\telements = {{ {} }}\n", elements(peers)),
    };
    format!(
        "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\tset {SET} {{\n\t\ttype ipv4_addr\n{elems}\t}}\n\tchain {CHAIN} {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\tudp dport {port} ip saddr != @{SET} counter drop\n\t}}\n}}\n"
    )
}

/// Element changes from `old` to `new`; empty when nothing changes.
pub fn update_script(old: &BTreeSet<Ipv4Addr>, new: &BTreeSet<Ipv4Addr>) -> String {
    let added: BTreeSet<Ipv4Addr> = new.difference(old).copied().collect();
    let gone: BTreeSet<Ipv4Addr> = old.difference(new).copied().collect();
    let mut s = String::new();
    if !added.is_empty() {
        s += &format!("add element ip {TABLE} {SET} {{ {} }}\n", elements(&added));
    }
    if !gone.is_empty() {
        s += &format!("delete element ip {TABLE} {SET} {{ {} }}\n", elements(&gone));
    }
    s
}

/// What `nft -j list table ip flannel-agent-vxlan` shows: the set's elements, and whether
/// the input chain still holds a drop rule. None when the JSON has no such set.
pub fn parse_listing(json: &str) -> Option<(BTreeSet<Ipv4Addr>, bool)> {
    let v: Value = serde_json::from_str(json).ok()?;
    let items = v.get("nftables")?.as_array()?;
    let mut peers = None;
    let mut drop_rule = false;
    for item in items {
        if let Some(set) = item.get("set").filter(|s| s.get("name").and_then(Value::as_str) == Some(SET)) {
            let elems = set.get("elem").and_then(Value::as_array).map(|a| a.iter().filter_map(|e| e.as_str()?.parse().ok()).collect());
            peers = Some(elems.unwrap_or_default());
        }
        if let Some(rule) = item.get("rule").filter(|r| r.get("chain").and_then(Value::as_str) == Some(CHAIN)) {
            let exprs = rule.get("expr").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            drop_rule |= exprs.iter().any(|e| e.get("drop").is_some());
        }
    }
    peers.map(|p| (p, drop_rule))
}

async fn nft(args: &[&str], script: Option<&str>) -> Result<String, NftError> {
    crate::tool::run(BINARY, args, script).await
}

/// Whether the `nft` binary can be run; the error says why not.
pub async fn available() -> Result<(), NftError> {
    nft(&["--version"], None).await.map(|_| ())
}

/// Deletes the table (this run's or a previous run's); true when there was one.
pub async fn remove() -> bool {
    nft(&["delete", "table", "ip", TABLE], None).await.is_ok()
}

/// The installed filter and the peers it admits.
pub struct VxlanFilter {
    port: u16,
    peers: BTreeSet<Ipv4Addr>,
}

impl VxlanFilter {
    /// Creates the table (replacing any other of the same name).
    pub async fn create(port: u16, peers: BTreeSet<Ipv4Addr>) -> Result<Self, NftError> {
        nft(&["-f", "-"], Some(&table_script(port, &peers))).await?;
        Ok(VxlanFilter { port, peers })
    }

    /// Adds and deletes set elements; rebuilds the table when that fails.
    pub async fn set_peers(&mut self, peers: &BTreeSet<Ipv4Addr>) -> Result<(), NftError> {
        let script = update_script(&self.peers, peers);
        if script.is_empty() {
            return Ok(());
        }
        if let Err(e) = nft(&["-f", "-"], Some(&script)).await {
            tracing::warn!(error = crate::etcd_access::chain(&e), "updating the vxlan source filter failed, rebuilding it");
            nft(&["-f", "-"], Some(&table_script(self.port, peers))).await?;
        }
        tracing::debug!(peers = elements(peers), "vxlan source filter updated");
        self.peers = peers.clone();
        Ok(())
    }

    /// Rebuilds the table when it is gone, its set differs or its drop rule is missing;
    /// true when it had to.
    pub async fn check(&mut self) -> Result<bool, NftError> {
        let listing = nft(&["-j", "list", "table", "ip", TABLE], None).await.ok();
        let intact = listing.as_deref().and_then(parse_listing).is_some_and(|(peers, drop)| drop && peers == self.peers);
        if !intact {
            nft(&["-f", "-"], Some(&table_script(self.port, &self.peers))).await?;
        }
        Ok(!intact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[&str]) -> BTreeSet<Ipv4Addr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn table_admits_only_peers_on_the_vxlan_port() {
        let s = table_script(8472, &set(&["192.168.77.3", "192.168.77.2"]));
        assert!(s.starts_with("add table ip flannel-agent-vxlan\ndelete table ip flannel-agent-vxlan\n"));
        assert!(s.contains("elements = { 192.168.77.2, 192.168.77.3 }"));
        assert!(s.contains("type filter hook input priority filter; policy accept;"));
        assert!(s.contains("udp dport 8472 ip saddr != @peers counter drop"));
        assert!(!table_script(4789, &set(&[])).contains("elements"), "an empty set has no elements clause");
    }

    #[test]
    fn updates_add_and_delete_elements() {
        let s = update_script(&set(&["10.0.0.1", "10.0.0.2"]), &set(&["10.0.0.2", "10.0.0.3"]));
        assert_eq!(s, "add element ip flannel-agent-vxlan peers { 10.0.0.3 }\ndelete element ip flannel-agent-vxlan peers { 10.0.0.1 }\n");
        assert_eq!(update_script(&set(&["10.0.0.1"]), &set(&["10.0.0.1"])), "");
    }

    #[test]
    fn listing_shows_elements_and_the_drop_rule() {
        let json = r#"{"nftables": [{"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "ip", "name": "flannel-agent-vxlan", "handle": 1}},
            {"set": {"family": "ip", "name": "peers", "table": "flannel-agent-vxlan", "type": "ipv4_addr", "handle": 1, "elem": ["192.168.77.2"]}},
            {"chain": {"family": "ip", "table": "flannel-agent-vxlan", "name": "input", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
            {"rule": {"family": "ip", "table": "flannel-agent-vxlan", "chain": "input", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 8472}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}]}"#;
        assert_eq!(parse_listing(json), Some((set(&["192.168.77.2"]), true)));
        let flushed = r#"{"nftables": [{"set": {"name": "peers", "table": "flannel-agent-vxlan"}}, {"chain": {"name": "input"}}]}"#;
        assert_eq!(parse_listing(flushed), Some((set(&[]), false)));
        assert_eq!(parse_listing(r#"{"nftables": []}"#), None);
    }
}
