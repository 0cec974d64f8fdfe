//! Lease types, pure: the JSON value (flanneld's schema), the key naming a lease's subnets,
//! and the events a watch yields. No I/O; the registry ([`super`]) reads and writes them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The JSON value of a lease, exactly as flanneld writes it. An IPv6-only lease has
/// `PublicIP` 0.0.0.0 and no `BackendData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// null when the host has IPv6 off.
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<Ipv6Addr>,
    #[serde(rename = "BackendType", default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<String>,
    #[serde(rename = "BackendData", default, skip_serializing_if = "Option::is_none")]
    pub backend_data: Option<Value>,
    #[serde(rename = "BackendV6Data", default, skip_serializing_if = "Option::is_none")]
    pub backend_v6_data: Option<Value>,
}

/// The subnets a lease holds, which are also its key: IPv4, IPv6 or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnets {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

impl Subnets {
    /// None when both are absent: every lease holds at least one subnet.
    pub fn new(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>) -> Option<Subnets> {
        (v4.is_some() || v6.is_some()).then_some(Subnets { v4, v6 })
    }

    pub fn v4(subnet: Ipv4Net) -> Subnets {
        Subnets { v4: Some(subnet), v6: None }
    }
}

/// `10.244.1.0/24`, `10.244.1.0/24+fd00:10:244:1::/64` or `fd00:10:244:1::/64`, for logs.
impl fmt::Display for Subnets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.v4, self.v6) {
            (Some(a), Some(b)) => write!(f, "{a}+{b}"),
            (Some(a), None) => write!(f, "{a}"),
            (None, Some(b)) => write!(f, "{b}"),
            (None, None) => write!(f, "(no subnet)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub subnets: Subnets,
    pub attrs: LeaseAttrs,
}

/// A change to the set of leases.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEvent {
    Added(Lease),
    Removed(Subnets),
}

/// One family's half of a lease, as a backend of that family sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeasePart<'a, N: IpNet> {
    pub subnet: N,
    /// `PublicIP` or `PublicIPv6`; None when the lease gives none for this family.
    pub public_ip: Option<N::Addr>,
    pub backend_type: Option<&'a str>,
    /// `BackendData` or `BackendV6Data`.
    pub backend_data: Option<&'a Value>,
}

/// Where each family's half of a lease lives.
pub trait Family: IpNet {
    fn subnet_of(subnets: &Subnets) -> Option<Self>;
    fn part(lease: &Lease) -> Option<LeasePart<'_, Self>>;
}

impl Family for Ipv4Net {
    fn subnet_of(subnets: &Subnets) -> Option<Self> {
        subnets.v4
    }
    fn part(l: &Lease) -> Option<LeasePart<'_, Self>> {
        Some(LeasePart {
            subnet: l.subnets.v4?,
            public_ip: Some(l.attrs.public_ip).filter(|ip| !ip.is_unspecified()),
            backend_type: l.attrs.backend_type.as_deref(),
            backend_data: l.attrs.backend_data.as_ref(),
        })
    }
}

impl Family for Ipv6Net {
    fn subnet_of(subnets: &Subnets) -> Option<Self> {
        subnets.v6
    }
    fn part(l: &Lease) -> Option<LeasePart<'_, Self>> {
        Some(LeasePart {
            subnet: l.subnets.v6?,
            public_ip: l.attrs.public_ipv6,
            backend_type: l.attrs.backend_type.as_deref(),
            backend_data: l.attrs.backend_v6_data.as_ref(),
        })
    }
}

/// `<prefix>/subnets/<key>` for the subnets (see the module docs for the three forms).
pub fn subnet_key(prefix: &str, subnets: &Subnets) -> String {
    let v4 = subnets.v4.unwrap_or_else(|| Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"));
    match subnets.v6 {
        None => format!("{prefix}/subnets/{}-{}", v4.addr(), v4.prefix()),
        Some(v6) => format!("{prefix}/subnets/{}-{}&{}-{}", v4.addr(), v4.prefix(), v6.addr(), v6.prefix()),
    }
}

/// `ADDR-LEN` as `ADDR/LEN`, only when ADDR is the network address written as `N` prints it.
fn parse_part<N: IpNet>(text: &str) -> Option<N> {
    let (addr, len) = text.rsplit_once('-')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let net = N::new(addr.parse().ok()?, len.parse().ok()?)?;
    (net.addr().to_string() == addr).then_some(net)
}

/// `<prefix>/subnets/10.244.68.0-24`, `…/10.244.68.0-24&fd00:10:244:44::-64` or
/// `…/0.0.0.0-0&fd00:10:244:44::-64` → the subnets; anything else (including an IPv6 part
/// that is not a canonical network address) → None.
pub fn parse_subnet_key(prefix: &str, key: &[u8]) -> Option<Subnets> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?.strip_prefix("/subnets/")?;
    let (v4_text, v6_text) = match rest.split_once('&') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let v4 = parse_part::<Ipv4Net>(v4_text)?;
    let v4 = (v4.prefix() != 0).then_some(v4);
    let v6 = match v6_text {
        None => None,
        Some(t) if t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'-')) => Some(parse_part::<Ipv6Net>(t)?),
        Some(_) => return None,
    };
    Subnets::new(v4, v6)
}

/// Decodes one key/value under `<prefix>/subnets/`. A malformed entry written by someone
/// else is an error for that entry only: the caller logs and skips it.
pub fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Result<Lease, String> {
    let subnets = parse_subnet_key(prefix, key).ok_or_else(|| format!("key `{}` is not a subnet key", String::from_utf8_lossy(key)))?;
    let attrs: LeaseAttrs =
        serde_json::from_slice(value).map_err(|e| format!("value of `{}` is not a lease: {e}", String::from_utf8_lossy(key)))?;
    if subnets.v6.is_some() && attrs.public_ipv6.is_none() {
        return Err(format!("lease `{}` has an IPv6 subnet but no `PublicIPv6`", String::from_utf8_lossy(key)));
    }
    Ok(Lease { subnets, attrs })
}
