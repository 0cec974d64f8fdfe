//! Shrinking a failing schedule: smaller candidates (the operations after the failure cut,
//! chunks of operations dropped, fewer hosts, a flat topology, shorter faults) are run, and
//! the first that still fails with the same finding kind replaces the schedule, until no
//! candidate does or the runs are spent. Candidates are evaluated in batches (in parallel,
//! by the caller); the first in order that still fails wins, so the result depends only on
//! the outcomes. A candidate is accepted on one failing run, so the smallest result may fail
//! only now and then (a shorter outage the implementation notices only sometimes):
//! [`confirm`] reruns it and, when it does not fail on every rerun, walks back through the
//! accepted steps to the smallest that does.

use super::schedule::{Schedule, TopoInfo};
use crate::contract::Check;

/// How one run of a schedule ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The first finding the trial failed with, and its step (1-based).
    Finding {
        check: Check,
        host: String,
        step: Option<usize>,
        what: String,
    },
    /// The lab could not judge: never a finding, never shrunk.
    LabError(String),
}

impl Outcome {
    pub fn check(&self) -> Option<Check> {
        match self {
            Outcome::Finding { check, .. } => Some(*check),
            _ => None,
        }
    }

    /// `[routes] h2 at step 7`
    pub fn label(&self) -> String {
        match self {
            Outcome::Pass => "pass".into(),
            Outcome::Finding { check, host, step, .. } => {
                format!("[{check}] {host}{}", step.map(|s| format!(" at step {s}")).unwrap_or_default())
            }
            Outcome::LabError(e) => format!("lab error: {e}"),
        }
    }
}

/// The smallest schedule found, and how it got there.
#[derive(Debug, Clone)]
pub struct Shrunk {
    pub schedule: Schedule,
    pub outcome: Outcome,
    /// One line per accepted step.
    pub history: Vec<String>,
    /// Candidate runs made.
    pub runs: u32,
    /// The accepted steps before this one, the original first.
    pub before: Vec<(Schedule, Outcome)>,
}

impl Shrunk {
    /// Goes back to the step before the last accepted one; false at the original.
    fn step_back(&mut self, why: &str) -> bool {
        let Some((s, o)) = self.before.pop() else { return false };
        self.history.push(format!("{why}: back to {} operations, {} hosts, {}", s.ops.len(), s.host_names.len(), s.topology));
        self.schedule = s;
        self.outcome = o;
        true
    }
}

/// How a shrunk schedule did when run again.
#[derive(Debug, Clone)]
pub struct Confirmed<R> {
    pub shrunk: Shrunk,
    /// Of `reruns` runs, how many failed the same way.
    pub reproduced: u32,
    pub reruns: u32,
    /// What the reruns left (reports).
    pub evidence: R,
}

/// Reruns `shrunk` through `rerun` (a schedule in; how many of how many runs failed the
/// same way, and their evidence, out). A result that does not fail on every rerun is flaky:
/// the step before it is rerun, at most `max_back` steps back, and the smallest that fails
/// every time is kept. When none does, the one that failed most often (the smallest of
/// those) is kept, said flaky.
pub fn confirm<R>(mut shrunk: Shrunk, max_back: usize, rerun: &mut dyn FnMut(&Schedule) -> (u32, u32, R)) -> Confirmed<R> {
    let mut tried: Vec<Confirmed<R>> = Vec::new();
    loop {
        let (reproduced, reruns, evidence) = rerun(&shrunk.schedule);
        let all = reproduced == reruns;
        let why = format!("failed the same way in {reproduced} of {reruns} reruns");
        tried.push(Confirmed { shrunk: shrunk.clone(), reproduced, reruns, evidence });
        if all || tried.len() > max_back || !shrunk.step_back(&format!("flaky ({why})")) {
            break;
        }
    }
    // the last tried carries the whole history; the one kept gets it
    let mut history = shrunk.history;
    let best = tried.iter().position(|t| t.reproduced == t.reruns).unwrap_or_else(|| {
        let most = tried.iter().map(|t| t.reproduced).max().unwrap_or(0);
        tried.iter().position(|t| t.reproduced == most).unwrap_or(0)
    });
    let mut kept = tried.swap_remove(best);
    if kept.reproduced != kept.reruns {
        let (s, n, of) = (&kept.shrunk.schedule, kept.reproduced, kept.reruns);
        history.push(format!(
            "none of the steps tried fails every time: kept {} operations, {} hosts ({n} of {of} reruns)",
            s.ops.len(),
            s.host_names.len()
        ));
    }
    kept.shrunk.history = history;
    kept
}

