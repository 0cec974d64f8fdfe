//! flanneld's iptables rules: masquerading (`--ip-masq`, nat chain `FLANNEL-POSTRTG`) and
//! forward acceptance (`--iptables-forward-rules`, filter chain `FLANNEL-FWD`). The rule
//! lists are pure functions ([`masq_rules`], [`forward_rules`]); [`Iptables`] runs the
//! `iptables` binary to install them, check them, and remove them on exit.
//!
//! As in flanneld v0.20.2, each chain is checked rule by rule (`-C`); when any rule is
//! missing the chain is flushed and filled again in order, so order is never wrong (one
//! `iptables-restore --noflush`). Unlike
//! v0.20.2, leftovers of a previous run are removed at start and everything on exit.
//!
//! With IPv6 enabled the forward rules are also installed for the IPv6 network with
//! `ip6tables` (same chain, same comment). There is no IPv6 masquerading: `--ip-masq`
//! covers the IPv4 network only.

use std::net::Ipv4Addr;

use crate::ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub const MASQ_CHAIN: &str = "FLANNEL-POSTRTG";
pub const FWD_CHAIN: &str = "FLANNEL-FWD";
const MASQ_COMMENT: &str = "flanneld masq";
const FWD_COMMENT: &str = "flanneld forward";
/// kube-proxy's mark for traffic it masquerades itself.
const KUBE_PROXY_MARK: &str = "0x4000/0x4000";
const BINARY: &str = "iptables";
const BINARY6: &str = "ip6tables";

pub use crate::tool::ToolError as IptablesError;

/// One chain of the agent's: where it is jumped from and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRules {
    /// `iptables` or `ip6tables`.
    pub binary: &'static str,
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
        binary: BINARY,
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

