//! The agent's packet-filter state, owned for the whole run: iptables chains
//! ([`crate::iptables`]) and the vxlan source filter ([`crate::vxlan_filter`]). Set up
//! after the lease is known, checked periodically (when nftables notifications say the
//! ruleset changed; always without them), removed by [`Firewall::teardown`] when the agent
//! exits. Set elements and leftover checks go over netlink ([`crate::nfnetlink`]).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::Flags;
use crate::error::chain;
use crate::ipnet::{Ipv4Net, Ipv6Net};
use crate::iptables::{self, Iptables};
use crate::nfnetlink::{Family, Nft};
use crate::notify::{self, RulesetChange};
use crate::vxlan_filter::{self, NftFamily, VxlanFilter};

pub struct Firewall {
    masq: bool,
    forward: bool,
    pub resync_every: Duration,
    iptables: Option<Iptables>,
    /// Whether the vxlan source filter is wanted and `nft` can run.
    source_filter: bool,
    filter: Option<VxlanFilter<Ipv4Addr>>,
    filter6: Option<VxlanFilter<Ipv6Addr>>,
    /// nftables over netlink (None when the socket cannot be opened: `nft` does it all).
    nl: Option<Nft>,
    /// iptables is the nf_tables one: its chains are nftables chains, which `nl` can see.
    nft_backed: bool,
    /// nftables change notifications; None when there are none to trust (no subscription,
    /// or iptables is not the nf_tables one), and then every check runs.
    changes: Option<UnboundedReceiver<RulesetChange>>,
    /// Something changed the ruleset since the last iptables check.
    iptables_dirty: bool,
    /// Someone else changed the vxlan filter's table since its last check.
    filter_dirty: bool,
}

/// Whether the chain is known not to exist (asked over netlink; iptables-nft chains are
/// nftables chains). Unknown counts as existing.
fn known_absent(nl: &mut Option<Nft>, binary: &str, table: &str, chain: &str) -> bool {
    let family = if binary.starts_with("ip6") { Family::Ip6 } else { Family::Ip };
    nl.as_mut().is_some_and(|n| n.chain_exists(family, table, chain).is_ok_and(|exists| !exists))
}

