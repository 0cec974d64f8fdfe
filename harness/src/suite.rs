//! The suite: every case file × backend × implementation as a trial, plus what both the
//! test target and the CLI need before running any (privileges, the agent binary, a work
//! directory).

use std::path::{Path, PathBuf};

use crate::agents::Implementation;
use crate::input::case::discover;
use crate::run::{TrialSpec, Verdict};
use crate::steps::Case;

/// Where labs keep their files: `FLANNEL_LAB_WORKDIR`, else `<tmp>/flannel-lab`. A failing
/// trial's directory stays there as its artifacts.
pub fn workdir() -> PathBuf {
    std::env::var_os("FLANNEL_LAB_WORKDIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("flannel-lab"))
}

/// Loads every case and expands it into trials, sorted by name; all invalid files are
/// reported together:
/// - each case × the backends both it and the implementation's profile name;
/// - a control case (`control: true`, it tests the lab) × its backends on the reference
///   agent, whatever implementation is under test;
/// - each case × mutant × backend it names: the case must fail with the stated finding.
///
/// `build_reference` builds the reference agent when it is missing (not for listing).
pub fn trials(cases_dir: &Path, topologies_dir: &Path, imp: &Implementation, build_reference: bool) -> Result<Vec<TrialSpec>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let reference = if imp.name() == "reference" { Ok(imp.clone()) } else { Implementation::load("reference", build_reference) };
    for file in discover(cases_dir) {
        let case = match Case::load(&file, topologies_dir) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let runs_on = if case.control {
            match &reference {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{}: a control runs on the reference agent: {e}", file.display()));
                    continue;
                }
            }
        } else {
            imp
        };
        for b in case.backends.iter().filter(|b| runs_on.profile.backends.contains(b)) {
            out.push(TrialSpec { case: case.clone(), backend: *b, imp: runs_on.clone(), verdict: Verdict::Pass });
        }
        for m in &case.mutants {
            match Implementation::load(&m.profile.display().to_string(), build_reference) {
                Ok(mimp) => {
                    out.push(TrialSpec { case: case.clone(), backend: m.backend, imp: mimp, verdict: Verdict::Catch(m.expected.clone()) })
                }
                Err(e) => errors.push(format!("{}: mutant {}: {e}", file.display(), m.profile.display())),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    out.sort_by_key(|t| t.name());
    Ok(out)
}

/// How much of the machine a trial takes, in job slots: one per 16 hosts of its largest
/// lab, so a 250-host case runs alone while small ones run side by side.
pub fn weight(spec: &TrialSpec, jobs: usize) -> usize {
    let hosts = spec
        .case
        .scales()
        .into_iter()
        .filter_map(|s| s.or_else(|| spec.case.topology(None).ok().map(|t| t.hosts.len() as u32)))
        .max()
        .unwrap_or(1);
    (hosts as usize).div_ceil(16).clamp(1, jobs)
}

/// Job slots shared by trials running on threads of one process (the test target under
/// `cargo test`): a trial takes [`weight`] of them, waiting until they are free, so a
/// 72-host lab does not run beside seven others and starve them. Trials are let in in the
/// order they asked (a heavy one is not overtaken forever by light ones).
pub struct Slots {
    state: std::sync::Mutex<SlotState>,
    freed: std::sync::Condvar,
    capacity: usize,
}

#[derive(Default)]
struct SlotState {
    used: usize,
    /// The next ticket to hand out, and the one whose turn it is.
    next: u64,
    serving: u64,
}

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        Slots { state: Default::default(), freed: std::sync::Condvar::new(), capacity: capacity.max(1) }
    }

    /// Waits for its turn and until `n` slots are free (or none is used: a trial heavier
    /// than the whole machine still runs, alone), takes them, and gives them back when the
    /// guard drops.
    pub fn take(&self, n: usize) -> SlotGuard<'_> {
        let n = n.clamp(1, self.capacity);
        let mut st = self.state.lock().expect("slots");
        let ticket = st.next;
        st.next += 1;
        while st.serving != ticket || (st.used > 0 && st.used + n > self.capacity) {
            st = self.freed.wait(st).expect("slots");
        }
        st.used += n;
        st.serving += 1;
        drop(st);
        self.freed.notify_all();
        SlotGuard { slots: self, n }
    }
}

/// Slots taken from [`Slots`]; given back on drop.
pub struct SlotGuard<'a> {
    slots: &'a Slots,
    n: usize,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.slots.state.lock().expect("slots").used -= self.n;
        self.slots.freed.notify_all();
    }
}

/// Why lab trials cannot run here, if they cannot.
pub fn lab_unavailable() -> Option<String> {
    crate::lab::netns::can_create().err().map(|e| format!("lab trials need root with CAP_NET_ADMIN and CAP_SYS_ADMIN: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_trial_waits_for_room_and_light_ones_wait_their_turn() {
        let slots = std::sync::Arc::new(Slots::new(8));
        let a = slots.take(3);
        let b = slots.take(3);
        let (tx, rx) = std::sync::mpsc::channel();
        let s = slots.clone();
        let heavy = std::thread::spawn(move || {
            let _g = s.take(5);
            tx.send("heavy").unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "5 more do not fit beside 6");
        drop(a);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(2)).unwrap(), "heavy", "3 used + 5 fit in 8");
        heavy.join().unwrap();
        drop(b);
        let _alone = slots.take(20);
    }
}
