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
//! kept in step with leases by adding and deleting set elements (over netlink:
//! [`crate::nfnetlink`]), checked (`nft -j list`) when someone else changed it and rebuilt
//! atomically, deleted on exit.
//! With IPv6 enabled, `table ip6 flannel-agent-vxlan` does the same for `flannel-v6.<VNI>`
//! (set type `ipv6_addr`, `ip6 saddr`) with the peers' PublicIPv6 addresses.
//! Scripts and the listing check are pure; [`nft`] runs the binary (to create the table).

use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde_json::Value;

use crate::nfnetlink::{Family, Nft};

pub const TABLE: &str = "flannel-agent-vxlan";
pub const SET: &str = "peers";
pub const CHAIN: &str = "input";
const BINARY: &str = "nft";

pub use crate::tool::ToolError as NftError;

/// The nftables family of one address family's filter.
pub trait NftFamily: Copy + Ord + Display + FromStr + Into<IpAddr> + Send + Sync + 'static {
    /// `ip` or `ip6`: the table family and the payload protocol of `saddr`.
    const FAMILY: &'static str;
    /// The same, for requests over netlink.
    const NF: Family;
    /// The set's element type.
    const SET_TYPE: &'static str;
}

impl NftFamily for Ipv4Addr {
    const FAMILY: &'static str = "ip";
    const NF: Family = Family::Ip;
    const SET_TYPE: &'static str = "ipv4_addr";
}

impl NftFamily for Ipv6Addr {
    const FAMILY: &'static str = "ip6";
    const NF: Family = Family::Ip6;
    const SET_TYPE: &'static str = "ipv6_addr";
}

