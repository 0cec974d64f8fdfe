//! Running a trial: one case × backend × implementation, at each of the case's host
//! counts and repeats, each on a freshly built lab. Steps run in order; every wait is a
//! deadline on a condition. A step ends in a [`StepError`] that says whether a check found
//! the implementation wrong (with the check and the host) or the lab could not do its job;
//! only the first kind can satisfy a negative control or catch a mutant.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agents::{Agent, Implementation};
use crate::contract::{self, Backend, Check, Counts, Finding, NetConf, SubnetEnv, DEFAULT_PREFIX};
use crate::input::case::StoreChoice;
use crate::input::case::{Case, Expected, Sabotage, Step};
use crate::lab::pods::{self, Gateway, Pod};
use crate::lab::Lab;
use crate::probe::{self, PingOutcome};
use crate::store::{Provider, Store};

/// What a trial must show: the case passes, or (a mutant) the case fails with a named finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Catch(Expected),
}

/// One trial to run.
#[derive(Clone)]
pub struct TrialSpec {
    pub case: Case,
    pub backend: Backend,
    pub imp: Implementation,
    pub verdict: Verdict,
}

impl TrialSpec {
    pub fn name(&self) -> String {
        format!("{}::{}::{}", self.case.name, self.backend, self.imp.name())
    }
}

/// How a step ended when it did not pass.
#[derive(Debug)]
pub enum StepError {
    /// A check found the implementation wrong: one finding or more, each naming its check
    /// and host.
    Check(Vec<Finding>),
    /// The lab could not do its job (setup, I/O, the lab's own timeouts). Never a pass.
    Lab(String),
}

impl StepError {
    pub fn check(check: Check, host: impl Into<String>, what: impl Into<String>) -> StepError {
        StepError::Check(vec![Finding::new(check, host, what)])
    }

    /// The findings, one per line, or the lab error.
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
            StepError::Lab(m) => format!("lab error: {m}"),
        }
    }
}

impl From<String> for StepError {
    fn from(s: String) -> StepError {
        StepError::Lab(s)
    }
}

impl From<&str> for StepError {
    fn from(s: &str) -> StepError {
        StepError::Lab(s.to_string())
    }
}

/// A lab error from a typed error, with its whole source chain.
fn lab(e: impl std::error::Error) -> StepError {
    StepError::Lab(chain(&e))
}

/// What a finished trial says.
#[derive(Debug)]
pub struct TrialReport {
    pub name: String,
    pub passed: bool,
    /// One line per step and measurement.
    pub log: Vec<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// The failure was the lab's, not a finding about the implementation.
    pub lab_error: bool,
    /// Kept work directory of the failing lab.
    pub artifacts: Option<PathBuf>,
    /// Why the trial could not run here (reported as ignored, not passed).
    pub ignored: Option<String>,
    pub elapsed: Duration,
}

impl TrialReport {
    /// A report with no verdict yet: not passed, no failure.
    fn unjudged(name: String, log: Vec<String>, started: Instant) -> TrialReport {
        TrialReport {
            name,
            passed: false,
            log,
            failure: None,
            lab_error: false,
            artifacts: None,
            ignored: None,
            elapsed: started.elapsed(),
        }
    }
}

/// Where and how a run of the case stopped.
struct Stopped {
    /// 1-based step index; None before the first step (building the lab, etcd, net-conf).
    step: Option<usize>,
    step_name: &'static str,
    error: StepError,
    at: String,
    dir: Option<PathBuf>,
}

impl Stopped {
    fn message(&self) -> String {
        let what = match self.step {
            Some(i) => format!("step {i} `{}`", self.step_name),
            None => "setting up".to_string(),
        };
        format!("{what}{}: {}", self.at, self.error.describe())
    }
}

/// Per-lab state while steps run. Field order is drop order: agents before the store,
/// the store before the lab.
struct Run<'a> {
    spec: &'a TrialSpec,
    /// The implementation each host runs (the one under test unless `host_profiles` says).
    imps: BTreeMap<String, Implementation>,
    /// Hosts taken out of the cluster by `remove_host`.
    removed: std::collections::BTreeSet<String>,
    /// Each host's subnet at the first convergence.
    first_subnets: Option<BTreeMap<String, crate::input::names::Ipv4Net>>,
    traffic: Option<(crate::probe::traffic::Traffic, String, String)>,
    conf: Option<NetConf>,
    agents: Vec<Agent>,
    agents_started: Option<Instant>,
    /// A restart (or another fault) after which only fresh evidence counts: when, and what.
    canary_due: Option<(Instant, String)>,
    /// Each host's `cni0`, set up from its subnet file.
    gateways: BTreeMap<String, Gateway>,
    pods: Vec<Pod>,
    /// DF probe endpoints, one per host, with a larger MTU than the overlay's.
    mtu_probes: BTreeMap<String, Pod>,
    store: Store,
    capture: Option<crate::probe::capture::Capture>,
    lab: Lab,
    log: &'a mut Vec<String>,
}

type StepResult = Result<(), StepError>;

pub async fn run_trial(spec: &TrialSpec, workdir: &Path) -> TrialReport {
    let started = Instant::now();
    let mut log = Vec::new();
    let provider = match choose_store(&spec.case).await {
        Ok(p) => p,
        Err(reason) => {
            let mut r = TrialReport::unjudged(spec.name(), log, started);
            r.ignored = Some(reason);
            return r;
        }
    };
    let mut stopped = None;
    'outer: for scale in spec.case.scales() {
        for rep in 1..=spec.case.repeat {
            let label = match scale {
                Some(n) => format!("{}-{}-n{n}-r{rep}", spec.case.name, spec.backend),
                None => format!("{}-{}-r{rep}", spec.case.name, spec.backend),
            };
            if let Err(mut s) = run_once(spec, provider, scale, &label, workdir, &mut log).await {
                s.at = match scale {
                    Some(n) => format!(" (at {n} hosts, repeat {rep})"),
                    None if spec.case.repeat > 1 => format!(" (repeat {rep})"),
                    None => String::new(),
                };
                stopped = Some(s);
                break 'outer;
            }
        }
    }
    let mut r = TrialReport::unjudged(spec.name(), log, started);
    judge(&spec.verdict, stopped, &mut r);
    r
}

