//! Comparing and pinning: `matrix` (several implementations, case by case) and `pin`
//! (runs of one implementation turned into the known failures of its profile).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::run::{load_trials, run_all, run_exit_code};
use crate::agents::Implementation;
use crate::error::{Error, Result};
use crate::lab_err;
use crate::report;
use crate::suite;

/// Turn runs into the known failures of a profile
///
/// Reads the `--json` files of several runs of one implementation and prints the
/// `known_failures:` entries that would excuse exactly what failed: each names the check,
/// the host (a pattern such as `h*` where it varied), the step, and `intermittent: true`
/// where it did not fail in every run. Lab errors are listed as comments, never pinned.
/// Replace each `EXPLAIN:` reason with the upstream issue that explains the failure.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    for i in 1 2 3; do flannel-lab run --impl flanneld --impl-only --json run$i.json; done\n  \
    flannel-lab pin run1.json run2.json run3.json >> my-flanneld.yaml")]
pub struct PinArgs {
    /// JSON files written by `run --json`
    #[arg(required = true, value_name = "FILE")]
    runs: Vec<PathBuf>,
}

pub fn pin(a: PinArgs) -> Result<ExitCode> {
    let mut runs = Vec::new();
    for p in &a.runs {
        let text = std::fs::read_to_string(p).map_err(|e| Error::Usage(format!("read {}: {e}", p.display())))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: not a `run --json` file: {e}", p.display())))?;
        runs.push(v);
    }
    print!("{}", report::pin::known_failures(&runs));
    Ok(ExitCode::SUCCESS)
}

/// Run the suite against several implementations and compare them, case by case
///
/// One run of every case × backend on each implementation (controls and mutants left
/// out), then a table with one row per CASE::BACKEND and one column per implementation:
/// each cell is the verdict and its first finding; rows where the implementations differ
/// come first. `PROFILE@BINARY` runs a profile that uses `{flanneld}` with that binary,
/// named after it, so one profile compares several upstream builds. Exits 0 when every
/// trial passed, 1 on a finding, 3 on a lab error.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab matrix --impl reference --impl flanneld@/opt/flanneld-v0.20.2 --impl flanneld@/opt/flanneld-v0.18.1\n  \
    flannel-lab matrix --impl flanneld@./flanneld-v0.18.1 --impl flanneld@./flanneld-v0.20.2 --filter field- --html matrix.html")]
pub struct MatrixArgs {
    /// An implementation (a profile, or PROFILE@BINARY); give two or more
    #[arg(long = "impl", value_name = "PROFILE", required = true, num_args = 1)]
    imps: Vec<String>,
    /// Only trials whose CASE::BACKEND contains TEXT (repeat for several)
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// Case directory [default: cases/ of this repository]
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Trials to run at once [default: four per core]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Write the matrix as Markdown here
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write the matrix as a self-contained HTML page here
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Plain progress lines even on a terminal
    #[arg(long)]
    plain: bool,
}

pub fn matrix(a: MatrixArgs) -> Result<ExitCode> {
    super::need_lab()?;
    let mut trials = Vec::new();
    let mut names = Vec::new();
    for spec in &a.imps {
        let imp = Implementation::load(spec, true)?;
        if names.contains(&imp.name().to_string()) {
            return Err(Error::Usage(format!("two implementations are named `{}`: give each its own profile or binary", imp.name())));
        }
        names.push(imp.name().to_string());
        let mut these = load_trials(a.cases.as_deref(), &imp, true)?;
        these.retain(|t| matches!(t.verdict, crate::run::Verdict::Pass) && !t.case.control);
        trials.extend(these);
    }
    if !a.filter.is_empty() {
        trials.retain(|t| a.filter.iter().any(|f| format!("{}::{}", t.case.name, t.backend).contains(f.as_str())));
    }
    if trials.is_empty() {
        return Err(Error::Usage("no trials match".into()));
    }
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let jobs = a.jobs.map(usize::from).unwrap_or(4 * cores).min(trials.len());
    let tty = !a.plain && std::io::stderr().is_terminal();
    eprintln!("flannel-lab: {} trial(s) on {} implementation(s), {jobs} at a time", trials.len(), names.len());
    let reports = run_all(trials, jobs, &suite::workdir(), tty);
    let m = report::matrix::Matrix::new(&reports, &names);
    print!("{}", m.text());
    if let Some(path) = &a.markdown {
        std::fs::write(path, m.markdown()).map_err(|e| lab_err!("write Markdown to {}: {e}", path.display()))?;
    }
    if let Some(path) = &a.html {
        std::fs::write(path, m.html()).map_err(|e| lab_err!("write HTML to {}: {e}", path.display()))?;
        eprintln!("flannel-lab: wrote {}", path.display());
    }
    Ok(ExitCode::from(run_exit_code(&reports, true)))
}
