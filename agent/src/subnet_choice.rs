//! Which subnets to lease, decided without I/O: the lease registry's `acquire` lists
//! the keys under `<prefix>/subnets/`, asks [`choose_subnets`], and then writes the choice
//! to etcd with a transaction that fails if someone else got there first.
//!
//! Each enabled family gets one subnet from its pool. The IPv6 subnet is picked together
//! with the IPv4 one: the same index from `IPv6SubnetMin` as the IPv4 subnet has from
//! `SubnetMin` when that one is free, so `10.244.5.0/24` tends to pair with
//! `fd00:10:244:5::/64`. An IPv6 subnet never overlaps another lease's.

use std::net::{Ipv4Addr, Ipv6Addr};

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::config::{NetConf, Pool};
use crate::ipnet::{distance, step, IpNet, Ipv4Net, Ipv6Net};
use crate::lease::types::Subnets;

/// A random free subnet is drawn from this many of the lowest free ones.
const RANDOM_AMONG: usize = 100;

/// One key under `<prefix>/subnets/` as found when choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub subnets: Subnets,
    /// The lease's PublicIP; None when its value is malformed (the subnets stay taken).
    pub public_ip: Option<Ipv4Addr>,
    /// The lease's PublicIPv6; None when it has none or its value is malformed.
    pub public_ipv6: Option<Ipv6Addr>,
}

/// The subnets the previous run wrote to the subnet file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

/// What [`choose_subnets`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A lease of this host with exactly these subnets exists (one of `taken`): write over it.
    Reuse(Subnets),
    /// Nobody holds these subnets: create their key.
    Claim(Subnets),
    /// A lease of this host exists with other families than are enabled now (IPv6 was
    /// turned on or off): delete `old` and create `new`, which keeps what `old` had.
    Replace { old: Subnets, new: Subnets },
}

