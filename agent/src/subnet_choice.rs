//! Which subnet to lease, decided without I/O: [`crate::lease::Registry::acquire`] lists
//! the keys under `<prefix>/subnets/`, asks [`choose_subnet`], and then writes the choice
//! to etcd with a transaction that fails if someone else got there first.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::config::NetConf;
use crate::ipnet::Ipv4Net;

/// A random free subnet is drawn from this many of the lowest free ones.
const RANDOM_AMONG: usize = 100;

/// One key under `<prefix>/subnets/` as found when choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub subnet: Ipv4Net,
    /// The lease's PublicIP; None when its value is malformed (the subnet stays taken).
    pub public_ip: Option<Ipv4Addr>,
}

/// What [`choose_subnet`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A lease for our PublicIP already exists (one of the `taken` keys): write over it.
    Reuse(Ipv4Net),
    /// Nobody holds this subnet: create its key.
    Claim(Ipv4Net),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("out of subnets: every /{len} between {min} and {max} is leased")]
pub struct OutOfSubnets {
    pub len: u8,
    pub min: Ipv4Net,
    pub max: Ipv4Net,
}

/// Picks the subnet for the host at `public_ip`:
/// 1. the lease already registered for `public_ip`, if it is a /`SubnetLen` inside
///    `Network` (flanneld also demands `SubnetMin`..`SubnetMax` here); the last such key
///    wins if there are several,
/// 2. else `previous` (from the subnet file) if it is a /`SubnetLen` between `SubnetMin`
///    and `SubnetMax` and nobody holds it,
/// 3. else a random free subnet among the lowest free ones between `SubnetMin` and `SubnetMax`.
pub fn choose_subnet(
    conf: &NetConf,
    public_ip: Ipv4Addr,
    taken: &[Taken],
    previous: Option<Ipv4Net>,
    rng: &mut impl Rng,
) -> Result<Choice, OutOfSubnets> {
    let ours = |t: &&Taken| t.public_ip == Some(public_ip) && conf.network.contains_net(&t.subnet) && t.subnet.prefix() == conf.subnet_len;
    if let Some(t) = taken.iter().rev().find(ours) {
        return Ok(Choice::Reuse(t.subnet));
    }
    let held: BTreeSet<Ipv4Net> = taken.iter().map(|t| t.subnet).collect();
    let is_taken = |s: &Ipv4Net| held.contains(s);
    let in_range = |s: &Ipv4Net| *s >= conf.subnet_min && *s <= conf.subnet_max && s.prefix() == conf.subnet_len;
    if let Some(p) = previous.filter(|p| in_range(p) && !is_taken(p)) {
        return Ok(Choice::Claim(p));
    }
    let free: Vec<Ipv4Net> = conf.subnets().filter(|s| !is_taken(s)).take(RANDOM_AMONG).collect();
    match free.choose(rng) {
        Some(s) => Ok(Choice::Claim(*s)),
        None => Err(OutOfSubnets { len: conf.subnet_len, min: conf.subnet_min, max: conf.subnet_max }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const ME: &str = "192.168.99.1";

    /// 10.244.0.0/16 in /24s, leases only from 10.244.10.0 to 10.244.20.0.
    fn conf() -> NetConf {
        NetConf::parse(r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","Backend":{"Type":"vxlan"}}"#)
            .unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn held(subnet: &str, ip: &str) -> Taken {
        Taken { subnet: net(subnet), public_ip: Some(ip.parse().unwrap()) }
    }

    fn choose(conf: &NetConf, taken: &[Taken], previous: Option<&str>, seed: u64) -> Result<Choice, OutOfSubnets> {
        choose_subnet(conf, ME.parse().unwrap(), taken, previous.map(net), &mut StdRng::seed_from_u64(seed))
    }

    fn claimed(c: Result<Choice, OutOfSubnets>) -> Ipv4Net {
        match c {
            Ok(Choice::Claim(s)) => s,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    fn assert_claim_in_range(conf: &NetConf, taken: &[Taken], s: Ipv4Net) {
        assert_eq!(s.prefix(), conf.subnet_len, "{s}");
        assert!(s >= conf.subnet_min && s <= conf.subnet_max, "{s} outside SubnetMin..SubnetMax");
        assert!(!taken.iter().any(|t| t.subnet == s), "{s} is taken");
    }

    #[test]
    fn lease_of_our_public_ip_wins_over_previous() {
        let taken = [held("10.244.12.0/24", "192.168.99.2"), held("10.244.15.0/24", ME)];
        assert_eq!(choose(&conf(), &taken, Some("10.244.11.0/24"), 0), Ok(Choice::Reuse(net("10.244.15.0/24"))));
    }

    #[test]
    fn lease_of_our_public_ip_in_another_network_or_length_is_not_reused() {
        for other in ["10.245.3.0/24", "10.244.12.0/25"] {
            let taken = [held(other, ME)];
            assert_claim_in_range(&conf(), &taken, claimed(choose(&conf(), &taken, None, 0)));
        }
    }

    #[test]
    fn previous_subnet_is_claimed_when_free() {
        let taken = [held("10.244.12.0/24", "192.168.99.2")];
        for seed in 0..20 {
            assert_eq!(choose(&conf(), &taken, Some("10.244.17.0/24"), seed), Ok(Choice::Claim(net("10.244.17.0/24"))));
        }
    }

    #[test]
    fn previous_subnet_held_by_another_host_gives_a_different_free_one() {
        let c = conf();
        let taken = [held("10.244.17.0/24", "192.168.99.2")];
        for seed in 0..20 {
            let s = claimed(choose(&c, &taken, Some("10.244.17.0/24"), seed));
            assert_ne!(s, net("10.244.17.0/24"));
            assert_claim_in_range(&c, &taken, s);
        }
        // a malformed value still holds its subnet
        let malformed = [Taken { subnet: net("10.244.17.0/24"), public_ip: None }];
        let s = claimed(choose(&c, &malformed, Some("10.244.17.0/24"), 0));
        assert_claim_in_range(&c, &malformed, s);
    }

    #[test]
    fn previous_subnet_outside_min_max_or_of_another_length_is_ignored() {
        let c = conf();
        for previous in ["10.244.9.0/24", "10.244.21.0/24", "10.245.12.0/24", "10.244.12.0/25", "10.244.12.0/23"] {
            for seed in 0..20 {
                let s = claimed(choose(&c, &[], Some(previous), seed));
                assert_ne!(s, net(previous));
                assert_claim_in_range(&c, &[], s);
            }
        }
    }

    #[test]
    fn full_network_is_an_error_unless_we_hold_a_lease() {
        let c = conf();
        let others: Vec<Taken> =
            c.subnets().enumerate().map(|(i, s)| Taken { subnet: s, public_ip: Some(Ipv4Addr::new(192, 168, 1, i as u8)) }).collect();
        assert_eq!(
            choose(&c, &others, Some("10.244.12.0/24"), 0),
            Err(OutOfSubnets { len: 24, min: net("10.244.10.0/24"), max: net("10.244.20.0/24") })
        );
        let mut with_ours = others.clone();
        with_ours[4].public_ip = Some(ME.parse().unwrap());
        assert_eq!(choose(&c, &with_ours, None, 0), Ok(Choice::Reuse(net("10.244.14.0/24"))));
        // the last free subnet is found
        let one_free: Vec<Taken> = others.into_iter().filter(|t| t.subnet != net("10.244.20.0/24")).collect();
        assert_eq!(choose(&c, &one_free, None, 0), Ok(Choice::Claim(net("10.244.20.0/24"))));
    }

    #[test]
    fn random_choice_is_free_within_min_max_and_varies() {
        let c = conf();
        let taken = [
            held("10.244.10.0/24", "192.168.99.2"),
            held("10.244.13.0/24", "192.168.99.3"),
            held("10.244.20.0/24", "192.168.99.4"),
            held("10.244.40.0/24", "192.168.99.5"),
        ];
        let mut seen = BTreeSet::new();
        for seed in 0..500 {
            let s = claimed(choose(&c, &taken, None, seed));
            assert_claim_in_range(&c, &taken, s);
            seen.insert(s);
        }
        let free: BTreeSet<Ipv4Net> = c.subnets().filter(|s| !taken.iter().any(|t| t.subnet == *s)).collect();
        assert_eq!(seen, free, "every free subnet is drawn for some seed");
    }
}
