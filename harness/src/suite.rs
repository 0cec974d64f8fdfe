//! The suite: every case file × backend × implementation as a trial, plus what both the
//! test target and the CLI need before running any (privileges, the agent binary, a work
//! directory).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::agents::Implementation;
use crate::case::{discover, Case};
use crate::diag::Diagnostics;
use crate::runner::TrialSpec;

/// The repository root (where cases/ and topologies/ live).
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("FLANNEL_LAB_ROOT") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("harness/ has a parent").to_path_buf()
}

/// Where labs keep their files: `FLANNEL_LAB_WORKDIR`, else `<tmp>/flannel-lab`. A failing
/// trial's directory stays there as its artifacts.
pub fn workdir() -> PathBuf {
    std::env::var_os("FLANNEL_LAB_WORKDIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("flannel-lab"))
}

/// Loads every case and expands it into trials (the backends both the case and the
/// implementation's profile name), sorted by name. All invalid files are
/// reported together.
pub fn trials(cases_dir: &Path, topologies_dir: &Path, imp: &Implementation) -> Result<Vec<TrialSpec>, Vec<Diagnostics>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for file in discover(cases_dir) {
        match Case::load(&file, topologies_dir) {
            Ok(case) => {
                for b in case.backends.iter().filter(|b| imp.profile.backends.contains(b)) {
                    out.push(TrialSpec { case: case.clone(), backend: *b, imp: imp.clone() });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    out.sort_by_key(|t| t.name());
    Ok(out)
}

/// One trial per case × mutant: the case run against the mutant on the first backend both
/// claim. These trials pass only when the case FAILS (the case catches the bug).
pub fn mutant_trials(cases_dir: &Path, topologies_dir: &Path, build_reference: bool) -> Result<Vec<TrialSpec>, String> {
    let mut out = Vec::new();
    for file in discover(cases_dir) {
        let case = Case::load(&file, topologies_dir).map_err(|e| e.to_string())?;
        for m in &case.mutants {
            let imp = Implementation::load(&m.display().to_string(), build_reference)?;
            if let Some(b) = case.backends.iter().find(|b| imp.profile.backends.contains(b)) {
                out.push(TrialSpec { case: case.clone(), backend: *b, imp });
            }
        }
    }
    out.sort_by_key(|t| t.name());
    Ok(out)
}

/// Why lab trials cannot run here, if they cannot.
pub fn lab_unavailable() -> Option<String> {
    crate::netns::can_create().err().map(|e| format!("lab trials need root with CAP_NET_ADMIN and CAP_SYS_ADMIN: {e}"))
}

/// Finds the reference agent, building it with cargo when it is missing (the case under
/// `cargo test -p flannel-lab`, which does not build other packages' binaries).
pub fn reference_agent() -> Result<PathBuf, String> {
    if let Ok(bin) = Implementation::find_reference_agent() {
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "flannel-agent", "--bin", "flannel-agent"])
        .current_dir(repo_root())
        .status()
        .map_err(|e| format!("run cargo to build flannel-agent: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo build -p flannel-agent` failed ({status})"));
    }
    Implementation::find_reference_agent()
}
