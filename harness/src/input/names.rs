//! Validated names and addresses: run ids, host names, interface names, prefixes of
//! either address family (one generic [`Net`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

/// An IP address family: what [`Net`] and the lab's per-family kernel entries are generic
/// over (`Ipv4Addr`, `Ipv6Addr`).
pub trait Family:
    Copy + Eq + Ord + std::hash::Hash + fmt::Debug + fmt::Display + FromStr + Into<IpAddr> + Serialize + Send + Sync + 'static
{
    /// Address length in bits.
    const BITS: u8;
    /// `IPv4`, `IPv6`.
    const NAME: &'static str;
    /// A prefix to show in error messages.
    const EXAMPLE: &'static str;
    /// What [`Net::nth`] counts in (u32 for IPv4, u128 for IPv6).
    type Index: Into<u128>;
    fn to_bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
    /// This family's half of an address of either family.
    fn from_ip(ip: IpAddr) -> Option<Self>;
}

impl Family for Ipv4Addr {
    const BITS: u8 = 32;
    const NAME: &'static str = "IPv4";
    const EXAMPLE: &'static str = "192.168.99.0/24";
    type Index = u32;
    fn to_bits(self) -> u128 {
        u32::from(self).into()
    }
    fn from_bits(bits: u128) -> Self {
        Ipv4Addr::from(bits as u32)
    }
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
}

impl Family for Ipv6Addr {
    const BITS: u8 = 128;
    const NAME: &'static str = "IPv6";
    const EXAMPLE: &'static str = "fd00:99::/64";
    type Index = u128;
    fn to_bits(self) -> u128 {
        self.into()
    }
    fn from_bits(bits: u128) -> Self {
        Ipv6Addr::from(bits)
    }
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
}

/// A prefix of family `A`; the address is the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net<A> {
    addr: A,
    prefix: u8,
}

/// An IPv4 prefix.
pub type Ipv4Net = Net<Ipv4Addr>;
/// An IPv6 prefix.
pub type Ipv6Net = Net<Ipv6Addr>;

impl<A: Family> Net<A> {
    /// The prefix of `addr` with host bits cleared; None when `prefix` is too long.
    pub fn new(addr: A, prefix: u8) -> Option<Net<A>> {
        if prefix > A::BITS {
            return None;
        }
        let host_bits = u32::from(A::BITS - prefix);
        let mask = if prefix == 0 { 0 } else { (u128::MAX >> (128 - u32::from(A::BITS))) >> host_bits << host_bits };
        Some(Net { addr: A::from_bits(addr.to_bits() & mask), prefix })
    }
    pub fn addr(&self) -> A {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    /// The `n`th address from the network address (wrapping).
    pub fn nth(&self, n: A::Index) -> A {
        A::from_bits(self.addr.to_bits().wrapping_add(n.into()))
    }
    pub fn contains(&self, ip: A) -> bool {
        Net::new(ip, self.prefix).is_some_and(|n| n.addr == self.addr)
    }
    pub fn contains_net(&self, other: &Net<A>) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
    /// The `k`th /`len` subnet of this prefix; None when `len` is shorter than the prefix
    /// or `k` lies beyond its end.
    pub fn subnet_at(&self, len: u8, k: u128) -> Option<Net<A>> {
        if len < self.prefix || len > A::BITS || (len - self.prefix < 128 && k >> (len - self.prefix) != 0) {
            return None;
        }
        let step = 1u128.checked_shl(u32::from(A::BITS - len))?;
        Net::new(A::from_bits(self.addr.to_bits().checked_add(k.checked_mul(step)?)?), len)
    }
}

impl Ipv4Net {
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
}

impl<A: Family> fmt::Display for Net<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<A: Family> FromStr for Net<A> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an {} prefix like {}", A::NAME, A::EXAMPLE);
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: A = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let net = Net::new(addr, prefix).ok_or_else(bad)?;
        if net.addr != addr {
            return Err(format!("`{s}` has host bits set; did you mean {net}?"));
        }
        Ok(net)
    }
}

impl<'de, A: Family> Deserialize<'de> for Net<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl<A: Family> Serialize for Net<A> {
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
        assert!("10.0.0.0/8".parse::<Ipv6Net>().unwrap_err().contains("not an IPv6 prefix like fd00:99::/64"));
        assert_eq!(Ipv6Net::new("fd00::1".parse().unwrap(), 0).unwrap().to_string(), "::/0");
        assert_eq!(Ipv6Net::new("fd00::1".parse().unwrap(), 128).unwrap().to_string(), "fd00::1/128");
        assert_eq!(Ipv4Net::new("10.1.2.3".parse().unwrap(), 32).unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(Ipv4Net::new("10.1.2.3".parse().unwrap(), 1).unwrap().to_string(), "0.0.0.0/1");
        assert!(Ipv4Net::new("10.1.2.3".parse().unwrap(), 33).is_none());
        let n: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(n.subnet_at(24, 255).unwrap().to_string(), "10.244.255.0/24");
        assert_eq!(n.subnet_at(24, 256), None);
        assert_eq!(n.subnet_at(8, 0), None);
        assert_eq!(n6.subnet_at(64, 0xff).unwrap().to_string(), "fd00:10:244:ff::/64");
        assert_eq!(n6.subnet_at(64, 0x100), None);
        assert_eq!(n6.subnet_at(128, 3).unwrap().to_string(), "fd00:10:244::3/128");
    }
}
