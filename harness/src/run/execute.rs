//! Running a trial: one case × backend × implementation, at each of the case's host
//! counts and repeats, each on a freshly built lab, its steps in order (see `steps`), and
//! the verdict: the case passes, or, for a mutant, fails with the finding it names. A lab
//! error is never a pass.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::agents::Implementation;
use crate::contract::{Backend, NetConf, DEFAULT_PREFIX};
use crate::error::Context;
use crate::input::case::{Expected, StepSyntax, StoreChoice};
use crate::lab::Lab;
use crate::steps::outcome::{match_expected, Match};
use crate::steps::{Case, StepError, Trial};
use crate::store::{Provider, Store};

use super::log;

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

    /// Whether a finding's host is a lab host running the implementation under test (not
    /// `etcd` or another non-host subject).
    fn verdict_host_is_under_test(&self, host: &str) -> bool {
        host != "etcd" && !self.case.host_profiles.contains_key(host)
    }
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
    /// The case's level (`should` failures are hardening, reported apart).
    pub level: crate::input::case::Level,
    /// The implementation's profile lists this trial as a known failure: every finding
    /// it failed with is excused by the profile (the first excusing entry), or it passed
    /// although an entry names it ("fixed").
    pub known: Option<crate::input::profile::KnownFailure>,
    /// A fixed known failure does not fail the run (`--allow-fixed`).
    pub allow_fixed: bool,
    /// The upstream bug the trial's case reproduces (`upstream #1726 (…)`), if it says.
    pub upstream: Option<String>,
    /// The trial judges the lab itself (a control or a mutant), not the implementation.
    pub self_check: bool,
    /// The findings the trial failed with (none for a pass or a lab error), and the step.
    pub findings: Vec<crate::contract::Finding>,
    pub failed_step: Option<usize>,
    /// Every step that ran, on every lab of the trial, in order: the timeline.
    pub steps: Vec<StepRecord>,
    /// The topology of the trial's last lab (at its host count).
    pub topology: Option<crate::input::topology::Topology>,
    /// Pod-traffic frames per (sender, receiver) the trial's last wire check saw.
    pub wire: crate::steps::wire_checks::WireCounts,
}

/// One step as it ran: when (from the trial's start), how it ended, and what it logged.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Which lab of the trial: `n8 r2` (host count, repeat), empty for a single lab.
    pub lab: String,
    /// 1-based; 0 for setting up the lab (namespaces, etcd, the net-conf).
    pub n: usize,
    pub kind: &'static str,
    pub start: Duration,
    pub end: Duration,
    pub outcome: StepOutcome,
    /// The lines the step logged (measurements: convergence times, losses, gaps).
    pub notes: Vec<String>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Passed,
    /// A finding about the implementation.
    Failed,
    /// The lab could not do its job.
    LabError,
}

/// Someone following a trial as it runs (the `up` command): told of each step, and given
/// the lab, still up, once the steps have ended; the lab is torn down when `hold` returns.
pub trait Watcher {
    /// Step `n` of `of` (1-based) is about to run on this trial.
    fn step(&self, trial: &Trial<'_>, n: usize, of: usize, kind: &'static str);
    /// The steps ended: all passed (`failure` is None), or at the first failure.
    fn hold<'t>(&'t self, trial: &'t mut Trial<'_>, failure: Option<String>) -> futures::future::LocalBoxFuture<'t, ()>;
}

impl TrialReport {
    /// A known failure that failed on a finding (not a lab error): reported, not counted.
    pub fn is_known_failure(&self) -> bool {
        self.known.is_some() && !self.passed && self.ignored.is_none() && !self.lab_error
    }

    /// A known failure that passed.
    pub fn is_fixed(&self) -> bool {
        self.known.is_some() && self.passed
    }

    /// Whether this trial fails the run: it failed, and not as a known failure; or it is a
    /// known failure that passes now, and fixed ones are not allowed.
    pub fn fails_run(&self) -> bool {
        (!self.passed && self.ignored.is_none() && !self.is_known_failure()) || (self.is_fixed() && !self.allow_fixed)
    }
}

