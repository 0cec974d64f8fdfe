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

/// Why lab trials cannot run here, if they cannot.
pub fn lab_unavailable() -> Option<String> {
    crate::lab::netns::can_create().err().map(|e| format!("lab trials need root with CAP_NET_ADMIN and CAP_SYS_ADMIN: {e}"))
}
