//! Steps: what a case does to a lab, in order. A step kind is one type (its YAML arguments)
//! implementing [`StepKind`]: what it names (checked when the case loads, with
//! file:line:col) and how it runs against the [`Trial`]. Adding a step is one type plus one
//! line in the list at the bottom of this file.
//!
//! A step ends in a [`StepError`] that says whether a check found the implementation wrong
//! (findings, each naming its check and host) or the lab could not do its job. Every wait
//! is a deadline on a condition.

mod agent;
mod converge;
mod etcd;
mod faults;
mod negation;
mod pods;
mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use agent::{AddHost, ExpectAgentsExit, ExpectAgentsRunning, RestartAgent, StartAgents, SwitchBackend};
pub use converge::{ExpectCounts, ExpectSubnetsUnchanged, StayConverged, WaitConverged};
pub use etcd::{PauseEtcd, PutKey, RestartEtcd, RevokeLease, StopEtcdLeader};
pub use faults::{Break, CutLink, RemoveHost, Sabotage};
pub use negation::ExpectFailure;
pub use pods::{CreatePods, ExpectMtu, ExpectPing};
pub use traffic::{Fate, InjectUdp, MeasureThroughput, StartTraffic, StopTraffic};

use crate::agents::{Agent, Implementation};
use crate::contract::{self, Backend, Check, Counts, Finding, NetConf, SubnetEnv, DEFAULT_PREFIX};
use crate::error::{chain, Error};
use crate::input::case::{single_key_enum, Ref, StepSyntax};
use crate::input::names::Ipv4Net;
use crate::lab::pods::{self as lab_pods, Gateway, Pod};
use crate::lab::{Lab, Node};
use crate::probe;
use crate::store::Store;

/// A case whose steps are this crate's step kinds.
pub type Case = crate::input::case::Case<Step>;

/// How a step ended when it did not pass.
#[derive(Debug)]
pub enum StepError {
    /// A check found the implementation wrong: one finding or more, each naming its check
    /// and host.
    Check(Vec<Finding>),
    /// The lab could not do its job (setup, I/O, the lab's own timeouts). Never a pass.
    Lab(Error),
}

pub type StepResult = Result<(), StepError>;

impl StepError {
    pub fn check(check: Check, host: impl Into<String>, what: impl Into<String>) -> StepError {
        StepError::Check(vec![Finding::new(check, host, what)])
    }

    /// The findings, one per line, or the lab error with its whole chain.
    pub fn describe(&self) -> String {
        match self {
            StepError::Check(f) => {
                // every finding stays in the error (an expectation may match any of them);
                // the message shows the first ones
                let mut shown: Vec<String> = f.iter().take(16).map(|f| f.to_string()).collect();
                if f.len() > shown.len() {
                    shown.push(format!("(+{} more findings)", f.len() - shown.len()));
                }
                shown.join("; ")
            }
            StepError::Lab(e) => format!("lab error: {}", chain(e)),
        }
    }

    /// Passes the findings through `f` (a lab error stays as it is).
    fn map_findings(self, f: impl FnMut(Finding) -> Finding) -> StepError {
        match self {
            StepError::Check(v) => StepError::Check(v.into_iter().map(f).collect()),
            lab => lab,
        }
    }
}

impl From<Error> for StepError {
    fn from(e: Error) -> StepError {
        StepError::Lab(e)
    }
}

impl From<String> for StepError {
    fn from(s: String) -> StepError {
        StepError::Lab(Error::Lab(s))
    }
}

impl From<&str> for StepError {
    fn from(s: &str) -> StepError {
        StepError::Lab(Error::Lab(s.to_string()))
    }
}

/// Findings as a step's outcome: none is a pass.
fn outcome(findings: Vec<Finding>) -> StepResult {
    if findings.is_empty() {
        Ok(())
    } else {
        Err(StepError::Check(findings))
    }
}

