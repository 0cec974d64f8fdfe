//! `flannel-lab import`: the same input as a topology and a case. The cluster's nodes become
//! hosts at their own addresses (segments inferred from them, one /24 each; a router joins
//! them), the
//! net-conf becomes the case's, and the leases are written into the lab's etcd before any
//! agent starts, as they were (junk keys, malformed values and departed nodes' leases
//! included), so an implementation started on those hosts meets the field state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::Input;
use crate::contract::Finding;
use crate::input::names::{Ipv4Net, Ipv6Net};
use crate::input::topology::Topology;

/// What `import` writes.
pub struct Imported {
    pub topology: String,
    pub case: String,
    /// One line per decision worth knowing (renames, moved addresses, dropped nodes).
    pub notes: Vec<String>,
}

/// YAML single-quoted.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Builds the topology (`topologies/<name>.yaml` beside the case) and the case.
pub fn import(inp: &Input, name: &str, max_hosts: Option<usize>, findings: &[Finding]) -> Result<Imported, String> {
    let netconf = inp.netconf_json.as_ref().ok_or("no net-conf in the input: nothing to import")?;
    let conf = inp.conf.as_ref().ok_or("the net-conf cannot be read as flannel reads it")?;
    let mut notes = Vec::new();
    let mut nodes: Vec<&super::NodeInput> = inp.nodes.iter().filter(|n| n.public_ip.is_some()).collect();
    for n in inp.nodes.iter().filter(|n| n.public_ip.is_none()) {
        notes.push(format!("node {} left out: its IPv4 address is unknown (add nodes/{}/public-ip)", n.name, n.name));
    }
    if nodes.is_empty() {
        return Err("no node with a known IPv4 address: give nodes/<node>/ folders or nodes.json".into());
    }
    let dropped: Vec<&super::NodeInput> = match max_hosts {
        Some(m) if nodes.len() > m => nodes.split_off(m),
        _ => Vec::new(),
    };
    if !dropped.is_empty() {
        notes.push(format!(
            "--max-hosts {}: {} nodes left out with their leases ({})",
            nodes.len(),
            dropped.len(),
            dropped.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    // segments: one per /24 of the nodes' addresses
    let mut segs: BTreeMap<Ipv4Net, Vec<usize>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        segs.entry(Ipv4Net::new(n.public_ip.expect("filtered"), 24).expect("valid")).or_default().push(i);
    }
    if segs.len() > 1 {
        notes.push(format!("{} segments inferred from the nodes' /24s, joined by one router", segs.len()));
    }
    let ipv6 = conf.ipv6.is_some();
    let mut topo = format!(
        "description: >\n  Imported by flannel-lab import from {}: {} nodes on {} segment(s).\nsegments:\n",
        inp.dir.display(),
        nodes.len(),
        segs.len()
    );
    let mut names = vec![String::new(); nodes.len()];
    let mut k = 0;
    for (s, (cidr, members)) in segs.iter().enumerate() {
        let mtu = members.iter().filter_map(|i| nodes[*i].underlay.as_ref().map(|u| u.1)).min().unwrap_or(1500);
        let _ = writeln!(topo, "  - name: seg{}\n    cidr: {cidr}\n    mtu: {mtu}", s + 1);
        if ipv6 {
            let six = members.iter().find_map(|i| nodes[*i].public_ip6).map(|a| Ipv6Net::new(a, 64).expect("valid"));
            let six = six.unwrap_or_else(|| format!("fd00:{}::/64", s + 1).parse().expect("valid"));
            let _ = writeln!(topo, "    cidr6: {six}");
        }
        for i in members {
            k += 1;
            names[*i] = format!("h{k}");
        }
    }
    topo.push_str("hosts:\n");
    // each node keeps its address, unless it is one the lab keeps for etcd and routers (the
    // top of the segment): such a node takes the next free one
    let top = if segs.len() > 1 { 2 } else { 1 };
    for (s, (cidr, members)) in segs.iter().enumerate() {
        let keep = |a: Ipv4Addr| (u32::from(a) - u32::from(cidr.addr())) < 255 - top;
        let (kept, moved): (Vec<usize>, Vec<usize>) = members.iter().partition(|i| keep(nodes[**i].public_ip.expect("filtered")));
        let list = |v: &[usize]| v.iter().map(|i| names[*i].as_str()).collect::<Vec<_>>().join(", ");
        if !kept.is_empty() {
            let addrs: Vec<String> = kept.iter().map(|i| nodes[*i].public_ip.expect("filtered").to_string()).collect();
            let _ = writeln!(topo, "  - segment: seg{}\n    names: [{}]\n    addresses: [{}]", s + 1, list(&kept), addrs.join(", "));
        }
        if !moved.is_empty() {
            let _ = writeln!(topo, "  - segment: seg{}\n    names: [{}]", s + 1, list(&moved));
        }
    }
    if segs.len() > 1 {
        let all: Vec<String> = (1..=segs.len()).map(|s| format!("seg{s}")).collect();
        let _ = writeln!(topo, "routers:\n  - name: gw\n    segments: [{}]", all.join(", "));
    }
    topo.push_str("etcd:\n  segment: seg1\n");
    // the addresses the lab gives each host
    let t = Topology::parse(Path::new("imported.yaml"), &topo, None).map_err(|e| format!("the imported topology is not valid: {e}"))?;
    let lab_ip: BTreeMap<String, Ipv4Addr> = t.hosts.iter().map(|h| (h.name.to_string(), h.addr)).collect();
    let mut map4: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
    let mut map6: BTreeMap<Ipv6Addr, Ipv6Addr> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let to = lab_ip[&names[i]];
        notes.push(format!("node {} ({}) is host {} at {to}", n.name, n.public_ip.expect("filtered"), names[i]));
        map4.insert(n.public_ip.expect("filtered"), to);
        if let (Some(from), Some(h)) = (n.public_ip6, t.hosts.iter().find(|h| h.name.as_str() == names[i])) {
            if let Some(to6) = t.v6_of(h.segment, h.addr) {
                map6.insert(from, to6);
            }
        }
    }
    // departed nodes' leases keep their PublicIP where no lab node has it, else move to free
    // addresses of the first segment, from .200 up
    let taken: Vec<Ipv4Addr> =
        t.hosts.iter().map(|h| h.addr).chain([t.etcd.1]).chain(t.routers.iter().flat_map(|r| r.legs.iter().map(|l| l.1))).collect();
    let mut spare = (200u32..250).map(|k| t.segments[0].cidr.nth(k)).filter(|a| !taken.contains(a));
    let dropped_ips: Vec<Ipv4Addr> = dropped.iter().filter_map(|n| n.public_ip).collect();
    let mut puts = Vec::new();
    for l in &inp.leases {
        let Some(key) = &l.key else { continue };
        let rel = key.strip_prefix(&format!("{}/", inp.prefix)).unwrap_or(key).to_string();
        let value = match &l.lease {
            Err(_) => String::from_utf8_lossy(&l.value).to_string(),
            Ok(lease) if dropped_ips.contains(&lease.public_ip) => continue,
            Ok(lease) => {
                let mut v: serde_json::Value = serde_json::from_slice(&l.value).map_err(|e| format!("{key}: {e}"))?;
                let to = match map4.get(&lease.public_ip) {
                    Some(to) => *to,
                    None if lease.public_ip.is_unspecified() => lease.public_ip,
                    None if !taken.contains(&lease.public_ip) => {
                        notes.push(format!("lease {} of a departed node ({}) kept as it was", lease.subnet, lease.public_ip));
                        lease.public_ip
                    }
                    None => {
                        let to = spare.next().ok_or("no spare address left for the departed nodes' leases")?;
                        map4.insert(lease.public_ip, to);
                        notes.push(format!(
                            "lease {} of a departed node ({}) kept, its PublicIP moved to {to}",
                            lease.subnet, lease.public_ip
                        ));
                        to
                    }
                };
                v["PublicIP"] = serde_json::Value::String(to.to_string());
                if let Some(six) = lease.public_ip6.and_then(|a| map6.get(&a)) {
                    v["PublicIPv6"] = serde_json::Value::String(six.to_string());
                }
                v.to_string()
            }
        };
        puts.push((rel, value, l.lease.is_ok()));
    }
    for (k, v) in &inp.other_keys {
        if let Some(rel) = k.strip_prefix(&format!("{}/", inp.prefix)) {
            puts.push((rel.to_string(), String::from_utf8_lossy(v).to_string(), false));
        }
    }
    if inp.kube {
        notes.push("the leases were node annotations (kube subnet manager): the lab's agents use etcd, so the annotations' subnets are not preloaded".into());
    }
    let backend = conf.backend;
    let mut nc = netconf.clone();
    if let Some(b) = nc.get_mut("Backend").and_then(|b| b.as_object_mut()) {
        b.remove("Type");
        b.remove("type");
    }
    let mut case = String::from("description: |\n");
    let _ = writeln!(case, "  Imported by `flannel-lab import {}`: the field state as the implementation meets it.", inp.dir.display());
    let _ = writeln!(case, "  The leases (and any junk under the prefix) are in etcd before the agents start; lease");
    let _ = writeln!(case, "  keys carry flannel's 24 h TTL (the dump records none). Correct behaviour: every host");
    let _ = writeln!(case, "  converges and pods talk.");
    for n in &notes {
        let _ = writeln!(case, "  - {n}");
    }
    if !findings.is_empty() {
        let _ = writeln!(case, "  What `flannel-lab diagnose` found in the input:");
        for f in findings.iter().take(30) {
            let line: String = f.to_string().chars().take(200).collect();
            let _ = writeln!(case, "  - {line}");
        }
    }
    let _ = writeln!(case, "topology: ./topologies/{name}.yaml");
    let _ = writeln!(case, "backends: [{backend}]");
    let _ = writeln!(case, "netconf: {nc}");
    case.push_str("steps:\n");
    for (k, v, lease) in &puts {
        let ttl = if *lease { ", ttl: 24h" } else { "" };
        let _ = writeln!(case, "  - put_key: {{key: {}, value: {}{ttl}}}", quote(k), quote(v));
    }
    case.push_str("  - start_agents: {}\n  - wait_converged: {within: 60s}\n  - create_pods: {per_host: 1}\n  - expect_ping: {}\n");
    Ok(Imported { topology: topo, case, notes })
}
