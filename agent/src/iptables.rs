//! flanneld's iptables rules: masquerading (`--ip-masq`, nat chain `FLANNEL-POSTRTG`) and
//! forward acceptance (`--iptables-forward-rules`, filter chain `FLANNEL-FWD`). The rule
//! lists are pure functions ([`masq_rules`], [`forward_rules`]); [`Iptables`] runs the
//! `iptables` binary to install them, check them, and remove them on exit.
//!
//! As in flanneld v0.20.2, each chain is checked rule by rule (`-C`); when any rule is
//! missing the chain is flushed and filled again in order, so order is never wrong. Unlike
//! v0.20.2, leftovers of a previous run are removed at start and everything on exit.

use std::net::Ipv4Addr;

use crate::ipnet::Ipv4Net;

pub const MASQ_CHAIN: &str = "FLANNEL-POSTRTG";
pub const FWD_CHAIN: &str = "FLANNEL-FWD";
const MASQ_COMMENT: &str = "flanneld masq";
const FWD_COMMENT: &str = "flanneld forward";
/// kube-proxy's mark for traffic it masquerades itself.
const KUBE_PROXY_MARK: &str = "0x4000/0x4000";
const BINARY: &str = "iptables";

pub use crate::tool::ToolError as IptablesError;

/// One chain of the agent's: where it is jumped from and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRules {
    pub table: &'static str,
    /// The built-in chain holding the jump (POSTROUTING, FORWARD).
    pub parent: &'static str,
    pub chain: &'static str,
    pub jump: Vec<String>,
    pub rules: Vec<Vec<String>>,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn commented(spec: &str, comment: &str, target: &str) -> Vec<String> {
    let mut v = words(spec);
    v.extend(["-m", "comment", "--comment", comment].map(str::to_string));
    v.extend(words(target));
    v
}

/// flanneld v0.20.2's masquerading rules for `network` with this host's `own` subnet.
pub fn masq_rules(network: Ipv4Net, own: Ipv4Net, random_fully: bool) -> ChainRules {
    let masq = if random_fully { "-j MASQUERADE --random-fully" } else { "-j MASQUERADE" };
    let (n, sn) = (network.to_string(), own.to_string());
    ChainRules {
        table: "nat",
        parent: "POSTROUTING",
        chain: MASQ_CHAIN,
        jump: commented("", MASQ_COMMENT, &format!("-j {MASQ_CHAIN}")),
        rules: vec![
            // kube-proxy masquerades what it marked; doing it twice breaks some kernels
            commented(&format!("-m mark --mark {KUBE_PROXY_MARK}"), MASQ_COMMENT, "-j RETURN"),
            // pod to pod: never
            commented(&format!("-s {n} -d {n}"), MASQ_COMMENT, "-j RETURN"),
            // pod to the outside (but not multicast)
            commented(&format!("-s {n} ! -d {}", Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("valid")), MASQ_COMMENT, masq),
            // outside to this host's pods: keep the source
            commented(&format!("! -s {n} -d {sn}"), MASQ_COMMENT, "-j RETURN"),
            // outside (e.g. this host) to other hosts' pods
            commented(&format!("! -s {n} -d {n}"), MASQ_COMMENT, masq),
        ],
    }
}

/// Accept forwarded traffic from and to `network` (for hosts whose FORWARD policy is DROP).
pub fn forward_rules(network: Ipv4Net) -> ChainRules {
    ChainRules {
        table: "filter",
        parent: "FORWARD",
        chain: FWD_CHAIN,
        jump: commented("", FWD_COMMENT, &format!("-j {FWD_CHAIN}")),
        rules: vec![
            commented(&format!("-s {network}"), FWD_COMMENT, "-j ACCEPT"),
            commented(&format!("-d {network}"), FWD_COMMENT, "-j ACCEPT"),
        ],
    }
}