/// Accept forwarded traffic from and to `network` (for hosts whose FORWARD policy is DROP),
/// with `iptables` or, for an IPv6 network, `ip6tables`.
pub fn forward_rules<N: IpNet>(network: N) -> ChainRules {
    ChainRules {
        binary: if N::BITS == 32 { BINARY } else { BINARY6 },
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

/// The binaries, chain names and jumps of every chain the agent may own (for removing
/// leftovers, which does not depend on the network).
fn all_chains() -> [(&'static str, &'static str, &'static str, &'static str, Vec<String>); 3] {
    [
        (BINARY, "nat", "POSTROUTING", MASQ_CHAIN, commented("", MASQ_COMMENT, &format!("-j {MASQ_CHAIN}"))),
        (BINARY, "filter", "FORWARD", FWD_CHAIN, commented("", FWD_COMMENT, &format!("-j {FWD_CHAIN}"))),
        (BINARY6, "filter", "FORWARD", FWD_CHAIN, commented("", FWD_COMMENT, &format!("-j {FWD_CHAIN}"))),
    ]
}

/// (binary, table, chain) of every chain the agent may install.
pub fn all_chain_names() -> Vec<(&'static str, &'static str, &'static str)> {
    all_chains().into_iter().map(|(b, t, _, c, _)| (b, t, c)).collect()
}

/// A chain's name for logs: `FLANNEL-FWD`, or `FLANNEL-FWD (ip6tables)`.
fn label(binary: &str, chain: &str) -> String {
    match binary {
        BINARY6 => format!("{chain} ({BINARY6})"),
        _ => chain.to_string(),
    }
}

async fn iptables(binary: &'static str, table: &str, args: &[String]) -> Result<(), IptablesError> {
    let mut full = vec!["-w", "5", "-t", table];
    full.extend(args.iter().map(String::as_str));
    crate::tool::run(binary, &full, None).await.map(|_| ())
}

fn with(op: &str, chain: &str, spec: &[String]) -> Vec<String> {
    let mut v = vec![op.to_string(), chain.to_string()];
    v.extend_from_slice(spec);
    v
}

/// Whether the `iptables` binary is there; the error says why not.
pub fn available() -> Result<(), IptablesError> {
    crate::tool::locate(BINARY).map(|_| ())
}

/// Whether the `ip6tables` binary is there; the error says why not.
pub fn available6() -> Result<(), IptablesError> {
    crate::tool::locate(BINARY6).map(|_| ())
}

/// Whether `iptables` is the nf_tables one (`xtables-nft-multi`), whose chains are
/// nftables chains: then changes to them arrive as nftables notifications.
pub fn nft_backed() -> bool {
    crate::tool::locate(BINARY).ok().and_then(|p| std::fs::canonicalize(p).ok()).is_some_and(|p| p.to_string_lossy().contains("nft"))
}

/// `iptables-restore --noflush` input that (re)writes a chain and/or its jump: declaring a
/// chain creates it, or flushes it when it exists.
pub fn restore_script(c: &ChainRules, chain: bool, jump: bool) -> String {
    let line =
        |words: &[String]| words.iter().map(|w| if w.contains(' ') { format!("\"{w}\"") } else { w.clone() }).collect::<Vec<_>>().join(" ");
    let mut s = format!("*{}\n", c.table);
    if chain {
        s += &format!(":{} - [0:0]\n", c.chain);
        for r in &c.rules {
            s += &format!("-A {} {}\n", c.chain, line(r));
        }
    }
    if jump {
        s += &format!("-I {} 1 {}\n", c.parent, line(&c.jump));
    }
    s + "COMMIT\n"
}

/// The agent's installed chains.
pub struct Iptables {
    /// The IPv4 network and this host's subnet in it, when IPv4 is enabled.
    ipv4: Option<(Ipv4Net, Ipv4Net)>,
    /// The IPv6 network, when IPv6 is enabled and `ip6tables` can run.
    ipv6: Option<Ipv6Net>,
    masq: bool,
    forward: bool,
    random_fully: bool,
}

impl Iptables {
    pub fn new(ipv4: Option<(Ipv4Net, Ipv4Net)>, ipv6: Option<Ipv6Net>, masq: bool, forward: bool) -> Self {
        Iptables { ipv4, ipv6, masq, forward, random_fully: true }
    }

    fn wanted(&self) -> Vec<ChainRules> {
        let mut v = Vec::new();
        if let Some((network, own)) = self.ipv4 {
            if self.masq {
                v.push(masq_rules(network, own, self.random_fully));
            }
            if self.forward {
                v.push(forward_rules(network));
            }
        }
        if let Some(network) = self.ipv6.filter(|_| self.forward) {
            v.push(forward_rules(network));
        }
        v
    }

    /// Installs or repairs every chain; returns the chains that had to be (re)written.
    /// `absent(binary, table, chain)` says which chains are known not to exist.
    pub async fn ensure(&mut self, mut absent: impl FnMut(&str, &str, &str) -> bool) -> Result<Vec<String>, IptablesError> {
        let mut written = Vec::new();
        for c in self.wanted() {
            if self.ensure_chain(&c, absent(c.binary, c.table, c.chain)).await? {
                written.push(label(c.binary, c.chain));
            }
        }
        Ok(written)
    }

    /// Checks the chain rule by rule (`-C`; a missing chain fails the first) and its jump,
    /// and rewrites what is wrong in one `iptables-restore --noflush`. `absent`: the chain
    /// is known not to exist, so there is nothing to check.
    async fn ensure_chain(&mut self, c: &ChainRules, absent: bool) -> Result<bool, IptablesError> {
        let ipt = |args: Vec<String>| async move { iptables(c.binary, c.table, &args).await };
        let mut complete = !absent;
        for r in &c.rules {
            if !complete {
                break;
            }
            complete = ipt(with("-C", c.chain, r)).await.is_ok();
        }
        let jumped = !absent && ipt(with("-C", c.parent, &c.jump)).await.is_ok();
        if complete && jumped {
            return Ok(false);
        }
        let restore = if c.binary == BINARY6 { "ip6tables-restore" } else { "iptables-restore" };
        match crate::tool::run(restore, &["--noflush", "-w", "5"], Some(&restore_script(c, !complete, !jumped))).await {
            Err(e) if !complete && self.random_fully && c.rules.iter().flatten().any(|w| w == "--random-fully") => {
                tracing::warn!(error = crate::error::chain(&e), "iptables rejects --random-fully; masquerading without it");
                self.random_fully = false;
                let Some((network, own)) = self.ipv4 else { unreachable!("masquerading rules exist only with IPv4") };
                let again = masq_rules(network, own, false);
                Box::pin(self.ensure_chain(&again, absent)).await
            }
            other => other.map(|_| true),
        }
    }
}

/// Removes every chain the agent may have installed (this run's or a previous one's):
/// the jumps, then the chains. Missing pieces are fine; returns the chains removed.
/// `absent(binary, table, chain)` says which are known not to exist (nothing is run for them).
pub async fn remove_all(absent: impl Fn(&str, &str, &str) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    for (binary, table, parent, chain, jump) in all_chains() {
        if absent(binary, table, chain) {
            continue;
        }
        let mut any = false;
        for _ in 0..16 {
            if iptables(binary, table, &with("-D", parent, &jump)).await.is_err() {
                break;
            }
            any = true;
        }
        if iptables(binary, table, &["-F".into(), chain.into()]).await.is_ok() {
            any = true;
            if let Err(e) = iptables(binary, table, &["-X".into(), chain.into()]).await {
                tracing::warn!(error = crate::error::chain(&e), chain, "removing iptables chain failed");
            }
        }
        if any {
            removed.push(label(binary, chain));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_scripts_write_the_chain_and_the_jump_as_asked() {
        let c = forward_rules("10.244.0.0/16".parse::<Ipv4Net>().unwrap());
        let both = restore_script(&c, true, true);
        assert_eq!(
            both,
            "*filter\n:FLANNEL-FWD - [0:0]\n-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n-I FORWARD 1 -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\nCOMMIT\n"
        );
        assert_eq!(
            restore_script(&c, false, true),
            "*filter\n-I FORWARD 1 -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\nCOMMIT\n"
        );
        assert!(!restore_script(&c, true, false).contains("-I FORWARD"));
    }

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
        let c = forward_rules("10.244.0.0/16".parse::<Ipv4Net>().unwrap());
        assert_eq!((c.table, c.parent, c.chain), ("filter", "FORWARD", "FLANNEL-FWD"));
        assert_eq!(
            joined(&c),
            vec![
                "-s 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT",
                "-d 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT",
            ]
        );
    }

    #[test]
    fn ipv6_forward_rules_use_ip6tables() {
        let c = forward_rules("fd00:10:244::/56".parse::<Ipv6Net>().unwrap());
        assert_eq!((c.binary, c.table, c.parent, c.chain), ("ip6tables", "filter", "FORWARD", "FLANNEL-FWD"));
        assert_eq!(
            joined(&c),
            vec![
                "-s fd00:10:244::/56 -m comment --comment flanneld forward -j ACCEPT",
                "-d fd00:10:244::/56 -m comment --comment flanneld forward -j ACCEPT",
            ]
        );
        assert_eq!(forward_rules("10.244.0.0/16".parse::<Ipv4Net>().unwrap()).binary, "iptables");
    }

    #[test]
    fn chains_per_enabled_family() {
        let v4 = Some(("10.244.0.0/16".parse().unwrap(), "10.244.5.0/24".parse().unwrap()));
        let v6 = Some("fd00:10:244::/56".parse().unwrap());
        let names = |ipt: &Iptables| ipt.wanted().iter().map(|c| format!("{} {}", c.binary, c.chain)).collect::<Vec<_>>();
        assert_eq!(
            names(&Iptables::new(v4, v6, true, true)),
            vec!["iptables FLANNEL-POSTRTG", "iptables FLANNEL-FWD", "ip6tables FLANNEL-FWD"]
        );
        assert_eq!(names(&Iptables::new(None, v6, true, true)), vec!["ip6tables FLANNEL-FWD"], "no IPv6 masquerading");
        assert_eq!(names(&Iptables::new(v4, v6, true, false)), vec!["iptables FLANNEL-POSTRTG"]);
        assert_eq!(names(&Iptables::new(v4, None, false, true)), vec!["iptables FLANNEL-FWD"]);
    }
}