/// One kind of step.
pub(crate) trait StepKind {
    /// What the step names (hosts, backends, profiles), checked when the case loads.
    fn refs(&self) -> Vec<Ref<'_>> {
        Vec::new()
    }

    /// Runs the step against the trial. The trial runs on one runtime's `block_on`, so the
    /// future need not be `Send`.
    #[allow(async_fn_in_trait)]
    async fn run(&self, t: &mut Trial<'_>) -> StepResult;
}

/// A lab while a case's steps run on it. Field order is drop order: agents before the
/// store, the store before the lab.
pub struct Trial<'a> {
    pub case: &'a Case,
    pub backend: Backend,
    /// The implementation under test.
    pub imp: &'a Implementation,
    /// The implementation each host runs (the one under test unless `host_profiles` says).
    imps: BTreeMap<String, Implementation>,
    /// Hosts taken out of the cluster by `remove_host`.
    removed: BTreeSet<String>,
    /// Each host's subnet at the first convergence.
    first_subnets: Option<BTreeMap<String, Ipv4Net>>,
    traffic: Option<(probe::traffic::Traffic, String, String)>,
    conf: Option<NetConf>,
    pub agents: Vec<Agent>,
    agents_started: Option<Instant>,
    /// A restart (or another fault) after which only fresh evidence counts: when, and what.
    canary_due: Option<(Instant, String)>,
    /// Each host's `cni0`, set up from its subnet file.
    gateways: BTreeMap<String, Gateway>,
    pods: Vec<Pod>,
    /// DF probe endpoints, one per host, with a larger MTU than the overlay's.
    mtu_probes: BTreeMap<String, Pod>,
    pub store: Store,
    pub capture: Option<probe::capture::Capture>,
    pub lab: Lab,
}

