//! Exploration: random fault schedules against an implementation, judged by the lab's own
//! checks, and each failure shrunk to the smallest schedule that still fails the same way,
//! written out as an ordinary case.
//!
//! ```text
//! seed ─► schedule::generate (pure: topology, hosts, backend, operations)
//!           │  as a case file (wait_converged after each settling operation, final checks)
//!           ▼
//!         run::run_trial (the same steps and contract every case uses) ─► Outcome
//!           │  a finding
//!           ▼
//!         shrink::shrink (candidates in batches)
//!           │  the smallest that failed once
//!           ▼
//!         shrink::confirm (reruns; a flaky result walks back a step) ─► OUT/<case>.yaml + its topology
//! ```
//!
//! Every schedule is a function of the seed and its index, so the same seed replays the
//! same schedules, in any order and at any parallelism.

pub mod rng;
pub mod schedule;
pub mod shrink;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agents::Implementation;
use crate::contract::Backend;
use crate::error::{Error, Result};
use crate::input::topology::Topology;
use crate::run::{run_trial, TrialReport, TrialSpec, Verdict};
use crate::steps::Case;
pub use schedule::{Schedule, Space, TopoInfo};
pub use shrink::{Confirmed, Outcome, Shrunk};

/// How many accepted shrink steps a flaky result may be walked back (a 6 s fault takes
/// three halvings to reach 1 s, and another step may come between).
const MAX_STEPS_BACK: usize = 4;

/// What an exploration does.
#[derive(Clone)]
pub struct Options {
    pub imp: Implementation,
    pub space: Space,
    pub seed: u64,
    /// Time for running new schedules (shrinking what they found comes after).
    pub budget: Duration,
    /// Stop after this many schedules even with budget left.
    pub max_schedules: Option<u32>,
    /// Schedules (or shrink candidates) run side by side.
    pub jobs: usize,
    /// Where the shrunk cases are written.
    pub out: PathBuf,
    /// Candidate runs each failure may take to shrink.
    pub shrink_runs: u32,
    /// Runs of each shrunk case, to tell a flaky failure from a real one.
    pub reruns: u32,
    /// Where trials keep their work files (the lab's work directory).
    pub workdir: PathBuf,
}

/// A failure found, shrunk and written.
pub struct Found {
    pub original: Schedule,
    pub first: Outcome,
    pub shrunk: Shrunk,
    /// Of `reruns` runs of the shrunk case, how many failed the same way.
    pub reproduced: u32,
    pub reruns: u32,
    pub case_file: PathBuf,
    /// The reruns' reports (for the HTML timeline).
    pub reports: Vec<TrialReport>,
}

/// What an exploration did.
pub struct Summary {
    pub seed: u64,
    pub schedules: u32,
    pub operations: u32,
    pub passed: u32,
    pub found: Vec<Found>,
    /// Schedules the lab could not judge: (schedule id, why).
    pub lab_errors: Vec<(String, String)>,
    /// Failures of a kind already shrunk (the first of each kind is): not shrunk again.
    pub more: Vec<(Schedule, Outcome)>,
    /// Time spent running new schedules, and in all.
    pub exploring: Duration,
    pub elapsed: Duration,
}

/// The topologies named (files in `dir`), with their host names at every count from 2 to
/// `max_hosts` for scalable ones.
pub fn topologies(dir: &Path, names: &[String], max_hosts: u32) -> Result<Vec<TopoInfo>> {
    let mut out = Vec::new();
    for name in names {
        let file = if name.ends_with(".yaml") { PathBuf::from(name) } else { dir.join(format!("{name}.yaml")) };
        let own = Topology::load(&file).map_err(|e| Error::Input(e.to_string()))?;
        let names_of = |t: &Topology| t.hosts.iter().map(|h| h.name.to_string()).collect::<Vec<_>>();
        let names_at = match own.scalable {
            true => (2..=max_hosts.max(2))
                .map(|n| Topology::load_scaled(&file, Some(n)).map(|t| (n, names_of(&t))).map_err(|e| Error::Input(e.to_string())))
                .collect::<Result<Vec<_>>>()?,
            false => vec![(own.hosts.len() as u32, names_of(&own))],
        };
        let stem = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| name.clone());
        out.push(TopoInfo {
            name: stem,
            file: file.canonicalize().unwrap_or(file),
            segments: own.segments.len(),
            names_at,
            scalable: own.scalable,
        });
    }
    Ok(out)
}