/// Shrinks `start`, which failed with `outcome`, running at most `max_runs` candidates
/// through `eval` (a batch of schedules in, their outcomes out, in order).
pub fn shrink(
    start: Schedule,
    outcome: Outcome,
    topologies: &[TopoInfo],
    max_runs: u32,
    batch: usize,
    eval: &mut dyn FnMut(&[Schedule]) -> Vec<Outcome>,
) -> Shrunk {
    let want = outcome.check().expect("only a finding is shrunk");
    let mut cur = Shrunk {
        history: vec![format!(
            "found: {} ({} operations, {} hosts, {})",
            outcome.label(),
            start.ops.len(),
            start.host_names.len(),
            start.topology
        )],
        schedule: start,
        outcome,
        runs: 0,
        before: Vec::new(),
    };
    'outer: loop {
        for (pass, candidates) in passes(&cur, topologies) {
            let candidates: Vec<Schedule> = candidates.into_iter().filter(|c| *c != cur.schedule).collect();
            for chunk in candidates.chunks(batch.max(1)) {
                let room = max_runs.saturating_sub(cur.runs) as usize;
                if room == 0 {
                    cur.history.push(format!("stopped: {max_runs} candidate runs spent"));
                    break 'outer;
                }
                let chunk = &chunk[..chunk.len().min(room)];
                let outcomes = eval(chunk);
                cur.runs += chunk.len() as u32;
                if let Some((c, o)) = chunk.iter().zip(outcomes).find(|(_, o)| o.check() == Some(want)) {
                    cur.history.push(format!(
                        "{pass}: {} operations, {} hosts, {} → {}",
                        c.ops.len(),
                        c.host_names.len(),
                        c.topology,
                        o.label()
                    ));
                    let prev = (std::mem::replace(&mut cur.schedule, c.clone()), std::mem::replace(&mut cur.outcome, o));
                    cur.before.push(prev);
                    continue 'outer;
                }
            }
        }
        break;
    }
    cur
}

/// The candidate lists, simplest first.
fn passes(cur: &Shrunk, topologies: &[TopoInfo]) -> Vec<(&'static str, Vec<Schedule>)> {
    let s = &cur.schedule;
    let mut out = Vec::new();
    // what ran after the failing operation did not cause it
    let failed_op = match &cur.outcome {
        Outcome::Finding { step: Some(n), .. } => s.op_of_step(*n),
        _ => None,
    };
    if let Some(i) = failed_op.filter(|i| i + 1 < s.ops.len()) {
        out.push(("cut after the failing operation", vec![with_ops(s, s.ops[..=i].to_vec())]));
    }
    // chunks of operations dropped: halves, quarters, … single ones
    let n = s.ops.len();
    let mut size = n.div_ceil(2);
    while size >= 1 && n > 0 {
        let cands: Vec<Schedule> = (0..n)
            .step_by(size)
            .map(|from| {
                let mut ops = s.ops.clone();
                ops.drain(from..(from + size).min(n));
                with_ops(s, ops)
            })
            .collect();
        out.push(("operations dropped", cands));
        if size == 1 {
            break;
        }
        size = size.div_ceil(2).min(size - 1);
    }
    // fewer hosts: the fewest first, the hosts the operations name moved to the front first
    if let Some(r) = s.renumbered().filter(|_| topologies.iter().any(|t| t.name == s.topology && t.scalable)) {
        out.push(("hosts renumbered", vec![r]));
    }
    if let Some(t) = topologies.iter().find(|t| t.name == s.topology && t.scalable) {
        let mut cands: Vec<Schedule> = t
            .names_at
            .iter()
            .filter(|(c, _)| (*c as usize) < s.host_names.len() && *c >= 2)
            .map(|(c, names)| s.on_hosts(t, Some(*c), names))
            .collect();
        cands.sort_by_key(|c| c.host_names.len());
        out.push(("fewer hosts", cands));
    }
    // a single flat segment instead of a routed topology
    if s.segments > 1 {
        let flat = topologies.iter().filter(|t| t.segments == 1 && t.scalable);
        let cands: Vec<Schedule> = flat
            .filter_map(|t| {
                t.names_at.iter().find(|(c, _)| *c as usize == s.host_names.len()).map(|(c, names)| s.on_hosts(t, Some(*c), names))
            })
            .take(1)
            .collect();
        out.push(("one segment", cands));
    }
    // shorter faults
    if s.ops.iter().any(|o| o.kind.shorter().is_some()) {
        let mut t = s.clone();
        for o in &mut t.ops {
            if let Some(k) = o.kind.shorter() {
                o.kind = k;
            }
        }
        out.push(("shorter faults", vec![t]));
    }
    out
}

