//! The agent's packet-filter state, owned for the whole run: iptables chains
//! ([`crate::iptables`]) and the vxlan source filter ([`crate::vxlan_filter`]). Set up
//! after the lease is known, checked periodically, removed by [`Firewall::teardown`] when
//! the agent exits.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::bail;

use crate::config::Flags;
use crate::etcd_access::chain;
use crate::ipnet::Ipv4Net;
use crate::iptables::{self, Iptables};
use crate::vxlan_filter::{self, VxlanFilter};

pub struct Firewall {
    masq: bool,
    forward: bool,
    pub resync_every: Duration,
    iptables: Option<Iptables>,
    /// Whether the vxlan source filter is wanted and `nft` can run.
    source_filter: bool,
    filter: Option<VxlanFilter>,
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
        if nft.is_ok() && vxlan_filter::remove().await {
            tracing::info!(table = vxlan_filter::TABLE, "removed the nftables table left by a previous run");
        }
        if iptables::available().await.is_ok() {
            let removed = iptables::remove_all().await;
            if !removed.is_empty() {
                tracing::info!(chains = ?removed, "removed iptables chains left by a previous run");
            }
        }
        Ok(fw)
    }

    /// Installs the iptables rules for the network and this host's subnet.
    pub async fn start(&mut self, network: Ipv4Net, own: Ipv4Net) -> anyhow::Result<()> {
        if self.masq || self.forward {
            let mut ipt = Iptables::new(network, own, self.masq, self.forward);
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

    /// Keeps the vxlan source filter (vxlan backend on `port`) in step with the current
    /// peers; creates it the first time.
    pub async fn set_vxlan_peers(&mut self, port: u16, peers: &BTreeSet<Ipv4Addr>) {
        if !self.source_filter {
            return;
        }
        let r = match self.filter.as_mut() {
            Some(f) => f.set_peers(peers).await,
            None => VxlanFilter::create(port, peers.clone()).await.map(|f| {
                tracing::info!(table = vxlan_filter::TABLE, port, peers = peers.len(), "vxlan source filter installed");
                self.filter = Some(f);
            }),
        };
        if let Err(e) = r {
            tracing::warn!(error = chain(&e), "updating the vxlan source filter failed, retrying at the next reconcile");
        }
    }

    /// Rebuilds the vxlan source filter if someone removed or changed it.
    pub async fn check_vxlan_filter(&mut self) {
        let Some(f) = self.filter.as_mut() else { return };
        match f.check().await {
            Ok(false) => {}
            Ok(true) => tracing::warn!(table = vxlan_filter::TABLE, "vxlan source filter was missing or changed, re-created"),
            Err(e) => tracing::warn!(error = chain(&e), "checking the vxlan source filter failed, retrying"),
        }
    }

    /// Removes everything the agent installed; failures are logged, not returned.
    pub async fn teardown(&mut self) {
        if self.filter.take().is_some() && vxlan_filter::remove().await {
            tracing::info!(table = vxlan_filter::TABLE, "vxlan source filter removed");
        }
        if self.iptables.take().is_some() {
            let removed = iptables::remove_all().await;
            tracing::info!(chains = ?removed, "iptables rules removed");
        }
    }
}
