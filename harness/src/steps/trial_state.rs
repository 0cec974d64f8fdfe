//! The trial state steps act on: the lab, etcd, the agents, pods and probes, and what the
//! steps learned so far (first subnets, removed hosts, a due canary); plus the checks
//! several steps share (observe the contract, agent exits, readiness, reachability).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Case, Step, StepError, StepResult};
use crate::agents::{Agent, Implementation, Launch};
use crate::contract::{self, Backend, Check, Counts, Finding, NetConf, SubnetEnv, DEFAULT_PREFIX};
use crate::error::chain;
use crate::input::names::Ipv4Net;
use crate::lab::memory::OomLimit;
use crate::lab::pods::{self as lab_pods, Gateway, Pod};
use crate::lab::{Lab, Node};
use crate::probe;
use crate::store::tls::Credentials;
use crate::store::Store;

/// A lab while a case's steps run on it. Field order is drop order: agents before the
/// store, the store before the lab.
pub struct Trial<'a> {
    pub case: &'a Case,
    pub backend: Backend,
    /// The implementation under test.
    pub imp: &'a Implementation,
    /// The implementation each host runs (the one under test unless `host_profiles` says).
    pub(super) imps: BTreeMap<String, Implementation>,
    /// Hosts taken out of the cluster by `remove_host`.
    pub(super) removed: BTreeSet<String>,
    /// Each host's subnet at the first convergence.
    pub(super) first_subnets: Option<BTreeMap<String, Ipv4Net>>,
    pub(super) traffic: Option<(probe::traffic::Traffic, String, String)>,
    pub(super) conf: Option<NetConf>,
    pub agents: Vec<Agent>,
    pub(super) agents_started: Option<Instant>,
    /// A restart (or another fault) after which only fresh evidence counts: when, and what.
    pub(super) canary_due: Option<(Instant, String)>,
    /// `stop_agents` stopped every agent: the next `start_agents` restarts them all, and
    /// the wait after it runs the canary round like after any restart.
    pub(super) restart_all_due: bool,
    /// Each host's `cni0`, set up from its subnet file.
    pub(super) gateways: BTreeMap<String, Gateway>,
    pub(super) pods: Vec<Pod>,
    /// DF probe endpoints, one per host, with a larger MTU than the overlay's.
    pub(super) mtu_probes: BTreeMap<String, Pod>,
    /// udev's MAC policy, emulated per host (`udev_mac_policy`).
    pub(super) udev: Vec<crate::lab::udev::MacPolicy>,
    pub store: Store,
    pub capture: Option<probe::capture::Capture>,
    pub lab: Lab,
    /// A mutant trial's expected finding, armed during the step it names: a wait there may
    /// end once that finding has held, with nothing changing, for [`MUTANT_SETTLE`].
    pub settle_on: Option<crate::input::case::Expected>,
    /// Pod-traffic frames per (sender, receiver) the last wire check saw.
    pub wire: super::wire_checks::WireCounts,
    /// Which window of peers data-plane probes use at size (moves on once one passes).
    pub(super) reach_round: u64,
    /// At size, the (source, peer, over IPv6) pairs of the current window that answered
    /// during the current wait, since the control plane was last seen converged: they are
    /// not probed again until the window moves on, so a window passes once every pair
    /// answered, not only when all 16,000 echoes of one poll came back (on a loaded
    /// 1000-host lab a few in a thousand do not, at random).
    pub(super) reach_answered: std::collections::BTreeSet<(String, String, bool)>,
    /// At size, the data-plane windows (round modulo the window count) this trial has
    /// proven: every pair answering in one sweep.
    pub(super) reach_proven: std::collections::BTreeSet<u64>,
    /// During a wait at size up to [`FULL_COVERAGE_UP_TO`] hosts: its progress towards
    /// every pair.
    pub(super) cover: Option<Coverage>,
    /// Which window of hosts the next confirming read reads whole at size.
    pub(super) confirm_round: u64,
    /// What the current wait's polls cost.
    pub(super) polls: PollCost,
    /// The machine's memory since the trial began: running out is a lab error.
    pub(super) memory: crate::lab::memory::Watch,
}

/// Labs up to this many hosts read every host's whole neighbour table at every poll. Above,
/// polls look the expected entries up one by one, a converged-looking lab is confirmed with
/// whole reads of this many hosts (a window that moves on each time), and the steps that
/// judge counts (`expect_counts`) read every host whole: the kernel keeps one neighbour
/// table for all namespaces and a dump walks all of it (N² entries with N vxlan hosts), so
/// N dumps cost N³ (a minute at a thousand hosts).
pub const NEIGHBOUR_DUMPS_UP_TO: usize = 64;

/// What a wait's polls cost the harness: how many, the time spent reading etcd and the
/// hosts and probing the data plane, and the harness's CPU time meanwhile.
#[derive(Debug, Default, Clone)]
pub(super) struct PollCost {
    pub polls: u32,
    pub reads: Duration,
    pub data_plane: Duration,
    pub cpu_at_start: Option<Duration>,
}

impl PollCost {
    pub(super) fn start() -> PollCost {
        PollCost { cpu_at_start: crate::lab::proc::cpu_time(std::process::id()), ..PollCost::default() }
    }