fn with_ops(s: &Schedule, ops: Vec<super::schedule::Op>) -> Schedule {
    Schedule { ops, ..s.clone() }.valid()
}

#[cfg(test)]
mod tests {
    use super::super::schedule::tests::{flat, routed, space};
    use super::super::schedule::{generate, Op, OpKind};
    use super::*;

    /// A fake implementation: fails [routes] at the settle after its first `pause_etcd`
    /// when at least 3 hosts run, else passes.
    fn fake(s: &Schedule) -> Outcome {
        let Some(i) = s.ops.iter().position(|o| matches!(o.kind, OpKind::PauseEtcd { .. })) else { return Outcome::Pass };
        if s.host_names.len() < 3 {
            return Outcome::Pass;
        }
        let step = s.steps().iter().position(|c| c.op == Some(i) && c.yaml.starts_with("wait_converged")).map(|p| p + 1);
        let step = step.or_else(|| s.steps().iter().position(|c| c.yaml.starts_with("expect_counts")).map(|p| p + 1));
        Outcome::Finding { check: Check::Routes, host: s.host_names[0].clone(), step, what: "1 of 2 routes".into() }
    }

    #[test]
    fn a_failure_shrinks_to_its_cause_on_the_fewest_hosts() {
        let sp = space();
        // the first schedule of some seed that pauses etcd on a routed topology
        let s = (0..500u32)
            .map(|i| generate(&sp, 11, i))
            .find(|s| s.topology == "two-segments" && s.ops.iter().filter(|o| matches!(o.kind, OpKind::PauseEtcd { .. })).count() >= 1)
            .expect("such a schedule");
        let o = fake(&s);
        assert!(o.check().is_some());
        let mut batches = 0;
        let r = shrink(s.clone(), o, &[flat(), routed()], 200, 3, &mut |b| {
            batches += 1;
            assert!(b.len() <= 3);
            b.iter().map(fake).collect()
        });
        assert_eq!(r.schedule.ops.len(), 1, "{}\n{}", r.schedule.listing(), r.history.join("\n"));
        assert!(matches!(r.schedule.ops[0].kind, OpKind::PauseEtcd { ms: 1000 }), "{}", r.schedule.listing());
        assert_eq!((r.schedule.topology.as_str(), r.schedule.host_names.len()), ("flat", 3), "{}", r.history.join("\n"));
        assert_eq!(r.outcome.check(), Some(Check::Routes));
        assert!(r.runs <= 200 && batches > 0);
        assert!(r.history[0].starts_with("found: [routes]"), "{:?}", r.history);
        // the same outcomes give the same result
        let again = shrink(s, fake(&r.schedule), &[flat(), routed()], 200, 3, &mut |b| b.iter().map(fake).collect());
        assert_eq!(again.schedule, r.schedule);
    }