fn elements<A: NftFamily>(peers: &BTreeSet<A>) -> String {
    peers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

/// The whole table, replacing any previous one in the same transaction.
pub fn table_script<A: NftFamily>(port: u16, peers: &BTreeSet<A>) -> String {
    let elems = match peers.is_empty() {
        true => String::new(),
        false => format!("\t\telements = {{ {} }}\n", elements(peers)),
    };
    let (fam, ty) = (A::FAMILY, A::SET_TYPE);
    format!(
        "add table {fam} {TABLE}\ndelete table {fam} {TABLE}\ntable {fam} {TABLE} {{\n\tset {SET} {{\n\t\ttype {ty}\n{elems}\t}}\n\tchain {CHAIN} {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\tudp dport {port} {fam} saddr != @{SET} counter drop\n\t}}\n}}\n"
    )
}

/// Element changes from `old` to `new`; empty when nothing changes.
pub fn update_script<A: NftFamily>(old: &BTreeSet<A>, new: &BTreeSet<A>) -> String {
    let added: BTreeSet<A> = new.difference(old).copied().collect();
    let gone: BTreeSet<A> = old.difference(new).copied().collect();
    let fam = A::FAMILY;
    let mut s = String::new();
    if !added.is_empty() {
        s += &format!("add element {fam} {TABLE} {SET} {{ {} }}\n", elements(&added));
    }
    if !gone.is_empty() {
        s += &format!("delete element {fam} {TABLE} {SET} {{ {} }}\n", elements(&gone));
    }
    s
}

/// What `nft -j list table ip flannel-agent-vxlan` (or `ip6`) shows: the set's elements,
/// and whether the input chain still holds a drop rule. None when the JSON has no such set.
pub fn parse_listing<A: NftFamily>(json: &str) -> Option<(BTreeSet<A>, bool)> {
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

/// Whether the `nft` binary is there; the error says why not.
pub fn available() -> Result<(), NftError> {
    crate::tool::locate(BINARY).map(|_| ())
}

/// Deletes the table of family `A` (this run's or a previous run's) over netlink when a
/// socket is given, else with `nft`; true when there was one.
pub async fn remove<A: NftFamily>(nl: Option<&mut Nft>) -> bool {
    if let Some(nl) = nl {
        match nl.delete_table(A::NF, TABLE) {
            Ok(there) => return there,
            Err(e) => tracing::debug!(error = %e, "deleting the table over netlink failed, running nft"),
        }
    }
    nft(&["delete", "table", A::FAMILY, TABLE], None).await.is_ok()
}

/// The installed filter of one family and the peers it admits.
pub struct VxlanFilter<A: NftFamily = Ipv4Addr> {
    port: u16,
    peers: BTreeSet<A>,
}

impl<A: NftFamily> VxlanFilter<A> {
    /// Creates the table (replacing any other of the same name).
    pub async fn create(port: u16, peers: BTreeSet<A>) -> Result<Self, NftError> {
        nft(&["-f", "-"], Some(&table_script(port, &peers))).await?;
        Ok(VxlanFilter { port, peers })
    }

    /// Adds and deletes set elements (over netlink when a socket is given, else with
    /// `nft`); rebuilds the table when that fails.
    pub async fn set_peers(&mut self, peers: &BTreeSet<A>, nl: Option<&mut Nft>) -> Result<(), NftError> {
        let script = update_script(&self.peers, peers);
        if script.is_empty() {
            return Ok(());
        }
        let updated = match nl {
            Some(nl) => {
                let added: Vec<IpAddr> = peers.difference(&self.peers).map(|a| (*a).into()).collect();
                let gone: Vec<IpAddr> = self.peers.difference(peers).map(|a| (*a).into()).collect();
                nl.set_elements(A::NF, TABLE, SET, &added, &gone)
                    .map_err(|e| tracing::warn!(error = %e, "updating the vxlan source filter over netlink failed, rebuilding it"))
            }
            None => nft(&["-f", "-"], Some(&script))
                .await
                .map(|_| ())
                .map_err(|e| tracing::warn!(error = crate::error::chain(&e), "updating the vxlan source filter failed, rebuilding it")),
        };
        if updated.is_err() {
            nft(&["-f", "-"], Some(&table_script(self.port, peers))).await?;
        }
        tracing::debug!(peers = elements(peers), "vxlan source filter updated");
        self.peers = peers.clone();
        Ok(())
    }

    /// Rebuilds the table when it is gone, its set differs or its drop rule is missing;
    /// true when it had to.
    pub async fn check(&mut self) -> Result<bool, NftError> {
        let listing = nft(&["-j", "list", "table", A::FAMILY, TABLE], None).await.ok();
        let intact = listing.as_deref().and_then(parse_listing::<A>).is_some_and(|(peers, drop)| drop && peers == self.peers);
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
        assert_eq!(parse_listing::<Ipv4Addr>(r#"{"nftables": []}"#), None);
    }

    fn set6(ips: &[&str]) -> BTreeSet<Ipv6Addr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ipv6_table_admits_only_ipv6_peers() {
        let s = table_script(8472, &set6(&["fd00:1::3", "fd00:1::2"]));
        assert!(s.starts_with("add table ip6 flannel-agent-vxlan\ndelete table ip6 flannel-agent-vxlan\n"), "{s}");
        assert!(s.contains("type ipv6_addr"));
        assert!(s.contains("elements = { fd00:1::2, fd00:1::3 }"));
        assert!(s.contains("udp dport 8472 ip6 saddr != @peers counter drop"));
        let u = update_script(&set6(&["fd00:1::2"]), &set6(&["fd00:1::3"]));
        assert_eq!(
            u,
            "add element ip6 flannel-agent-vxlan peers { fd00:1::3 }\ndelete element ip6 flannel-agent-vxlan peers { fd00:1::2 }\n"
        );
        let json = r#"{"nftables": [{"set": {"family": "ip6", "name": "peers", "table": "flannel-agent-vxlan", "type": "ipv6_addr", "elem": ["fd00:1::2"]}},
            {"rule": {"family": "ip6", "table": "flannel-agent-vxlan", "chain": "input", "expr": [{"drop": null}]}}]}"#;
        assert_eq!(parse_listing(json), Some((set6(&["fd00:1::2"]), true)));
    }
}