impl Choice {
    /// The subnets this host will hold.
    pub fn subnets(&self) -> Subnets {
        match *self {
            Choice::Reuse(s) | Choice::Claim(s) => s,
            Choice::Replace { new, .. } => new,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutOfSubnets {
    #[error("out of subnets: every /{len} between {min} and {max} is leased")]
    V4 { len: u8, min: Ipv4Net, max: Ipv4Net },
    #[error("out of subnets: every IPv6 /{len} between {min} and {max} is leased")]
    V6 { len: u8, min: Ipv6Net, max: Ipv6Net },
}

/// Picks the subnets for the host at `public_ip` (used when IPv4 is enabled) and
/// `public_ipv6` (when IPv6 is):
/// 1. the lease already registered for this host: the last one whose PublicIP and/or
///    PublicIPv6 match with a subnet of the right length inside the network (flanneld
///    also demands `SubnetMin`..`SubnetMax` here), one matching both families first. Its
///    subnets that fit are kept;
/// 2. else, per family, the `previous` subnet (from the subnet file) if it lies between
///    `SubnetMin` and `SubnetMax` and nobody holds it;
/// 3. else, for IPv6, the subnet at the IPv4 subnet's index if free;
/// 4. else a random free subnet among the lowest free ones between `SubnetMin` and `SubnetMax`.
pub fn choose_subnets(
    conf: &NetConf,
    public_ip: Ipv4Addr,
    public_ipv6: Option<Ipv6Addr>,
    taken: &[Taken],
    previous: Previous,
    rng: &mut impl Rng,
) -> Result<Choice, OutOfSubnets> {
    let v4_match = |t: &Taken| match (&conf.ipv4, t.subnets.v4) {
        (Some(pool), Some(s)) => t.public_ip == Some(public_ip) && pool.fits(&s),
        _ => false,
    };
    let v6_match = |t: &Taken| match (&conf.ipv6, t.subnets.v6, public_ipv6) {
        (Some(pool), Some(s), Some(me)) => t.public_ipv6 == Some(me) && pool.fits(&s),
        _ => false,
    };
    let mut ours: Option<&Taken> = None;
    let mut best = 0;
    for t in taken {
        let score = v4_match(t) as u8 + v6_match(t) as u8;
        if score > 0 && score >= best {
            (ours, best) = (Some(t), score);
        }
    }
    let others: Vec<&Taken> = taken.iter().filter(|t| ours.is_none_or(|o| o.subnets != t.subnets)).collect();
    let v4 = match &conf.ipv4 {
        None => None,
        Some(pool) => {
            let kept = ours.and_then(|t| t.subnets.v4).filter(|s| pool.fits(s));
            let held = |s: &Ipv4Net| others.iter().any(|t| t.subnets.v4 == Some(*s));
            let s = pick(pool, kept, previous.v4, None, held, rng);
            Some(s.ok_or(OutOfSubnets::V4 { len: pool.subnet_len, min: pool.subnet_min, max: pool.subnet_max })?)
        }
    };
    let index = conf.ipv4.zip(v4).and_then(|(pool, s)| distance(&pool.subnet_min, &s));
    let v6 = match &conf.ipv6 {
        None => None,
        Some(pool) => {
            let kept = ours.and_then(|t| t.subnets.v6).filter(|s| pool.fits(s));
            let held = |s: &Ipv6Net| others.iter().any(|t| t.subnets.v6.is_some_and(|o| o.overlaps(s)));
            let s = pick(pool, kept, previous.v6, index, held, rng);
            Some(s.ok_or(OutOfSubnets::V6 { len: pool.subnet_len, min: pool.subnet_min, max: pool.subnet_max })?)
        }
    };
    let new = Subnets { v4, v6 };
    Ok(match ours {
        Some(t) if t.subnets == new => Choice::Reuse(new),
        Some(t) => Choice::Replace { old: t.subnets, new },
        None => Choice::Claim(new),
    })
}

/// One family's subnet: `kept` (this host's already), else `previous` if claimable, else
/// the one `index` subnets from `SubnetMin` if claimable, else a random free one.
fn pick<N: IpNet>(
    pool: &Pool<N>,
    kept: Option<N>,
    previous: Option<N>,
    index: Option<u128>,
    held: impl Fn(&N) -> bool,
    rng: &mut impl Rng,
) -> Option<N> {
    if kept.is_some() {
        return kept;
    }
    let claimable = |s: &N| pool.in_range(s) && !held(s);
    if let Some(p) = previous.filter(claimable) {
        return Some(p);
    }
    if let Some(s) = index.and_then(|i| step(&pool.subnet_min, i)).filter(claimable) {
        return Some(s);
    }
    let free: Vec<N> = pool.subnets().filter(|s| !held(s)).take(RANDOM_AMONG).collect();
    free.choose(rng).copied()
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

    /// An IPv4-only key.
    fn s4(s: &str) -> Subnets {
        Subnets::v4(net(s))
    }

    fn held(subnet: &str, ip: &str) -> Taken {
        Taken { subnets: s4(subnet), public_ip: Some(ip.parse().unwrap()), public_ipv6: None }
    }

    fn choose(conf: &NetConf, taken: &[Taken], previous: Option<&str>, seed: u64) -> Result<Choice, OutOfSubnets> {
        let previous = Previous { v4: previous.map(net), v6: None };
        choose_subnets(conf, ME.parse().unwrap(), None, taken, previous, &mut StdRng::seed_from_u64(seed))
    }

    fn claimed(c: Result<Choice, OutOfSubnets>) -> Ipv4Net {
        match c {
            Ok(Choice::Claim(Subnets { v4: Some(s), v6: None })) => s,
            other => panic!("expected an IPv4 claim, got {other:?}"),
        }
    }

    fn assert_claim_in_range(conf: &NetConf, taken: &[Taken], s: Ipv4Net) {
        let pool = conf.ipv4.unwrap();
        assert_eq!(s.prefix(), pool.subnet_len, "{s}");
        assert!(s >= pool.subnet_min && s <= pool.subnet_max, "{s} outside SubnetMin..SubnetMax");
        assert!(!taken.iter().any(|t| t.subnets.v4 == Some(s)), "{s} is taken");
    }

    #[test]
    fn lease_of_our_public_ip_wins_over_previous() {
        let taken = [held("10.244.12.0/24", "192.168.99.2"), held("10.244.15.0/24", ME)];
        assert_eq!(choose(&conf(), &taken, Some("10.244.11.0/24"), 0), Ok(Choice::Reuse(s4("10.244.15.0/24"))));
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
            assert_eq!(choose(&conf(), &taken, Some("10.244.17.0/24"), seed), Ok(Choice::Claim(s4("10.244.17.0/24"))));
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
        let malformed = [Taken { subnets: s4("10.244.17.0/24"), public_ip: None, public_ipv6: None }];
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
        let others: Vec<Taken> = c
            .ipv4
            .unwrap()
            .subnets()
            .enumerate()
            .map(|(i, s)| Taken { subnets: Subnets::v4(s), public_ip: Some(Ipv4Addr::new(192, 168, 1, i as u8)), public_ipv6: None })
            .collect();
        assert_eq!(
            choose(&c, &others, Some("10.244.12.0/24"), 0),
            Err(OutOfSubnets::V4 { len: 24, min: net("10.244.10.0/24"), max: net("10.244.20.0/24") })
        );
        let mut with_ours = others.clone();
        with_ours[4].public_ip = Some(ME.parse().unwrap());
        assert_eq!(choose(&c, &with_ours, None, 0), Ok(Choice::Reuse(s4("10.244.14.0/24"))));
        // the last free subnet is found
        let one_free: Vec<Taken> = others.into_iter().filter(|t| t.subnets != s4("10.244.20.0/24")).collect();
        assert_eq!(choose(&c, &one_free, None, 0), Ok(Choice::Claim(s4("10.244.20.0/24"))));
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
        let free: BTreeSet<Ipv4Net> = c.ipv4.unwrap().subnets().filter(|s| !taken.iter().any(|t| t.subnets.v4 == Some(*s))).collect();
        assert_eq!(seen, free, "every free subnet is drawn for some seed");
    }

    const ME6: &str = "fd00:1::1";

    /// Dual-stack: 10.244.0.0/16 in /24s from 10.244.10.0 to 10.244.20.0, and
    /// fd00:10:244::/56 in /64s from fd00:10:244:10:: to fd00:10:244:20::.
    fn dual() -> NetConf {
        NetConf::parse(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0",
                "EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:10::","IPv6SubnetMax":"fd00:10:244:20::",
                "Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap()
    }

    /// IPv6 only, the same IPv6 pool as [`dual`].
    fn only6() -> NetConf {
        NetConf::parse(
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:10::","IPv6SubnetMax":"fd00:10:244:20::",
                "Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap()
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn both(v4: &str, v6: &str) -> Subnets {
        Subnets { v4: Some(net(v4)), v6: Some(net6(v6)) }
    }

    fn s6(v6: &str) -> Subnets {
        Subnets { v4: None, v6: Some(net6(v6)) }
    }

    fn lease(subnets: Subnets, ip: Option<&str>, ip6: Option<&str>) -> Taken {
        Taken { subnets, public_ip: ip.map(|s| s.parse().unwrap()), public_ipv6: ip6.map(|s| s.parse().unwrap()) }
    }

    fn choose6(conf: &NetConf, taken: &[Taken], previous: Previous, seed: u64) -> Result<Choice, OutOfSubnets> {
        let me = if conf.ipv4.is_some() { ME.parse().unwrap() } else { Ipv4Addr::UNSPECIFIED };
        choose_subnets(conf, me, Some(ME6.parse().unwrap()), taken, previous, &mut StdRng::seed_from_u64(seed))
    }

    fn claim(c: Result<Choice, OutOfSubnets>) -> Subnets {
        match c {
            Ok(Choice::Claim(s)) => s,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[test]
    fn dual_stack_claims_both_families_at_the_same_index() {
        let c = dual();
        let taken = [lease(both("10.244.10.0/24", "fd00:10:244:10::/64"), Some("192.168.99.2"), Some("fd00:1::2"))];
        for seed in 0..50 {
            let s = claim(choose6(&c, &taken, Previous::default(), seed));
            let (v4, v6) = (s.v4.unwrap(), s.v6.unwrap());
            assert_claim_in_range(&c, &taken, v4);
            let index = distance(&net("10.244.10.0/24"), &v4).unwrap();
            assert_eq!(distance(&net6("fd00:10:244:10::/64"), &v6), Some(index), "{s}");
        }
        // previous subnets from the subnet file win, each on its own
        let previous = Previous { v4: Some(net("10.244.17.0/24")), v6: Some(net6("fd00:10:244:13::/64")) };
        assert_eq!(choose6(&c, &taken, previous, 0), Ok(Choice::Claim(both("10.244.17.0/24", "fd00:10:244:13::/64"))));
    }

    #[test]
    fn ipv6_subnet_never_overlaps_another_lease() {
        let c = dual();
        // an IPv6-only lease holds the pair of 10.244.15.0, and a wider foreign /63 covers :16 and :17
        let taken = [
            lease(s6("fd00:10:244:15::/64"), Some("0.0.0.0"), Some("fd00:1::5")),
            lease(both("10.244.3.0/24", "fd00:10:244:16::/63"), Some("192.168.99.3"), Some("fd00:1::3")),
        ];
        for seed in 0..200 {
            let s = claim(choose6(&c, &taken, Previous { v4: None, v6: Some(net6("fd00:10:244:17::/64")) }, seed));
            let v6 = s.v6.unwrap();
            assert!(!["fd00:10:244:15::/64", "fd00:10:244:16::/64", "fd00:10:244:17::/64"].contains(&v6.to_string().as_str()), "{s}");
            assert!(c.ipv6.unwrap().in_range(&v6), "{s}");
        }
        // every IPv6 subnet held: out of subnets, named as IPv6
        let all: Vec<Taken> = c
            .ipv6
            .unwrap()
            .subnets()
            .enumerate()
            .map(|(i, s)| lease(Subnets { v4: None, v6: Some(s) }, Some("0.0.0.0"), Some(&format!("fd00:2::{}", i + 1))))
            .collect();
        let err = choose6(&c, &all, Previous::default(), 0).unwrap_err();
        assert_eq!(err, OutOfSubnets::V6 { len: 64, min: net6("fd00:10:244:10::/64"), max: net6("fd00:10:244:20::/64") });
        assert_eq!(err.to_string(), "out of subnets: every IPv6 /64 between fd00:10:244:10::/64 and fd00:10:244:20::/64 is leased");
    }

    #[test]
    fn dual_stack_reuses_the_lease_of_both_addresses() {
        let c = dual();
        let mine = both("10.244.14.0/24", "fd00:10:244:19::/64");
        let taken = [
            lease(both("10.244.12.0/24", "fd00:10:244:12::/64"), Some(ME), Some("fd00:1::9")), // an old one of ours, v6 changed since
            lease(mine, Some(ME), Some(ME6)),
            lease(both("10.244.13.0/24", "fd00:10:244:13::/64"), Some("192.168.99.3"), Some("fd00:1::3")),
        ];
        assert_eq!(choose6(&c, &taken, Previous { v4: Some(net("10.244.18.0/24")), v6: None }, 0), Ok(Choice::Reuse(mine)));
        // only the IPv4 address matches: still ours, and rewritten with the new PublicIPv6
        let taken = [lease(mine, Some(ME), Some("fd00:1::9"))];
        assert_eq!(choose6(&c, &taken, Previous::default(), 0), Ok(Choice::Reuse(mine)));
    }

    #[test]
    fn enabling_ipv6_replaces_the_ipv4_lease_and_keeps_its_subnet() {
        let c = dual();
        let old = s4("10.244.14.0/24");
        let taken =
            [lease(old, Some(ME), None), lease(both("10.244.10.0/24", "fd00:10:244:14::/64"), Some("192.168.99.2"), Some("fd00:1::2"))];
        // the pair at index 4 is held by another host: the next free one
        let Ok(Choice::Replace { old: o, new }) = choose6(&c, &taken, Previous::default(), 0) else { panic!("expected a replace") };
        assert_eq!(o, old);
        assert_eq!(new.v4, old.v4);
        let v6 = new.v6.unwrap();
        assert!(c.ipv6.unwrap().in_range(&v6) && v6 != net6("fd00:10:244:14::/64"), "{new}");
        // and turning it off again (--disable-ipv6, or EnableIPv6 false) drops the IPv6 half
        let dual_lease = [lease(both("10.244.14.0/24", "fd00:10:244:14::/64"), Some(ME), Some(ME6))];
        assert_eq!(
            choose(&conf(), &dual_lease, None, 0),
            Ok(Choice::Replace { old: both("10.244.14.0/24", "fd00:10:244:14::/64"), new: s4("10.244.14.0/24") })
        );
    }

    #[test]
    fn ipv6_only_keys_and_reuse_by_public_ipv6() {
        let c = only6();
        let s = claim(choose6(&c, &[], Previous { v4: Some(net("10.244.12.0/24")), v6: None }, 0));
        assert_eq!(s.v4, None, "no IPv4 subnet, whatever the subnet file said");
        assert!(c.ipv6.unwrap().in_range(&s.v6.unwrap()));
        let mine = s6("fd00:10:244:1a::/64");
        let taken = [
            // PublicIP 0.0.0.0 is every IPv6-only lease's: it never makes a lease ours
            lease(s6("fd00:10:244:11::/64"), Some("0.0.0.0"), Some("fd00:1::2")),
            lease(mine, Some("0.0.0.0"), Some(ME6)),
        ];
        assert_eq!(choose6(&c, &taken, Previous::default(), 0), Ok(Choice::Reuse(mine)));
        let previous = Previous { v4: None, v6: Some(net6("fd00:10:244:11::/64")) };
        for seed in 0..20 {
            let s = claim(choose6(&c, &taken[..1], previous, seed));
            assert_ne!(s.v6, previous.v6, "held by another host");
        }
        let previous = Previous { v4: None, v6: Some(net6("fd00:10:244:12::/64")) };
        assert_eq!(choose6(&c, &taken[..1], previous, 0), Ok(Choice::Claim(s6("fd00:10:244:12::/64"))));
    }
}