    /// `12 polls; each read 1.2 s, data plane 0.8 s (mean); harness CPU 9.1 s` (the CPU
    /// is the whole process's: other trials running beside this one count too).
    pub(super) fn describe(&self) -> String {
        let n = self.polls.max(1);
        let cpu = match (self.cpu_at_start, crate::lab::proc::cpu_time(std::process::id())) {
            (Some(a), Some(b)) => format!("; harness CPU {:.1} s", b.saturating_sub(a).as_secs_f64()),
            _ => String::new(),
        };
        format!(
            "{} polls; each read {:.2} s, data plane {:.2} s (mean){cpu}",
            self.polls,
            self.reads.as_secs_f64() / f64::from(n),
            self.data_plane.as_secs_f64() / f64::from(n)
        )
    }
}

/// How [`Trial::observe_reading`] reads each host's neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
    /// The whole table (extras too), expected entries checked one by one.
    Whole,
    /// Only the expected entries, one by one: blind to extras.
    Lookups,
    /// [`Reading::Whole`] for [`NEIGHBOUR_DUMPS_UP_TO`] hosts starting at this round's
    /// window, [`Reading::Lookups`] for the others.
    Sample(u64),
}

impl Reading {
    /// Whether host `i` of `n` gets a whole read.
    fn whole(self, i: usize, n: usize) -> bool {
        match self {
            Reading::Whole => true,
            Reading::Lookups => false,
            Reading::Sample(round) => {
                let start = (round as usize).wrapping_mul(NEIGHBOUR_DUMPS_UP_TO) % n.max(1);
                (i + n - start) % n.max(1) < NEIGHBOUR_DUMPS_UP_TO
            }
        }
    }
}

/// How long the end of a trial watches the agents after the last step, before the lab
/// sends them its stop signal: an agent that dies as the last step ends is seen.
pub const END_WATCH: Duration = Duration::from_secs(1);

/// Which exits [`Trial::exits`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exits {
    /// Every exited agent (and restarts under a restart policy happen).
    All,
    /// Only exits the case did not cause; nothing is restarted (the end of the trial).
    Unplanned,
}

/// Peers each host probes per data-plane check above [`NEIGHBOUR_DUMPS_UP_TO`] hosts.
pub const REACH_SAMPLE: usize = 16;

/// How long a mutant trial's expected finding must hold, with every finding unchanged and
/// every agent alive, before a wait stops early. Mutants are broken by construction
/// (frozen, crashed, wrong state) and their trials only need the finding shown to hold;
/// the implementation under test always gets the full deadline.
pub const MUTANT_SETTLE: Duration = Duration::from_secs(8);

/// Tracks whether a wait's findings stopped changing (see [`MUTANT_SETTLE`]).
pub(super) struct Settle {
    window: Duration,
    seen: Option<(Vec<Finding>, Instant)>,
}

impl Default for Settle {
    fn default() -> Settle {
        Settle { window: MUTANT_SETTLE, seen: None }
    }
}

impl Settle {
    /// Feeds one poll's findings: true once they have been exactly these for the window.
    pub(super) fn quiet(&mut self, findings: &[Finding]) -> bool {
        match &self.seen {
            Some((f, since)) if f.as_slice() == findings => since.elapsed() >= self.window,
            _ => {
                self.seen = Some((findings.to_vec(), Instant::now()));
                false
            }
        }
    }

    pub(super) fn reset(&mut self) {
        self.seen = None;
    }
}