impl TrialReport {
    /// A trial the lab could not even start: a lab error.
    pub fn lab_failure(name: String, why: String) -> TrialReport {
        let mut r = TrialReport::unjudged(name, Vec::new(), Instant::now());
        r.lab_error = true;
        r.failure = Some(why);
        r
    }

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
            level: Default::default(),
            known: None,
            allow_fixed: false,
            upstream: None,
            self_check: false,
            findings: Vec::new(),
            failed_step: None,
            steps: Vec::new(),
            topology: None,
            wire: Default::default(),
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

/// Runs one trial; a trial of the implementation under test (not a mutant's) that its
/// profile lists as a known failure is marked so.
pub async fn run_trial(spec: &TrialSpec, workdir: &Path) -> TrialReport {
    run_trial_watched(spec, workdir, None).await
}

/// [`run_trial`], followed by a [`Watcher`] that may hold each lab open at its end.
pub async fn run_trial_watched(spec: &TrialSpec, workdir: &Path, watcher: Option<&dyn Watcher>) -> TrialReport {
    let mut report = run_trial_unmarked(spec, workdir, watcher).await;
    report.upstream = spec.case.upstream.as_ref().map(|u| u.to_string());
    report.self_check = spec.case.control || !matches!(spec.verdict, Verdict::Pass);
    if matches!(spec.verdict, Verdict::Pass) {
        mark_known(&spec.imp.profile.known_failures_of(&spec.name()), &mut report);
    }
    report
}

/// Marks a trial known (every finding excused by an entry of its profile) or fixed (it
/// passed, and a non-intermittent entry names it); says in the log which findings the
/// entries did not excuse.
fn mark_known(entries: &[&crate::input::profile::KnownFailure], r: &mut TrialReport) {
    if entries.is_empty() || r.ignored.is_some() {
        return;
    }
    if r.passed {
        r.known = entries.iter().find(|k| !k.intermittent).map(|k| (*k).clone());
        if let Some(k) = &r.known {
            r.log.push(format!(
                "     fixed? the profile lists {} as a known failure, and the trial passed: remove it from the profile",
                k.describe()
            ));
        }
        return;
    }
    if r.lab_error || r.findings.is_empty() {
        return;
    }
    let excuse = |f: &crate::contract::Finding| entries.iter().find(|k| k.excuses(f.check, &f.host, r.failed_step));
    let open: Vec<String> = r.findings.iter().filter(|f| excuse(f).is_none()).map(|f| f.to_string()).collect();
    if open.is_empty() {
        r.known = excuse(&r.findings[0]).map(|k| (*k).clone());
    } else {
        r.log.push(format!(
            "     the profile's known failures for this trial ({}) do not excuse: {}",
            entries.iter().map(|k| k.describe()).collect::<Vec<_>>().join("; "),
            open.join("; ")
        ));
    }
}

async fn run_trial_unmarked(spec: &TrialSpec, workdir: &Path, watcher: Option<&dyn Watcher>) -> TrialReport {
    let started = Instant::now();
    let trial_log = log::TrialLog::new();
    // a case that needs the CNI plugins cannot run where they are not installed
    let needs_cni = spec.case.pod_wiring == crate::input::case::PodWiring::Cni && crate::lab::cni::plugin_dir().is_none();
    let provider = match choose_store(&spec.case).await {
        Ok(_) if needs_cni => Err(format!(
            "the case asks for `pod_wiring: cni`, and no {:?} plugins are in $FLANNEL_LAB_CNI_PATH, /usr/lib/cni or /opt/cni/bin (ci/setup.sh installs containernetworking-plugins)",
            crate::lab::cni::PLUGINS
        )),
        other => other,
    };
    let provider = match provider {
        Ok(p) => p,
        Err(reason) => {
            let mut r = TrialReport::unjudged(spec.name(), Vec::new(), started);
            r.level = spec.case.level;
            r.ignored = Some(reason);
            return r;
        }
    };
    let mut stopped = None;
    let mut rec = Recorder { started, steps: Vec::new(), topology: None, wire: Default::default(), lab: String::new() };
    let span = trial_log.span(&spec.name());
    let labs = spec.case.scales().len() as u32 * spec.case.repeat;
    'outer: for scale in spec.case.scales() {
        for rep in 1..=spec.case.repeat {
            let label = match scale {
                Some(n) => format!("{}-{}-n{n}-r{rep}", spec.case.name, spec.backend),
                None => format!("{}-{}-r{rep}", spec.case.name, spec.backend),
            };
            rec.lab = match scale {
                _ if labs == 1 => String::new(),
                Some(n) => format!("n{n} r{rep}"),
                None => format!("r{rep}"),
            };
            let once = run_once(spec, provider, scale, &label, workdir, &trial_log, &mut rec, watcher).instrument(span.clone()).await;
            if let Err(mut s) = once {
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
    // in a mixed cluster every finding says which implementation its host runs
    if let Some(st) = stopped.as_mut().filter(|_| !spec.case.host_profiles.is_empty()) {
        let error = std::mem::replace(&mut st.error, StepError::from("placeholder"));
        st.error = error.map_findings(|mut f| {
            let imp = match spec.case.host_profiles.get(&f.host) {
                Some(p) => Path::new(p).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.clone()),
                None => spec.imp.name().to_string(),
            };
            if spec.case.host_profiles.contains_key(&f.host) || spec.verdict_host_is_under_test(&f.host) {
                f.what = format!("(runs {imp}) {}", f.what);
            }
            f
        });
    }
    let mut r = TrialReport::unjudged(spec.name(), trial_log.lines(), started);
    r.level = spec.case.level;
    r.steps = rec.steps;
    r.topology = rec.topology;
    r.wire = rec.wire;
    judge(&spec.verdict, stopped, &mut r);
    r
}

/// What a trial records of its labs for the report: each step's span and notes, and the
/// topology.
struct Recorder {
    started: Instant,
    steps: Vec<StepRecord>,
    topology: Option<crate::input::topology::Topology>,
    wire: crate::steps::wire_checks::WireCounts,
    /// The current lab (`n8 r2`).
    lab: String,
}

impl Recorder {
    /// Records a step that began at `began` (an instant) with the log at `from` lines.
    fn record(&mut self, n: usize, kind: &'static str, began: Instant, outcome: StepOutcome, lines: &[String]) {
        let notes = lines.iter().filter(|l| l.starts_with("     ")).map(|l| l.trim().to_string()).collect();
        self.steps.push(StepRecord {
            lab: self.lab.clone(),
            n,
            kind,
            start: began.saturating_duration_since(self.started),
            end: self.started.elapsed(),
            outcome,
            notes,
        });
    }
}

/// Turns how the case ended into the trial's verdict. A lab error fails whatever was
/// expected; a mutant is caught only by the finding its case names.
fn judge(verdict: &Verdict, stopped: Option<Stopped>, r: &mut TrialReport) {
    match (verdict, stopped) {
        (Verdict::Pass, None) => r.passed = true,
        (Verdict::Pass, Some(s)) => {
            r.lab_error = matches!(s.error, StepError::Lab(_));
            if let StepError::Check(findings) = &s.error {
                r.findings = findings.clone();
                r.failed_step = s.step;
            }
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
                StepError::Check(findings) if step_ok => match_expected(exp.check, &exp.host, &exp.also, findings),
                _ => Match::Missing,
            };
            if let Match::Extra(extra) = &matched {
                let extra: Vec<String> = extra.iter().map(|f| f.to_string()).collect();
                r.log.push(format!("     also about {}: {}", exp.host, extra.join("; ")));
            }
            if matched == Match::Exact {
                r.passed = true;
                r.log.push("     the case caught the mutant with the expected finding".into());
                if let Some(dir) = s.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            } else {
                r.lab_error = matches!(s.error, StepError::Lab(_));
                let why = match matched {
                    _ if r.lab_error => "a lab error is never a catch",
                    Match::Extra(_) => {
                        "the case failed with it, and with other findings about the same host (list their checks under `also` if they must)"
                    }
                    _ => "the case failed for another reason",
                };
                r.failure = Some(format!("expected {exp}, {why}: {}", s.message()));
                r.artifacts = s.dir;
            }
        }
    }
}

/// The case's store choice, else `FLANNEL_LAB_STORE`, else the process. `Err` carries the
/// reason a Docker case cannot run here.
async fn choose_store(case: &Case) -> std::result::Result<Provider, String> {
    let choice = case.store.or_else(StoreChoice::from_env).unwrap_or(StoreChoice::Process);
    match choice {
        StoreChoice::Process => Ok(Provider::Process),
        StoreChoice::Docker => match crate::lab::docker::engine().await {
            Ok(_) => Ok(Provider::Docker),
            Err(e) => Err(format!("needs etcd in Docker: {e}")),
        },
        // Docker when an engine answers, else the process; where every trial must run as
        // written (FLANNEL_LAB_REQUIRE=1, CI), a missing engine is not papered over
        StoreChoice::Auto => match crate::lab::docker::engine().await {
            Ok(_) => Ok(Provider::Docker),
            Err(e) if std::env::var("FLANNEL_LAB_REQUIRE").is_ok_and(|v| v == "1") => {
                Err(format!("`store: auto` finds no Docker engine, and FLANNEL_LAB_REQUIRE=1 wants etcd in Docker: {e}"))
            }
            Err(_) => Ok(Provider::Process),
        },
    }
}

/// Builds one lab, runs every step (each in its own `step` span), tears it down. On
/// failure the work directory is kept (with state dumps) and returned. A watcher is told of
/// each step and may hold the lab before it goes.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    spec: &TrialSpec,
    provider: Provider,
    scale: Option<u32>,
    label: &str,
    workdir: &Path,
    trial_log: &log::TrialLog,
    rec: &mut Recorder,
    watcher: Option<&dyn Watcher>,
) -> Result<(), Stopped> {
    let began = Instant::now();
    let from = trial_log.lines().len();
    let mut setup = |error: crate::error::Error, dir: Option<PathBuf>| {
        rec.record(0, "setup", began, StepOutcome::LabError, &trial_log.lines()[from..]);
        Stopped { step: None, step_name: "", error: StepError::Lab(error), at: String::new(), dir }
    };
    let topo = match spec.case.topology(scale) {
        Ok(t) => t,
        Err(e) => return Err(setup(e.into(), None)),
    };
    let lab = match Lab::build(topo, workdir, label, provider == Provider::Process).await.context("build lab") {
        Ok(l) => l,
        Err(e) => return Err(setup(e, None)),
    };
    let dir = lab.dir.clone();
    let store = match Store::start(&lab, provider, spec.case.etcd_members as usize, spec.case.etcd_tls, Duration::from_secs(30))
        .await
        .context("start etcd")
    {
        Ok(s) => s,
        Err(e) => return Err(setup(e, Some(dir))),
    };
    let text = spec.case.netconf.render(spec.backend);
    let conf = serde_json::from_str(&text).ok().and_then(|v| NetConf::from_json(&v).ok());
    if let Err(e) = store.put(&format!("{DEFAULT_PREFIX}/config"), text).await.context("write net-conf") {
        return Err(setup(e, Some(dir)));
    }
    tracing::info!("lab {} ({} hosts, run {}): {}", label, lab.hosts.len(), lab.run, store.describe());
    let capture = match crate::probe::capture::Capture::start(lab.fabric_ns(), &lab.dir.join("underlay.pcap")) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::info!("no underlay capture: {e}");
            None
        }
    };
    rec.topology = Some(lab.topo.clone());
    rec.record(0, "setup", began, StepOutcome::Passed, &trial_log.lines()[from..]);
    let mut trial = Trial::new(&spec.case, spec.backend, &spec.imp, conf, store, capture, lab);
    let total = spec.case.steps.len();
    // the case's steps, then the end-of-trial check that every agent still runs (step
    // total + 1, `agents_alive`)
    for i in 0..=total {
        let t = Instant::now();
        let from = trial_log.lines().len();
        let name = spec.case.steps.get(i).map_or(END_OF_TRIAL, |s| s.name());
        if let (Some(w), true) = (watcher, i < total) {
            w.step(&trial, i + 1, total, name);
        }
        trial.settle_on = match &spec.verdict {
            Verdict::Catch(exp) if exp.step.is_none_or(|s| s == i + 1) => Some(exp.clone()),
            _ => None,
        };
        let span = tracing::info_span!("step", n = i + 1, kind = name);
        let outcome = match spec.case.steps.get(i) {
            Some(step) => step.run(&mut trial).instrument(span).await,
            None => trial.agents_alive_to_the_end().instrument(span).await,
        };
        if let Err(error) = outcome {
            let kind = if matches!(error, StepError::Lab(_)) { "LAB ERROR" } else { "FAIL" };
            tracing::info!("{kind} step {} `{name}`: {}", i + 1, error.describe());
            let how = if matches!(error, StepError::Lab(_)) { StepOutcome::LabError } else { StepOutcome::Failed };
            rec.record(i + 1, name, t, how, &trial_log.lines()[from..]);
            trial.save_artifacts(&trial_log.lines()).await;
            if let Some(mut c) = trial.capture.take() {
                match c.stop() {
                    Ok(frames) => tracing::info!("underlay capture: {frames} frames in {}", c.path.display()),
                    Err(e) => tracing::info!("underlay capture failed: {e}"),
                }
                let _ = std::fs::write(trial.lab.dir.join("trial.log"), trial_log.lines().join("\n"));
            }
            rec.wire = trial.wire.clone();
            let stopped = Stopped { step: Some(i + 1), step_name: name, error, at: String::new(), dir: Some(trial.lab.dir.clone()) };
            if let Some(w) = watcher {
                w.hold(&mut trial, Some(stopped.message())).await;
            }
            trial.stop_agents();
            // keep the directory: the lab's teardown removes namespaces, not files; etcd's
            // data (a 64 MiB preallocated WAL) goes, its keys are in etcd-keys.json
            drop(trial);
            let _ = std::fs::remove_dir_all(dir.join("etcd").join("data"));
            return Err(stopped);
        }
        tracing::info!("ok   step {} `{name}` ({} ms)", i + 1, t.elapsed().as_millis());
        rec.record(i + 1, name, t, StepOutcome::Passed, &trial_log.lines()[from..]);
    }
    rec.wire = trial.wire.clone();
    if let Some(w) = watcher {
        w.hold(&mut trial, None).await;
    }
    trial.stop_agents();
    drop(trial);
    // a passing trial's files go, unless asked to keep them (FLANNEL_LAB_KEEP=1)
    if std::env::var_os("FLANNEL_LAB_KEEP").is_none_or(|v| v != "1") {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        tracing::info!("work files kept in {} (FLANNEL_LAB_KEEP=1)", dir.display());
    }
    Ok(())
}