impl<'a> Trial<'a> {
    pub fn new(
        case: &'a Case,
        backend: Backend,
        imp: &'a Implementation,
        conf: Option<NetConf>,
        store: Store,
        capture: Option<probe::capture::Capture>,
        lab: Lab,
    ) -> Trial<'a> {
        Trial {
            case,
            backend,
            imp,
            imps: BTreeMap::new(),
            removed: BTreeSet::new(),
            first_subnets: None,
            traffic: None,
            conf,
            agents: Vec::new(),
            agents_started: None,
            canary_due: None,
            gateways: BTreeMap::new(),
            pods: Vec::new(),
            mtu_probes: BTreeMap::new(),
            store,
            capture,
            lab,
        }
    }

    fn conf(&self) -> Result<&NetConf, StepError> {
        self.conf.as_ref().ok_or_else(|| StepError::from("this step needs a valid net-conf, and the case's is not one"))
    }

    fn host(&self, name: &str) -> Result<&Node, StepError> {
        self.lab.host(name).ok_or_else(|| StepError::from(format!("no host `{name}`")))
    }

    /// From now on only evidence produced after `what` counts (see `converge::canary_round`).
    fn restarted(&mut self, what: impl Into<String>) {
        self.canary_due = Some((Instant::now(), what.into()));
    }

    /// The implementation a host runs.
    fn imp_of(&self, host: &str) -> Implementation {
        self.imps.get(host).cloned().unwrap_or_else(|| self.imp.clone())
    }

    pub fn stop_agents(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
    }

    /// Each active host's subnet, from its lease in etcd.
    async fn subnets(&self) -> Result<BTreeMap<String, crate::input::names::Ipv4Net>, StepError> {
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(StepError::from)?;
        let leases: Vec<contract::LeaseView> = raw.iter().filter_map(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v).ok()).collect();
        Ok(self.active_hosts().filter_map(|h| leases.iter().find(|l| l.public_ip == h.addr).map(|l| (h.name.clone(), l.subnet))).collect())
    }

    /// Hosts still in the cluster.
    fn active_hosts(&self) -> impl Iterator<Item = &crate::lab::Node> {
        self.lab.hosts.iter().filter(|h| !self.removed.contains(&h.name))
    }

    /// Reads etcd and every host, and checks them against the contract. The hosts are read
    /// concurrently.
    async fn observe(&self) -> Result<(Vec<Finding>, BTreeMap<String, Counts>), StepError> {
        let conf = self.conf()?;
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(StepError::from)?;
        let leases: Vec<std::result::Result<contract::LeaseView, String>> =
            raw.iter().map(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v)).collect();
        let active: Vec<&crate::lab::Node> = self.active_hosts().collect();
        if active.is_empty() {
            return Err("no active hosts: the contract examined nothing".into());
        }
        let hosts: Vec<(String, Ipv4Addr)> = active.iter().map(|h| (h.name.clone(), h.addr)).collect();
        let mut findings = Vec::new();
        let mut by_ip = contract::check_leases(conf, &hosts, &leases, &mut findings);
        // a removed host's lease must be gone
        for node in self.lab.hosts.iter().filter(|h| self.removed.contains(&h.name)) {
            if let Some(l) = by_ip.remove(&node.addr) {
                findings.push(Finding::new(Check::Lease, node.name.as_str(), format!("removed host still has lease {} in etcd", l.subnet)));
            }
        }
        let paths: Vec<PathBuf> = active.iter().map(|n| Agent::subnet_file_path(n)).collect();
        let states = futures::future::join_all(active.iter().zip(&paths).map(|(n, p)| probe::dump_host(n, p))).await;
        let mut counts = BTreeMap::new();
        for (node, state) in active.into_iter().zip(states) {
            let state = state.map_err(StepError::from)?;
            let mtu = self.lab.mtu_of(node);
            contract::check_subnet_file(conf, &node.name, mtu, by_ip.get(&node.addr), state.subnet_file.as_deref(), &mut findings);
            let c = contract::check_kernel(conf, &node.name, node.addr, mtu, &by_ip, &state, &mut findings);
            counts.insert(node.name.clone(), c);
        }
        Ok((findings, counts))
    }

    /// Exited agents, as findings. Agents whose profile has a restart policy are restarted
    /// instead (after a doubling backoff), like a DaemonSet's pods.
    fn agent_exits(&mut self) -> Result<Vec<Finding>, StepError> {
        use crate::input::profile::RestartPolicy;
        let mut out = Vec::new();
        for i in 0..self.agents.len() {
            let a = &mut self.agents[i];
            let Some(s) = a.child.try_status() else { continue };
            let restart = match a.profile.restart {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => !s.success(),
                RestartPolicy::Always => true,
            };
            if restart {
                let now = Instant::now();
                let due = *a
                    .next_restart
                    .get_or_insert_with(|| now + (a.profile.restart_backoff * 2u32.pow(a.restarts.min(4))).min(Duration::from_secs(10)));
                if now >= due {
                    let host = a.host.clone();
                    let restarts = a.restarts + 1;
                    let node = self.lab.host(&host).expect("agent host");
                    let imp = self.imp_of(&host);
                    let mut fresh = Agent::start(&imp, node, &self.store.endpoints(), DEFAULT_PREFIX)
                        .map_err(|e| e.context(format!("{host}: restart under the restart policy")))?;
                    fresh.restarts = restarts;
                    tracing::info!(
                        "{host}: agent exited ({}), restarted by the restart policy (restart {restarts})",
                        crate::lab::proc::Child::describe_status(&s)
                    );
                    self.agents[i] = fresh;
                    self.restarted(format!("the restart policy restarting {host}"));
                }
                continue;
            }
            out.push(Finding::new(
                Check::AgentExit,
                a.host.as_str(),
                format!("agent exited ({}); log tail:\n{}", crate::lab::proc::Child::describe_status(&s), a.child.log_tail(5)),
            ));
        }
        Ok(out)
    }

    /// Agents whose profile's readiness condition does not hold.
    fn not_ready(&self) -> Vec<Finding> {
        self.agents
            .iter()
            .filter(|a| !a.is_ready())
            .map(|a| Finding::new(Check::Readiness, a.host.as_str(), format!("agent not ready ({:?})", a.profile.ready)))
            .collect()
    }

    /// Sets up each active host's `cni0` from its subnet file (as a CNI plugin would at the
    /// first pod), so every host has an address in its own subnet to probe from and to.
    /// Hosts without a usable subnet file are left out (the contract reports them).
    async fn ensure_gateways(&mut self) -> StepResult {
        let hosts: Vec<String> = self.active_hosts().map(|h| h.name.clone()).collect();
        for h in hosts {
            let node = self.lab.host(&h).expect("active host");
            let Ok(text) = std::fs::read_to_string(Agent::subnet_file_path(node)) else { continue };
            let env = SubnetEnv::parse(&text);
            let (Some((gw, _)), Some(subnet), Some(mtu)) = (env.subnet_ip, env.subnet(), env.mtu) else { continue };
            let want = Gateway { addr: gw, subnet, mtu };
            let previous = self.gateways.get(&h).copied();
            if previous != Some(want) {
                lab_pods::ensure_bridge(node, want, previous).await.map_err(|e| StepError::Lab(crate::lab_err!("{h}: {}", chain(&e))))?;
                self.gateways.insert(h, want);
            }
        }
        Ok(())
    }

    /// Whether traffic between these two hosts is expected not to flow (host-gw across a
    /// router, as the case states).
    fn unreachable_pair(&self, cross_segment_fails: &[String], a: &str, b: &str) -> bool {
        let backend = self.conf.as_ref().map(|c| c.backend).unwrap_or(self.backend);
        cross_segment_fails.iter().any(|x| x == backend.name())
            && self.lab.host(a).map(|n| n.segment) != self.lab.host(b).map(|n| n.segment)
    }

    /// The data plane: from every active host's `cni0` address, every peer's `cni0` address
    /// answers an echo, over the backend's own path (for udp through the agents). One probe
    /// thread per host, all in parallel. Returns one finding per host that misses peers.
    async fn reachability(&mut self, cross_segment_fails: &[String]) -> Result<Vec<Finding>, StepError> {
        self.ensure_gateways().await?;
        let hosts: Vec<(String, Ipv4Addr)> =
            self.active_hosts().filter_map(|h| self.gateways.get(&h.name).map(|g| (h.name.clone(), g.addr))).collect();
        let mut jobs = Vec::new();
        for (src, src_gw) in &hosts {
            let peers: Vec<(String, Ipv4Addr)> =
                hosts.iter().filter(|(d, _)| d != src && !self.unreachable_pair(cross_segment_fails, src, d)).cloned().collect();
            if peers.is_empty() {
                continue;
            }
            let ns = self.lab.host(src).expect("active host").ns.clone();
            let (src, src_gw) = (src.clone(), *src_gw);
            jobs.push(std::thread::spawn(move || {
                let r = probe::sweep(&ns, src_gw, peers.iter().map(|p| p.1).collect(), 3, Duration::from_millis(300));
                (src, peers, r)
            }));
        }
        let results = tokio::task::spawn_blocking(move || jobs.into_iter().map(|j| j.join().expect("probe thread")).collect::<Vec<_>>())
            .await
            .map_err(|e| e.to_string())?;
        let mut findings = Vec::new();
        for (src, peers, r) in results {
            let outcomes = r.map_err(StepError::from)?;
            let missed: Vec<String> = peers
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| !o.is_reply())
                .map(|((name, addr), o)| format!("{name} ({addr}): {o:?}"))
                .collect();
            if !missed.is_empty() {
                findings.push(Finding::new(
                    Check::Reachability,
                    src.as_str(),
                    format!("{} of {} peers do not answer over the overlay: {}", missed.len(), peers.len(), missed.join(", ")),
                ));
            }
        }
        Ok(findings)
    }

    /// Everything convergence needs, each check on its own: agents alive and ready, the
    /// contract, and the data plane (skipped while the control plane is still moving,
    /// unless `all` asks for every check, as at the deadline).
    async fn convergence_findings(&mut self, cross_segment_fails: &[String], all: bool) -> Result<Vec<Finding>, StepError> {
        let exits = self.agent_exits()?;
        if !exits.is_empty() {
            return Ok(exits);
        }
        let mut findings = self.not_ready();
        if findings.is_empty() || all {
            findings.extend(self.observe().await?.0);
        }
        if findings.is_empty() || all {
            findings.extend(self.reachability(cross_segment_fails).await?);
        }
        Ok(findings)
    }

    /// The case's own statement of which backends cannot cross segments, taken from its
    /// first wait_converged (so later checks skip the same pairs).
    fn cross_segment_fails(&self) -> Vec<String> {
        self.case
            .steps
            .iter()
            .find_map(|s| match s {
                Step::WaitConverged(w) => Some(w.cross_segment_fails.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Revokes the etcd lease holding the host's subnet key (deleting the key).
    async fn revoke_lease(&mut self, host: &str) -> StepResult {
        let node = self.host(host)?;
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(StepError::from)?;
        let key = raw
            .iter()
            .find(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v).is_ok_and(|l| l.public_ip == node.addr))
            .map(|(k, _)| k.clone())
            .ok_or_else(|| format!("no lease for {} ({}) in etcd to revoke", node.name, node.addr))?;
        match self.store.revoke_key_lease(&key).await.map_err(StepError::from)? {
            Some(id) => tracing::info!("revoked lease {id:x} of {key}"),
            None => tracing::info!("deleted {key} (it had no etcd lease)"),
        }
        Ok(())
    }

    /// Writes what a person needs to see why the trial failed into the work directory.
    pub async fn save_artifacts(&mut self, log: &[String]) {
        for node in &self.lab.hosts {
            if let Ok(state) = probe::dump_host(node, &Agent::subnet_file_path(node)).await {
                let _ = std::fs::write(node.dir.join("state.json"), serde_json::to_string_pretty(&state).unwrap_or_default());
            }
        }
        if let Ok(kvs) = self.store.list(&format!("{DEFAULT_PREFIX}/")).await {
            let dump: BTreeMap<String, String> = kvs.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
            let _ = std::fs::write(self.lab.dir.join("etcd-keys.json"), serde_json::to_string_pretty(&dump).unwrap_or_default());
        }
        let _ = std::fs::write(self.lab.dir.join("trial.log"), log.join("\n"));
        let _ = std::fs::copy(&self.case.file, self.lab.dir.join("case.yaml"));
        let _ = std::fs::copy(&self.lab.topo.file, self.lab.dir.join("topology.yaml"));
    }
}

/// Loads a profile named by a case (mixed clusters, restarts as another implementation).
fn load_profile(profile: &str) -> Result<Implementation, StepError> {
    let mut imp = Implementation::load(profile, false)?;
    if imp.profile.uses_reference_agent() {
        imp.reference_agent = crate::agents::reference_agent()?;
    }
    Ok(imp)
}

/// The step kinds, each with its name in case files. `Step` is generated from this list:
/// reading it from YAML (one key per list item), its name, what it names, and running it.
macro_rules! step_kinds {
    ($($name:literal => $ty:ident),* $(,)?) => {
        /// One step of a case.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Step {
            $($ty($ty)),*
        }

        single_key_enum!(Step, "step", { $($name => $ty($ty)),* });

        impl StepSyntax for Step {
            fn name(&self) -> &'static str {
                match self {
                    $(Step::$ty(_) => $name),*
                }
            }

            fn refs(&self) -> Vec<Ref<'_>> {
                match self {
                    $(Step::$ty(s) => s.refs()),*
                }
            }
        }

        impl Step {
            /// Runs the step against the trial.
            pub async fn run(&self, t: &mut Trial<'_>) -> StepResult {
                match self {
                    $(Step::$ty(s) => s.run(t).await),*
                }
            }
        }
    };
}

