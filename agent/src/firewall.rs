//! The agent's packet-filter state, owned for the whole run: iptables chains
//! ([`crate::iptables`]) and the vxlan source filter ([`crate::vxlan_filter`]). Set up
//! after the lease is known, checked periodically, removed by [`Firewall::teardown`] when
//! the agent exits.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::bail;

use crate::config::Flags;
use crate::etcd_access::chain;
use crate::ipnet::{Ipv4Net, Ipv6Net};
use crate::iptables::{self, Iptables};
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
}

impl Firewall {
    /// Checks the binaries the flags need and removes a previous run's leftovers.
    pub async fn prepare(flags: &Flags) -> anyhow::Result<Firewall> {
        let mut fw = Firewall {
            masq: flags.ip_masq,
            forward: flags.iptables_forward_rules,
            resync_every: Duration::from_secs(flags.iptables_resync_secs),
            iptables: None,
            source_filter: false,
            filter: None,
            filter6: None,
        };
        if fw.masq || fw.forward {
            if let Err(e) = iptables::available().await {
                if fw.masq {
                    bail!("--ip-masq needs the `iptables` binary: {}", chain(&e));
                }
                tracing::warn!(error = chain(&e), "iptables is not available: running without forward rules (--iptables-forward-rules)");
                fw.forward = false;
            }
        }
        let nft = vxlan_filter::available().await;
        match (flags.vxlan_source_filter, &nft) {
            (Some(false), _) => {}
            (_, Ok(())) => fw.source_filter = true,
            (Some(true), Err(e)) => bail!("--vxlan-source-filter=true needs the `nft` binary: {}", chain(e)),
            (None, Err(e)) => tracing::warn!(error = chain(e), "nft is not available: running without the vxlan source filter"),
        }
        if nft.is_ok() {
            if vxlan_filter::remove::<Ipv4Addr>().await {
                tracing::info!(table = vxlan_filter::TABLE, family = "ip", "removed the nftables table left by a previous run");
            }
            if vxlan_filter::remove::<Ipv6Addr>().await {
                tracing::info!(table = vxlan_filter::TABLE, family = "ip6", "removed the nftables table left by a previous run");
            }
        }
        if iptables::available().await.is_ok() {
            let removed = iptables::remove_all().await;
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
            if let Err(e) = iptables::available6().await {
                tracing::warn!(error = chain(&e), "ip6tables is not available: running without IPv6 forward rules");
                ipv6 = None;
            }
        }
        if (self.masq || self.forward) && (ipv4.is_some() || ipv6.is_some()) {
            let mut ipt = Iptables::new(ipv4, ipv6, self.masq, self.forward);
            let chains = ipt.ensure().await?;
            tracing::info!(?chains, "iptables rules installed");
            self.iptables = Some(ipt);
        }
        Ok(())
    }

    /// `--iptables-resync`: re-creates whatever rules went missing.
    pub async fn resync_iptables(&mut self) {
        let Some(ipt) = self.iptables.as_mut() else { return };
        match ipt.ensure().await {
            Ok(v) if v.is_empty() => {}
            Ok(chains) => tracing::warn!(?chains, "iptables rules were missing, re-created"),
            Err(e) => tracing::warn!(error = chain(&e), "checking iptables rules failed, retrying"),
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
            sync_filter(&mut self.filter, port, peers).await;
        }
        if let Some(peers) = peers6 {
            sync_filter(&mut self.filter6, port, peers).await;
        }
    }

    /// Rebuilds the vxlan source filters if someone removed or changed them.
    pub async fn check_vxlan_filter(&mut self) {
        check_filter(&mut self.filter).await;
        check_filter(&mut self.filter6).await;
    }

    /// Removes everything the agent installed; failures are logged, not returned.
    pub async fn teardown(&mut self) {
        if self.filter.take().is_some() && vxlan_filter::remove::<Ipv4Addr>().await {
            tracing::info!(table = vxlan_filter::TABLE, family = "ip", "vxlan source filter removed");
        }
        if self.filter6.take().is_some() && vxlan_filter::remove::<Ipv6Addr>().await {
            tracing::info!(table = vxlan_filter::TABLE, family = "ip6", "vxlan source filter removed");
        }
        if self.iptables.take().is_some() {
            let removed = iptables::remove_all().await;
            tracing::info!(chains = ?removed, "iptables rules removed");
        }
    }
}

/// Updates one family's filter to `peers`, creating it the first time.
async fn sync_filter<A: NftFamily>(filter: &mut Option<VxlanFilter<A>>, port: u16, peers: &BTreeSet<A>) {
    let r = match filter.as_mut() {
        Some(f) => f.set_peers(peers).await,
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