    #[test]
    fn another_finding_or_a_lab_error_is_not_the_same_failure() {
        let sp = space();
        let mut s = generate(&sp, 2, 0);
        s.ops = vec![
            Op { kind: OpKind::RestartEtcd { down_ms: 2000 }, settle: true },
            Op { kind: OpKind::PauseEtcd { ms: 4000 }, settle: true },
        ];
        let o = Outcome::Finding { check: Check::AgentExit, host: "h1".into(), step: Some(4), what: String::new() };
        let r = shrink(s.clone(), o, &sp.topologies, 50, 2, &mut |b| {
            b.iter()
                .map(|c| match c.ops.len() {
                    2 => Outcome::Finding { check: Check::AgentExit, host: "h1".into(), step: Some(4), what: String::new() },
                    1 => Outcome::LabError("etcd did not start".into()),
                    _ => Outcome::Finding { check: Check::Routes, host: "h1".into(), step: Some(3), what: String::new() },
                })
                .collect()
        });
        assert_eq!(r.schedule.ops.len(), 2, "{:?}", r.history);
        assert_eq!(r.outcome.check(), Some(Check::AgentExit));
    }

    #[test]
    fn the_run_budget_is_kept() {
        let sp = space();
        let s = generate(&sp, 4, 1);
        let o = Outcome::Finding { check: Check::Fdb, host: "h1".into(), step: None, what: String::new() };
        let mut seen = 0;
        let r = shrink(s, o, &sp.topologies, 5, 3, &mut |b| {
            seen += b.len();
            b.iter().map(|_| Outcome::Pass).collect()
        });
        assert_eq!((r.runs, seen), (5, 5));
        assert!(r.history.last().unwrap().contains("5 candidate runs spent"), "{:?}", r.history);
    }

    /// A shrunk result whose last step is flaky: the confirmation reruns it, goes back one
    /// step, finds that one fails every time and keeps it, saying so in the history.
    #[test]
    fn a_flaky_result_walks_back_to_the_step_that_fails_every_time() {
        let sp = space();
        let s = (0..500u32)
            .map(|i| generate(&sp, 11, i))
            .find(|s| s.topology == "two-segments" && s.ops.iter().any(|o| matches!(o.kind, OpKind::PauseEtcd { .. })))
            .expect("such a schedule");
        let r = shrink(s.clone(), fake(&s), &[flat(), routed()], 200, 3, &mut |b| b.iter().map(fake).collect());
        assert!(matches!(r.schedule.ops[0].kind, OpKind::PauseEtcd { ms: 1000 }), "{}", r.schedule.listing());
        // a 1 s pause fails only in one of two reruns, longer ones in both
        let mut seen = Vec::new();
        let c = confirm(r.clone(), 3, &mut |c| {
            seen.push(c.clone());
            let short = c.ops.iter().any(|o| matches!(o.kind, OpKind::PauseEtcd { ms: 1000 }));
            (if short { 1 } else { 2 }, 2, c.ops.len())
        });
        assert_eq!((c.reproduced, c.reruns), (2, 2));
        assert!(!c.shrunk.schedule.ops.iter().any(|o| matches!(o.kind, OpKind::PauseEtcd { ms: 1000 })), "{}", c.shrunk.schedule.listing());
        assert_eq!(seen.len(), 2);
        assert_eq!(c.shrunk.schedule, seen[1]);
        assert_eq!(c.shrunk.before.len(), r.before.len() - 1);
        assert!(
            c.shrunk.history.last().unwrap().starts_with("flaky (failed the same way in 1 of 2 reruns): back to"),
            "{:?}",
            c.shrunk.history
        );
        // a result that fails every time is kept as it is
        let c = confirm(r.clone(), 3, &mut |_| (2, 2, ()));
        assert_eq!((c.shrunk.schedule, c.shrunk.history), (r.schedule.clone(), r.history.clone()));
        // never reliable: at most 3 steps back, the smallest of those that failed most kept
        let mut n = 0;
        let c = confirm(r.clone(), 3, &mut |_| {
            n += 1;
            (u32::from(n == 2 || n == 3), 2, n)
        });
        assert_eq!((n, c.evidence, c.reproduced), (4, 2, 1));
        assert!(c.shrunk.history.last().unwrap().starts_with("none of the steps tried fails every time"), "{:?}", c.shrunk.history);
    }
}