/// The chain names and jumps of every chain the agent may own (for removing leftovers,
/// which does not depend on the network).
fn all_chains() -> [(&'static str, &'static str, &'static str, Vec<String>); 2] {
    [
        ("nat", "POSTROUTING", MASQ_CHAIN, commented("", MASQ_COMMENT, &format!("-j {MASQ_CHAIN}"))),
        ("filter", "FORWARD", FWD_CHAIN, commented("", FWD_COMMENT, &format!("-j {FWD_CHAIN}"))),
    ]
}

async fn iptables(table: &str, args: &[String]) -> Result<(), IptablesError> {
    let mut full = vec!["-w", "5", "-t", table];
    full.extend(args.iter().map(String::as_str));
    crate::tool::run(BINARY, &full, None).await.map(|_| ())
}

fn with(op: &str, chain: &str, spec: &[String]) -> Vec<String> {
    let mut v = vec![op.to_string(), chain.to_string()];
    v.extend_from_slice(spec);
    v
}

/// Whether the `iptables` binary can be run; the error says why not.
pub async fn available() -> Result<(), IptablesError> {
    crate::tool::run(BINARY, &["--version"], None).await.map(|_| ())
}

/// The agent's installed chains.
pub struct Iptables {
    network: Ipv4Net,
    own: Ipv4Net,
    masq: bool,
    forward: bool,
    random_fully: bool,
}

impl Iptables {
    pub fn new(network: Ipv4Net, own: Ipv4Net, masq: bool, forward: bool) -> Self {
        Iptables { network, own, masq, forward, random_fully: true }
    }

    fn wanted(&self) -> Vec<ChainRules> {
        let mut v = Vec::new();
        if self.masq {
            v.push(masq_rules(self.network, self.own, self.random_fully));
        }
        if self.forward {
            v.push(forward_rules(self.network));
        }
        v
    }

    /// Installs or repairs every chain; returns the chains that had to be (re)written.
    pub async fn ensure(&mut self) -> Result<Vec<&'static str>, IptablesError> {
        let mut written = Vec::new();
        for c in self.wanted() {
            if self.ensure_chain(&c).await? {
                written.push(c.chain);
            }
        }
        Ok(written)
    }

    async fn ensure_chain(&mut self, c: &ChainRules) -> Result<bool, IptablesError> {
        let mut complete = iptables(c.table, &["-N".into(), c.chain.into()]).await.is_err(); // exists already
        if complete {
            for r in &c.rules {
                if iptables(c.table, &with("-C", c.chain, r)).await.is_err() {
                    complete = false;
                    break;
                }
            }
        }
        if !complete {
            iptables(c.table, &["-F".into(), c.chain.into()]).await?;
            for r in &c.rules {
                match iptables(c.table, &with("-A", c.chain, r)).await {
                    Err(e) if self.random_fully && r.iter().any(|w| w == "--random-fully") => {
                        tracing::warn!(error = crate::etcd_access::chain(&e), "iptables rejects --random-fully; masquerading without it");
                        self.random_fully = false;
                        let again = masq_rules(self.network, self.own, false);
                        return Box::pin(self.ensure_chain(&again)).await;
                    }
                    other => other?,
                }
            }
        }
        let jumped = iptables(c.table, &with("-C", c.parent, &c.jump)).await.is_ok();
        if !jumped {
            let mut insert = vec!["-I".to_string(), c.parent.into(), "1".into()];
            insert.extend_from_slice(&c.jump);
            iptables(c.table, &insert).await?;
        }
        Ok(!complete || !jumped)
    }
}

/// Removes every chain the agent may have installed (this run's or a previous one's):
/// the jumps, then the chains. Missing pieces are fine; returns the chains removed.
pub async fn remove_all() -> Vec<&'static str> {
    let mut removed = Vec::new();
    for (table, parent, chain, jump) in all_chains() {
        let mut any = false;
        for _ in 0..16 {
            if iptables(table, &with("-D", parent, &jump)).await.is_err() {
                break;
            }
            any = true;
        }
        if iptables(table, &["-F".into(), chain.into()]).await.is_ok() {
            any = true;
            if let Err(e) = iptables(table, &["-X".into(), chain.into()]).await {
                tracing::warn!(error = crate::etcd_access::chain(&e), chain, "removing iptables chain failed");
            }
        }
        if any {
            removed.push(chain);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(c: &ChainRules) -> Vec<String> {
        c.rules.iter().map(|r| r.join(" ")).collect()
    }

    #[test]
    fn masq_rules_are_flanneld_v0_20_2() {
        let c = masq_rules("10.244.0.0/16".parse().unwrap(), "10.244.5.0/24".parse().unwrap(), true);
        assert_eq!((c.table, c.parent, c.chain), ("nat", "POSTROUTING", "FLANNEL-POSTRTG"));
        assert_eq!(c.jump.join(" "), "-m comment --comment flanneld masq -j FLANNEL-POSTRTG");
        assert_eq!(
            joined(&c),
            vec![
                "-m mark --mark 0x4000/0x4000 -m comment --comment flanneld masq -j RETURN",
                "-s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment flanneld masq -j RETURN",
                "-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld masq -j MASQUERADE --random-fully",
                "! -s 10.244.0.0/16 -d 10.244.5.0/24 -m comment --comment flanneld masq -j RETURN",
                "! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment flanneld masq -j MASQUERADE --random-fully",
            ]
        );
        let plain = masq_rules("10.244.0.0/16".parse().unwrap(), "10.244.5.0/24".parse().unwrap(), false);
        assert!(plain.rules.iter().all(|r| !r.contains(&"--random-fully".to_string())));
        // the comment is one argument
        assert!(c.rules[0].contains(&"flanneld masq".to_string()));
    }

    #[test]
    fn forward_rules_accept_the_network_both_ways() {
        let c = forward_rules("10.244.0.0/16".parse().unwrap());
        assert_eq!((c.table, c.parent, c.chain), ("filter", "FORWARD", "FLANNEL-FWD"));
        assert_eq!(
            joined(&c),
            vec![
                "-s 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT",
                "-d 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT",
            ]
        );
    }
}
