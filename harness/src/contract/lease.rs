//! Leases in etcd: flannel's key and JSON schema read back, and the checks on them (one per
//! host, distinct subnets inside the network).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::finding::Finding;
use super::netconf::{NetConf, Pool};
use crate::input::kinds::{Backend, Check};
use crate::input::names::{Ipv4Net, Ipv6Net};

/// One lease as found in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `0.0.0.0/0` in an IPv6-only lease.
    pub subnet: Ipv4Net,
    /// `0.0.0.0` in an IPv6-only lease.
    pub public_ip: Ipv4Addr,
    pub backend_type: Option<String>,
    pub vtep_mac: Option<String>,
    /// The IPv6 half of a dual-stack or IPv6-only lease (`…&fd00:10:244:1::-64`).
    pub subnet6: Option<Ipv6Net>,
    /// `PublicIPv6`
    pub public_ip6: Option<Ipv6Addr>,
    /// `BackendV6Data.VtepMAC`
    pub vtep_mac6: Option<String>,
}

/// Reads `<prefix>/subnets/A.B.C.D-LEN` (or `A.B.C.D-LEN&V6ADDR-LEN6`, `0.0.0.0-0&…` when
/// IPv6-only) with its JSON value.
pub fn parse_lease(prefix: &str, key: &str, value: &[u8]) -> Result<LeaseView, String> {
    let tail = key
        .strip_prefix(prefix)
        .and_then(|k| k.strip_prefix("/subnets/"))
        .ok_or_else(|| format!("`{key}` is not under {prefix}/subnets/"))?;
    let (v4, v6) = match tail.split_once('&') {
        Some((a, b)) => (a, Some(b)),
        None => (tail, None),
    };
    let subnet: Ipv4Net = v4.replacen('-', "/", 1).parse().map_err(|e| format!("key `{key}`: {e}"))?;
    let subnet6: Option<Ipv6Net> = match v6 {
        None => None,
        Some(b) => {
            let (addr, len) = b.rsplit_once('-').ok_or_else(|| format!("key `{key}`: `{b}` is not ADDR-LEN"))?;
            Some(format!("{addr}/{len}").parse().map_err(|e| format!("key `{key}`: {e}"))?)
        }
    };
    let v: Value = serde_json::from_slice(value).map_err(|e| format!("value of `{key}` is not JSON: {e}"))?;
    let public_ip = v
        .get("PublicIP")
        .and_then(|p| p.as_str())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("value of `{key}` has no valid `PublicIP`"))?;
    let public_ip6 = match v.get("PublicIPv6") {
        None | Some(Value::Null) => None,
        Some(p) => {
            Some(p.as_str().and_then(|p| p.parse().ok()).ok_or_else(|| format!("value of `{key}` has an invalid `PublicIPv6` {p}"))?)
        }
    };
    let backend_type = v.get("BackendType").and_then(|t| t.as_str()).map(str::to_string);
    let mac_of = |data: &str| v.get(data).and_then(|d| d.get("VtepMAC")).and_then(|m| m.as_str()).map(|m| m.to_ascii_lowercase());
    Ok(LeaseView {
        subnet,
        public_ip,
        backend_type,
        vtep_mac: mac_of("BackendData"),
        subnet6,
        public_ip6,
        vtep_mac6: mac_of("BackendV6Data"),
    })
}

/// A host as the lease checks know it: name, IPv4 underlay address (its identity in the
/// maps below) and IPv6 underlay address on a dual-stack underlay.
pub type HostAddrs = (String, Ipv4Addr, Option<Ipv6Addr>);