/// Turns how the case ended into the trial's verdict. A lab error fails whatever was
/// expected; a mutant is caught only by the finding its case names.
fn judge(verdict: &Verdict, stopped: Option<Stopped>, r: &mut TrialReport) {
    match (verdict, stopped) {
        (Verdict::Pass, None) => r.passed = true,
        (Verdict::Pass, Some(s)) => {
            r.lab_error = matches!(s.error, StepError::Lab(_));
            r.failure = Some(s.message());
            r.artifacts = s.dir;
        }
        (Verdict::Catch(exp), None) => {
            r.log.push(format!("     expected the case to fail with {exp}; it passed"));
            r.failure = Some(format!("the case passed against this mutant (expected it to fail with {exp}): it cannot catch the bug"));
        }
        (Verdict::Catch(exp), Some(s)) => {
            r.log.push(format!("     expected: {exp}"));
            r.log.push(format!("     seen:     {}", s.message()));
            let step_ok = exp.step.is_none() || exp.step == s.step;
            let matched = match &s.error {
                StepError::Check(findings) => step_ok && findings.iter().any(|f| f.check == exp.check && f.host == exp.host),
                StepError::Lab(_) => false,
            };
            if matched {
                r.passed = true;
                r.log.push("     the case caught the mutant with the expected finding".into());
                if let Some(dir) = s.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            } else {
                r.lab_error = matches!(s.error, StepError::Lab(_));
                let why = if r.lab_error { "a lab error is never a catch" } else { "the case failed for another reason" };
                r.failure = Some(format!("expected {exp}, {why}: {}", s.message()));
                r.artifacts = s.dir;
            }
        }
    }
}

/// The case's store choice, else `FLANNEL_LAB_STORE`, else the process. `Err` carries the
/// reason a Docker-only case cannot run here.
async fn choose_store(case: &Case) -> Result<Provider, String> {
    let choice = case.store.or_else(StoreChoice::from_env).unwrap_or(StoreChoice::Process);
    match choice {
        StoreChoice::Process => Ok(Provider::Process),
        StoreChoice::Docker => match crate::lab::docker::engine().await {
            Ok(_) => Ok(Provider::Docker),
            Err(e) => Err(format!("needs etcd in Docker: {e}")),
        },
        StoreChoice::Auto => Ok(if crate::lab::docker::engine().await.is_ok() { Provider::Docker } else { Provider::Process }),
    }
}