step_kinds! {
    "start_agents" => StartAgents,
    "wait_converged" => WaitConverged,
    "stay_converged" => StayConverged,
    "create_pods" => CreatePods,
    "expect_ping" => ExpectPing,
    "expect_mtu" => ExpectMtu,
    "expect_counts" => ExpectCounts,
    "expect_agents_exit" => ExpectAgentsExit,
    "expect_agents_running" => ExpectAgentsRunning,
    "measure_throughput" => MeasureThroughput,
    "inject_udp" => InjectUdp,
    "restart_etcd" => RestartEtcd,
    "revoke_lease" => RevokeLease,
    "restart_agent" => RestartAgent,
    "put_key" => PutKey,
    "start_traffic" => StartTraffic,
    "stop_traffic" => StopTraffic,
    "pause_etcd" => PauseEtcd,
    "cut_link" => CutLink,
    "remove_host" => RemoveHost,
    "expect_subnets_unchanged" => ExpectSubnetsUnchanged,
    "switch_backend" => SwitchBackend,
    "stop_etcd_leader" => StopEtcdLeader,
    "add_host" => AddHost,
    "break" => Break,
    "expect_failure" => ExpectFailure,
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::input::case::{discover, Dur};
    use crate::input::diag::Diagnostics;

    fn dirs() -> (PathBuf, PathBuf) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        (root.join("cases"), root.join("topologies"))
    }

    fn parse(src: &str) -> Result<Case, Diagnostics> {
        let (_, topos) = dirs();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, src).unwrap();
        Case::load(&file, &topos)
    }

    #[test]
    fn steps_parse_as_single_key_maps() {
        let c = parse(
            "topology: flat\nhosts: [2, 3]\nsteps:\n  - start_agents: {}\n  - wait_converged: {within: 20s}\n  - expect_failure: {check: counts, host: h2, step: {expect_counts: {}}}\n  - break: {delete_fdb: {host: h2}}\n",
        )
        .unwrap();
        assert_eq!(c.steps.len(), 4);
        assert_eq!(c.steps[1], Step::WaitConverged(WaitConverged { within: Dur(Duration::from_secs(20)), cross_segment_fails: vec![] }));
        assert_eq!(
            c.steps[2],
            Step::ExpectFailure(ExpectFailure {
                check: Check::Counts,
                host: "h2".into(),
                step: Box::new(Step::ExpectCounts(ExpectCounts {}))
            })
        );
        assert_eq!(c.backends, Backend::ALL.to_vec());
        assert_eq!(c.scales(), vec![Some(2), Some(3)]);
        assert_eq!(c.netconf.render(Backend::Vxlan), r#"{"Backend":{"Type":"vxlan"},"Network":"10.244.0.0/16"}"#);
    }

    #[test]
    fn rejections_are_located() {
        let e = parse("topology: flat\nsteps:\n  - wait_converged: {within: soon}\n").unwrap_err();
        assert!(e.to_string().contains("c.yaml:3:"), "{e}");
        assert!(e.to_string().contains("not a duration"), "{e}");
        let e = parse("topology: flat\nbackends: [vxlan, geneve]\nsteps:\n  - break: {delete_fdb: {host: h9}}\n").unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].to_string().contains("c.yaml:2:19: backends[1]: unknown backend `geneve`"), "{e}");
        assert!(e.0[1].message.contains("no host `h9`"), "{e}");
        let e = parse("topology: nowhere\nsteps:\n  - start_agents: {}\n").unwrap_err();
        assert!(e.0[0].message.contains("cannot read file"), "{e}");
        let e = parse("topology: flat\nsteps:\n  - start_agent: {}\n").unwrap_err();
        assert!(e.0[0].message.contains("unknown variant `start_agent`"), "{e}");
        // what a step names is checked through its kind, wherever it is nested
        let e = parse("topology: flat\nsteps:\n  - expect_failure: {check: fdb, host: h7, step: {switch_backend: {to: geneve}}}\n")
            .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].message.contains("no host `h7`"), "{e}");
        assert!(e.0[1].message.contains("unknown backend `geneve`"), "{e}");
    }

    #[test]
    fn bundled_cases_are_valid() {
        let (cases, topos) = dirs();
        let files = discover(&cases);
        assert!(!files.is_empty());
        for f in files {
            Case::load(&f, &topos).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