/// The name of the check after a case's last step: every agent the case did not stop
/// still runs (step number: the case's step count + 1).
pub const END_OF_TRIAL: &str = "agents_alive";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Check;

    fn report() -> TrialReport {
        TrialReport::unjudged("c::vxlan::m".into(), vec![], Instant::now())
    }

    fn lab_error(m: &str) -> StepError {
        StepError::Lab(crate::error::Error::Lab(m.into()))
    }

    fn stopped(step: usize, error: StepError) -> Option<Stopped> {
        Some(Stopped { step: Some(step), step_name: "wait_converged", error, at: String::new(), dir: None })
    }

    fn expected(step: Option<usize>) -> Verdict {
        Verdict::Catch(Expected { check: crate::contract::Check::Fdb, host: "h2".into(), step, also: Vec::new() })
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
    fn a_known_failure_excuses_only_the_findings_it_names() {
        use crate::input::profile::KnownFailure;
        let entry = |check: Check, host: &str, intermittent: bool| KnownFailure {
            trials: "c::vxlan".into(),
            check,
            host: host.into(),
            step: Some(2),
            reason: "upstream #1726".into(),
            link: None,
            intermittent,
        };
        let failed = |findings: Vec<crate::contract::Finding>| {
            let mut r = report();
            judge(&Verdict::Pass, stopped(2, StepError::Check(findings)), &mut r);
            r
        };
        let routes = entry(Check::Routes, "h*", false);
        let mut r = failed(vec![crate::contract::Finding::new(Check::Routes, "h3", "1 of 2 routes")]);
        mark_known(&[&routes], &mut r);
        assert!(r.is_known_failure() && !r.fails_run(), "{r:?}");
        // a finding the entry does not name keeps the trial failing
        let mut r = failed(vec![
            crate::contract::Finding::new(Check::Routes, "h3", "1 of 2 routes"),
            crate::contract::Finding::new(Check::AgentExit, "h1", "exit code 1"),
        ]);
        mark_known(&[&routes], &mut r);
        assert!(!r.is_known_failure() && r.fails_run());
        assert!(r.log.iter().any(|l| l.contains("do not excuse: [agent_exit] h1")), "{:?}", r.log);
        // a lab error is never excused
        let mut r = report();
        judge(&Verdict::Pass, stopped(2, lab_error("etcd gone")), &mut r);
        mark_known(&[&routes], &mut r);
        assert!(r.fails_run());
        // a pass is "fixed" and fails the run unless allowed; an intermittent entry is not
        let mut r = report();
        judge(&Verdict::Pass, None, &mut r);
        mark_known(&[&routes], &mut r);
        assert!(r.is_fixed() && r.fails_run());
        r.allow_fixed = true;
        assert!(!r.fails_run());
        let mut r = report();
        judge(&Verdict::Pass, None, &mut r);
        mark_known(&[&entry(Check::Routes, "h*", true)], &mut r);
        assert!(!r.is_fixed() && !r.fails_run());
    }

    #[test]
    fn a_lab_error_is_never_a_pass() {
        let mut r = report();
        judge(&expected(None), stopped(2, lab_error("start etcd: timed out")), &mut r);
        assert!(!r.passed && r.lab_error, "{r:?}");
        assert!(r.failure.unwrap().contains("a lab error is never a catch"));
        let mut r = report();
        judge(&Verdict::Pass, stopped(1, lab_error("probe socket: EPERM")), &mut r);
        assert!(!r.passed && r.lab_error);
    }
}