/// Checks the leases in etcd: one per host, keyed by its PublicIP (an IPv6-only lease by
/// its PublicIPv6), distinct subnets inside the network(s). Returns the leases by the
/// host's IPv4 underlay address.
pub fn check_leases(
    conf: &NetConf,
    hosts: &[HostAddrs],
    leases: &[Result<LeaseView, String>],
    out: &mut Vec<Finding>,
) -> BTreeMap<Ipv4Addr, LeaseView> {
    let mut by_ip: BTreeMap<Ipv4Addr, LeaseView> = BTreeMap::new();
    let mut subnets6: BTreeMap<Ipv6Net, Ipv4Addr> = BTreeMap::new();
    for l in leases.iter().flatten() {
        if conf.enable_ipv4 && (!conf.network.contains_net(&l.subnet) || l.subnet.prefix() != conf.subnet_len) {
            out.push(Finding::new(
                Check::Lease,
                "etcd",
                format!("lease {} is not a /{} inside {}", l.subnet, conf.subnet_len, conf.network),
            ));
        }
        // an IPv6-only lease names its host by PublicIPv6 alone
        let id = match (l.public_ip.is_unspecified(), l.public_ip6) {
            (true, Some(ip6)) => hosts.iter().find(|h| h.2 == Some(ip6)).map_or(l.public_ip, |h| h.1),
            _ => l.public_ip,
        };
        if let (Some(net6), Some(s6)) = (conf.ipv6, l.subnet6) {
            if !net6.network.contains_net(&s6) || s6.prefix() != net6.subnet_len {
                out.push(Finding::new(Check::Lease, "etcd", format!("lease {s6} is not a /{} inside {}", net6.subnet_len, net6.network)));
            }
            if let Some(other) = subnets6.insert(s6, id) {
                out.push(Finding::new(Check::Lease, "etcd", format!("IPv6 subnet {s6} is leased twice: to {other} and {id}")));
            }
        }
        if let Some(prev) = by_ip.insert(id, l.clone()) {
            out.push(Finding::new(Check::Lease, "etcd", format!("two leases for {id}: {} and {}", prev.subnet, l.subnet)));
        }
    }
    for (name, ip, ip6) in hosts {
        match by_ip.get(ip) {
            None if !conf.enable_ipv4 => out.push(Finding::new(
                Check::Lease,
                name,
                format!(
                    "no lease with PublicIPv6 {} in etcd",
                    ip6.map(|a| a.to_string()).unwrap_or_else(|| "(none: the underlay has no IPv6)".into())
                ),
            )),
            None => out.push(Finding::new(Check::Lease, name, format!("no lease with PublicIP {ip} in etcd"))),
            Some(l) if l.backend_type.as_deref() != conf.backend.lease_type() => out.push(Finding::new(
                Check::Lease,
                name,
                format!(
                    "lease {} has BackendType {:?}, expected {:?} for {}",
                    l.subnet,
                    l.backend_type,
                    conf.backend.lease_type(),
                    conf.backend
                ),
            )),
            Some(l) => {
                if conf.enable_ipv4 && conf.backend == Backend::Vxlan && l.vtep_mac.is_none() {
                    out.push(Finding::new(Check::Lease, name, format!("lease {} has no BackendData.VtepMAC", l.subnet)));
                }
                // the IPv6 half is judged on its own, whatever the IPv4 half showed
                if let Some(net6) = conf.ipv6 {
                    check_lease6(conf, net6, name, *ip6, l, out);
                }
            }
        }
    }
    by_ip
}

/// The IPv6 half of a host's lease when the net-conf enables IPv6.
fn check_lease6(conf: &NetConf, net6: Pool<Ipv6Addr>, host: &str, ip6: Option<Ipv6Addr>, l: &LeaseView, out: &mut Vec<Finding>) {
    let mut bad = |what: String| out.push(Finding::new(Check::Lease, host, what));
    let Some(s6) = l.subnet6 else {
        bad(format!(
            "lease {} carries no IPv6 subnet (its key has no `&ADDR-LEN` part), although the net-conf sets EnableIPv6 with {}: \
             the implementation looks IPv4-only",
            l.subnet, net6.network
        ));
        return;
    };
    if l.public_ip6 != ip6 || ip6.is_none() {
        bad(format!(
            "lease {s6} has PublicIPv6 {:?}, expected {}",
            l.public_ip6.map(|a| a.to_string()),
            ip6.map(|a| a.to_string())
                .unwrap_or_else(|| "an IPv6 underlay address (the topology has none: give its segments a cidr6)".into())
        ));
    }
    if conf.backend == Backend::Vxlan && l.vtep_mac6.is_none() {
        bad(format!("lease {s6} has no BackendV6Data.VtepMAC"));
    }
}

/// The other hosts' leases of this backend's type (`leases` is keyed by host).
pub fn peers_of<'a>(
    conf: &'a NetConf,
    host_ip: Ipv4Addr,
    leases: &'a BTreeMap<Ipv4Addr, LeaseView>,
) -> impl Iterator<Item = &'a LeaseView> + 'a {
    leases.iter().filter(move |(k, l)| **k != host_ip && l.backend_type.as_deref() == conf.backend.lease_type()).map(|(_, l)| l)
}
