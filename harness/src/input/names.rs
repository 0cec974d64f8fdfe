//! Validated names and addresses: run ids, host names, interface names, IPv4 and IPv6
//! prefixes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every namespace a run makes is called `fl<4 hex>-…`; `flannel-lab gc` looks for this.
pub const NETNS_PREFIX: &str = "fl";

/// A run's short id: four hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u16);

impl RunId {
    pub fn random() -> RunId {
        RunId(rand::random())
    }
    /// `fl3a9c-NAME`
    pub fn netns(&self, name: &str) -> String {
        format!("{NETNS_PREFIX}{self}-{name}")
    }
    /// A locally administered MAC that depends only on the run and `tag`.
    pub fn stable_mac(&self, tag: u8) -> [u8; 6] {
        let [hi, lo] = self.0.to_be_bytes();
        [0x02, 0xf1, 0xab, hi, lo, tag]
    }

    /// Parses the run id out of a lab namespace name such as `fl3a9c-h1`.
    pub fn from_netns(name: &str) -> Option<RunId> {
        let rest = name.strip_prefix(NETNS_PREFIX)?;
        let (hex, tail) = rest.split_at_checked(4)?;
        if !tail.starts_with('-') || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        u16::from_str_radix(hex, 16).ok().map(RunId)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}", self.0)
    }
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() == 4 {
            if let Ok(v) = u16::from_str_radix(s, 16) {
                return Ok(RunId(v));
            }
        }
        Err(format!("`{s}` is not a run id (four hex digits)"))
    }
}

/// A lab host's name: lowercase letters, digits and `-`, 1–12 bytes, so that derived
/// interface names (`p-NAME`) fit Linux's 15-byte limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HostName(String);

impl HostName {
    pub const MAX: usize = 12;
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok_chars = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty() || s.len() > Self::MAX || !ok_chars || s.starts_with('-') {
            return Err(format!("`{s}` is not a host name: use 1-{} of a-z, 0-9 and `-`, not starting with `-`", Self::MAX));
        }
        Ok(HostName(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 prefix; the address is the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
        Some(Ipv4Net { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix })
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }
    /// Usable host addresses (network and broadcast excluded below /31).
    pub fn host_capacity(&self) -> u64 {
        if self.prefix >= 31 {
            self.size()
        } else {
            self.size() - 2
        }
    }
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Ipv4Net::new(ip, self.prefix).is_some_and(|n| n.addr == self.addr)
    }
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an IPv4 prefix like 192.168.99.0/24");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let net = Ipv4Net::new(addr, prefix).ok_or_else(bad)?;
        if net.addr != addr {
            return Err(format!("`{s}` has host bits set; did you mean {net}?"));
        }
        Ok(net)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IPv6 prefix; the address is the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix: u8,
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Option<Ipv6Net> {
        if prefix > 128 {
            return None;
        }
        let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
        Some(Ipv6Net { addr: Ipv6Addr::from(u128::from(addr) & mask), prefix })
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn nth(&self, n: u128) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr).wrapping_add(n))
    }
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        Ipv6Net::new(ip, self.prefix).is_some_and(|n| n.addr == self.addr)
    }
    pub fn contains_net(&self, other: &Ipv6Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an IPv6 prefix like fd00:99::/64");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let net = Ipv6Net::new(addr, prefix).ok_or_else(bad)?;
        if net.addr != addr {
            return Err(format!("`{s}` has host bits set; did you mean {net}?"));
        }
        Ok(net)
    }
}

impl<'de> Deserialize<'de> for Ipv6Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Ipv6Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_round_trip_through_netns_names() {
        let id: RunId = "3a9c".parse().unwrap();
        assert_eq!(id.netns("h1"), "fl3a9c-h1");
        assert_eq!(RunId::from_netns("fl3a9c-h1-p2"), Some(id));
        assert_eq!(RunId::from_netns("fl3a9c"), None);
        assert_eq!(RunId::from_netns("flannel-x"), None);
        assert_eq!(RunId::from_netns("fl3A9c-h1"), None);
    }

    #[test]
    fn host_names() {
        assert!("node-1".parse::<HostName>().is_ok());
        assert!("Node".parse::<HostName>().is_err());
        assert!("a-very-long-name".parse::<HostName>().is_err());
        assert!("-x".parse::<HostName>().is_err());
    }

    #[test]
    fn prefixes() {
        let n: Ipv4Net = "192.168.99.0/24".parse().unwrap();
        assert_eq!(n.host_capacity(), 254);
        assert!(n.contains("192.168.99.7".parse().unwrap()));
        assert!("192.168.99.1/24".parse::<Ipv4Net>().unwrap_err().contains("did you mean 192.168.99.0/24"));
        assert!("192.168.99.0/40".parse::<Ipv4Net>().is_err());
        assert_eq!(Ipv4Net::new("10.0.0.0".parse().unwrap(), 0).unwrap().size(), 1 << 32);
        let n6: Ipv6Net = "fd00:10:244::/56".parse().unwrap();
        assert!(n6.contains_net(&"fd00:10:244:1::/64".parse().unwrap()));
        assert!(!n6.contains("fd00:10:245::1".parse().unwrap()));
        assert_eq!(n6.nth(1).to_string(), "fd00:10:244::1");
        assert!("fd00::1/64".parse::<Ipv6Net>().unwrap_err().contains("did you mean fd00::/64"));
    }
}
