//! Running a trial: one case × backend × implementation, at each of the case's host
//! counts and repeats, each on a freshly built lab. Steps run in order; every wait is a
//! deadline on a condition.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agents::{Agent, Implementation};
use crate::case::StoreChoice;
use crate::case::{Case, Sabotage, Step};
use crate::contract::{self, Backend, Counts, Finding, NetConf, SubnetEnv, DEFAULT_PREFIX};
use crate::lab::Lab;
use crate::pods::{self, Pod};
use crate::probe::{self, PingOutcome};
use crate::store::{Provider, Store};

/// One trial to run.
#[derive(Clone)]
pub struct TrialSpec {
    pub case: Case,
    pub backend: Backend,
    pub imp: Implementation,
}

impl TrialSpec {
    pub fn name(&self) -> String {
        format!("{}::{}::{}", self.case.name, self.backend, self.imp.name())
    }
}

/// What a finished trial says.
#[derive(Debug)]
pub struct TrialReport {
    pub name: String,
    pub passed: bool,
    /// One line per step and measurement.
    pub log: Vec<String>,
    /// Why it failed (first failing step).
    pub failure: Option<String>,
    /// Kept work directory of the failing lab.
    pub artifacts: Option<PathBuf>,
    /// Why the trial could not run here (reported as ignored, not passed).
    pub ignored: Option<String>,
    pub elapsed: Duration,
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
    first_subnets: Option<BTreeMap<String, crate::names::Ipv4Net>>,
    traffic: Option<(crate::traffic::Traffic, String)>,
    conf: Option<NetConf>,
    agents: Vec<Agent>,
    agents_started: Option<Instant>,
    pods: Vec<Pod>,
    store: Store,
    capture: Option<crate::capture::Capture>,
    lab: Lab,
    log: &'a mut Vec<String>,
}

type StepResult = Result<(), String>;

pub async fn run_trial(spec: &TrialSpec, workdir: &Path) -> TrialReport {
    let started = Instant::now();
    let mut log = Vec::new();
    let provider = match choose_store(&spec.case).await {
        Ok(p) => p,
        Err(reason) => {
            return TrialReport {
                name: spec.name(),
                passed: false,
                log,
                failure: None,
                artifacts: None,
                ignored: Some(reason),
                elapsed: started.elapsed(),
            };
        }
    };
    let mut failure = None;
    let mut artifacts = None;
    'outer: for scale in spec.case.scales() {
        for rep in 1..=spec.case.repeat {
            let label = match scale {
                Some(n) => format!("{}-{}-n{n}-r{rep}", spec.case.name, spec.backend),
                None => format!("{}-{}-r{rep}", spec.case.name, spec.backend),
            };
            if let Err((msg, dir)) = run_once(spec, provider, scale, &label, workdir, &mut log).await {
                let at = match scale {
                    Some(n) => format!(" (at {n} hosts, repeat {rep})"),
                    None if spec.case.repeat > 1 => format!(" (repeat {rep})"),
                    None => String::new(),
                };
                failure = Some(format!("{msg}{at}"));
                artifacts = dir;
                break 'outer;
            }
        }
    }
    TrialReport { name: spec.name(), passed: failure.is_none(), log, failure, artifacts, ignored: None, elapsed: started.elapsed() }
}

/// The case's store choice, else `FLANNEL_LAB_STORE`, else the process. `Err` carries the
/// reason a Docker-only case cannot run here.
async fn choose_store(case: &Case) -> Result<Provider, String> {
    let choice = case.store.or_else(StoreChoice::from_env).unwrap_or(StoreChoice::Process);
    match choice {
        StoreChoice::Process => Ok(Provider::Process),
        StoreChoice::Docker => match crate::container::engine().await {
            Ok(_) => Ok(Provider::Docker),
            Err(e) => Err(format!("needs etcd in Docker: {e}")),
        },
        StoreChoice::Auto => Ok(if crate::container::engine().await.is_ok() { Provider::Docker } else { Provider::Process }),
    }
}

