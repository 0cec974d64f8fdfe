//! Agent lifecycle: start, restart (possibly as another implementation), a backend switch,
//! a host joining, and agents that must keep running or must fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{load_profile, outcome, StepError, StepKind, StepResult, Trial};
use crate::agents::{Agent, Implementation};
use crate::contract::{Backend, Check, Finding, NetConf, DEFAULT_PREFIX};
use crate::input::case::{Dur, Ref};
use crate::input::names::HostName;
use crate::store::tls::Credentials;

/// Starts one agent per host, all at the same instant.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StartAgents {
    /// Hosts whose agents get other etcd client credentials than the run's valid ones
    /// (`none`: no client certificate; `foreign_ca`: one signed by a CA etcd does not trust).
    #[serde(default)]
    pub credentials: BTreeMap<HostName, Credentials>,
    /// Starts spread evenly over this window, instead of the profile's `start_spread` (or
    /// one instant in a `simultaneous_start` case); `0s`: all at one instant.
    #[serde(default)]
    pub spread: Option<Dur>,
}

impl StepKind for StartAgents {
    fn refs(&self) -> Vec<Ref<'_>> {
        self.credentials.keys().map(Ref::Host).collect()
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        if !self.credentials.is_empty() && t.store.pki.is_none() {
            return Err("start_agents: `credentials` needs a case with `etcd_tls: true`".into());
        }
        t.start_agents(&self.credentials, self.spread.as_ref().map(|d| d.0)).await
    }
}

/// Stops the host's agent with its profile's signal and starts it again.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestartAgent {
    pub host: HostName,
    /// Delete the host's flannel devices first, so the agent comes back with a new VTEP MAC.
    #[serde(default)]
    pub new_vtep_mac: bool,
    /// Come back as another implementation (bundled profile name, or a path relative to
    /// the case file): how a control breaks one host after a passing baseline.
    #[serde(default)]
    pub profile: Option<String>,
}

impl StepKind for RestartAgent {
    fn refs(&self) -> Vec<Ref<'_>> {
        let mut r = vec![Ref::Host(&self.host)];
        r.extend(self.profile.as_deref().map(Ref::Profile));
        r
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.restart_agent(self).await
    }
}

/// The host's underlay address changes (next free one on its segment) and its agent is
/// restarted with the new `{public_ip}`, as an operator does after a DHCP change: peers
/// must reach it at the new address. Its old lease may stay in etcd until it expires
/// (flanneld's 24 h), and peers keep serving it like any lease.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChangePublicIp {
    pub host: HostName,
}

impl StepKind for ChangePublicIp {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.host)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let host = self.host.as_str();
        if !t.agents.iter().any(|a| a.host == host) {
            return Err(format!("change_public_ip: no agent runs on {host}").into());
        }
        let (old, new) = t.lab.change_host_addr(host).await?;
        tracing::info!("{host}'s underlay address changed from {old} to {new}");
        t.first_subnets = None;
        t.restart_agent(&RestartAgent { host: self.host.clone(), new_vtep_mac: false, profile: None }).await
    }
}

/// Every agent exits non-zero within the deadline and leaves no overlay device.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectAgentsExit {
    pub within: Dur,
}

impl StepKind for ExpectAgentsExit {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.expect_agents_exit(self.within.0).await
    }
}

/// Every agent is still running.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectAgentsRunning {}

impl StepKind for ExpectAgentsRunning {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.expect_agents_running()
    }
}

/// Rewrites the net-conf with another backend and restarts every agent.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SwitchBackend {
    pub to: String,
}

impl StepKind for SwitchBackend {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Backend(&self.to)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let sb = self;
        let to = Backend::parse(&sb.to).ok_or_else(|| format!("unknown backend `{}`", sb.to))?;
        for a in &mut t.agents {
            a.stop();
        }
        let text = t.case.netconf.render(to);
        t.store.put(&format!("{DEFAULT_PREFIX}/config"), text.clone()).await?;
        t.conf = serde_json::from_str(&text).ok().and_then(|v| NetConf::from_json(&v).ok());
        let hosts: Vec<String> = t.agents.drain(..).map(|a| a.host).collect();
        for host in hosts {
            let node = t.lab.host(&host).expect("agent host");
            let imp = t.imp_of(&host);
            let a = Agent::start(&imp, node, &t.launch(Credentials::Valid))?;
            t.agents.push(a);
        }
        t.agents_started = Some(Instant::now());
        tracing::info!("net-conf switched to {to}; agents restarted");
        t.restarted(format!("switch_backend to {to}"));
        Ok(())
    }
}

