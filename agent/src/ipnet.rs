//! IP prefixes: the only address arithmetic the agent needs (subnet ranges, keys).
//! [`Ipv4Net`] and [`Ipv6Net`] share one shape, and [`IpNet`] lets the code that is the
//! same for both families (subnet pools, peer bookkeeping) be written once.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 network such as `10.244.68.0/24`; the address is always the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

/// An IPv6 network such as `fd00:10:244:1::/64`; the address is always the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseNetError {
    #[error("`{text}` is not an {family} prefix like {example}")]
    Syntax { text: String, family: &'static str, example: &'static str },
    #[error("`{0}` has host bits set (did you mean {1}?)")]
    HostBits(String, String),
}

/// What both families' prefixes offer to code written once for either.
pub trait IpNet: Copy + Ord + Hash + fmt::Debug + fmt::Display + FromStr<Err = ParseNetError> + Send + Sync + 'static {
    type Addr: Copy + Ord + Hash + fmt::Debug + fmt::Display + FromStr + Into<IpAddr> + Send + Sync + 'static;
    /// `IPv4` or `IPv6`, for messages.
    const FAMILY: &'static str;
    /// Address length in bits.
    const BITS: u8;
    fn new(addr: Self::Addr, prefix: u8) -> Option<Self>;
    fn addr(&self) -> Self::Addr;
    fn prefix(&self) -> u8;
    fn contains(&self, ip: Self::Addr) -> bool;
    /// The next prefix of the same length, if it does not wrap around.
    fn next(&self) -> Option<Self>;
    /// The address as a number (IPv4 in the low 32 bits).
    fn bits(addr: Self::Addr) -> u128;
    fn from_bits(bits: u128) -> Self::Addr;
    /// The address of this family inside `ip`, if it is one.
    fn from_ip(ip: IpAddr) -> Option<Self::Addr>;

    fn contains_net(&self, other: &Self) -> bool {
        other.prefix() >= self.prefix() && self.contains(other.addr())
    }
    /// Whether the two prefixes share any address.
    fn overlaps(&self, other: &Self) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }
}

/// How many prefixes of `from`'s length lie between `from` and `to` (`to` not below `from`).
pub fn distance<N: IpNet>(from: &N, to: &N) -> Option<u128> {
    let (a, b) = (N::bits(from.addr()), N::bits(to.addr()));
    (b >= a && from.prefix() == to.prefix()).then(|| (b - a) >> (N::BITS - from.prefix()))
}

/// The prefix `n` steps after `from`, of the same length; None past the end of the space.
pub fn step<N: IpNet>(from: &N, n: u128) -> Option<N> {
    let shift = N::BITS - from.prefix();
    let offset = if shift >= 128 { (n == 0).then_some(0)? } else { n.checked_mul(1u128 << shift)? };
    let bits = N::bits(from.addr()).checked_add(offset)?;
    let max = if N::BITS == 128 { u128::MAX } else { (1u128 << N::BITS) - 1 };
    (bits <= max).then(|| N::new(N::from_bits(bits), from.prefix())).flatten()
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Self { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix })
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    /// Number of addresses, as u64 so a /0 fits.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
    /// The `n`-th address in the prefix (0 = network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
    /// The next prefix of the same length, if it does not wrap around.
    pub fn next(&self) -> Option<Ipv4Net> {
        let next = (u32::from(self.addr) as u64) + self.size();
        (next <= u32::MAX as u64).then(|| Ipv4Net { addr: Ipv4Addr::from(next as u32), prefix: self.prefix })
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Option<Self> {
        (prefix <= 128).then(|| Self { addr: Ipv6Addr::from(u128::from(addr) & mask6(prefix)), prefix })
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix) == u128::from(self.addr)
    }
    pub fn contains_net(&self, other: &Ipv6Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
    /// The `n`-th address in the prefix (0 = network address).
    pub fn nth(&self, n: u128) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr).wrapping_add(n))
    }
    /// The next prefix of the same length, if it does not wrap around.
    pub fn next(&self) -> Option<Ipv6Net> {
        if self.prefix == 0 {
            return None;
        }
        let next = u128::from(self.addr).checked_add(1u128 << (128 - self.prefix))?;
        Some(Ipv6Net { addr: Ipv6Addr::from(next), prefix: self.prefix })
    }
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    }
}

impl IpNet for Ipv4Net {
    type Addr = Ipv4Addr;
    const FAMILY: &'static str = "IPv4";
    const BITS: u8 = 32;
    fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        Ipv4Net::new(addr, prefix)
    }
    fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    fn prefix(&self) -> u8 {
        self.prefix
    }
    fn contains(&self, ip: Ipv4Addr) -> bool {
        Ipv4Net::contains(self, ip)
    }
    fn next(&self) -> Option<Self> {
        Ipv4Net::next(self)
    }
    fn bits(addr: Ipv4Addr) -> u128 {
        u32::from(addr) as u128
    }
    fn from_bits(bits: u128) -> Ipv4Addr {
        Ipv4Addr::from(bits as u32)
    }
    fn from_ip(ip: IpAddr) -> Option<Ipv4Addr> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
}