/// Turns a trial run against a mutant into its verdict: the case must have failed.
pub fn invert_for_mutant(mut r: TrialReport) -> TrialReport {
    match r.failure.take() {
        Some(f) => {
            r.log.push(format!("     the case caught the mutant: {f}"));
            if let Some(dir) = r.artifacts.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
            r.passed = true;
        }
        None => {
            r.failure = Some(format!("the case passed against mutant `{}`: it cannot catch the bug the mutant recreates", r.name));
            r.passed = false;
        }
    }
    r
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
) -> Result<(), (String, Option<PathBuf>)> {
    let topo = spec.case.topology(scale).map_err(|e| (e.to_string(), None))?;
    let lab =
        Lab::build(topo, workdir, label, provider == Provider::Process).await.map_err(|e| (format!("build lab: {}", chain(&e)), None))?;
    let dir = lab.dir.clone();
    let store = match Store::start(&lab, provider, spec.case.etcd_members as usize, Duration::from_secs(30)).await {
        Ok(s) => s,
        Err(e) => return Err((format!("start etcd: {}", chain(&e)), Some(dir))),
    };
    let text = spec.case.netconf.render(spec.backend);
    let conf = serde_json::from_str(&text).ok().and_then(|v| NetConf::from_json(&v).ok());
    if let Err(e) = store.put(&format!("{DEFAULT_PREFIX}/config"), text).await {
        return Err((format!("write net-conf: {}", chain(&e)), Some(dir)));
    }
    log.push(format!("lab {} ({} hosts, run {}): {}", label, lab.hosts.len(), lab.run, store.describe()));
    let capture = match crate::capture::Capture::start(lab.fabric_ns(), &lab.dir.join("underlay.pcap")) {
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
        pods: Vec::new(),
        store,
        capture,
        lab,
        log,
    };
    for (i, step) in spec.case.steps.iter().enumerate() {
        let t = Instant::now();
        if let Err(msg) = run.step(step).await {
            let msg = format!("step {} `{}`: {msg}", i + 1, step.name());
            run.log.push(format!("FAIL {msg}"));
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
            return Err((msg, Some(dir)));
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
    fn conf(&self) -> Result<&NetConf, String> {
        self.conf.as_ref().ok_or_else(|| "this step needs a valid net-conf, and the case's is not one".to_string())
    }

    async fn step(&mut self, step: &Step) -> StepResult {
        match step {
            Step::StartAgents(_) => self.start_agents(),
            Step::WaitConverged(w) => self.wait_converged(w.within.0).await,
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
                self.store.stop().await.map_err(|e| chain(&e))?;
                tokio::time::sleep(r.down_for.0).await;
                self.store.restart(&self.lab, r.wipe, Duration::from_secs(30)).await.map_err(|e| chain(&e))?;
                if r.wipe {
                    let text = self.spec.case.netconf.render(self.spec.backend);
                    self.store.put(&format!("{DEFAULT_PREFIX}/config"), text).await.map_err(|e| chain(&e))?;
                }
                self.log.push(format!("     etcd down for {:?}{}, answering again", r.down_for.0, if r.wipe { " and wiped" } else { "" }));
                Ok(())
            }
            Step::RevokeLease(h) => {
                let node = self.lab.host(h.host.as_str()).ok_or_else(|| format!("no host `{}`", h.host))?;
                let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(|e| chain(&e))?;
                let key = raw
                    .iter()
                    .find(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v).is_ok_and(|l| l.public_ip == node.addr))
                    .map(|(k, _)| k.clone())
                    .ok_or_else(|| format!("no lease for {} ({}) in etcd", node.name, node.addr))?;
                match self.store.revoke_key_lease(&key).await.map_err(|e| chain(&e))? {
                    Some(id) => self.log.push(format!("     revoked lease {id:x} of {key}")),
                    None => self.log.push(format!("     deleted {key} (it had no etcd lease)")),
                }
                Ok(())
            }
            Step::RestartAgent(r) => self.restart_agent(r).await,
            Step::StartTraffic(t) => {
                let pod = |h: &str| self.pods.iter().find(|p| p.host == h).ok_or_else(|| format!("no pod on {h}: add create_pods first"));
                let (a, b) = (pod(t.from.as_str())?, pod(t.to.as_str())?);
                let label = format!("{} -> {} every {:?}", a.name, b.name, t.interval.0);
                let probe = crate::traffic::Traffic::start(&a.ns, b.addr, t.interval.0)?;
                self.traffic = Some((probe, label));
                Ok(())
            }
            Step::StopTraffic(s) => {
                let (mut probe, label) = self.traffic.take().ok_or("no traffic running: add start_traffic first")?;
                let r = tokio::task::spawn_blocking(move || probe.stop()).await.map_err(|e| e.to_string())??;
                let line = format!("traffic {label}: {} sent, {} lost, longest gap {} ms", r.sent, r.lost, r.longest_gap.as_millis());
                self.log.push(format!("     {line}"));
                if r.sent == 0 {
                    return Err(format!("{line}: nothing was sent"));
                }
                if r.lost > s.max_lost {
                    return Err(format!("{line}; budget allows {} lost", s.max_lost));
                }
                if let Some(g) = s.max_gap {
                    if r.longest_gap > g.0 {
                        return Err(format!("{line}; budget allows a {} ms gap", g.0.as_millis()));
                    }
                }
                Ok(())
            }
            Step::PauseEtcd(f) => {
                self.store.freeze(true).await.map_err(|e| chain(&e))?;
                tokio::time::sleep(f.duration.0).await;
                self.store.freeze(false).await.map_err(|e| chain(&e))?;
                self.log.push(format!("     etcd paused for {:?}", f.duration.0));
                Ok(())
            }
            Step::CutLink(h) => {
                let host = h.host.as_str();
                self.lab.set_link(host, false).await.map_err(|e| chain(&e))?;
                tokio::time::sleep(h.duration.0).await;
                self.lab.set_link(host, true).await.map_err(|e| chain(&e))?;
                self.log.push(format!("     {host}'s underlay link cut for {:?}", h.duration.0));
                Ok(())
            }
            Step::RemoveHost(h) => {
                let host = h.host.to_string();
                if let Some(i) = self.agents.iter().position(|a| a.host == host) {
                    let mut a = self.agents.remove(i);
                    a.child.kill();
                }
                // upstream's 24 h lease cannot be shortened: node loss is a revocation
                Box::pin(self.step(&Step::RevokeLease(crate::case::OnHost { host: h.host.clone() }))).await?;
                self.removed.insert(host.clone());
                self.log.push(format!("     {host} removed: agent killed, lease revoked"));
                Ok(())
            }
            Step::StopEtcdLeader(_) => {
                let name = self.store.stop_leader().await.map_err(|e| chain(&e))?;
                self.log.push(format!("     stopped the etcd leader, member `{name}`"));
                Ok(())
            }
            Step::SwitchBackend(sb) => {
                let to = Backend::parse(&sb.to).ok_or_else(|| format!("unknown backend `{}`", sb.to))?;
                for a in &mut self.agents {
                    a.stop();
                }
                let text = self.spec.case.netconf.render(to);
                self.store.put(&format!("{DEFAULT_PREFIX}/config"), text.clone()).await.map_err(|e| chain(&e))?;
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
                Ok(())
            }
            Step::AddHost(h) => {
                self.lab.add_host(&h.name).await.map_err(|e| chain(&e))?;
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
                let changed: Vec<String> = first
                    .iter()
                    .filter(|(h, _)| !self.removed.contains(*h))
                    .filter(|(h, s)| now.get(*h) != Some(s))
                    .map(|(h, s)| format!("{h}: {s} became {:?}", now.get(h).map(|n| n.to_string())))
                    .collect();
                if changed.is_empty() {
                    Ok(())
                } else {
                    Err(changed.join("; "))
                }
            }
            Step::PutKey(k) => {
                let key = format!("{DEFAULT_PREFIX}/{}", k.key.trim_start_matches('/'));
                self.store.put(&key, k.value.clone()).await.map_err(|e| chain(&e))
            }
            Step::Break(s) => self.sabotage(s).await,
            Step::ExpectFailure(inner) => match Box::pin(self.step(inner)).await {
                Ok(()) => Err(format!("`{}` passed on a deliberately broken setup: the check cannot catch this fault", inner.name())),
                Err(msg) => {
                    self.log.push(format!("     `{}` failed as it should: {msg}", inner.name()));
                    Ok(())
                }
            },
        }
    }

    /// Starts every agent back to back, as close to the same instant as spawning allows.
    /// Hosts named in the case's `host_profiles` run that implementation instead.
    fn start_agents(&mut self) -> StepResult {
        let mut imps: BTreeMap<String, Implementation> = self.lab.hosts.iter().map(|n| (n.name.clone(), self.spec.imp.clone())).collect();
        for (host, profile) in &self.spec.case.host_profiles {
            let mut imp = Implementation::load(profile, false)?;
            if imp.profile.uses_reference_agent() {
                imp.reference_agent = crate::suite::reference_agent()?;
            }
            imps.insert(host.clone(), imp);
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
    async fn subnets(&self) -> Result<BTreeMap<String, crate::names::Ipv4Net>, String> {
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(|e| chain(&e))?;
        let leases: Vec<contract::LeaseView> = raw.iter().filter_map(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v).ok()).collect();
        Ok(self.active_hosts().filter_map(|h| leases.iter().find(|l| l.public_ip == h.addr).map(|l| (h.name.clone(), l.subnet))).collect())
    }

    /// Hosts still in the cluster.
    fn active_hosts(&self) -> impl Iterator<Item = &crate::lab::Node> {
        self.lab.hosts.iter().filter(|h| !self.removed.contains(&h.name))
    }

    /// Reads etcd and every host, and checks them against the contract.
    async fn observe(&self) -> Result<(Vec<Finding>, BTreeMap<String, Counts>), String> {
        let conf = self.conf()?;
        let raw = self.store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await.map_err(|e| chain(&e))?;
        let leases: Vec<Result<contract::LeaseView, String>> =
            raw.iter().map(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v)).collect();
        let active: Vec<&crate::lab::Node> = self.active_hosts().collect();
        let hosts: Vec<(String, Ipv4Addr)> = active.iter().map(|h| (h.name.clone(), h.addr)).collect();
        let mut findings = Vec::new();
        let mut by_ip = contract::check_leases(conf, &hosts, &leases, &mut findings);
        // a removed host's lease must be gone
        for node in self.lab.hosts.iter().filter(|h| self.removed.contains(&h.name)) {
            if let Some(l) = by_ip.remove(&node.addr) {
                findings.push(Finding { host: node.name.clone(), what: format!("removed host still has lease {} in etcd", l.subnet) });
            }
        }
        let mut counts = BTreeMap::new();
        for node in active {
            let state = probe::dump_host(node, &Agent::subnet_file_path(node)).await.map_err(|e| chain(&e))?;
            let mtu = self.lab.mtu_of(node);
            contract::check_subnet_file(conf, &node.name, mtu, by_ip.get(&node.addr), state.subnet_file.as_deref(), &mut findings);
            let c = contract::check_kernel(conf, &node.name, node.addr, mtu, &by_ip, &state, &mut findings);
            counts.insert(node.name.clone(), c);
        }
        Ok((findings, counts))
    }

    /// Exited agents, as failure lines. Agents whose profile has a restart policy are
    /// restarted instead (after a doubling backoff), like a DaemonSet's pods.
    fn agent_exits(&mut self) -> Vec<String> {
        use crate::profile::RestartPolicy;
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
                    match Agent::start(&imp, node, &self.store.endpoints(), DEFAULT_PREFIX) {
                        Ok(mut fresh) => {
                            fresh.restarts = restarts;
                            self.log.push(format!(
                                "     {host}: agent exited ({}), restarted by the restart policy (restart {restarts})",
                                crate::proc::Child::describe_status(&s)
                            ));
                            self.agents[i] = fresh;
                        }
                        Err(e) => out.push(format!("{host}: restart failed: {e}")),
                    }
                }
                continue;
            }
            {
                out.push(format!(
                    "{}: agent exited ({}); log tail:\n{}",
                    a.host,
                    crate::proc::Child::describe_status(&s),
                    a.child.log_tail(5)
                ));
            }
        }
        out
    }

    async fn wait_converged(&mut self, within: Duration) -> StepResult {
        let t0 = Instant::now();
        let deadline = t0 + within;
        loop {
            let exits = self.agent_exits();
            if !exits.is_empty() {
                return Err(exits.join("\n"));
            }
            let mut findings: Vec<Finding> = self
                .agents
                .iter()
                .filter(|a| !a.is_ready())
                .map(|a| Finding { host: a.host.clone(), what: format!("agent not ready ({:?})", a.profile.ready) })
                .collect();
            if findings.is_empty() {
                findings = self.observe().await?.0;
            }
            if findings.is_empty() && self.first_subnets.is_none() {
                self.first_subnets = Some(self.subnets().await?);
            }
            if findings.is_empty() {
                let since_start = self.agents_started.map(|s| s.elapsed().as_millis()).unwrap_or(0);
                let rss = self
                    .agents
                    .iter()
                    .filter_map(|a| a.child.rss_kib())
                    .max()
                    .map(|k| format!(", largest agent RSS {k} KiB"))
                    .unwrap_or_default();
                self.log
                    .push(format!("     converged {since_start} ms after agents started ({} ms waiting{rss})", t0.elapsed().as_millis()));
                return Ok(());
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = findings.iter().take(12).map(|f| f.to_string()).collect();
                let more = findings.len().saturating_sub(shown.len());
                return Err(format!(
                    "not converged within {within:?}: {}{}",
                    shown.join("; "),
                    if more > 0 { format!(" (+{more} more)") } else { String::new() }
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stay_converged(&mut self, duration: Duration) -> StepResult {
        let t0 = Instant::now();
        let mut checks = 0;
        loop {
            let exits = self.agent_exits();
            if !exits.is_empty() {
                return Err(format!("after {} ms: {}", t0.elapsed().as_millis(), exits.join("\n")));
            }
            let (findings, _) = self.observe().await?;
            checks += 1;
            if !findings.is_empty() {
                let shown: Vec<String> = findings.iter().take(12).map(|f| f.to_string()).collect();
                return Err(format!("converged state lost after {} ms: {}", t0.elapsed().as_millis(), shown.join("; ")));
            }
            if t0.elapsed() >= duration {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.log.push(format!("     stayed converged for {duration:?} ({checks} checks)"));
        Ok(())
    }

    /// Creates pods on every host that has none yet (so it can follow `add_host`).
    async fn create_pods(&mut self, per_host: u32) -> StepResult {
        let have: std::collections::BTreeSet<String> = self.pods.iter().map(|p| p.host.clone()).collect();
        for node in self.lab.hosts.iter().filter(|n| !have.contains(&n.name)) {
            let path = Agent::subnet_file_path(node);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: read subnet file {}: {e}", node.name, path.display()))?;
            let env = SubnetEnv::parse(&text);
            if env.subnet_ip.is_none() || env.mtu.is_none() {
                return Err(format!("{}: subnet file has no usable FLANNEL_SUBNET/FLANNEL_MTU:\n{text}", node.name));
            }
            let pods = pods::create(&self.lab, node, &env, per_host).await.map_err(|e| format!("{}: {}", node.name, chain(&e)))?;
            self.pods.extend(pods);
        }
        Ok(())
    }

    async fn expect_ping(&mut self, spec: &crate::case::PingSpec) -> StepResult {
        let split = spec.cross_segment_fails.iter().any(|b| b == self.spec.backend.name());
        let segment_of = |host: &str| self.lab.host(host).map(|n| n.segment);
        let pairs: Vec<(usize, usize)> = (0..self.pods.len())
            .flat_map(|a| (0..self.pods.len()).map(move |b| (a, b)))
            .filter(|(a, b)| self.pods[*a].host != self.pods[*b].host)
            .filter(|(a, b)| !self.removed.contains(&self.pods[*a].host) && !self.removed.contains(&self.pods[*b].host))
            .collect();
        if pairs.is_empty() {
            return Err("no pod pairs on different hosts: add a create_pods step and at least two hosts".into());
        }
        let jobs: Vec<_> = pairs
            .iter()
            .map(|&(a, b)| {
                let (src, dst) = (&self.pods[a], &self.pods[b]);
                let (ns, to) = (src.ns.clone(), dst.addr);
                let label = format!("{} -> {} ({})", src.name, dst.name, dst.addr);
                let reachable = !split || segment_of(&src.host) == segment_of(&dst.host);
                (label, reachable, std::thread::spawn(move || probe::ping_with_retries(&ns, to, 3, Duration::from_secs(1))))
            })
            .collect();
        let results = tokio::task::spawn_blocking(move || {
            jobs.into_iter().map(|(l, reach, h)| (l, reach, h.join().expect("ping thread"))).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut failed = Vec::new();
        let mut worst = Duration::ZERO;
        let mut blocked = 0;
        for (label, reachable, r) in results {
            match (reachable, r) {
                (true, Ok(PingOutcome::Reply { rtt })) => worst = worst.max(rtt),
                (true, Ok(other)) => failed.push(format!("{label}: {other:?}")),
                (false, Ok(PingOutcome::Reply { .. })) => failed.push(format!(
                    "{label}: replied, but the case expects pods on different segments not to reach each other under {}",
                    self.spec.backend
                )),
                (false, Ok(_)) => blocked += 1,
                (_, Err(e)) => failed.push(format!("{label}: {}", chain(&e))),
            }
        }
        if !failed.is_empty() {
            return Err(format!("{} of {} pod pairs did not behave as expected: {}", failed.len(), pairs.len(), failed.join("; ")));
        }
        let note = if split {
            format!("; {blocked} cross-segment pairs fail, as the case expects for {}", self.spec.backend)
        } else {
            String::new()
        };
        self.log.push(format!("     {} pod pairs ping (slowest reply {} us){note}", pairs.len() - blocked, worst.as_micros()));
        Ok(())
    }

    async fn expect_mtu(&mut self) -> StepResult {
        let conf = self.conf()?.clone();
        if self.pods.is_empty() {
            return Err("no pods: add a create_pods step first".into());
        }
        let mut problems = Vec::new();
        let hosts: Vec<String> = self.lab.hosts.iter().map(|h| h.name.clone()).collect();
        let mut probes = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let node = self.lab.host(h).expect("host");
            let mtu = conf.overlay_mtu(self.lab.mtu_of(node));
            let Some(src) = self.pods.iter().find(|p| &p.host == h) else { continue };
            let links = src.nl.links().await.map_err(|e| chain(&e))?;
            match links.iter().find(|l| l.name == "eth0") {
                Some(l) if l.mtu != mtu => problems.push(format!("{}: eth0 MTU {} but the overlay MTU is {mtu}", src.name, l.mtu)),
                _ => {}
            }
            let next = &hosts[(i + 1) % hosts.len()];
            if next == h {
                continue;
            }
            let Some(dst) = self.pods.iter().find(|p| &p.host == next) else { continue };
            probes.push((src.name.clone(), src.ns.clone(), dst.name.clone(), dst.addr, mtu));
        }
        let results = tokio::task::spawn_blocking(move || {
            probes
                .into_iter()
                .map(|(sn, ns, dn, dst, mtu)| {
                    let fits = (mtu - 28) as usize;
                    // the first DF probe may be eaten by ARP on a fresh path: retry it
                    let mut small = probe::ping(&ns, dst, fits, true, Duration::from_secs(1));
                    for _ in 0..2 {
                        if matches!(small, Ok(PingOutcome::Timeout)) {
                            small = probe::ping(&ns, dst, fits, true, Duration::from_secs(1));
                        }
                    }
                    let big = probe::ping(&ns, dst, fits + 1, true, Duration::from_secs(1));
                    (sn, dn, mtu, fits, small, big)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        for (sn, dn, mtu, fits, small, big) in results {
            match small {
                Ok(PingOutcome::Reply { .. }) => {}
                Ok(o) => problems.push(format!("{sn} -> {dn}: DF payload {fits} (packet {mtu}) should pass, got {o:?}")),
                Err(e) => problems.push(format!("{sn} -> {dn}: {}", chain(&e))),
            }
            match big {
                Ok(PingOutcome::Reply { .. }) => problems.push(format!(
                    "{sn} -> {dn}: DF payload {} (packet {}) passed, but the overlay MTU is {mtu}",
                    fits + 1,
                    mtu + 1
                )),
                Ok(o) => lines.push(format!("{sn} -> {dn}: {fits} passes, {} {o:?}", fits + 1)),
                Err(e) => problems.push(format!("{sn} -> {dn}: {}", chain(&e))),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        for l in lines {
            self.log.push(format!("     {l}"));
        }
        Ok(())
    }

    async fn expect_counts(&mut self) -> StepResult {
        let (findings, counts) = self.observe().await?;
        let n = self.active_hosts().count();
        let summary: Vec<String> = counts.iter().map(|(h, c)| format!("{h}={}/{}/{}", c.routes, c.neighbours, c.fdb)).collect();
        if !findings.is_empty() {
            return Err(findings.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "));
        }
        let total: usize = counts.values().map(|c| c.routes + c.neighbours + c.fdb).sum();
        self.log.push(format!("     {n} hosts: routes/neighbours/fdb per host {} (total {total})", summary.join(" ")));
        Ok(())
    }

    async fn expect_agents_exit(&mut self, within: Duration) -> StepResult {
        let deadline = Instant::now() + within;
        loop {
            let running: Vec<String> =
                self.agents.iter_mut().filter_map(|a| a.child.try_status().is_none().then(|| a.host.clone())).collect();
            if running.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("agents still running after {within:?} on {}", running.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut problems = Vec::new();
        for a in &mut self.agents {
            let s = a.child.try_status().expect("exited");
            if s.success() {
                problems.push(format!("{}: agent exited with status 0, expected a failure", a.host));
            } else {
                let last = a.child.log_tail(1);
                self.log.push(format!("     {}: {} — {last}", a.host, crate::proc::Child::describe_status(&s)));
            }
        }
        for node in &self.lab.hosts {
            let links = node.nl.links().await.map_err(|e| chain(&e))?;
            let half_built: Vec<&str> = links.iter().filter(|l| l.name.starts_with("flannel")).map(|l| l.name.as_str()).collect();
            if !half_built.is_empty() {
                problems.push(format!("{}: left {:?} behind after failing", node.name, half_built));
            }
            if Agent::subnet_file_path(node).exists() {
                problems.push(format!("{}: wrote a subnet file although it failed", node.name));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn expect_agents_running(&mut self) -> StepResult {
        let exits = self.agent_exits();
        if self.agents.is_empty() {
            return Err("no agents were started".into());
        }
        if exits.is_empty() {
            Ok(())
        } else {
            Err(exits.join("\n"))
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
            let overlay = crate::throughput::measure(&pb, pb_ip, &pa, seconds);
            let bare = crate::throughput::measure(&nb, hb_ip, &na, seconds);
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

    async fn restart_agent(&mut self, r: &crate::case::RestartAgent) -> StepResult {
        let host = r.host.as_str();
        let i = self.agents.iter().position(|a| a.host == host).ok_or("no agent on that host: add start_agents first")?;
        let mut old = self.agents.remove(i);
        old.stop();
        drop(old);
        let node = self.lab.host(host).ok_or_else(|| format!("no host `{host}`"))?;
        if r.new_vtep_mac {
            for l in node.nl.links().await.map_err(|e| chain(&e))?.iter().filter(|l| l.name.starts_with("flannel")) {
                node.nl.del_link(&l.name).await.map_err(|e| chain(&e))?;
            }
        }
        let imp = self.imps.get(host).cloned().unwrap_or_else(|| self.spec.imp.clone());
        let a = Agent::start(&imp, node, &self.store.endpoints(), DEFAULT_PREFIX)?;
        self.agents.insert(i, a);
        self.log.push(format!("     restarted the agent on {host}{}", if r.new_vtep_mac { " with its devices deleted" } else { "" }));
        Ok(())
    }

    async fn inject_udp(&mut self, spec: &crate::case::InjectUdp) -> StepResult {
        let conf = self.conf()?.clone();
        if conf.backend != Backend::Udp {
            return Err(format!("inject_udp applies to the udp backend, not {}", conf.backend));
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
            (crate::case::Fate::Delivered, true) | (crate::case::Fate::Dropped, false) => {
                self.log.push(format!("     {what}: {}", if seen { "delivered" } else { "dropped" }));
                Ok(())
            }
            (crate::case::Fate::Delivered, false) => Err(format!("{what}: never reached the pod, expected delivery")),
            (crate::case::Fate::Dropped, true) => Err(format!("{what}: reached the pod, expected it to be dropped")),
        }
    }

    async fn sabotage(&mut self, s: &Sabotage) -> StepResult {
        let conf = self.conf()?.clone();
        let host = match s {
            Sabotage::DeleteFdb(h) | Sabotage::DeleteRoute(h) | Sabotage::DeleteNeighbour(h) | Sabotage::KillAgent(h) => h.host.as_str(),
            Sabotage::SetPodMtu(p) => p.host.as_str(),
        };
        let node = self.lab.host(host).ok_or_else(|| format!("no host `{host}`"))?;
        let dev = conf.route_device();
        let idx = match s {
            Sabotage::SetPodMtu(_) | Sabotage::KillAgent(_) => 0,
            _ => node.nl.index_of(&dev).await.map_err(|e| chain(&e))?,
        };
        let what = match s {
            Sabotage::DeleteFdb(_) => {
                let fdb = node.nl.fdb().await.map_err(|e| chain(&e))?;
                let e = fdb.into_iter().find(|e| e.ifindex == idx && e.dst.is_some()).ok_or("no FDB entry to delete")?;
                node.nl.del_fdb(&e).await.map_err(|e| chain(&e))?;
                format!("deleted FDB entry {} dst {:?}", e.mac, e.dst)
            }
            Sabotage::DeleteRoute(_) => {
                let routes = node.nl.routes().await.map_err(|e| chain(&e))?;
                let r = routes
                    .into_iter()
                    .find(|r| r.oif == Some(idx) && conf.network.contains_net(&r.dst))
                    .ok_or("no peer route to delete")?;
                node.nl.del_route(&r).await.map_err(|e| chain(&e))?;
                format!("deleted route {}", r.dst)
            }
            Sabotage::DeleteNeighbour(_) => {
                let neigh = node.nl.neighbours().await.map_err(|e| chain(&e))?;
                let n = neigh.into_iter().find(|n| n.ifindex == idx && n.permanent).ok_or("no neighbour to delete")?;
                node.nl.del_neighbour(&n).await.map_err(|e| chain(&e))?;
                format!("deleted neighbour {}", n.ip)
            }
            Sabotage::SetPodMtu(p) => {
                let pod = self.pods.iter().find(|x| x.host == host).ok_or("no pod on that host: add create_pods first")?;
                pod.nl.set_mtu("eth0", p.mtu).await.map_err(|e| chain(&e))?;
                format!("set {} eth0 MTU to {}", pod.name, p.mtu)
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