/// A host joins: namespace, underlay link, and its agent started.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddHost {
    /// A new host on the first host group's segment, with the next free address.
    pub name: HostName,
}

impl StepKind for AddHost {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let h = self;
        t.lab.add_host(&h.name).await?;
        let node = t.lab.host(h.name.as_str()).expect("just added");
        let a = Agent::start(t.imp, node, &t.launch(Credentials::Valid))?;
        t.agents.push(a);
        t.imps.insert(h.name.to_string(), t.imp.clone());
        tracing::info!("{} joined at {}", h.name, node.addr);
        Ok(())
    }
}

impl Trial<'_> {
    /// Starts every agent at one instant (spawned behind a gate, then let go together), or
    /// spread evenly over `spread` (default: the profile's `start_spread`). Hosts named in
    /// the case's `host_profiles` run that implementation instead.
    async fn start_agents(&mut self, credentials: &BTreeMap<HostName, Credentials>, spread: Option<Duration>) -> StepResult {
        // agents whose exit the case expected (and saw) make room for the new ones
        self.agents.retain_mut(|a| !(a.exit_planned && a.child.try_status().is_some()));
        if let Some(a) = self.agents.first() {
            return Err(format!("start_agents: the agent on {} still runs; stop it first (stop_agents)", a.host).into());
        }
        // a removed host is out of the cluster: no agent starts there again (active_hosts,
        // written out to borrow only `lab` and `removed` while agents are pushed)
        let removed = &self.removed;
        let hosts: Vec<&crate::lab::Node> = self.lab.hosts.iter().filter(|n| !removed.contains(&n.name)).collect();
        let mut imps: BTreeMap<String, Implementation> = hosts.iter().map(|n| (n.name.clone(), self.imp.clone())).collect();
        for (host, profile) in &self.case.host_profiles {
            imps.insert(host.clone(), load_profile(profile)?);
        }
        // spread starts evenly over the step's window, else the profile's (past a known
        // start-up race), unless the case is about that race
        let window = match spread {
            Some(w) => w,
            None if self.case.simultaneous_start => Duration::ZERO,
            None => self.imp.profile.start_spread,
        };
        let gap = window / (hosts.len().max(2) as u32 - 1);
        if !window.is_zero() {
            let from = if spread.is_some() { "the step's spread" } else { "the profile's or the run's start_spread" };
            tracing::info!("agent starts spread over {window:?} ({gap:?} apart: {from})");
        }
        // all at once: every agent waits behind one gate until all are spawned
        let mut gate = if window.is_zero() && hosts.len() > 1 { Some(crate::lab::proc::Gate::new()?) } else { None };
        let t0 = Instant::now();
        for (i, node) in hosts.iter().enumerate() {
            if i > 0 && !gap.is_zero() {
                // spacing the starts is the point here, not a wait for a condition
                tokio::time::sleep_until((t0 + gap * i as u32).into()).await;
            }
            let creds = credentials.iter().find(|(h, _)| h.as_str() == node.name).map(|(_, c)| *c).unwrap_or_default();
            let a = Agent::start_gated(&imps[&node.name], node, &self.launch(creds), gate.as_ref())?;
            if creds != Credentials::Valid {
                tracing::info!("{}: agent started with etcd credentials `{}`", node.name, creds.name());
            }
            self.agents.push(a);
        }
        self.imps = imps;
        let spread = t0.elapsed();
        match gate.as_mut() {
            Some(g) => {
                g.open();
                self.agents_started = Some(Instant::now());
                tracing::info!(
                    "started {} agents at one instant (spawned behind a gate within {} ms)",
                    self.agents.len(),
                    spread.as_millis()
                );
            }
            None => {
                self.agents_started = Some(t0);
                tracing::info!("started {} agents within {} ms", self.agents.len(), spread.as_millis());
            }
        }
        if std::mem::take(&mut self.restart_all_due) {
            self.restarted("stop_agents and start_agents");
        }
        Ok(())
    }

    async fn restart_agent(&mut self, r: &RestartAgent) -> StepResult {
        let host = r.host.as_str();
        let i = self.agents.iter().position(|a| a.host == host).ok_or("no agent on that host: add start_agents first")?;
        let mut old = self.agents.remove(i);
        old.stop();
        drop(old);
        let node = self.lab.host(host).ok_or_else(|| format!("no host `{host}`"))?;
        if r.new_vtep_mac {
            for l in node.nl.links().await?.iter().filter(|l| l.name.starts_with("flannel")) {
                node.nl.del_link(&l.name).await?;
            }
        }
        let imp = match &r.profile {
            Some(p) => {
                let imp = load_profile(&crate::input::case::profile_path(self.case, p))?;
                self.imps.insert(host.to_string(), imp.clone());
                imp
            }
            None => self.imp_of(host),
        };
        let a = Agent::start(&imp, node, &self.launch(Credentials::Valid))?;
        self.agents.insert(i, a);
        tracing::info!(
            "restarted the agent on {host}{}{}",
            if r.new_vtep_mac { " with its devices deleted" } else { "" },
            r.profile.as_ref().map(|p| format!(" as profile `{p}`")).unwrap_or_default()
        );
        self.restarted(format!("restart_agent on {host}"));
        Ok(())
    }

    async fn expect_agents_exit(&mut self, within: Duration) -> StepResult {
        if self.agents.is_empty() {
            return Err("expect_agents_exit examined nothing: no agents were started".into());
        }
        // these exits are the point: the end-of-trial liveness check leaves them alone
        for a in &mut self.agents {
            a.exit_planned = true;
        }
        let deadline = Instant::now() + within;
        loop {
            let running: Vec<String> =
                self.agents.iter_mut().filter_map(|a| a.child.try_status().is_none().then(|| a.host.clone())).collect();
            if running.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(StepError::Check(
                    running
                        .into_iter()
                        .map(|h| Finding::new(Check::AgentFailure, h, format!("agent still running after {within:?}")))
                        .collect(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut findings = Vec::new();
        for a in &mut self.agents {
            let s = a.child.try_status().expect("exited");
            let log = a.child.log_summary(3);
            let status = crate::lab::proc::Child::describe_status(&s);
            // a failure is an exit status the agent chose: not a signal (a crash), not the
            // usage error of a profile that passes flags the implementation does not know
            let wrong = match s.code() {
                Some(0) => Some("agent exited with status 0, expected a failure".to_string()),
                None => Some(format!("agent ended by a signal ({status}), not an exit status of its own; {log}")),
                Some(2) if looks_like_usage(&std::fs::read_to_string(a.child.log_file()).unwrap_or_default()) => Some(format!(
                    "agent exited with a usage error (exit code 2): the profile's flags, not the configuration, stopped it; {log}"
                )),
                Some(_) => None,
            };
            match wrong {
                Some(what) => findings.push(Finding::new(Check::AgentFailure, a.host.as_str(), what)),
                None => tracing::info!("{}: {status}; {log}", a.host),
            }
        }
        for node in &self.lab.hosts {
            let links = node.nl.links().await?;
            let half_built: Vec<&str> = links.iter().filter(|l| l.name.starts_with("flannel")).map(|l| l.name.as_str()).collect();
            if !half_built.is_empty() {
                findings.push(Finding::new(Check::AgentFailure, node.name.as_str(), format!("left {half_built:?} behind after failing")));
            }
            if Agent::subnet_file_path(node).exists() {
                findings.push(Finding::new(Check::AgentFailure, node.name.as_str(), "wrote a subnet file although it failed"));
            }
        }
        outcome(findings)
    }

    fn expect_agents_running(&mut self) -> StepResult {
        if self.agents.is_empty() {
            return Err("expect_agents_running examined nothing: no agents were started".into());
        }
        let exits = self.agent_exits()?;
        outcome(exits)
    }
}

/// Whether a log reads like a command-line usage error (Go's flag package, clap, getopt).
fn looks_like_usage(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    ["flag provided but not defined", "unknown flag", "unexpected argument", "unrecognized option", "invalid option", "usage:"]
        .iter()
        .any(|p| l.contains(p))
}

#[cfg(test)]
mod tests {
    use super::looks_like_usage;

    #[test]
    fn usage_errors_are_told_from_configuration_errors() {
        assert!(looks_like_usage("flag provided but not defined: -etcd-foo\nUsage of flanneld:\n"));
        assert!(looks_like_usage("error: unexpected argument '--nope' found\n\nUsage: flannel-agent [OPTIONS]"));
        assert!(!looks_like_usage("E1206 main.go:330] failed to parse net-conf: invalid network 10.244.0.0/33"));
    }
}
