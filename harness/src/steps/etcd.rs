//! etcd operations: outages (stop, pause, leader loss, wipe), lease revocation, raw keys.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{StepError, StepKind, StepResult, Trial};
use crate::contract::{Check, Finding, DEFAULT_PREFIX};
use crate::input::case::{Dur, Ref};
use crate::input::names::HostName;

/// Stops etcd, keeps it down, starts it again (optionally wiped).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestartEtcd {
    /// How long etcd stays down (the outage being simulated).
    pub down_for: Dur,
    /// Start on an empty data directory (data loss); the harness then writes only the
    /// net-conf again.
    #[serde(default)]
    pub wipe: bool,
}

impl StepKind for RestartEtcd {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let r = self;
        t.store.stop().await?;
        tokio::time::sleep(r.down_for.0).await;
        t.store.restart(&t.lab, r.wipe, Duration::from_secs(30)).await?;
        if r.wipe {
            let text = t.case.netconf.render(t.backend);
            t.store.put(&format!("{DEFAULT_PREFIX}/config"), text).await?;
        }
        tracing::info!("etcd down for {:?}{}, answering again", r.down_for.0, if r.wipe { " and wiped" } else { "" });
        t.restarted("restart_etcd");
        Ok(())
    }
}

/// Freezes etcd (SIGSTOP / docker pause) for a while.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PauseEtcd {
    #[serde(rename = "for")]
    pub duration: Dur,
}

impl StepKind for PauseEtcd {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let f = self;
        t.store.freeze(true).await?;
        tokio::time::sleep(f.duration.0).await;
        t.store.freeze(false).await?;
        tracing::info!("etcd paused for {:?}", f.duration.0);
        t.restarted("pause_etcd");
        Ok(())
    }
}

/// Stops the etcd member that currently leads (needs `etcd_members` > 1).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopEtcdLeader {}

impl StepKind for StopEtcdLeader {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let name = t.store.stop_leader().await?;
        tracing::info!("stopped the etcd leader, member `{name}`");
        t.restarted("stop_etcd_leader");
        Ok(())
    }
}

/// Revokes the host's etcd lease (deleting its subnet key) behind the agent's back.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RevokeLease {
    pub host: HostName,
}

impl StepKind for RevokeLease {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.host)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let h = self;
        t.revoke_lease(h.host.as_str()).await?;
        t.restarted(format!("revoke_lease on {}", h.host));
        Ok(())
    }
}

/// Writes a raw key under the prefix (e.g. junk next to the leases).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    /// Relative to the etcd prefix, e.g. `subnets/junk`.
    pub key: String,
    pub value: String,
    /// Attach the key to an etcd lease of this TTL (whole seconds, at least 1): as a
    /// flannel lease is (an imported cluster's leases keep expiring).
    #[serde(default)]
    pub ttl: Option<Dur>,
}

impl StepKind for PutKey {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let k = self;
        let key = format!("{DEFAULT_PREFIX}/{}", k.key.trim_start_matches('/'));
        match k.ttl {
            None => t.store.put(&key, k.value.clone()).await.map_err(StepError::from)?,
            Some(ttl) => {
                let secs = ttl.0.as_secs().max(1) as i64;
                t.store.put_with_ttl(&key, k.value.clone(), secs).await.map_err(StepError::from)?
            }
        }
        if k.key.trim_start_matches('/') == "config" {
            // the net-conf the later checks judge against
            t.conf = serde_json::from_str(&k.value).ok().and_then(|v| crate::contract::NetConf::from_json(&v).ok());
        }
        Ok(())
    }
}

/// The host's agent is refused by etcd (a TLS etcd that requires client certificates,
/// started with `start_agents: {credentials: {HOST: none}}` or `foreign_ca`): etcd logs a
/// refused handshake from the host after its agent started, and the host holds no lease.
/// The step ends as soon as that is settled; the host then leaves the cluster (its agent
/// is stopped) so later steps judge the admitted hosts.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectRefused {
    pub host: HostName,
    pub within: Dur,
}

impl StepKind for ExpectRefused {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.host)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let host = self.host.as_str();
        if t.store.pki.is_none() {
            return Err("expect_refused needs a case with `etcd_tls: true`".into());
        }
        if !t.agents.iter().any(|a| a.host == host) {
            return Err(format!("expect_refused: no agent runs on {host}; start it first").into());
        }
        let addr = t.host(host)?.addr;
        let deadline = Instant::now() + self.within.0;
        loop {
            let leases = t.leases().await?;
            if let Some((key, _)) = leases.iter().find(|(_, l)| l.as_ref().is_ok_and(|l| l.public_ip == addr)) {
                let what = format!("etcd admitted the agent: it holds lease {key}");
                return Err(StepError::Check(vec![Finding::new(Check::EtcdAccess, host, what)]));
            }
            let leased = leases.into_iter().filter_map(|(_, l)| l.ok().map(|l| l.public_ip)).collect();
            if let Some((n, why)) = t.refusals_of_unleased(None, &leased).await?.remove(host) {
                tracing::info!("etcd refused {host} ({addr}) {n} time(s): {why}");
                let i = t.agents.iter().position(|a| a.host == host).expect("checked above");
                let mut a = t.agents.remove(i);
                a.stop();
                t.removed.insert(host.to_string());
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = t.agents.iter().find(|a| a.host == host).map(|a| a.child.log_tail(3)).unwrap_or_default();
                let what = format!(
                    "etcd logged no refused handshake from {addr} within {:?}, and the host holds no lease; agent log tail:\n{tail}",
                    self.within.0
                );
                return Err(StepError::Check(vec![Finding::new(Check::EtcdAccess, host, what)]));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
