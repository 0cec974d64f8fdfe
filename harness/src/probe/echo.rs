//! Echoes in either family: the IPv4 ([`super::icmp`]) or IPv6 ([`super::icmp6`]) probe,
//! chosen by the address.

use std::time::Duration;

use super::icmp::{ping, sweep, PingOutcome};
use super::icmp6::{ping6, sweep6};
use crate::error::Error;
use crate::lab::netns::Netns;

/// [`ping`] or [`ping6`] by the family of `dst`; `payload` is the ICMP payload, so a
/// packet is `payload` + 28 bytes over IPv4 and `payload` + 48 over IPv6.
pub fn ping_any(ns: &Netns, dst: std::net::IpAddr, payload: usize, df: bool, timeout: Duration) -> Result<PingOutcome, Error> {
    match dst {
        std::net::IpAddr::V4(d) => ping(ns, d, payload, df, timeout),
        std::net::IpAddr::V6(d) => ping6(ns, d, payload, df, timeout),
    }
}

/// [`sweep`] or [`sweep6`], by the family of `src` (the destinations must match it).
pub fn sweep_any(
    ns: &Netns,
    src: std::net::IpAddr,
    dsts: Vec<std::net::IpAddr>,
    attempts: u32,
    timeout: Duration,
) -> Result<Vec<PingOutcome>, Error> {
    use std::net::IpAddr;
    match src {
        IpAddr::V4(s) => {
            let d = dsts.into_iter().filter_map(|d| if let IpAddr::V4(d) = d { Some(d) } else { None }).collect();
            sweep(ns, s, d, attempts, timeout)
        }
        IpAddr::V6(s) => {
            let d = dsts.into_iter().filter_map(|d| if let IpAddr::V6(d) = d { Some(d) } else { None }).collect();
            sweep6(ns, s, d, attempts, timeout)
        }
    }
}

/// Pings until a reply or `attempts` tries (ARP on a fresh path can eat the first one).
pub fn ping_with_retries(ns: &Netns, dst: std::net::IpAddr, attempts: u32, timeout: Duration) -> Result<PingOutcome, Error> {
    let mut last = PingOutcome::Timeout;
    for _ in 0..attempts {
        last = ping_any(ns, dst, 56, false, timeout)?;
        if last.is_reply() {
            break;
        }
    }
    Ok(last)
}
