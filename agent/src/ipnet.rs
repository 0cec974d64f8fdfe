//! IPv4 prefixes: the only address arithmetic the agent needs (subnet ranges, keys).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network such as `10.244.68.0/24`; the address is always the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseNetError {
    #[error("`{0}` is not an IPv4 prefix like 10.244.0.0/16")]
    Syntax(String),
    #[error("`{0}` has host bits set (did you mean {1}?)")]
    HostBits(String, Ipv4Net),
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

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = ParseNetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ParseNetError::Syntax(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| syntax())?;
        let prefix: u8 = p.parse().map_err(|_| syntax())?;
        let net = Ipv4Net::new(addr, prefix).ok_or_else(syntax)?;
        if net.addr != addr {
            return Err(ParseNetError::HostBits(s.to_string(), net));
        }
        Ok(net)
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
}