/// Checks that every backend has a topology it can run on and every topology a host count.
pub fn check_space(space: &Space) -> std::result::Result<(), String> {
    if space.backends.is_empty() {
        return Err("no backend to explore: the profile and --backend have none in common".into());
    }
    if space.ops.0 > space.ops.1 || space.ops.1 == 0 {
        return Err(format!("operations {}..{} is not a range of at least one", space.ops.0, space.ops.1));
    }
    if space.hosts.0 < 2 || space.hosts.0 > space.hosts.1 {
        return Err(format!("hosts {}..{}: use a range from 2 up", space.hosts.0, space.hosts.1));
    }
    for b in &space.backends {
        if !space.topologies.iter().any(|t| *b != Backend::HostGw || t.segments == 1) {
            return Err(format!("{b} needs a topology with one segment (host-gw cannot route across a router)"));
        }
    }
    for t in &space.topologies {
        if t.scalable && !t.names_at.iter().any(|(n, _)| (space.hosts.0..=space.hosts.1).contains(n)) {
            return Err(format!("topology `{}` takes none of the host counts {}..{}", t.name, space.hosts.0, space.hosts.1));
        }
    }
    if space.weights.iter().all(|w| *w == 0) {
        return Err("every operation kind has weight 0".into());
    }
    Ok(())
}

/// The outcome a trial report says.
pub fn outcome_of(r: &TrialReport) -> Outcome {
    if let Some(why) = &r.ignored {
        return Outcome::LabError(format!("skipped: {why}"));
    }
    if r.lab_error {
        return Outcome::LabError(r.failure.clone().unwrap_or_default());
    }
    if r.passed {
        return Outcome::Pass;
    }
    match r.findings.first() {
        Some(f) => Outcome::Finding { check: f.check, host: f.host.clone(), step: r.failed_step, what: f.what.clone() },
        None => Outcome::LabError(format!("failed without a finding: {}", r.failure.clone().unwrap_or_default())),
    }
}

/// Runs one batch of schedules side by side (each on a thread and runtime of its own), as
/// case files named `<stem>.yaml` under `dir`; outcomes and reports in order. Without
/// `keep` a failing run's work directory is removed (shrink candidates: only the verdict
/// matters).
fn run_batch(o: &Options, dir: &Path, batch: &[(Schedule, String)], keep: bool) -> Vec<(Outcome, Option<TrialReport>)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .iter()
            .map(|(s, stem)| {
                let file = dir.join(format!("{stem}.yaml"));
                scope.spawn(move || {
                    let (out, r) = run_one(o, s, &file);
                    if let Some(dir) = r.as_ref().and_then(|r| r.artifacts.as_ref()).filter(|_| !keep) {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    (out, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| (Outcome::LabError("the run panicked".into()), None))).collect()
    })
}

fn run_one(o: &Options, s: &Schedule, file: &Path) -> (Outcome, Option<TrialReport>) {
    let desc = format!("explore {} ({}): a candidate run", s.id(), s.summary());
    let text = s.case_yaml(&desc, &s.topology_file.display().to_string());
    if let Err(e) = std::fs::write(file, text) {
        return (Outcome::LabError(format!("write {}: {e}", file.display())), None);
    }
    let case = match Case::load(file, &crate::input::repo_root().join("topologies")) {
        Ok(c) => c,
        Err(e) => return (Outcome::LabError(format!("the explorer wrote an invalid case {}: {e}", file.display())), None),
    };
    let spec = TrialSpec { case, backend: s.backend, imp: o.imp.clone(), verdict: Verdict::Pass };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return (Outcome::LabError(format!("tokio runtime: {e}")), None),
    };
    let r = rt.block_on(run_trial(&spec, &o.workdir));
    rt.shutdown_background();
    (outcome_of(&r), Some(r))
}