impl<'a> Trial<'a> {
    /// Whether `findings` hold the finding a mutant trial expects at this step.
    pub(super) fn holds_expected(&self, findings: &[Finding]) -> bool {
        self.settle_on.as_ref().is_some_and(|e| findings.iter().any(|f| f.check == e.check && f.host == e.host))
    }

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
            restart_all_due: false,
            gateways: BTreeMap::new(),
            pods: Vec::new(),
            mtu_probes: BTreeMap::new(),
            udev: Vec::new(),
            store,
            capture,
            lab,
            settle_on: None,
            wire: Default::default(),
            reach_round: 0,
            reach_answered: Default::default(),
            reach_proven: Default::default(),
            cover: None,
            confirm_round: 0,
            polls: PollCost::default(),
            memory: crate::lab::memory::Watch::start(),
        }
    }

    pub(super) fn conf(&self) -> Result<&NetConf, StepError> {
        self.conf.as_ref().ok_or_else(|| StepError::from("this step needs a valid net-conf, and the case's is not one"))
    }

    pub(super) fn host(&self, name: &str) -> Result<&Node, StepError> {
        self.lab.host(name).ok_or_else(|| StepError::from(format!("no host `{name}`")))
    }

    /// The named hosts, or every host when none is named.
    pub(super) fn hosts_or_all(&self, names: &[crate::input::names::HostName]) -> Result<Vec<&Node>, StepError> {
        if names.is_empty() {
            return Ok(self.lab.hosts.iter().collect());
        }
        names.iter().map(|h| self.host(h.as_str())).collect()
    }

    /// From now on only evidence produced after `what` counts (see `converge::canary_round`).
    pub(super) fn restarted(&mut self, what: impl Into<String>) {
        self.canary_due = Some((Instant::now(), what.into()));
    }

    /// What an agent is told at start, given client credentials `creds` (which matter only
    /// when etcd speaks TLS).
    pub(super) fn launch(&self, creds: Credentials) -> Launch {
        Launch {
            endpoints: self.store.endpoints(),
            prefix: DEFAULT_PREFIX.to_string(),
            tls: self.store.pki.as_ref().map(|p| p.client_files(creds)).unwrap_or_default(),
            ip_masq: self.case.ip_masq,
            nice: crate::agents::agent_nice(self.lab.hosts.len()),
        }
    }

    /// Hosts without a lease whose client certificate etcd refused since their agent
    /// started (and since `since`, when given), each with how often and the last reason
    /// etcd gave. Handshakes a client merely broke off (etcd logs `EOF`) do not count.
    pub(super) async fn refusals(&self, since: Option<std::time::SystemTime>) -> Result<BTreeMap<String, (usize, String)>, StepError> {
        if self.store.pki.is_none() {
            return Ok(BTreeMap::new());
        }
        let leased: BTreeSet<Ipv4Addr> = self.leases().await?.into_iter().filter_map(|(_, l)| l.ok().map(|l| l.public_ip)).collect();
        self.refusals_of_unleased(since, &leased).await
    }

    /// [`Trial::refusals`] with the leased addresses already read.
    pub(super) async fn refusals_of_unleased(
        &self,
        since: Option<std::time::SystemTime>,
        leased: &BTreeSet<Ipv4Addr>,
    ) -> Result<BTreeMap<String, (usize, String)>, StepError> {
        let all = self.store.refused_connections().await?;
        let mut out = BTreeMap::new();
        for a in &self.agents {
            let Some(node) = self.lab.host(&a.host) else { continue };
            if leased.contains(&node.addr) {
                continue;
            }
            let started = a.started - Duration::from_secs(1);
            let from = since.map_or(started, |s| s.max(started));
            let mine: Vec<_> = all
                .iter()
                .filter(|r| r.from.ip() == node.addr && r.reason.contains("certificate") && r.at.is_none_or(|t| t >= from))
                .collect();
            if let Some(last) = mine.last() {
                let mut why = last.reason.clone();
                if !a.profile.mentions("etcd_certfile") {
                    why.push_str(&format!(" (profile `{}` passes no {{etcd_certfile}})", a.profile.name));
                }
                out.insert(a.host.clone(), (mine.len(), why));
            }
        }
        Ok(out)
    }

    /// A finding for every host whose agent etcd refused (said when a wait runs out, so a
    /// refused agent reads as refused, not as a hang).
    pub(super) async fn refusal_findings(&self, since: Option<std::time::SystemTime>) -> Result<Vec<Finding>, StepError> {
        Ok(refusal_findings(self.refusals(since).await?))
    }

    /// The implementation a host runs.
    pub(super) fn imp_of(&self, host: &str) -> Implementation {
        self.imps.get(host).cloned().unwrap_or_else(|| self.imp.clone())
    }

    pub fn stop_agents(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
    }

    /// Every key under `<prefix>/subnets/` in etcd, each with its lease as the contract
    /// reads it (or why it is not one).
    pub(super) async fn leases(&self) -> Result<Vec<(String, Result<contract::LeaseView, String>)>, StepError> {
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await?;
        Ok(raw.iter().map(|(k, v)| (k.clone(), contract::parse_lease(DEFAULT_PREFIX, k, v))).collect())
    }

    /// Each active host's subnet, from its lease in etcd.
    pub(super) async fn subnets(&self) -> Result<BTreeMap<String, Ipv4Net>, StepError> {
        let leases: Vec<contract::LeaseView> = self.leases().await?.into_iter().filter_map(|(_, l)| l.ok()).collect();
        Ok(self.active_hosts().filter_map(|h| leases.iter().find(|l| l.public_ip == h.addr).map(|l| (h.name.clone(), l.subnet))).collect())
    }

    /// Hosts still in the cluster.
    pub(super) fn active_hosts(&self) -> impl Iterator<Item = &crate::lab::Node> {
        self.lab.hosts.iter().filter(|h| !self.removed.contains(&h.name))
    }

    /// Reads etcd and every host, and checks them against the contract. The hosts are read
    /// concurrently.
    pub(super) async fn observe(&self) -> Result<(Vec<Finding>, BTreeMap<String, Counts>), StepError> {
        self.observe_reading(Reading::Whole).await
    }

    /// Whether polls read hosts' neighbours one by one (see [`NEIGHBOUR_DUMPS_UP_TO`]).
    pub(super) fn polls_look_up_neighbours(&self) -> bool {
        self.lab.hosts.len() > NEIGHBOUR_DUMPS_UP_TO
    }

    /// [`Trial::observe`], reading hosts' neighbours as `reading` says.
    pub(super) async fn observe_reading(&self, reading: Reading) -> Result<(Vec<Finding>, BTreeMap<String, Counts>), StepError> {
        let conf = self.conf()?;
        // a fault the lab emulates that stopped working leaves the lab unable to judge
        if let Some(e) = self.udev.iter().find_map(|u| u.failure()) {
            return Err(e.into());
        }
        let leases: Vec<Result<contract::LeaseView, String>> = self.leases().await?.into_iter().map(|(_, l)| l).collect();
        let active: Vec<&crate::lab::Node> = self.active_hosts().collect();
        if active.is_empty() {
            return Err("no active hosts: the contract examined nothing".into());
        }
        let hosts: Vec<contract::HostAddrs> = active.iter().map(|h| (h.name.clone(), h.addr, h.addr6)).collect();
        let mut findings = Vec::new();
        let mut by_ip = contract::check_leases(conf, &hosts, &leases, &mut findings);
        // a removed host's lease must be gone
        for node in self.lab.hosts.iter().filter(|h| self.removed.contains(&h.name)) {
            if let Some(l) = by_ip.remove(&node.addr) {
                findings.push(Finding::new(Check::Lease, node.name.as_str(), format!("removed host still has lease {} in etcd", l.subnet)));
            }
        }
        let paths: Vec<PathBuf> = active.iter().map(|n| Agent::subnet_file_path(n)).collect();
        let ipv6 = conf.ipv6.is_some();
        let queries: Vec<probe::NeighbourQuery> = active.iter().map(|n| contract::neighbour_query(conf, n.addr, &by_ip)).collect();
        let n = active.len();
        let states = futures::future::join_all(
            active
                .iter()
                .zip(&paths)
                .zip(&queries)
                .enumerate()
                .map(|(i, ((node, p), q))| probe::dump_host(node, p, ipv6, Some(q), reading.whole(i, n))),
        )
        .await;
        let mut counts = BTreeMap::new();
        for (node, state) in active.into_iter().zip(states) {
            let state = state?;
            let mtu = self.lab.mtu_of(node);
            contract::check_subnet_file(
                conf,
                self.case.ip_masq,
                &node.name,
                mtu,
                by_ip.get(&node.addr),
                state.subnet_file.as_deref(),
                &mut findings,
            );
            let view = contract::HostView {
                conf,
                host: &node.name,
                host_ip: node.addr,
                host_ip6: node.addr6,
                underlay_mtu: mtu,
                leases: &by_ip,
                state: &state,
                underlay: crate::lab::UNDERLAY_IF,
            };
            let c = contract::check_kernel(&view, &mut findings);
            counts.insert(node.name.clone(), c);
        }
        Ok((findings, counts))
    }

    /// Exited agents, as findings (also those whose exit the case caused: a control that
    /// kills an agent expects this to say so). See [`Trial::exits`].
    pub(super) fn agent_exits(&mut self) -> Result<Vec<Finding>, StepError> {
        self.exits(Exits::All)
    }

    /// The end of a trial: every agent the case did not stop, kill or expect to exit is
    /// still running, watched for [`END_WATCH`] after the last step (an exit at any
    /// earlier moment shows too: its status waits to be read), and none restarted more
    /// often than the case allows.
    pub async fn agents_alive_to_the_end(&mut self) -> StepResult {
        let until = Instant::now() + END_WATCH;
        let watched = self.agents.iter().filter(|a| !a.exit_planned).count();
        loop {
            let findings = self.exits(Exits::Unplanned)?;
            if !findings.is_empty() {
                return Err(StepError::Check(findings));
            }
            if Instant::now() >= until {
                tracing::debug!("{watched} agent(s) ran to the end of the trial (watched {} ms past the last step)", END_WATCH.as_millis());
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Exited agents, as `agent_exit` findings. Agents whose profile has a restart policy
    /// are restarted instead (after a doubling backoff), like a DaemonSet's pods, and each
    /// restart past the case's `max_restarts` is a finding (a crash loop is no recovery).
    /// A machine out of memory (an agent the OOM killer ended, free memory below the
    /// floor) is a lab error: what happens next says nothing about the implementation.
    fn exits(&mut self, which: Exits) -> Result<Vec<Finding>, StepError> {
        use crate::input::profile::RestartPolicy;
        let mut out = Vec::new();
        let allowed = self.case.max_restarts;
        for i in 0..self.agents.len() {
            let a = &mut self.agents[i];
            if which == Exits::Unplanned && a.exit_planned {
                continue;
            }
            let Some(s) = a.child.try_status() else { continue };
            match a.child.killed_by_oom() {
                // the machine ran out while the lab's floor held: the agent took it
                Some(OomLimit::Machine) if !self.memory.ever_short() && !self.case.host_profiles.contains_key(&a.host) => {
                    let what = format!(
                        "the kernel's OOM killer ended the agent (pid {}) for the whole machine's memory, while free memory never fell below the lab's floor: the agent's own use; {}",
                        a.child.pid(),
                        a.child.log_summary(3)
                    );
                    out.push(Finding::new(Check::Resource, a.host.as_str(), what));
                    continue;
                }
                Some(limit) => {
                    let which = match limit {
                        OomLimit::Machine => "the machine's memory, which the lab saw run short",
                        OomLimit::Cgroup => "a memory cgroup's limit",
                    };
                    return Err(StepError::Lab(crate::error::Error::Limit {
                        kind: crate::error::LimitKind::OutOfMemory,
                        host: Some(a.host.clone()),
                        what: format!(
                            "the kernel's OOM killer ended the agent on {} (pid {}): out of memory ({which}), a limit of the lab and not a verdict",
                            a.host,
                            a.child.pid()
                        ),
                    }));
                }
                None => {}
            }
            let status = crate::lab::proc::Child::describe_status(&s);
            let restart = match a.profile.restart {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => !s.success(),
                RestartPolicy::Always => true,
            };
            if !restart {
                let what = format!("agent exited ({status}) although the case did not stop it; {}", a.child.log_summary(3));
                out.push(Finding::new(Check::AgentExit, a.host.as_str(), what));
                continue;
            }
            let restarts = a.restarts + 1;
            if restarts > allowed {
                let what = format!(
                    "agent exited ({status}) and its restart policy restarts it: restart {restarts}, the case allows {allowed} (max_restarts); {}",
                    a.child.log_summary(3)
                );
                out.push(Finding::new(Check::AgentExit, a.host.as_str(), what));
            }
            if which == Exits::Unplanned {
                continue;
            }
            let now = Instant::now();
            let due = *a
                .next_restart
                .get_or_insert_with(|| now + (a.profile.restart_backoff * 2u32.pow(a.restarts.min(4))).min(Duration::from_secs(10)));
            if now >= due {
                let host = a.host.clone();
                let mut earlier = std::mem::take(&mut a.earlier_exits);
                earlier.push(status.clone());
                let node = self.lab.host(&host).expect("agent host");
                let imp = self.imp_of(&host);
                let mut fresh = Agent::start(&imp, node, &self.launch(Credentials::Valid))
                    .map_err(|e| e.context(format!("{host}: restart under the restart policy")))?;
                fresh.restarts = restarts;
                fresh.earlier_exits = earlier;
                tracing::info!("{host}: agent exited ({status}), restarted by the restart policy (restart {restarts})");
                self.agents[i] = fresh;
                self.restarted(format!("the restart policy restarting {host}"));
            }
        }
        // the case's memory budget per agent (its whole process group), at every poll of
        // the steps (the end-of-trial check is about exits)
        if let Some(budget) = self.case.max_rss.filter(|_| which == Exits::All) {
            let rss = self.agents_rss();
            for a in &self.agents {
                if let Some(&kib) = rss.get(&a.host).filter(|k| **k * 1024 > budget) {
                    let what = format!(
                        "agent uses {:.1} MiB of memory (RSS of its process group), above the case's max_rss of {:.1} MiB",
                        kib as f64 / 1024.0,
                        budget as f64 / f64::from(1u32 << 20)
                    );
                    out.push(Finding::new(Check::Resource, a.host.as_str(), what));
                }
            }
        }
        // a restart beyond what the case allows stays a finding while the restarted agent
        // runs: a crash loop does not pass a wait by being up at one poll
        for a in self.agents.iter_mut().filter(|a| a.restarts > allowed && (which == Exits::All || !a.exit_planned)) {
            if a.child.try_status().is_none() {
                let what = format!(
                    "agent restarted {} time(s) by its restart policy, the case allows {allowed} (max_restarts); earlier instances ended: {}",
                    a.restarts,
                    a.earlier_exits.join(", ")
                );
                out.push(Finding::new(Check::AgentExit, a.host.as_str(), what));
            }
        }
        self.memory
            .check()
            .map_err(|what| StepError::Lab(crate::error::Error::Limit { kind: crate::error::LimitKind::MemoryFloor, host: None, what }))?;
        Ok(out)
    }

    /// Each running agent's memory (its process group's RSS, KiB), from one walk of /proc.
    pub(super) fn agents_rss(&self) -> BTreeMap<String, u64> {
        let pgids: Vec<u32> = self.agents.iter().map(|a| a.child.pgid()).collect();
        let by_group = crate::lab::proc::rss_by_group(&pgids);
        self.agents.iter().filter_map(|a| Some((a.host.clone(), *by_group.get(&a.child.pgid())?))).collect()
    }

    /// Agents whose profile's readiness condition does not hold.
    pub(super) fn not_ready(&self) -> Vec<Finding> {
        self.agents
            .iter()
            .filter(|a| !a.is_ready())
            .map(|a| Finding::new(Check::Readiness, a.host.as_str(), format!("agent not ready ({:?})", a.profile.ready)))
            .collect()
    }

    /// Sets up each active host's `cni0` from its subnet file (as a CNI plugin would at the
    /// first pod), so every host has an address in its own subnet to probe from and to.
    /// Hosts without a usable subnet file are left out (the contract reports them).
    pub(super) async fn ensure_gateways(&mut self) -> StepResult {
        let hosts: Vec<String> = self.active_hosts().map(|h| h.name.clone()).collect();
        for h in hosts {
            let node = self.lab.host(&h).expect("active host");
            let Ok(text) = std::fs::read_to_string(Agent::subnet_file_path(node)) else { continue };
            let env = SubnetEnv::parse(&text);
            let v4 = env.subnet_ip.zip(env.subnet()).map(|((a, _), s)| (a, s));
            let v6 = env.subnet6_ip.zip(env.subnet6()).map(|((a6, _), s6)| (a6, s6));
            // an MTU no interface can have is the implementation's (the contract says so),
            // not a reason for the lab to fail setting up cni0
            let Some(mtu) = env.mtu.filter(|m| (v4.is_some() || v6.is_some()) && (68..=65535).contains(m)) else { continue };
            let want = Gateway { v4, v6, mtu };
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
    pub(super) fn unreachable_pair(&self, cross_segment_fails: &[String], a: &str, b: &str) -> bool {
        let backend = self.conf.as_ref().map(|c| c.backend).unwrap_or(self.backend);
        cross_segment_fails.iter().any(|x| x == backend.name())
            && self.lab.host(a).map(|n| n.segment) != self.lab.host(b).map(|n| n.segment)
    }

    /// The data plane: from every active host's `cni0` address, every peer's `cni0` address
    /// answers an echo, over the backend's own path (for udp through the agents). One probe
    /// thread per host, all in parallel. Returns one finding per host that misses peers.
    pub(super) async fn reachability(&mut self, cross_segment_fails: &[String]) -> Result<Vec<Finding>, StepError> {
        self.ensure_gateways().await?;
        // each host's cni0 addresses: IPv4, and IPv6 on a dual-stack pod network
        let hosts: Vec<(String, Option<std::net::IpAddr>, Option<std::net::IpAddr>)> = self
            .active_hosts()
            .filter_map(|h| self.gateways.get(&h.name).map(|g| (h.name.clone(), g.v4.map(|(a, _)| a.into()), g.v6.map(|(a, _)| a.into()))))
            .collect();
        // a family the net-conf enables must be probed: a host with nothing to probe it from
        // is a finding, not a silent pass
        let mut findings: Vec<Finding> = self
            .active_hosts()
            .filter(|h| !self.gateways.contains_key(&h.name))
            .map(|h| {
                let what =
                    "no usable subnet file (FLANNEL_SUBNET and a FLANNEL_MTU of 68 to 65535), so no cni0 address to probe from or to";
                Finding::new(Check::Reachability, h.name.as_str(), what)
            })
            .collect();
        if let Some(conf) = &self.conf {
            for (h, v4, v6) in &hosts {
                for (enabled, have, var) in
                    [(conf.enable_ipv4, v4.is_some(), "FLANNEL_SUBNET"), (conf.ipv6.is_some(), v6.is_some(), "FLANNEL_IPV6_SUBNET")]
                {
                    if enabled && !have {
                        findings.push(Finding::new(
                            Check::Reachability,
                            h.as_str(),
                            format!("no {var} in the subnet file, so cni0 has no address of that family to probe from"),
                        ));
                    }
                }
            }
        }
        let mut jobs = Vec::new();
        // at size, each host probes a window of its peers, which moves on once every host
        // answered in it: successive waits cover every pair (N² echoes at once would flood
        // a thousand-port underlay with ARP; a window kept until it passes reuses the ARP
        // entries its first probes made)
        let n = hosts.len();
        let sampled = n > NEIGHBOUR_DUMPS_UP_TO;
        // pairs that answered at earlier polls are skipped; such a window counts only after
        // one more sweep of all its pairs (a pair that broke after answering is seen)
        let skipping = sampled && !self.reach_answered.is_empty();
        let round = self.reach_round;
        let in_window = |i: usize, j: usize| !sampled || probe_window(n, round, (j + n - i) % n);
        if sampled {
            tracing::info!(
                "data plane at {n} hosts: each host probes {REACH_SAMPLE} of its {} peers (window {} of {}, the next once this one passes)",
                n - 1,
                round + 1,
                (n - 1).div_ceil(REACH_SAMPLE)
            );
        }
        for (family, v6) in [("", false), (" over IPv6", true)] {
            let addr = |h: &(String, Option<std::net::IpAddr>, Option<std::net::IpAddr>)| if v6 { h.2 } else { h.1 };
            for (i, src) in hosts.iter().enumerate() {
                let Some(src_gw) = addr(src) else { continue };
                let answered = |d: &str| self.reach_answered.contains(&(src.0.clone(), d.to_string(), v6));
                let peers: Vec<(String, std::net::IpAddr)> = hosts
                    .iter()
                    .enumerate()
                    .filter(|(j, d)| d.0 != src.0 && in_window(i, *j) && !self.unreachable_pair(cross_segment_fails, &src.0, &d.0))
                    .filter(|(_, d)| !answered(&d.0))
                    .filter_map(|(_, d)| Some((d.0.clone(), addr(d)?)))
                    .collect();
                if peers.is_empty() {
                    continue;
                }
                let ns = self.lab.host(&src.0).expect("active host").ns.clone();
                let src = src.0.clone();
                jobs.push(std::thread::spawn(move || {
                    let r = probe::sweep_any(&ns, src_gw, peers.iter().map(|p| p.1).collect(), 3, Duration::from_millis(300));
                    (src, family, v6, peers, r)
                }));
            }
        }
        let results = tokio::task::spawn_blocking(move || jobs.into_iter().map(|j| j.join().expect("probe thread")).collect::<Vec<_>>())
            .await
            .map_err(|e| e.to_string())?;
        let mut answered = 0;
        let mut probed = 0;
        for (src, family, v6, peers, r) in results {
            probed += peers.len();
            let outcomes = match r {
                Ok(o) => o,
                Err(e) => match self.gateway_gone(&src, v6).await? {
                    // the implementation took the host's cni0 (or its address) away: a
                    // finding about the host, not the lab failing to probe
                    Some(what) => {
                        findings.push(Finding::new(Check::Reachability, src.as_str(), what));
                        continue;
                    }
                    None => return Err(e.into()),
                },
            };
            if sampled {
                for ((name, _), _) in peers.iter().zip(&outcomes).filter(|(_, o)| o.is_reply()) {
                    self.reach_answered.insert((src.clone(), name.clone(), v6));
                    answered += 1;
                }
            }
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
                    format!("{} of {} peers do not answer over the overlay{family}: {}", missed.len(), peers.len(), missed.join(", ")),
                ));
            }
        }
        if sampled && findings.is_empty() && skipping {
            // every pair answered, some only at earlier polls: one sweep of the whole window
            // at the next poll decides
            self.reach_answered.clear();
            findings.push(Finding::new(
                Check::Reachability,
                "every host",
                format!(
                    "window {} of {}: every pair answered, some at earlier polls; all of them are probed once more before it counts",
                    round + 1,
                    (n - 1).div_ceil(REACH_SAMPLE)
                ),
            ));
        } else if sampled && findings.is_empty() {
            let windows = (n - 1).div_ceil(REACH_SAMPLE);
            self.reach_proven.insert(round % windows as u64);
            let covered = self.reach_proven.len().min(windows);
            let families = if hosts.iter().any(|h| h.2.is_some()) { " per address family" } else { "" };
            let trial_so_far = format!("this trial has proven {} of {} pairs{families}", pairs_in_windows(n, covered), n * (n - 1));
            self.reach_answered.clear();
            match self.cover.as_mut() {
                None => {
                    tracing::info!(
                        "data plane at {n} hosts: window {} of {windows} proven ({probed} echoes, every pair answering in one sweep); {trial_so_far} ({covered} of {windows} windows)",
                        round + 1
                    );
                    self.reach_round += 1;
                }
                Some(c) if c.recheck => {
                    tracing::info!(
                        "data plane at {n} hosts: every one of the {} pairs answered since the control plane last held ({windows} windows), and the first window's pairs (the earliest to answer) answered again at the end",
                        n * (n - 1)
                    );
                    self.reach_round = c.start + windows as u64;
                    *c = Coverage { start: self.reach_round, ..Coverage::default() };
                }
                Some(c) => {
                    c.proven += 1;
                    let what = if c.proven < windows {
                        self.reach_round += 1;
                        format!("window {} of {windows} proven; the data plane counts once every window has", c.proven)
                    } else {
                        c.recheck = true;
                        self.reach_round = c.start;
                        format!("all {windows} windows proven; the first one is probed once more before the data plane counts")
                    };
                    findings.push(Finding::new(Check::Reachability, "every host", what));
                }
            }
        } else if sampled && answered > 0 {
            tracing::debug!("data plane: {answered} pairs of this window answered; the rest are probed again on the next poll");
        }
        Ok(findings)
    }

    /// Why a host cannot be probed from, when the reason is the host's own state: its
    /// `cni0` (set up from its subnet file) is gone, or no longer holds its address.
    async fn gateway_gone(&self, host: &str, v6: bool) -> Result<Option<String>, StepError> {
        let node = self.host(host)?;
        let Some(gw) = self.gateways.get(host) else { return Ok(None) };
        let Some(cni0) = node.nl.links().await?.into_iter().find(|l| l.name == crate::lab::pods::BRIDGE) else {
            return Ok(Some(format!("`{}` is gone from the host, so nothing can be probed from it", crate::lab::pods::BRIDGE)));
        };
        let present = if v6 {
            let want = gw.v6.map(|(a, _)| a);
            node.nl.addresses::<std::net::Ipv6Addr>().await?.iter().any(|a| a.ifindex == cni0.index && Some(a.addr) == want)
        } else {
            let want = gw.v4.map(|(a, _)| a);
            node.nl.addresses().await?.iter().any(|a| a.ifindex == cni0.index && Some(a.addr) == want)
        };
        Ok((!present)
            .then(|| format!("`{}` no longer holds its gateway address, so nothing can be probed from it", crate::lab::pods::BRIDGE)))
    }

    /// The control plane moved: answers seen so far say nothing about what comes next (at
    /// size, a wait's coverage of the pairs starts again from the current window).
    pub(super) fn voids_answers(&mut self) {
        self.reach_answered.clear();
        let round = self.reach_round;
        if let Some(c) = self.cover.as_mut() {
            *c = Coverage { start: round, ..Coverage::default() };
        }
    }

    /// Everything convergence needs, each check on its own: agents alive and ready, the
    /// contract, and the data plane (skipped while the control plane is still moving,
    /// unless `all` asks for every check, as at the deadline).
    pub(super) async fn convergence_findings(&mut self, cross_segment_fails: &[String], all: bool) -> Result<Vec<Finding>, StepError> {
        let exits = self.agent_exits()?;
        if !exits.is_empty() {
            return Ok(exits);
        }
        let mut findings = self.not_ready();
        self.polls.polls += 1;
        if findings.is_empty() || all {
            let reading = if all || !self.polls_look_up_neighbours() { Reading::Whole } else { Reading::Lookups };
            let t = Instant::now();
            findings.extend(self.observe_reading(reading).await?.0);
            self.polls.reads += t.elapsed();
        }
        if !findings.is_empty() {
            // answers count only while the control plane holds: one seen moving again
            // (an agent gone, an entry lost) voids what the data plane showed before
            self.voids_answers();
        }
        if findings.is_empty() || all {
            if all {
                // every check at once (a deadline): every pair of the window answers now
                self.reach_answered.clear();
            }
            let t = Instant::now();
            findings.extend(self.reachability(cross_segment_fails).await?);
            self.polls.data_plane += t.elapsed();
        }
        if all && !findings.is_empty() {
            // a refused agent reads as refused, first, not as a hang
            let mut refused = self.refusal_findings(None).await?;
            refused.append(&mut findings);
            findings = refused;
        }
        Ok(findings)
    }

    /// Whether the lab is converged right now (agents, the contract, and the data plane once
    /// the control plane holds): the findings that stand in the way, none when converged.
    pub async fn convergence_now(&mut self) -> Result<Vec<Finding>, StepError> {
        let cross = self.cross_segment_fails();
        self.convergence_findings(&cross, false).await
    }

    /// The pods the steps created so far.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The case's own statement of which backends cannot cross segments, taken from its
    /// first wait_converged (so later checks skip the same pairs).
    pub(super) fn cross_segment_fails(&self) -> Vec<String> {
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
    pub(super) async fn revoke_lease(&mut self, host: &str) -> StepResult {
        let node = self.host(host)?;
        let (name, addr) = (node.name.clone(), node.addr);
        let key = self
            .leases()
            .await?
            .into_iter()
            .find(|(_, l)| l.as_ref().is_ok_and(|l| l.public_ip == addr))
            .map(|(k, _)| k)
            .ok_or_else(|| format!("no lease for {name} ({addr}) in etcd to revoke"))?;
        match self.store.revoke_key_lease(&key).await? {
            Some(id) => tracing::info!("revoked lease {id:x} of {key}"),
            None => tracing::info!("deleted {key} (it had no etcd lease)"),
        }
        Ok(())
    }

    /// Writes what a person needs to see why the trial failed into the work directory.
    pub async fn save_artifacts(&mut self, log: &[String]) {
        for node in &self.lab.hosts {
            if let Ok(state) = probe::dump_host(node, &Agent::subnet_file_path(node), self.lab.topo.dual_stack(), None, true).await {
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

/// Whether the peer `ahead` places after a host (1..n-1, of n hosts) is in the data-plane
/// window of `round`: [`REACH_SAMPLE`] consecutive places, the next ones each round, so
/// rounds 0..⌈(n−1)/K⌉ cover every peer.
pub(super) fn probe_window(n: usize, round: u64, ahead: usize) -> bool {
    if n < 2 || ahead == 0 {
        return false;
    }
    let start = (round as usize % n).wrapping_mul(REACH_SAMPLE) % (n - 1);
    (ahead - 1 + (n - 1) - start) % (n - 1) < REACH_SAMPLE
}

/// Labs of more than [`NEIGHBOUR_DUMPS_UP_TO`] hosts, up to this many, prove every pair in
/// each wait: successive windows until each answered in one sweep, then the first window
/// once more (a pair that broke after it answered is seen). Larger labs prove one window
/// per wait and say so (16,000 of 999,000 pairs at a thousand hosts).
pub const FULL_COVERAGE_UP_TO: usize = 256;

/// A wait's progress towards every pair at size.
#[derive(Debug, Clone, Default)]
pub(super) struct Coverage {
    /// The round of the first window since the control plane last held.
    pub start: u64,
    /// Windows proven since then.
    pub proven: usize,
    /// Every window proven: the first one is being probed once more.
    pub recheck: bool,
}

/// How many (host, peer) pairs `windows` distinct data-plane windows cover in a lab of
/// `n` hosts: each window is [`REACH_SAMPLE`] peers per host, the last one what is left.
pub(super) fn pairs_in_windows(n: usize, windows: usize) -> usize {
    if n < 2 {
        return 0;
    }
    let all = (n - 1).div_ceil(REACH_SAMPLE);
    let peers = if windows >= all { n - 1 } else { windows * REACH_SAMPLE };
    n * peers
}

/// Loads a profile named by a case (mixed clusters, restarts as another implementation).
pub(crate) fn load_profile(profile: &str) -> Result<Implementation, StepError> {
    let mut imp = Implementation::load(profile, false)?;
    if imp.profile.uses_reference_agent() {
        imp.reference_agent = crate::agents::reference_agent()?;
    }
    Ok(imp)
}

/// One `etcd_access` finding per refused host.
pub(super) fn refusal_findings(refused: BTreeMap<String, (usize, String)>) -> Vec<Finding> {
    refused
        .into_iter()
        .map(|(h, (n, why))| {
            let what = format!("etcd refused this host's agent {n} time(s), and it holds no lease: {why}");
            Finding::new(Check::EtcdAccess, h, what)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_reads_take_a_moving_window_of_hosts() {
        let whole = |r: Reading, n: usize| (0..n).filter(|i| r.whole(*i, n)).collect::<Vec<_>>();
        assert_eq!(whole(Reading::Sample(0), 1000).len(), NEIGHBOUR_DUMPS_UP_TO);
        assert_eq!(whole(Reading::Sample(1), 1000)[0], NEIGHBOUR_DUMPS_UP_TO);
        assert_ne!(whole(Reading::Sample(0), 1000), whole(Reading::Sample(1), 1000));
        assert_eq!(whole(Reading::Sample(3), 10).len(), 10, "a small lab is read whole");
        assert_eq!(whole(Reading::Whole, 7).len(), 7);
        assert!(whole(Reading::Lookups, 7).is_empty());
    }

    #[test]
    fn data_plane_windows_cover_every_peer_over_successive_rounds() {
        for n in [2usize, 17, 65, 250, 1000] {
            let rounds = (n - 1).div_ceil(REACH_SAMPLE) as u64;
            let mut seen = vec![false; n];
            for r in 0..rounds {
                let this: Vec<usize> = (1..n).filter(|a| probe_window(n, r, *a)).collect();
                assert_eq!(this.len(), REACH_SAMPLE.min(n - 1), "n={n} round {r}");
                this.iter().for_each(|a| seen[*a] = true);
            }
            assert!(seen[1..].iter().all(|s| *s), "n={n}: every peer within {rounds} rounds");
            assert!(!probe_window(n, 0, 0), "never itself");
        }
    }

    #[test]
    fn coverage_counts_the_pairs_of_the_windows_proven() {
        assert_eq!(pairs_in_windows(72, 1), 72 * 16);
        assert_eq!(pairs_in_windows(72, 5), 72 * 71, "five windows cover every peer of 71");
        assert_eq!(pairs_in_windows(1000, 1), 16_000);
        assert_eq!(pairs_in_windows(1000, 63), 999_000);
        assert_eq!(pairs_in_windows(1, 1), 0);
    }

    #[test]
    fn settles_only_on_findings_unchanged_for_the_window() {
        let mut s = Settle { window: Duration::from_millis(40), seen: None };
        let a = vec![Finding::new(Check::Routes, "h1", "1 of 2 routes")];
        let b = vec![Finding::new(Check::Routes, "h1", "2 of 2 routes, 1 unexpected")];
        assert!(!s.quiet(&a), "the first sight starts the window");
        std::thread::sleep(Duration::from_millis(50));
        assert!(!s.quiet(&b), "a change restarts the window");
        assert!(!s.quiet(&b));
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.quiet(&b), "unchanged for the window");
        s.reset();
        assert!(!s.quiet(&b), "after a reset the window starts again");
    }
}