impl Firewall {
    /// Checks the binaries the flags need and removes a previous run's leftovers.
    pub async fn prepare(flags: &Flags) -> anyhow::Result<Firewall> {
        let nft_backed = iptables::nft_backed();
        let nl = match Nft::open() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(error = %e, "no nftables netlink socket: running nft for every change");
                None
            }
        };
        // iptables-legacy rules raise no nftables notification: without the nf_tables
        // iptables, every check runs
        let changes = match nft_backed {
            true => {
                notify::ruleset_changes().map_err(|e| tracing::debug!(error = %e, "no nftables notifications: checking every time")).ok()
            }
            false => None,
        };
        let mut fw = Firewall {
            masq: flags.ip_masq,
            forward: flags.iptables_forward_rules,
            resync_every: Duration::from_secs(flags.iptables_resync_secs),
            iptables: None,
            source_filter: false,
            filter: None,
            filter6: None,
            changes,
            nl,
            nft_backed,
            iptables_dirty: true,
            filter_dirty: false,
        };
        if fw.masq || fw.forward {
            if let Err(e) = iptables::available() {
                if fw.masq {
                    bail!("--ip-masq needs the `iptables` binary: {}", chain(&e));
                }
                tracing::warn!(error = chain(&e), "iptables is not available: running without forward rules (--iptables-forward-rules)");
                fw.forward = false;
            }
        }
        let nft = vxlan_filter::available();
        match (flags.vxlan_source_filter, &nft) {
            (Some(false), _) => {}
            (_, Ok(())) => fw.source_filter = true,
            (Some(true), Err(e)) => bail!("--vxlan-source-filter=true needs the `nft` binary: {}", chain(e)),
            (None, Err(e)) => tracing::warn!(error = chain(e), "nft is not available: running without the vxlan source filter"),
        }
        if nft.is_ok() || fw.nl.is_some() {
            if vxlan_filter::remove::<Ipv4Addr>(fw.nl.as_mut()).await {
                tracing::info!(table = vxlan_filter::TABLE, family = "ip", "removed the nftables table left by a previous run");
            }
            if vxlan_filter::remove::<Ipv6Addr>(fw.nl.as_mut()).await {
                tracing::info!(table = vxlan_filter::TABLE, family = "ip6", "removed the nftables table left by a previous run");
            }
        }
        if iptables::available().is_ok() {
            // a fresh host has none of the chains: asking over netlink spares a dozen runs
            let absent: Vec<_> =
                iptables::all_chain_names().into_iter().filter(|(b, t, c)| nft_backed && known_absent(&mut fw.nl, b, t, c)).collect();
            let removed = iptables::remove_all(|b, t, c| absent.contains(&(b, t, c))).await;
            if !removed.is_empty() {
                tracing::info!(chains = ?removed, "removed iptables chains left by a previous run");
            }
        }
        Ok(fw)
    }

    /// Installs the iptables rules for the IPv4 network and this host's subnet in it, and
    /// the forward rules for the IPv6 network (ip6tables; no IPv6 masquerading).
    pub async fn start(&mut self, ipv4: Option<(Ipv4Net, Ipv4Net)>, ipv6: Option<Ipv6Net>) -> anyhow::Result<()> {
        if self.masq && ipv6.is_some() {
            tracing::info!("--ip-masq masquerades IPv4 traffic only: IPv6 pod traffic keeps its source address");
        }
        let mut ipv6 = ipv6.filter(|_| self.forward);
        if ipv6.is_some() {
            if let Err(e) = iptables::available6() {
                tracing::warn!(error = chain(&e), "ip6tables is not available: running without IPv6 forward rules");
                ipv6 = None;
            }
        }
        if (self.masq || self.forward) && (ipv4.is_some() || ipv6.is_some()) {
            let mut ipt = Iptables::new(ipv4, ipv6, self.masq, self.forward);
            // chains known to be absent (removed at start) need no checking first
            let (nft_backed, nl) = (self.nft_backed, &mut self.nl);
            let chains = ipt.ensure(|b, t, c| nft_backed && known_absent(nl, b, t, c)).await?;
            tracing::info!(?chains, "iptables rules installed");
            self.iptables = Some(ipt);
        }
        Ok(())
    }

    /// Takes in the nftables notifications that arrived: iptables rules (tables other than
    /// the filter's) changed, or someone else changed the filter's table.
    fn note_changes(&mut self) {
        let own = self.nl.as_ref().map(Nft::portid);
        let Some(rx) = self.changes.as_mut() else { return };
        loop {
            match rx.try_recv() {
                Ok(RulesetChange::Table { name: Some(t), portid }) if t == vxlan_filter::TABLE => {
                    self.filter_dirty |= Some(portid) != own;
                }
                Ok(RulesetChange::Table { name: Some(_), .. }) => self.iptables_dirty = true,
                Ok(RulesetChange::Table { name: None, .. }) => {}
                Ok(RulesetChange::Overflow) => {
                    self.iptables_dirty = true;
                    self.filter_dirty = true;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    tracing::warn!("nftables notifications stopped: checking the firewall every time from now on");
                    self.changes = None;
                    return;
                }
            }
        }
    }

    /// `--iptables-resync`: re-creates whatever rules went missing. With nftables
    /// notifications a check runs only when the ruleset changed since the last one (an
    /// unchanged ruleset still holds the rules); without them, every time.
    pub async fn resync_iptables(&mut self) {
        self.note_changes();
        if self.changes.is_some() && !self.iptables_dirty {
            return;
        }
        self.iptables_dirty = false;
        let Some(ipt) = self.iptables.as_mut() else { return };
        match ipt.ensure(|_, _, _| false).await {
            Ok(v) if v.is_empty() => {}
            Ok(chains) => tracing::warn!(?chains, "iptables rules were missing, re-created"),
            Err(e) => {
                self.iptables_dirty = true;
                tracing::warn!(error = chain(&e), "checking iptables rules failed, retrying")
            }
        }
    }

    /// Keeps the vxlan source filters (vxlan backend on `port`) in step with the current
    /// peers: one table per family whose device exists (`peers` Some); creates each the
    /// first time.
    pub async fn set_vxlan_peers(&mut self, port: u16, peers: Option<&BTreeSet<Ipv4Addr>>, peers6: Option<&BTreeSet<Ipv6Addr>>) {
        if !self.source_filter {
            return;
        }
        if let Some(peers) = peers {
            sync_filter(&mut self.filter, self.nl.as_mut(), port, peers).await;
        }
        if let Some(peers) = peers6 {
            sync_filter(&mut self.filter6, self.nl.as_mut(), port, peers).await;
        }
    }

    /// Rebuilds the vxlan source filters if someone removed or changed them (checked when
    /// notifications say someone else touched them, or every time without notifications).
    pub async fn check_vxlan_filter(&mut self) {
        self.note_changes();
        if self.changes.is_some() && !self.filter_dirty {
            return;
        }
        self.filter_dirty = false;
        check_filter(&mut self.filter).await;
        check_filter(&mut self.filter6).await;
    }

    /// Removes everything the agent installed; failures are logged, not returned.
    pub async fn teardown(&mut self) {
        if self.filter.take().is_some() && vxlan_filter::remove::<Ipv4Addr>(self.nl.as_mut()).await {
            tracing::info!(table = vxlan_filter::TABLE, family = "ip", "vxlan source filter removed");
        }
        if self.filter6.take().is_some() && vxlan_filter::remove::<Ipv6Addr>(self.nl.as_mut()).await {
            tracing::info!(table = vxlan_filter::TABLE, family = "ip6", "vxlan source filter removed");
        }
        if self.iptables.take().is_some() {
            let removed = iptables::remove_all(|_, _, _| false).await;
            tracing::info!(chains = ?removed, "iptables rules removed");
        }
    }
}

/// Updates one family's filter to `peers`, creating it the first time.
async fn sync_filter<A: NftFamily>(filter: &mut Option<VxlanFilter<A>>, nl: Option<&mut Nft>, port: u16, peers: &BTreeSet<A>) {
    let r = match filter.as_mut() {
        Some(f) => f.set_peers(peers, nl).await,
        None => VxlanFilter::create(port, peers.clone()).await.map(|f| {
            tracing::info!(table = vxlan_filter::TABLE, family = A::FAMILY, port, peers = peers.len(), "vxlan source filter installed");
            *filter = Some(f);
        }),
    };
    if let Err(e) = r {
        tracing::warn!(error = chain(&e), family = A::FAMILY, "updating the vxlan source filter failed, retrying at the next reconcile");
    }
}

async fn check_filter<A: NftFamily>(filter: &mut Option<VxlanFilter<A>>) {
    let Some(f) = filter.as_mut() else { return };
    match f.check().await {
        Ok(false) => {}
        Ok(true) => {
            tracing::warn!(table = vxlan_filter::TABLE, family = A::FAMILY, "vxlan source filter was missing or changed, re-created")
        }
        Err(e) => tracing::warn!(error = chain(&e), family = A::FAMILY, "checking the vxlan source filter failed, retrying"),
    }
}