impl IpNet for Ipv6Net {
    type Addr = Ipv6Addr;
    const FAMILY: &'static str = "IPv6";
    const BITS: u8 = 128;
    fn new(addr: Ipv6Addr, prefix: u8) -> Option<Self> {
        Ipv6Net::new(addr, prefix)
    }
    fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    fn prefix(&self) -> u8 {
        self.prefix
    }
    fn contains(&self, ip: Ipv6Addr) -> bool {
        Ipv6Net::contains(self, ip)
    }
    fn next(&self) -> Option<Self> {
        Ipv6Net::next(self)
    }
    fn bits(addr: Ipv6Addr) -> u128 {
        u128::from(addr)
    }
    fn from_bits(bits: u128) -> Ipv6Addr {
        Ipv6Addr::from(bits)
    }
    fn from_ip(ip: IpAddr) -> Option<Ipv6Addr> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `ADDR/LEN` with no host bits set.
fn parse_prefix<N: IpNet>(s: &str, example: &'static str) -> Result<N, ParseNetError> {
    let syntax = || ParseNetError::Syntax { text: s.to_string(), family: N::FAMILY, example };
    let (a, p) = s.split_once('/').ok_or_else(syntax)?;
    let addr: N::Addr = a.parse().map_err(|_| syntax())?;
    let prefix: u8 = p.parse().map_err(|_| syntax())?;
    let net = N::new(addr, prefix).ok_or_else(syntax)?;
    if net.addr() != addr {
        return Err(ParseNetError::HostBits(s.to_string(), net.to_string()));
    }
    Ok(net)
}

impl FromStr for Ipv4Net {
    type Err = ParseNetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_prefix(s, "10.244.0.0/16")
    }
}

impl FromStr for Ipv6Net {
    type Err = ParseNetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_prefix(s, "fd00:10:244::/56")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_walks() {
        let n: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(n.size(), 65536);
        assert!(n.contains("10.244.200.1".parse().unwrap()));
        assert!(!n.contains("10.245.0.1".parse().unwrap()));
        let s = Ipv4Net::new("10.244.1.0".parse().unwrap(), 24).unwrap();
        assert_eq!(s.next().unwrap().to_string(), "10.244.2.0/24");
        assert!(n.contains_net(&s));
    }

    #[test]
    fn rejects_host_bits_and_garbage() {
        assert!(matches!("10.244.1.1/16".parse::<Ipv4Net>(), Err(ParseNetError::HostBits(..))));
        assert!("10.244.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.244.0.0/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn ipv6_parses_and_walks() {
        let n: Ipv6Net = "fd00:10:244::/56".parse().unwrap();
        assert!(n.contains("fd00:10:244:ff::1".parse().unwrap()));
        assert!(!n.contains("fd00:10:245::1".parse().unwrap()));
        let s = Ipv6Net::new("fd00:10:244:1::".parse().unwrap(), 64).unwrap();
        assert_eq!(s.to_string(), "fd00:10:244:1::/64");
        assert_eq!(s.next().unwrap().to_string(), "fd00:10:244:2::/64");
        assert_eq!(s.nth(1).to_string(), "fd00:10:244:1::1");
        assert!(n.contains_net(&s) && !s.contains_net(&n));
        assert!(IpNet::overlaps(&n, &s) && IpNet::overlaps(&s, &n));
        let last: Ipv6Net = "ffff:ffff:ffff:ffff::/64".parse().unwrap();
        assert_eq!(last.next(), None, "no wrap-around");
        assert_eq!(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0).unwrap().next(), None);
    }

    #[test]
    fn ipv6_rejects_host_bits_and_garbage() {
        let e = "fd00:10:244::1/56".parse::<Ipv6Net>().unwrap_err();
        assert_eq!(e, ParseNetError::HostBits("fd00:10:244::1/56".into(), "fd00:10:244::/56".into()));
        assert!("fd00::".parse::<Ipv6Net>().is_err());
        assert!("fd00::/129".parse::<Ipv6Net>().is_err());
        let e = "10.0.0.0/8".parse::<Ipv6Net>().unwrap_err().to_string();
        assert_eq!(e, "`10.0.0.0/8` is not an IPv6 prefix like fd00:10:244::/56");
    }

    #[test]
    fn distance_and_step_agree_in_both_families() {
        let a: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let b: Ipv4Net = "10.244.7.0/24".parse().unwrap();
        assert_eq!(distance(&a, &b), Some(6));
        assert_eq!(distance(&b, &a), None);
        assert_eq!(step(&a, 6), Some(b));
        assert_eq!(step(&"255.255.255.0/24".parse::<Ipv4Net>().unwrap(), 1), None);
        let a6: Ipv6Net = "fd00:10:244:1::/64".parse().unwrap();
        assert_eq!(step(&a6, 6).unwrap().to_string(), "fd00:10:244:7::/64");
        assert_eq!(distance(&a6, &step(&a6, 300).unwrap()), Some(300));
        assert_eq!(step(&"ffff:ffff:ffff:ffff::/64".parse::<Ipv6Net>().unwrap(), 1), None);
    }
}