/// Explores: up to `jobs` schedules at a time until the budget (or `max_schedules`) is
/// spent, then shrinks each failure, reruns the result and writes it to `out`. `say`
/// gets one line per event (progress).
pub fn explore(o: &Options, say: &mut dyn FnMut(&str)) -> Result<Summary> {
    let t0 = Instant::now();
    let runs = o.workdir.join(format!("explore-{}", o.seed));
    std::fs::create_dir_all(&runs).map_err(|e| crate::lab_err!("create {}: {e}", runs.display()))?;
    std::fs::create_dir_all(&o.out).map_err(|e| crate::lab_err!("create {}: {e}", o.out.display()))?;
    let mut sum = Summary {
        seed: o.seed,
        schedules: 0,
        operations: 0,
        passed: 0,
        found: Vec::new(),
        lab_errors: Vec::new(),
        more: Vec::new(),
        exploring: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let mut failures: Vec<(Schedule, Outcome)> = Vec::new();
    let jobs = o.jobs.max(1);
    // up to `jobs` schedules at a time, a new one started as soon as one ends, while the
    // budget lasts
    let (tx, rx) = std::sync::mpsc::channel::<(Schedule, Outcome)>();
    std::thread::scope(|scope| {
        let (mut next, mut running) = (0u32, 0usize);
        loop {
            while running < jobs && t0.elapsed() < o.budget && o.max_schedules.is_none_or(|m| next < m) {
                let s = schedule::generate(&o.space, o.seed, next);
                let file = runs.join(format!("explore-{}-{next}.yaml", o.seed));
                say(&format!("schedule {}: {}", s.id(), s.summary()));
                let tx = tx.clone();
                scope.spawn(move || {
                    let (out, _) = run_one(o, &s, &file);
                    let _ = tx.send((s, out));
                });
                next += 1;
                running += 1;
            }
            if running == 0 {
                break;
            }
            let Ok((s, out)) = rx.recv() else { break };
            running -= 1;
            sum.schedules += 1;
            sum.operations += s.ops.len() as u32;
            say(&format!("schedule {}: {}", s.id(), out.label()));
            match out {
                Outcome::Pass => sum.passed += 1,
                Outcome::LabError(e) => sum.lab_errors.push((s.id(), e)),
                f @ Outcome::Finding { .. } => failures.push((s, f)),
            }
        }
    });
    failures.sort_by_key(|(s, _)| s.index);
    sum.lab_errors.sort();
    sum.exploring = t0.elapsed();
    // the first failure of each finding kind is shrunk; the others are listed
    let mut kinds = std::collections::BTreeSet::new();
    let (shrink_these, more): (Vec<_>, Vec<_>) = failures.into_iter().partition(|(_, f)| kinds.insert(f.check()));
    sum.more = more;
    for (s, first) in shrink_these {
        say(&format!("shrinking {} ({})", s.id(), first.label()));
        let mut round = 0u32;
        let shrunk = shrink::shrink(s.clone(), first.clone(), &o.space.topologies, o.shrink_runs, jobs, &mut |cands| {
            round += 1;
            let batch: Vec<(Schedule, String)> =
                cands.iter().enumerate().map(|(j, c)| (c.clone(), format!("explore-{}-{}-shrink{round}-{j}", o.seed, s.index))).collect();
            let outs: Vec<Outcome> = run_batch(o, &runs, &batch, false).into_iter().map(|(o, _)| o).collect();
            let best = batch.iter().zip(&outs).find(|(_, x)| x.check() == first.check()).map(|((c, _), _)| c);
            say(&format!(
                "shrinking {}: {} candidates, {}",
                s.id(),
                cands.len(),
                match best {
                    Some(c) => format!("still fails with {} operations on {} hosts", c.ops.len(), c.host_names.len()),
                    None => "none fails the same way".into(),
                }
            ));
            outs
        });
        // reruns of the result (and of the steps before it, when it proves flaky)
        let stem = format!("explore-{}-{}-{}", o.seed, s.index, shrunk.outcome.check().map(|c| c.name()).unwrap_or("finding"));
        let mut attempt = 0u32;
        let confirmed = shrink::confirm(shrunk, MAX_STEPS_BACK, &mut |c| {
            let batch: Vec<(Schedule, String)> = (0..o.reruns.max(1)).map(|r| (c.clone(), format!("{stem}-rerun{attempt}-{r}"))).collect();
            attempt += 1;
            let mut reports = Vec::new();
            let mut reproduced = 0;
            for chunk in batch.chunks(jobs) {
                for (out, r) in run_batch(o, &runs, chunk, true) {
                    if out.check() == first.check() {
                        reproduced += 1;
                    }
                    reports.extend(r);
                }
            }
            say(&format!(
                "{stem}: {} operations on {} hosts failed the same way in {reproduced} of {} runs",
                c.ops.len(),
                c.host_names.len(),
                batch.len()
            ));
            (reproduced, batch.len() as u32, reports)
        });
        let written = write_case(o, &s, &first, confirmed, &stem)?;
        sum.found.push(written);
    }
    sum.elapsed = t0.elapsed();
    Ok(sum)
}

/// Writes the confirmed schedule as a case (with a copy of its topology) to `out`.
fn write_case(o: &Options, original: &Schedule, first: &Outcome, confirmed: Confirmed<Vec<TrialReport>>, stem: &str) -> Result<Found> {
    let Confirmed { shrunk, reproduced, reruns, evidence: reports } = confirmed;
    let s = &shrunk.schedule;
    // the topology beside the case, in a folder of its own (`run --cases` reads every
    // .yaml of the case folder as a case)
    let topo_rel = format!("topologies/{}.yaml", s.topology);
    let topo_copy = o.out.join(&topo_rel);
    std::fs::create_dir_all(o.out.join("topologies")).map_err(|e| crate::lab_err!("create {}: {e}", o.out.join("topologies").display()))?;
    std::fs::copy(&s.topology_file, &topo_copy)
        .map_err(|e| crate::lab_err!("copy {} to {}: {e}", s.topology_file.display(), topo_copy.display()))?;
    let verdict = match reproduced {
        n if n == reruns => format!("failed the same way in all {reruns} reruns"),
        0 => format!("did not fail the same way in {reruns} reruns: flaky, or it needs the timing of the original"),
        n => format!("flaky: failed the same way in {n} of {reruns} reruns"),
    };
    let what = match &shrunk.outcome {
        Outcome::Finding { what, .. } => {
            let first = what.lines().next().unwrap_or_default();
            let cut: String = first.chars().take(160).collect();
            if cut.len() < what.len() {
                format!("{cut} …")
            } else {
                cut
            }
        }
        _ => String::new(),
    };
    let description = format!(
        "Found by `flannel-lab explore --seed {seed} --impl {imp}`, schedule #{index} ({summary}).\n\
         Finding: {label}: {what}\n\
         A conformant implementation passes this case: it states the correct behaviour.\n\
         Shrunk in {runs} candidate runs; the result {verdict}:\n{history}\n\
         The original schedule:\n{listing}",
        seed = o.seed,
        imp = o.imp.name(),
        index = original.index,
        summary = original.summary(),
        label = shrunk.outcome.label(),
        runs = shrunk.runs,
        history = shrunk.history.iter().map(|h| format!("  - {h}")).collect::<Vec<_>>().join("\n"),
        listing = original.listing(),
    );
    let file = o.out.join(format!("{stem}.yaml"));
    std::fs::write(&file, s.case_yaml(&description, &format!("./{topo_rel}")))
        .map_err(|e| crate::lab_err!("write {}: {e}", file.display()))?;
    Ok(Found { original: original.clone(), first: first.clone(), shrunk, reproduced, reruns, case_file: file, reports })
}

/// The summary table.
pub fn table(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let per_min = if s.exploring.as_secs_f64() > 0.0 { f64::from(s.schedules) * 60.0 / s.exploring.as_secs_f64() } else { 0.0 };
    let _ = writeln!(
        t,
        "seed {}: {} schedules, {} operations, {} passed, {} failed, {} lab errors",
        s.seed,
        s.schedules,
        s.operations,
        s.passed,
        s.found.len() + s.more.len(),
        s.lab_errors.len()
    );
    let _ = writeln!(
        t,
        "time: {:.0} s exploring ({per_min:.1} schedules/min), {:.0} s in all",
        s.exploring.as_secs_f64(),
        s.elapsed.as_secs_f64()
    );
    let mut by_kind: std::collections::BTreeMap<String, u32> = Default::default();
    for f in &s.found {
        *by_kind.entry(f.first.check().map(|c| c.name().to_string()).unwrap_or_default()).or_default() += 1;
    }
    for (_, o) in &s.more {
        *by_kind.entry(o.check().map(|c| c.name().to_string()).unwrap_or_default()).or_default() += 1;
    }
    if !by_kind.is_empty() {
        let _ = writeln!(t, "failures by finding kind: {}", by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
        let _ = writeln!(t, "{:<40} {:<26} {:>8} {:>8} {:>6}  case", "schedule", "finding", "ops", "hosts", "reruns");
        for f in &s.found {
            let _ = writeln!(
                t,
                "{:<40} {:<26} {:>8} {:>8} {:>6}  {}",
                format!("{} ({})", f.original.id(), f.original.summary().split(',').next().unwrap_or("")),
                f.shrunk.outcome.label(),
                format!("{}→{}", f.original.ops.len(), f.shrunk.schedule.ops.len()),
                format!("{}→{}", f.original.host_names.len(), f.shrunk.schedule.host_names.len()),
                format!("{}/{}", f.reproduced, f.reruns),
                f.case_file.display()
            );
        }
    }
    for (sch, o) in &s.more {
        let _ = writeln!(t, "also {} ({}): {} (a failure of this kind was shrunk above)", sch.id(), sch.summary(), o.label());
    }
    for (id, e) in &s.lab_errors {
        let _ = writeln!(t, "lab error in schedule {id}: {}", e.chars().take(200).collect::<String>());
    }
    t
}