/// Builds one lab, runs every step, tears it down. On failure the work directory is kept
/// (with state dumps) and returned.
async fn run_once(
    spec: &TrialSpec,
    provider: Provider,
    scale: Option<u32>,
    label: &str,
    workdir: &Path,
    log: &mut Vec<String>,
) -> Result<(), Stopped> {
    let setup = |error: StepError, dir: Option<PathBuf>| Stopped { step: None, step_name: "", error, at: String::new(), dir };
    let topo = spec.case.topology(scale).map_err(|e| setup(StepError::Lab(e.to_string()), None))?;
    let lab = Lab::build(topo, workdir, label, provider == Provider::Process)
        .await
        .map_err(|e| setup(StepError::Lab(format!("build lab: {}", chain(&e))), None))?;
    let dir = lab.dir.clone();
    let store = match Store::start(&lab, provider, spec.case.etcd_members as usize, Duration::from_secs(30)).await {
        Ok(s) => s,
        Err(e) => return Err(setup(StepError::Lab(format!("start etcd: {}", chain(&e))), Some(dir))),
    };
    let text = spec.case.netconf.render(spec.backend);
    let conf = serde_json::from_str(&text).ok().and_then(|v| NetConf::from_json(&v).ok());
    if let Err(e) = store.put(&format!("{DEFAULT_PREFIX}/config"), text).await {
        return Err(setup(StepError::Lab(format!("write net-conf: {}", chain(&e))), Some(dir)));
    }
    log.push(format!("lab {} ({} hosts, run {}): {}", label, lab.hosts.len(), lab.run, store.describe()));
    let capture = match crate::probe::capture::Capture::start(lab.fabric_ns(), &lab.dir.join("underlay.pcap")) {
        Ok(c) => Some(c),
        Err(e) => {
            log.push(format!("     no underlay capture: {e}"));
            None
        }
    };
    let mut run = Run {
        spec,
        imps: BTreeMap::new(),
        removed: Default::default(),
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
        log,
    };
    for (i, step) in spec.case.steps.iter().enumerate() {
        let t = Instant::now();
        if let Err(error) = run.step(step).await {
            let kind = if matches!(error, StepError::Lab(_)) { "LAB ERROR" } else { "FAIL" };
            run.log.push(format!("{kind} step {} `{}`: {}", i + 1, step.name(), error.describe()));
            run.save_artifacts().await;
            if let Some(mut c) = run.capture.take() {
                match c.stop() {
                    Ok(frames) => run.log.push(format!("     underlay capture: {frames} frames in {}", c.path.display())),
                    Err(e) => run.log.push(format!("     underlay capture failed: {e}")),
                }
                let _ = std::fs::write(run.lab.dir.join("trial.log"), run.log.join("\n"));
            }
            let dir = run.lab.dir.clone();
            run.stop_agents();
            // keep the directory: the lab's teardown removes namespaces, not files; etcd's
            // data (a 64 MiB preallocated WAL) goes, its keys are in etcd-keys.json
            drop(run);
            let _ = std::fs::remove_dir_all(dir.join("etcd").join("data"));
            return Err(Stopped { step: Some(i + 1), step_name: step.name(), error, at: String::new(), dir: Some(dir) });
        }
        run.log.push(format!("ok   step {} `{}` ({} ms)", i + 1, step.name(), t.elapsed().as_millis()));
    }
    run.stop_agents();
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Run<'_> {
    fn conf(&self) -> Result<&NetConf, StepError> {
        self.conf.as_ref().ok_or_else(|| StepError::Lab("this step needs a valid net-conf, and the case's is not one".into()))
    }

    /// From now on only evidence produced after `what` counts (see [`Run::canary_round`]).
    fn restarted(&mut self, what: impl Into<String>) {
        self.canary_due = Some((Instant::now(), what.into()));
    }

    async fn step(&mut self, step: &Step) -> StepResult {
        match step {
            Step::StartAgents(_) => self.start_agents(),
            Step::WaitConverged(w) => self.wait_converged(w).await,
            Step::StayConverged(f) => self.stay_converged(f.duration.0).await,
            Step::CreatePods(p) => self.create_pods(p.per_host).await,
            Step::ExpectPing(p) => self.expect_ping(p).await,
            Step::ExpectMtu(_) => self.expect_mtu().await,
            Step::ExpectCounts(_) => self.expect_counts().await,
            Step::ExpectAgentsExit(w) => self.expect_agents_exit(w.within.0).await,
            Step::ExpectAgentsRunning(_) => self.expect_agents_running(),
            Step::MeasureThroughput(m) => self.measure_throughput(Duration::from_secs(m.seconds)).await,
            Step::InjectUdp(i) => self.inject_udp(i).await,
            Step::RestartEtcd(r) => {
                self.store.stop().await.map_err(lab)?;
                tokio::time::sleep(r.down_for.0).await;
                self.store.restart(&self.lab, r.wipe, Duration::from_secs(30)).await.map_err(lab)?;
                if r.wipe {
                    let text = self.spec.case.netconf.render(self.spec.backend);
                    self.store.put(&format!("{DEFAULT_PREFIX}/config"), text).await.map_err(lab)?;
                }
                self.log.push(format!("     etcd down for {:?}{}, answering again", r.down_for.0, if r.wipe { " and wiped" } else { "" }));
                self.restarted("restart_etcd");
                Ok(())
            }
            Step::RevokeLease(h) => {
                self.revoke_lease(h.host.as_str()).await?;
                self.restarted(format!("revoke_lease on {}", h.host));
                Ok(())
            }
            Step::RestartAgent(r) => self.restart_agent(r).await,
            Step::StartTraffic(t) => {
                let pod = |h: &str| self.pods.iter().find(|p| p.host == h).ok_or_else(|| format!("no pod on {h}: add create_pods first"));
                let (a, b) = (pod(t.from.as_str())?, pod(t.to.as_str())?);
                let label = format!("{} -> {} every {:?}", a.name, b.name, t.interval.0);
                let probe = crate::probe::traffic::Traffic::start(&a.ns, b.addr, t.interval.0)?;
                self.traffic = Some((probe, label, t.from.to_string()));
                Ok(())
            }
            Step::StopTraffic(s) => {
                let (mut probe, label, host) = self.traffic.take().ok_or("no traffic running: add start_traffic first")?;
                let r = tokio::task::spawn_blocking(move || probe.stop()).await.map_err(|e| e.to_string())??;
                let line = format!("traffic {label}: {} sent, {} lost, longest gap {} ms", r.sent, r.lost, r.longest_gap.as_millis());
                self.log.push(format!("     {line}"));
                if r.sent == 0 {
                    return Err(StepError::Lab(format!("{line}: nothing was sent, so the budget examined nothing")));
                }
                if r.lost > s.max_lost {
                    return Err(StepError::check(Check::Traffic, host, format!("{line}; budget allows {} lost", s.max_lost)));
                }
                if let Some(g) = s.max_gap {
                    if r.longest_gap > g.0 {
                        return Err(StepError::check(Check::Traffic, host, format!("{line}; budget allows a {} ms gap", g.0.as_millis())));
                    }
                }
                Ok(())
            }
            Step::PauseEtcd(f) => {
                self.store.freeze(true).await.map_err(lab)?;
                tokio::time::sleep(f.duration.0).await;
                self.store.freeze(false).await.map_err(lab)?;
                self.log.push(format!("     etcd paused for {:?}", f.duration.0));
                self.restarted("pause_etcd");
                Ok(())
            }
            Step::CutLink(h) => {
                let host = h.host.as_str();
                self.lab.set_link(host, false).await.map_err(lab)?;
                tokio::time::sleep(h.duration.0).await;
                self.lab.set_link(host, true).await.map_err(lab)?;
                self.log.push(format!("     {host}'s underlay link cut for {:?}", h.duration.0));
                self.restarted(format!("cut_link on {host}"));
                Ok(())
            }
            Step::RemoveHost(h) => {
                let host = h.host.to_string();
                if let Some(i) = self.agents.iter().position(|a| a.host == host) {
                    let mut a = self.agents.remove(i);
                    a.child.kill();
                }
                // upstream's 24 h lease cannot be shortened: node loss is a revocation
                self.revoke_lease(&host).await?;
                self.removed.insert(host.clone());
                self.log.push(format!("     {host} removed: agent killed, lease revoked"));
                self.restarted(format!("remove_host {host}"));
                Ok(())
            }
            Step::StopEtcdLeader(_) => {
                let name = self.store.stop_leader().await.map_err(lab)?;
                self.log.push(format!("     stopped the etcd leader, member `{name}`"));
                self.restarted("stop_etcd_leader");
                Ok(())
            }
            Step::SwitchBackend(sb) => {
                let to = Backend::parse(&sb.to).ok_or_else(|| format!("unknown backend `{}`", sb.to))?;
                for a in &mut self.agents {
                    a.stop();
                }
                let text = self.spec.case.netconf.render(to);
                self.store.put(&format!("{DEFAULT_PREFIX}/config"), text.clone()).await.map_err(lab)?;
                self.conf = serde_json::from_str(&text).ok().and_then(|v| NetConf::from_json(&v).ok());
                let hosts: Vec<String> = self.agents.drain(..).map(|a| a.host).collect();
                for host in hosts {
                    let node = self.lab.host(&host).expect("agent host");
                    let imp = self.imps.get(&host).cloned().unwrap_or_else(|| self.spec.imp.clone());
                    let a = Agent::start(&imp, node, &self.store.endpoints(), DEFAULT_PREFIX)?;
                    self.agents.push(a);
                }
                self.agents_started = Some(Instant::now());
                self.log.push(format!("     net-conf switched to {to}; agents restarted"));
                self.restarted(format!("switch_backend to {to}"));
                Ok(())
            }
            Step::AddHost(h) => {
                self.lab.add_host(&h.name).await.map_err(lab)?;
                let node = self.lab.host(h.name.as_str()).expect("just added");
                let a = Agent::start(&self.spec.imp, node, &self.store.endpoints(), DEFAULT_PREFIX)?;
                self.agents.push(a);
                self.imps.insert(h.name.to_string(), self.spec.imp.clone());
                self.log.push(format!("     {} joined at {}", h.name, node.addr));
                Ok(())
            }
            Step::ExpectSubnetsUnchanged(_) => {
                let first = self.first_subnets.clone().ok_or("no earlier convergence to compare with")?;
                let now = self.subnets().await?;
                let changed: Vec<Finding> = first
                    .iter()
                    .filter(|(h, _)| !self.removed.contains(*h))
                    .filter(|(h, s)| now.get(*h) != Some(s))
                    .map(|(h, s)| Finding::new(Check::Subnets, h.as_str(), format!("{s} became {:?}", now.get(h).map(|n| n.to_string()))))
                    .collect();
                if first.is_empty() {
                    return Err("expect_subnets_unchanged examined nothing: no subnets at the first convergence".into());
                }
                if changed.is_empty() {
                    Ok(())
                } else {
                    Err(StepError::Check(changed))
                }
            }
            Step::PutKey(k) => {
                let key = format!("{DEFAULT_PREFIX}/{}", k.key.trim_start_matches('/'));
                self.store.put(&key, k.value.clone()).await.map_err(lab)
            }
            Step::Break(s) => self.sabotage(s).await,
            Step::ExpectFailure(e) => {
                let expected = format!("[{}] {}", e.check, e.host);
                match Box::pin(self.step(&e.step)).await {
                    Ok(()) => Err(StepError::Lab(format!(
                        "`{}` passed on a deliberately broken setup (expected {expected}): the check cannot catch this fault",
                        e.step.name()
                    ))),
                    Err(StepError::Lab(m)) => Err(StepError::Lab(format!("`{}` (expected to fail with {expected}): {m}", e.step.name()))),
                    Err(StepError::Check(findings)) => {
                        let seen: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
                        if findings.iter().any(|f| f.check == e.check && f.host == e.host) {
                            self.log.push(format!(
                                "     `{}` failed as it should: expected {expected}; seen {}",
                                e.step.name(),
                                seen.join("; ")
                            ));
                            Ok(())
                        } else {
                            Err(StepError::Lab(format!(
                                "`{}` failed, but not with the expected {expected}: seen {}",
                                e.step.name(),
                                seen.join("; ")
                            )))
                        }
                    }
                }
            }
        }
    }

    /// Revokes the etcd lease holding the host's subnet key (deleting the key).
    async fn revoke_lease(&mut self, host: &str) -> StepResult {
        let node = self.lab.host(host).ok_or_else(|| format!("no host `{host}`"))?;
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(lab)?;
        let key = raw
            .iter()
            .find(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v).is_ok_and(|l| l.public_ip == node.addr))
            .map(|(k, _)| k.clone())
            .ok_or_else(|| format!("no lease for {} ({}) in etcd to revoke", node.name, node.addr))?;
        match self.store.revoke_key_lease(&key).await.map_err(lab)? {
            Some(id) => self.log.push(format!("     revoked lease {id:x} of {key}")),
            None => self.log.push(format!("     deleted {key} (it had no etcd lease)")),
        }
        Ok(())
    }

    /// Starts every agent back to back, as close to the same instant as spawning allows.
    /// Hosts named in the case's `host_profiles` run that implementation instead.
    fn start_agents(&mut self) -> StepResult {
        let mut imps: BTreeMap<String, Implementation> = self.lab.hosts.iter().map(|n| (n.name.clone(), self.spec.imp.clone())).collect();
        for (host, profile) in &self.spec.case.host_profiles {
            imps.insert(host.clone(), load_profile(profile)?);
        }
        let t0 = Instant::now();
        for node in &self.lab.hosts {
            let a = Agent::start(&imps[&node.name], node, &self.store.endpoints(), DEFAULT_PREFIX)?;
            self.agents.push(a);
        }
        self.imps = imps;
        let spread = t0.elapsed();
        self.agents_started = Some(t0);
        self.log.push(format!("     started {} agents within {} ms", self.agents.len(), spread.as_millis()));
        Ok(())
    }

    fn stop_agents(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
    }

    /// Each active host's subnet, from its lease in etcd.
    async fn subnets(&self) -> Result<BTreeMap<String, crate::input::names::Ipv4Net>, StepError> {
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(lab)?;
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
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(lab)?;
        let leases: Vec<Result<contract::LeaseView, String>> =
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
            let state = state.map_err(lab)?;
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
                    let imp = self.imps.get(&host).cloned().unwrap_or_else(|| self.spec.imp.clone());
                    let mut fresh = Agent::start(&imp, node, &self.store.endpoints(), DEFAULT_PREFIX)
                        .map_err(|e| StepError::Lab(format!("{host}: restart under the restart policy: {e}")))?;
                    fresh.restarts = restarts;
                    self.log.push(format!(
                        "     {host}: agent exited ({}), restarted by the restart policy (restart {restarts})",
                        crate::lab::proc::Child::describe_status(&s)
                    ));
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
                pods::ensure_bridge(node, want, previous).await.map_err(|e| StepError::Lab(format!("{h}: {}", chain(&e))))?;
                self.gateways.insert(h, want);
            }
        }
        Ok(())
    }

    /// Whether traffic between these two hosts is expected not to flow (host-gw across a
    /// router, as the case states).
    fn unreachable_pair(&self, cross_segment_fails: &[String], a: &str, b: &str) -> bool {
        let backend = self.conf.as_ref().map(|c| c.backend).unwrap_or(self.spec.backend);
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
            let outcomes = r.map_err(lab)?;
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

    async fn wait_converged(&mut self, w: &crate::input::case::Converge) -> StepResult {
        let within = w.within.0;
        let t0 = Instant::now();
        let deadline = t0 + within;
        loop {
            let last = Instant::now() >= deadline;
            let findings = self.convergence_findings(&w.cross_segment_fails, last).await?;
            if findings.iter().any(|f| f.check == Check::AgentExit) {
                return Err(StepError::Check(findings));
            }
            if findings.is_empty() {
                if self.canary_due.is_some() {
                    self.canary_round(deadline).await?;
                }
                if self.first_subnets.is_none() {
                    self.first_subnets = Some(self.subnets().await?);
                }
                let since_start = self.agents_started.map(|s| s.elapsed().as_millis()).unwrap_or(0);
                let rss = self
                    .agents
                    .iter()
                    .filter_map(|a| a.child.rss_kib())
                    .max()
                    .map(|k| format!(", largest agent RSS {k} KiB"))
                    .unwrap_or_default();
                self.log.push(format!(
                    "     converged {since_start} ms after agents started ({} ms waiting, data plane included{rss})",
                    t0.elapsed().as_millis()
                ));
                return Ok(());
            }
            if last {
                let mut findings = findings;
                if let Some(f) = findings.first_mut() {
                    f.what = format!("not converged within {within:?}: {}", f.what);
                }
                return Err(StepError::Check(findings));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fresh evidence after a restart: the harness announces a canary lease (a fake peer at
    /// a spare underlay address) and then withdraws it; every host must follow both, which a
    /// hung or stale agent cannot fake with the state it had before. vxlan and host-gw show
    /// it in the kernel (the contract counts the canary as a peer); udp keeps peers in the
    /// agent, so each host's echo to the canary's subnet must arrive at the canary's udp port.
    async fn canary_round(&mut self, deadline: Instant) -> StepResult {
        let (since, what) = self.canary_due.clone().expect("a canary is due");
        let conf = self.conf()?.clone();
        if self.lab.spares.is_empty() {
            self.lab.add_spare("canary").await.map_err(lab)?;
        }
        let canary = &self.lab.spares[0];
        let canary_ip = canary.addr;
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(lab)?;
        let used: Vec<crate::input::names::Ipv4Net> =
            raw.iter().filter_map(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v).ok()).map(|l| l.subnet).collect();
        let count = 1u32 << (conf.subnet_len - conf.network.prefix());
        let step = 1u32 << (32 - conf.subnet_len);
        let subnet = (1..count)
            .rev()
            .filter_map(|k| crate::input::names::Ipv4Net::new(conf.network.nth(k * step), conf.subnet_len))
            .find(|s| !used.contains(s))
            .ok_or("no free subnet left for the canary lease")?;
        let key = format!("{DEFAULT_PREFIX}/subnets/{}-{}", subnet.addr(), subnet.prefix());
        let value = match conf.backend {
            Backend::Vxlan => serde_json::json!({"PublicIP": canary_ip.to_string(), "PublicIPv6": null, "BackendType": "vxlan",
                "BackendData": {"VNI": conf.vni, "VtepMAC": "0e:ca:0a:00:00:01"}}),
            Backend::HostGw => serde_json::json!({"PublicIP": canary_ip.to_string(), "PublicIPv6": null, "BackendType": "host-gw"}),
            Backend::Udp => serde_json::json!({"PublicIP": canary_ip.to_string(), "PublicIPv6": null}),
        };
        let listener = match conf.backend {
            Backend::Udp => Some(probe::UdpListener::start(&canary.ns, conf.port)?),
            _ => None,
        };
        let t0 = Instant::now();
        self.store.put(&key, value.to_string()).await.map_err(lab)?;
        let added = self.follow_canary(deadline, subnet, listener.as_ref()).await;
        let learned = t0.elapsed();
        // withdraw it whatever happened, so a control that goes on is not misled
        let deleted = self.store.delete(&key).await.map_err(lab);
        let fail = |findings: Vec<Finding>, phase: &str| {
            StepError::Check(
                findings
                    .into_iter()
                    .map(|f| {
                        Finding::new(
                            Check::Canary,
                            f.host.as_str(),
                            format!("after {what}, the canary lease {subnet} {phase}: [{}] {}", f.check, f.what),
                        )
                    })
                    .collect(),
            )
        };
        match added? {
            Some(findings) => return Err(fail(findings, "added then was not followed")),
            None => deleted?,
        }
        let removed = self.follow_canary(deadline, subnet, None).await?;
        if let Some(findings) = removed {
            return Err(fail(findings, "withdrawn then was still served"));
        }
        self.log.push(format!(
            "     after {what}: canary lease {subnet} learned by every host in {} ms and dropped by every host in {} ms; converged again {} ms after it",
            learned.as_millis(),
            (t0.elapsed() - learned).as_millis(),
            since.elapsed().as_millis()
        ));
        self.canary_due = None;
        Ok(())
    }

    /// Polls until every host follows the leases as etcd has them now (canary included)
    /// and, for udp with a `listener`, until every host's echo to the canary subnet reached
    /// the canary through its agent. `None` when followed; else the findings at the deadline.
    async fn follow_canary(
        &mut self,
        deadline: Instant,
        subnet: crate::input::names::Ipv4Net,
        listener: Option<&probe::UdpListener>,
    ) -> Result<Option<Vec<Finding>>, StepError> {
        loop {
            let mut findings = self.observe().await?.0;
            findings.extend(self.agent_exits()?);
            if let Some(l) = listener {
                let target = subnet.nth(1);
                let mut jobs = Vec::new();
                for (h, g) in &self.gateways {
                    if self.removed.contains(h) {
                        continue;
                    }
                    let ns = self.lab.host(h).expect("gateway host").ns.clone();
                    let src = g.addr;
                    jobs.push(std::thread::spawn(move || probe::sweep(&ns, src, vec![target], 1, Duration::from_millis(50))));
                }
                for j in jobs {
                    j.join().expect("probe thread").map_err(lab)?;
                }
                let seen = l.seen();
                for (h, g) in &self.gateways {
                    if self.removed.contains(h) {
                        continue;
                    }
                    let node = self.lab.host(h).expect("gateway host");
                    let arrived = seen
                        .iter()
                        .any(|(from, p)| *from == node.addr && probe::inner_addresses(p).is_some_and(|(s, d)| s == g.addr && d == target));
                    if !arrived {
                        findings.push(Finding::new(
                            Check::Reachability,
                            h.as_str(),
                            format!("no datagram from {} carrying {} -> {target} reached the canary", node.addr, g.addr),
                        ));
                    }
                }
            }
            if findings.is_empty() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Ok(Some(findings));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stay_converged(&mut self, duration: Duration) -> StepResult {
        let t0 = Instant::now();
        let mut checks = 0;
        loop {
            let exits = self.agent_exits()?;
            if !exits.is_empty() {
                return Err(StepError::Check(exits));
            }
            let (findings, _) = self.observe().await?;
            checks += 1;
            if !findings.is_empty() {
                return Err(StepError::Check(
                    findings
                        .into_iter()
                        .map(|mut f| {
                            f.what = format!("converged state lost after {} ms: {}", t0.elapsed().as_millis(), f.what);
                            f
                        })
                        .collect(),
                ));
            }
            if t0.elapsed() >= duration {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // the data plane once more at the end: a path that died quietly is caught too
        let cross = self.cross_segment_fails();
        let reach = self.reachability(&cross).await?;
        if !reach.is_empty() {
            return Err(StepError::Check(reach));
        }
        self.log.push(format!("     stayed converged for {duration:?} ({checks} checks, data plane at the end)"));
        Ok(())
    }

    /// The case's own statement of which backends cannot cross segments, taken from its
    /// first wait_converged (so later checks skip the same pairs).
    fn cross_segment_fails(&self) -> Vec<String> {
        self.spec
            .case
            .steps
            .iter()
            .find_map(|s| match s {
                Step::WaitConverged(w) => Some(w.cross_segment_fails.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Creates pods on every host that has none yet (so it can follow `add_host`).
    async fn create_pods(&mut self, per_host: u32) -> StepResult {
        self.ensure_gateways().await?;
        let have: std::collections::BTreeSet<String> = self.pods.iter().map(|p| p.host.clone()).collect();
        let mut made = 0;
        for node in self.lab.hosts.iter().filter(|n| !have.contains(&n.name)) {
            let gw = self.gateways.get(&node.name).copied().ok_or_else(|| {
                let path = Agent::subnet_file_path(node);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                StepError::check(
                    Check::SubnetFile,
                    node.name.as_str(),
                    format!("no usable FLANNEL_SUBNET/FLANNEL_MTU to wire pods from:\n{text}"),
                )
            })?;
            let pods = pods::create(&self.lab, node, gw, per_host).await.map_err(|e| format!("{}: {}", node.name, chain(&e)))?;
            made += pods.len();
            self.pods.extend(pods);
        }
        if made == 0 && self.pods.is_empty() {
            return Err("create_pods made no pod".into());
        }
        Ok(())
    }

    async fn expect_ping(&mut self, spec: &crate::input::case::PingSpec) -> StepResult {
        let split = spec.cross_segment_fails.iter().any(|b| b == self.spec.backend.name());
        let segment_of = |host: &str| self.lab.host(host).map(|n| n.segment);
        let pairs: Vec<(usize, usize)> = (0..self.pods.len())
            .flat_map(|a| (0..self.pods.len()).map(move |b| (a, b)))
            .filter(|(a, b)| self.pods[*a].host != self.pods[*b].host)
            .filter(|(a, b)| !self.removed.contains(&self.pods[*a].host) && !self.removed.contains(&self.pods[*b].host))
            .collect();
        if pairs.is_empty() {
            return Err("expect_ping examined nothing: no pod pairs on different hosts (add create_pods and a second host)".into());
        }
        let jobs: Vec<_> = pairs
            .iter()
            .map(|&(a, b)| {
                let (src, dst) = (&self.pods[a], &self.pods[b]);
                let (ns, to) = (src.ns.clone(), dst.addr);
                let label = format!("{} -> {} ({})", src.name, dst.name, dst.addr);
                let reachable = !split || segment_of(&src.host) == segment_of(&dst.host);
                (
                    src.host.clone(),
                    label,
                    reachable,
                    std::thread::spawn(move || probe::ping_with_retries(&ns, to, 3, Duration::from_secs(1))),
                )
            })
            .collect();
        let results = tokio::task::spawn_blocking(move || {
            jobs.into_iter().map(|(h, l, reach, j)| (h, l, reach, j.join().expect("ping thread"))).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut failed = Vec::new();
        let mut worst = Duration::ZERO;
        let mut blocked = 0;
        for (host, label, reachable, r) in results {
            match (reachable, r.map_err(lab)?) {
                (true, PingOutcome::Reply { rtt }) => worst = worst.max(rtt),
                (true, other) => failed.push(Finding::new(Check::Ping, host, format!("{label}: {other:?}"))),
                (false, PingOutcome::Reply { .. }) => failed.push(Finding::new(
                    Check::Ping,
                    host,
                    format!(
                        "{label}: replied, but the case expects pods on different segments not to reach each other under {}",
                        self.spec.backend
                    ),
                )),
                (false, _) => blocked += 1,
            }
        }
        if !failed.is_empty() {
            let n = failed.len();
            if let Some(f) = failed.first_mut() {
                f.what = format!("{n} of {} pod pairs did not behave as expected; {}", pairs.len(), f.what);
            }
            return Err(StepError::Check(failed));
        }
        let note = if split {
            format!("; {blocked} cross-segment pairs fail, as the case expects for {}", self.spec.backend)
        } else {
            String::new()
        };
        self.log.push(format!("     {} pod pairs ping (slowest reply {} us){note}", pairs.len() - blocked, worst.as_micros()));
        Ok(())
    }

    /// Pods' interface MTU equals the overlay MTU, and DF probes from an endpoint whose own
    /// MTU is larger than the overlay's (so nothing is refused before the overlay) find the
    /// path the overlay offers: a packet of exactly the overlay MTU reaches the next host,
    /// one byte more is refused at this host's overlay device with that MTU as next hop.
    async fn expect_mtu(&mut self) -> StepResult {
        let conf = self.conf()?.clone();
        self.ensure_gateways().await?;
        let mut findings = Vec::new();
        for pod in &self.pods {
            let node = self.lab.host(&pod.host).expect("pod host");
            let mtu = conf.overlay_mtu(self.lab.mtu_of(node));
            let links = pod.nl.links().await.map_err(lab)?;
            match links.iter().find(|l| l.name == "eth0") {
                Some(l) if l.mtu != mtu => findings.push(Finding::new(
                    Check::PodMtu,
                    pod.host.as_str(),
                    format!("{}: eth0 MTU {} but the overlay MTU is {mtu}", pod.name, l.mtu),
                )),
                Some(_) => {}
                None => return Err(format!("{}: no eth0", pod.name).into()),
            }
        }
        let cross = self.cross_segment_fails();
        let hosts: Vec<String> = self.active_hosts().filter(|h| self.gateways.contains_key(&h.name)).map(|h| h.name.clone()).collect();
        let mut probes = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            // the next host in ring order that this one is meant to reach
            let Some(next) = (1..hosts.len()).map(|k| &hosts[(i + k) % hosts.len()]).find(|n| !self.unreachable_pair(&cross, h, n)) else {
                continue;
            };
            let node = self.lab.host(h).expect("active host");
            let underlay = self.lab.mtu_of(node);
            let overlay = conf.overlay_mtu(underlay);
            let gw = self.gateways[h];
            if !self.mtu_probes.contains_key(h) {
                let p = pods::create_probe(&self.lab, node, gw, underlay + 100).await.map_err(|e| format!("{h}: {}", chain(&e)))?;
                self.mtu_probes.insert(h.clone(), p);
            }
            let probe_ns = self.mtu_probes[h].ns.clone();
            probes.push((h.clone(), next.clone(), probe_ns, gw.addr, self.gateways[next].addr, overlay));
        }
        if probes.is_empty() {
            return Err("expect_mtu examined nothing: no host has a peer to probe".into());
        }
        let results = tokio::task::spawn_blocking(move || {
            let jobs: Vec<_> = probes
                .into_iter()
                .map(|(h, n, ns, own_gw, dst, mtu)| {
                    std::thread::spawn(move || {
                        let fits = (mtu - 28) as usize;
                        // the first DF probe may be eaten by ARP on a fresh path: retry it
                        let mut small = probe::ping(&ns, dst, fits, true, Duration::from_secs(1));
                        for _ in 0..2 {
                            if matches!(small, Ok(PingOutcome::Timeout)) {
                                small = probe::ping(&ns, dst, fits, true, Duration::from_secs(1));
                            }
                        }
                        let big = probe::ping(&ns, dst, fits + 1, true, Duration::from_secs(1));
                        (h, n, own_gw, dst, mtu, small, big)
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().expect("mtu probe thread")).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        for (h, n, own_gw, dst, mtu, small, big) in results {
            let (small, big) = (small.map_err(lab)?, big.map_err(lab)?);
            let what = format!("{h} -> {n} ({dst})");
            if !small.is_reply() {
                findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {mtu} bytes (the overlay MTU) should pass, got {small:?}"),
                ));
            }
            match big {
                PingOutcome::FragNeeded { from, mtu: m } if from == own_gw && u32::from(m) == mtu => {
                    lines.push(format!("{what}: {} bytes pass, {} refused at {h} with next-hop MTU {m}", mtu, mtu + 1))
                }
                PingOutcome::FragNeeded { from, mtu: m } => findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {} bytes was refused by {from} with next-hop MTU {m}, expected {own_gw} ({h}'s overlay) with {mtu}", mtu + 1),
                )),
                PingOutcome::Reply { .. } => findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {} bytes passed, but the overlay MTU is {mtu}", mtu + 1),
                )),
                other => findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {} bytes vanished ({other:?}): neither a reply nor a frag-needed error (a black hole)", mtu + 1),
                )),
            }
        }
        if !findings.is_empty() {
            return Err(StepError::Check(findings));
        }
        for l in lines {
            self.log.push(format!("     {l}"));
        }
        Ok(())
    }

    /// Exactly the contract's number of entries per host, duplicates counted: with N active
    /// hosts, vxlan has N−1 routes, neighbours and FDB entries; host-gw one route per peer
    /// on its segment; udp one route and nothing per peer.
    async fn expect_counts(&mut self) -> StepResult {
        let conf = self.conf()?.clone();
        let (mut findings, counts) = self.observe().await?;
        let active: Vec<&crate::lab::Node> = self.active_hosts().collect();
        let n = active.len();
        if counts.is_empty() {
            return Err("expect_counts examined nothing: no host was read".into());
        }
        for node in &active {
            let peers = n - 1;
            let want = match conf.backend {
                Backend::Vxlan => Counts { routes: peers, neighbours: peers, fdb: peers },
                Backend::HostGw => Counts {
                    routes: active.iter().filter(|o| o.name != node.name && o.segment == node.segment).count(),
                    neighbours: 0,
                    fdb: 0,
                },
                Backend::Udp => Counts { routes: 1, neighbours: 0, fdb: 0 },
            };
            let have = counts.get(&node.name).copied().unwrap_or_default();
            if have != want {
                findings.push(Finding::new(
                    Check::Counts,
                    node.name.as_str(),
                    format!(
                        "routes/neighbours/fdb {}/{}/{}, expected {}/{}/{} with {n} hosts",
                        have.routes, have.neighbours, have.fdb, want.routes, want.neighbours, want.fdb
                    ),
                ));
            }
        }
        if !findings.is_empty() {
            return Err(StepError::Check(findings));
        }
        let summary: Vec<String> = counts.iter().map(|(h, c)| format!("{h}={}/{}/{}", c.routes, c.neighbours, c.fdb)).collect();
        let total: usize = counts.values().map(|c| c.routes + c.neighbours + c.fdb).sum();
        self.log.push(format!("     {n} hosts: routes/neighbours/fdb per host {} (total {total})", summary.join(" ")));
        Ok(())
    }

    async fn expect_agents_exit(&mut self, within: Duration) -> StepResult {
        if self.agents.is_empty() {
            return Err("expect_agents_exit examined nothing: no agents were started".into());
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
            if s.success() {
                findings.push(Finding::new(Check::AgentFailure, a.host.as_str(), "agent exited with status 0, expected a failure"));
            } else {
                let last = a.child.log_tail(1);
                self.log.push(format!("     {}: {} — {last}", a.host, crate::lab::proc::Child::describe_status(&s)));
            }
        }
        for node in &self.lab.hosts {
            let links = node.nl.links().await.map_err(lab)?;
            let half_built: Vec<&str> = links.iter().filter(|l| l.name.starts_with("flannel")).map(|l| l.name.as_str()).collect();
            if !half_built.is_empty() {
                findings.push(Finding::new(Check::AgentFailure, node.name.as_str(), format!("left {half_built:?} behind after failing")));
            }
            if Agent::subnet_file_path(node).exists() {
                findings.push(Finding::new(Check::AgentFailure, node.name.as_str(), "wrote a subnet file although it failed"));
            }
        }
        if findings.is_empty() {
            Ok(())
        } else {
            Err(StepError::Check(findings))
        }
    }

    fn expect_agents_running(&mut self) -> StepResult {
        if self.agents.is_empty() {
            return Err("expect_agents_running examined nothing: no agents were started".into());
        }
        let exits = self.agent_exits()?;
        if exits.is_empty() {
            Ok(())
        } else {
            Err(StepError::Check(exits))
        }
    }

    async fn measure_throughput(&mut self, seconds: Duration) -> StepResult {
        let hosts: Vec<String> = self.lab.hosts.iter().take(2).map(|h| h.name.clone()).collect();
        if hosts.len() < 2 {
            return Err("needs two hosts".into());
        }
        let pod = |h: &str| self.pods.iter().find(|p| p.host == h).ok_or_else(|| format!("no pod on {h}: add create_pods first"));
        let (a, b) = (pod(&hosts[0])?, pod(&hosts[1])?);
        let (ha, hb) = (self.lab.host(&hosts[0]).expect("host"), self.lab.host(&hosts[1]).expect("host"));
        let (pa, pb, pb_ip) = (a.ns.clone(), b.ns.clone(), b.addr);
        let (na, nb, hb_ip) = (ha.ns.clone(), hb.ns.clone(), hb.addr);
        let (overlay, bare) = tokio::task::spawn_blocking(move || {
            let overlay = crate::probe::throughput::measure(&pb, pb_ip, &pa, seconds);
            let bare = crate::probe::throughput::measure(&nb, hb_ip, &na, seconds);
            (overlay, bare)
        })
        .await
        .map_err(|e| e.to_string())?;
        let (overlay, bare) = (overlay.map_err(|e| format!("pod to pod: {e}"))?, bare.map_err(|e| format!("host to host: {e}"))?);
        self.log.push(format!(
            "     throughput {}: pod-to-pod {:.2} Gbit/s, bare underlay {:.2} Gbit/s, ratio {:.3}",
            self.spec.backend,
            overlay.gbit_per_s(),
            bare.gbit_per_s(),
            overlay.gbit_per_s() / bare.gbit_per_s()
        ));
        Ok(())
    }

    async fn restart_agent(&mut self, r: &crate::input::case::RestartAgent) -> StepResult {
        let host = r.host.as_str();
        let i = self.agents.iter().position(|a| a.host == host).ok_or("no agent on that host: add start_agents first")?;
        let mut old = self.agents.remove(i);
        old.stop();
        drop(old);
        let node = self.lab.host(host).ok_or_else(|| format!("no host `{host}`"))?;
        if r.new_vtep_mac {
            for l in node.nl.links().await.map_err(lab)?.iter().filter(|l| l.name.starts_with("flannel")) {
                node.nl.del_link(&l.name).await.map_err(lab)?;
            }
        }
        let imp = match &r.profile {
            Some(p) => {
                let imp = load_profile(&crate::input::case::profile_path(&self.spec.case, p))?;
                self.imps.insert(host.to_string(), imp.clone());
                imp
            }
            None => self.imps.get(host).cloned().unwrap_or_else(|| self.spec.imp.clone()),
        };
        let a = Agent::start(&imp, node, &self.store.endpoints(), DEFAULT_PREFIX)?;
        self.agents.insert(i, a);
        self.log.push(format!(
            "     restarted the agent on {host}{}{}",
            if r.new_vtep_mac { " with its devices deleted" } else { "" },
            r.profile.as_ref().map(|p| format!(" as profile `{p}`")).unwrap_or_default()
        ));
        self.restarted(format!("restart_agent on {host}"));
        Ok(())
    }

    async fn inject_udp(&mut self, spec: &crate::input::case::InjectUdp) -> StepResult {
        let conf = self.conf()?.clone();
        if conf.backend != Backend::Udp {
            return Err(format!("inject_udp applies to the udp backend, not {}", conf.backend).into());
        }
        let (sender_ns, sender_addr) = if spec.from == "etcd" {
            (self.store.netns().clone(), self.lab.topo.etcd.1)
        } else {
            let n = self.lab.host(&spec.from).ok_or_else(|| format!("no node `{}`", spec.from))?;
            (n.ns.clone(), n.addr)
        };
        let target = self.lab.host(spec.to.as_str()).ok_or_else(|| format!("no host `{}`", spec.to))?;
        let pod = self.pods.iter().find(|p| p.host == target.name).ok_or("no pod on the target host: add create_pods first")?;
        let src_host = self.lab.host(spec.inner_src_from.as_str()).ok_or_else(|| format!("no host `{}`", spec.inner_src_from))?;
        let env = SubnetEnv::parse(
            &std::fs::read_to_string(Agent::subnet_file_path(src_host)).map_err(|e| format!("subnet file of {}: {e}", src_host.name))?,
        );
        let subnet = env.subnet().ok_or("no subnet in the subnet file")?;
        let inner_src = subnet.nth(200);
        let ident: u16 = rand::random();
        let packet = probe::echo_packet(inner_src, pod.addr, ident);
        let to = std::net::SocketAddrV4::new(target.addr, conf.port);
        let pod_ns = pod.ns.clone();
        let target_name = target.name.clone();
        let seen = tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            let listener = std::thread::spawn(move || probe::saw_echo_request(&pod_ns, ident, Duration::from_secs(1), tx));
            rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "listener did not start".to_string())?;
            probe::send_udp(&sender_ns, to, packet)?;
            listener.join().map_err(|_| "listener panicked".to_string())?
        })
        .await
        .map_err(|e| e.to_string())??;
        let what = format!("datagram from {} ({sender_addr}) to {to} carrying {inner_src} -> {}", spec.from, pod.addr);
        match (spec.expect, seen) {
            (crate::input::case::Fate::Delivered, true) | (crate::input::case::Fate::Dropped, false) => {
                self.log.push(format!("     {what}: {}", if seen { "delivered" } else { "dropped" }));
                Ok(())
            }
            (crate::input::case::Fate::Delivered, false) => {
                Err(StepError::check(Check::Delivery, target_name, format!("{what}: never reached the pod, expected delivery")))
            }
            (crate::input::case::Fate::Dropped, true) => {
                Err(StepError::check(Check::Delivery, target_name, format!("{what}: reached the pod, expected it to be dropped")))
            }
        }
    }

    async fn sabotage(&mut self, s: &Sabotage) -> StepResult {
        let conf = self.conf()?.clone();
        let host = match s {
            Sabotage::DeleteFdb(h) | Sabotage::DeleteRoute(h) | Sabotage::DeleteNeighbour(h) | Sabotage::KillAgent(h) => h.host.as_str(),
            Sabotage::SetPodMtu(p) | Sabotage::SetUnderlayMtu(p) => p.host.as_str(),
            Sabotage::SetDeviceMtu(p) => p.host.as_str(),
        };
        let node = self.lab.host(host).ok_or_else(|| format!("no host `{host}`"))?;
        let dev = conf.route_device();
        let idx = match s {
            Sabotage::SetPodMtu(_) | Sabotage::KillAgent(_) | Sabotage::SetDeviceMtu(_) | Sabotage::SetUnderlayMtu(_) => 0,
            _ => node.nl.index_of(&dev).await.map_err(lab)?,
        };
        let what = match s {
            Sabotage::DeleteFdb(_) => {
                let fdb = node.nl.fdb().await.map_err(lab)?;
                let e = fdb.into_iter().find(|e| e.ifindex == idx && e.dst.is_some()).ok_or("no FDB entry to delete")?;
                node.nl.del_fdb(&e).await.map_err(lab)?;
                format!("deleted FDB entry {} dst {:?}", e.mac, e.dst)
            }
            Sabotage::DeleteRoute(_) => {
                let routes = node.nl.routes().await.map_err(lab)?;
                let r = routes
                    .into_iter()
                    .find(|r| r.oif == Some(idx) && conf.network.contains_net(&r.dst))
                    .ok_or("no peer route to delete")?;
                node.nl.del_route(&r).await.map_err(lab)?;
                format!("deleted route {}", r.dst)
            }
            Sabotage::DeleteNeighbour(_) => {
                let neigh = node.nl.neighbours().await.map_err(lab)?;
                let n = neigh.into_iter().find(|n| n.ifindex == idx && n.permanent).ok_or("no neighbour to delete")?;
                node.nl.del_neighbour(&n).await.map_err(lab)?;
                format!("deleted neighbour {}", n.ip)
            }
            Sabotage::SetPodMtu(p) => {
                let pod = self.pods.iter().find(|x| x.host == host).ok_or("no pod on that host: add create_pods first")?;
                pod.nl.set_mtu("eth0", p.mtu).await.map_err(lab)?;
                format!("set {} eth0 MTU to {}", pod.name, p.mtu)
            }
            Sabotage::SetDeviceMtu(p) => {
                let links = node.nl.links().await.map_err(lab)?;
                let now = links.iter().find(|l| l.name == dev).map(|l| l.mtu).ok_or_else(|| format!("no `{dev}` on {host}"))?;
                let to = now.checked_add_signed(p.by).ok_or("MTU out of range")?;
                node.nl.set_mtu(&dev, to).await.map_err(lab)?;
                format!("set {dev} MTU from {now} to {to} (the subnet file is unchanged)")
            }
            Sabotage::SetUnderlayMtu(p) => {
                self.lab.set_port_mtu(host, p.mtu).await.map_err(lab)?;
                format!("set the bridge port of {host}'s underlay link to MTU {}", p.mtu)
            }
            Sabotage::KillAgent(_) => {
                let agent = self.agents.iter_mut().find(|a| a.host == host).ok_or("no agent on that host: add start_agents first")?;
                let pid = agent.child.pid();
                agent.child.kill();
                format!("SIGKILLed agent pid {pid}")
            }
        };
        self.log.push(format!("     sabotage on {host}: {what}"));
        Ok(())
    }

    /// Writes what a person needs to see why the trial failed into the work directory.
    async fn save_artifacts(&mut self) {
        for node in &self.lab.hosts {
            if let Ok(state) = probe::dump_host(node, &Agent::subnet_file_path(node)).await {
                let _ = std::fs::write(node.dir.join("state.json"), serde_json::to_string_pretty(&state).unwrap_or_default());
            }
        }
        if let Ok(kvs) = self.store.list(&format!("{DEFAULT_PREFIX}/")).await {
            let dump: BTreeMap<String, String> = kvs.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
            let _ = std::fs::write(self.lab.dir.join("etcd-keys.json"), serde_json::to_string_pretty(&dump).unwrap_or_default());
        }
        let _ = std::fs::write(self.lab.dir.join("trial.log"), self.log.join("\n"));
        let _ = std::fs::copy(&self.spec.case.file, self.lab.dir.join("case.yaml"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> TrialReport {
        TrialReport::unjudged("c::vxlan::m".into(), vec![], Instant::now())
    }

    fn stopped(step: usize, error: StepError) -> Option<Stopped> {
        Some(Stopped { step: Some(step), step_name: "wait_converged", error, at: String::new(), dir: None })
    }

    fn expected(step: Option<usize>) -> Verdict {
        Verdict::Catch(Expected { check: Check::Fdb, host: "h2".into(), step })
    }

    #[test]
    fn a_mutant_is_caught_only_by_its_finding() {
        let mut r = report();
        judge(&expected(Some(2)), stopped(2, StepError::check(Check::Fdb, "h2", "1 of 2 FDB entries")), &mut r);
        assert!(r.passed, "{r:?}");
        // another host, another check, another step: not caught
        for (step, check, host) in [(2, Check::Fdb, "h1"), (2, Check::Routes, "h2"), (4, Check::Fdb, "h2")] {
            let mut r = report();
            judge(&expected(Some(2)), stopped(step, StepError::check(check, host, "x")), &mut r);
            assert!(!r.passed && !r.lab_error, "{r:?}");
            assert!(r.failure.unwrap().contains("failed for another reason"));
        }
        // the case passing is no catch either
        let mut r = report();
        judge(&expected(None), None, &mut r);
        assert!(!r.passed);
    }

    #[test]
    fn a_lab_error_is_never_a_pass() {
        let mut r = report();
        judge(&expected(None), stopped(2, StepError::Lab("start etcd: timed out".into())), &mut r);
        assert!(!r.passed && r.lab_error, "{r:?}");
        assert!(r.failure.unwrap().contains("a lab error is never a catch"));
        let mut r = report();
        judge(&Verdict::Pass, stopped(1, StepError::Lab("probe socket: EPERM".into())), &mut r);
        assert!(!r.passed && r.lab_error);
    }
}
