//! `run` (trials, several at a time, with progress and reports), `list` and `check`.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;

use super::progress::Progress;
use super::ImplArg;
use crate::agents::Implementation;
use crate::error::{Error, Result};
use crate::input::topology::Topology;
use crate::lab_err;
use crate::report::{self, JunitEntry};
use crate::run::{run_trial, TrialReport, TrialSpec};
use crate::steps::Case;
use crate::suite;

/// Run cases against an implementation and print a per-trial table
///
/// Every case file × backend × implementation is one trial (CASE::BACKEND::IMPL), plus the
/// lab's control cases on the reference agent and mutant trials. Trials run several at a
/// time; a failing trial keeps its work directory as artifacts.
///
/// Exit status: 0 every trial ran and passed (known failures listed in the profile do not
/// count); 1 a finding (or a known failure that passes now, unless --allow-fixed); 2 usage
/// (bad flag, invalid input, no trial matches); 3 the lab could not judge (a lab error, or
/// trials skipped here, unless --allow-skipped).
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab run                                  every trial, reference agent\n  \
    flannel-lab run --filter mtu --filter ping             trials whose name contains either\n  \
    flannel-lab run --impl flanneld --html report.html --junit junit.xml\n  \
    flannel-lab run --impl ./my-agent.yaml --start-spread 2s\n  \
    flannel-lab run --cases ./field-cases --jobs 2")]
pub struct RunArgs {
    #[command(flatten)]
    imp: ImplArg,
    /// Run only trials whose name contains TEXT (repeat for several)
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// Case directory [default: cases/ of this repository]
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Start agents spread over this time instead of at one instant (cases about the
    /// start-up race keep one instant)
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    start_spread: Option<Duration>,
    /// Trials to run at once [default: four per core]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Write JUnit XML here
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a Markdown report here
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a self-contained HTML report here (root causes, timelines, topologies)
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write every trial's result and findings as JSON here (for `flannel-lab pin`)
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Judge against these known failures (a file with a `known_failures:` list, e.g. the
    /// expectations of one upstream release) instead of the profile's own
    #[arg(long, value_name = "FILE")]
    known_failures: Option<PathBuf>,
    /// Only the implementation under test: leave out the lab's own control and mutant
    /// trials (they judge the lab, which one run of the whole suite has shown)
    #[arg(long)]
    impl_only: bool,
    /// Plain progress lines even on a terminal
    #[arg(long)]
    plain: bool,
    /// Exit 0 although some trials could not run here (no Docker, no CNI plugins) and were
    /// skipped [default: skipped trials exit 3]
    #[arg(long)]
    allow_skipped: bool,
    /// Exit 0 although a known failure from the profile passes now [default: exit 1, so
    /// the profile gets updated]
    #[arg(long)]
    allow_fixed: bool,
}

/// Print the trial names a run would have
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  flannel-lab list\n  flannel-lab list --impl flanneld | grep udp")]
pub struct ListArgs {
    #[command(flatten)]
    imp: ImplArg,
    /// Case directory [default: cases/ of this repository]
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
}

/// Validate topology, case and profile files (every mistake, with file:line:col)
///
/// A file is read as what its folder holds (cases/, topologies/, profiles/, mutants/,
/// fixtures/, expectations/), else as `--kind` says, else by its keys. Problems go to
/// standard error; the exit status is 0 when every file is valid, 2 when one is not.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flannel-lab check cases/*.yaml topologies/*.yaml\n  flannel-lab check harness/profiles/flanneld.yaml\n  flannel-lab check --kind case my-bug.yaml"
)]
pub struct CheckArgs {
    /// Files to check
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Read every file as this kind, whatever its folder or keys
    #[arg(long, value_enum)]
    kind: Option<FileKind>,
}

/// What an input file is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Case,
    Topology,
    Profile,
    KnownFailures,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Case => "case",
            FileKind::Topology => "topology",
            FileKind::Profile => "profile",
            FileKind::KnownFailures => "known-failures",
        }
    }

    /// From the folder the file is in, else from its top-level keys; None when neither says.
    fn of(path: &Path) -> Option<FileKind> {
        let dir = path.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().to_string()).unwrap_or_default();
        match dir.as_str() {
            "cases" => return Some(FileKind::Case),
            "topologies" => return Some(FileKind::Topology),
            "profiles" | "mutants" | "fixtures" => return Some(FileKind::Profile),
            "expectations" => return Some(FileKind::KnownFailures),
            _ => {}
        }
        let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).to_string()).unwrap_or_default();
        let has = |k: &str| text.lines().any(|l| l.starts_with(k));
        if has("steps:") || has("topology:") {
            Some(FileKind::Case)
        } else if has("command:") {
            Some(FileKind::Profile)
        } else if has("segments:") || has("hosts:") {
            Some(FileKind::Topology)
        } else if has("known_failures:") {
            Some(FileKind::KnownFailures)
        } else {
            None
        }
    }
}

pub(super) fn load_trials(cases: Option<&Path>, imp: &Implementation, build_reference: bool) -> Result<Vec<TrialSpec>> {
    let root = crate::input::repo_root();
    let cases = cases.map(Path::to_path_buf).unwrap_or_else(|| root.join("cases"));
    suite::trials(&cases, &root.join("topologies"), imp, build_reference).map_err(|errs| Error::Input(errs.join("\n")))
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    super::need_lab()?;
    let mut imp = a.imp.load(true)?;
    if let Some(spread) = a.start_spread {
        imp.profile.start_spread = spread;
    }
    if let Some(file) = &a.known_failures {
        imp.profile.known_failures = crate::input::profile::load_known_failures(file)?;
    }
    let mut trials = load_trials(a.cases.as_deref(), &imp, true)?;
    if a.impl_only {
        trials.retain(|t| matches!(t.verdict, crate::run::Verdict::Pass) && !t.case.control);
    }
    if !a.filter.is_empty() {
        trials.retain(|t| a.filter.iter().any(|f| t.name().contains(f.as_str())));
    }
    if trials.is_empty() {
        return Err(Error::Usage(format!(
            "no trials match {}",
            a.filter.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ")
        )));
    }
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let jobs = a.jobs.map(usize::from).unwrap_or(4 * cores).min(trials.len());
    let tty = !a.plain && std::io::stderr().is_terminal();
    eprintln!("flannel-lab: {} trial(s), {jobs} at a time, implementation `{}`", trials.len(), imp.name());
    let mut reports = run_all(trials, jobs, &suite::workdir(), tty);
    for r in &mut reports {
        r.allow_fixed = a.allow_fixed;
    }
    print!("{}", report::table(&reports));
    let write =
        |path: &Path, text: String, what: &str| std::fs::write(path, text).map_err(|e| lab_err!("write {what} to {}: {e}", path.display()));
    if let Some(path) = &a.markdown {
        write(path, report::markdown(&reports), "Markdown")?;
    }
    if let Some(path) = &a.html {
        write(path, report::html::page(&reports, &report::html::RunInfo::now(imp.name())), "HTML")?;
        eprintln!("flannel-lab: wrote {}", path.display());
    }
    if let Some(path) = &a.json {
        write(path, report::run_json(&reports, imp.name()), "JSON")?;
    }
    if let Some(path) = &a.junit {
        let entries: Vec<JunitEntry> = reports.iter().map(report::junit_entry).collect();
        report::write_junit(path, "flannel-lab", &entries).map_err(|e| lab_err!("write JUnit to {}: {e}", path.display()))?;
    }
    Ok(ExitCode::from(run_exit_code(&reports, a.allow_skipped)))
}

/// A run's exit status (see [`RunArgs`]): a lab error or an unallowed skip outranks a
/// finding, since the lab did not judge everything it lists.
pub(super) fn run_exit_code(reports: &[TrialReport], allow_skipped: bool) -> u8 {
    let skipped = reports.iter().filter(|r| r.ignored.is_some()).count();
    if reports.iter().any(|r| r.lab_error) {
        super::EXIT_LAB
    } else if skipped > 0 && !allow_skipped {
        eprintln!("flannel-lab: {skipped} trial(s) could not run here and were skipped (exit 3; --allow-skipped accepts that)");
        super::EXIT_LAB
    } else if reports.iter().any(|r| r.fails_run()) {
        super::EXIT_FINDING
    } else {
        0
    }
}

/// Runs the trials (each on a thread and runtime of its own, like the test target) with up
/// to `jobs` slots in use, and returns their reports in the order given.
pub(super) fn run_all(trials: Vec<TrialSpec>, jobs: usize, workdir: &Path, tty: bool) -> Vec<TrialReport> {
    let total = trials.len();
    let mut queue: VecDeque<(usize, usize, TrialSpec)> =
        trials.into_iter().enumerate().map(|(i, t)| (i, crate::suite::weight(&t, jobs), t)).collect();
    let (tx, rx) = mpsc::channel();
    let mut progress = Progress::new(total, tty);
    let mut out: Vec<Option<TrialReport>> = (0..total).map(|_| None).collect();
    let (mut busy, mut running, mut done) = (0usize, Vec::new(), 0usize);
    while done < total {
        // start what fits: the next trial in order, or any that fits beside a heavy one
        while let Some(pos) = queue.iter().position(|(_, w, _)| busy == 0 || busy + w <= jobs) {
            let (i, w, spec) = queue.remove(pos).expect("position is in the queue");
            busy += w;
            progress.started(&spec.name());
            let (tx, workdir) = (tx.clone(), workdir.to_path_buf());
            running.push((i, w));
            std::thread::spawn(move || {
                let report = match super::runtime() {
                    Ok(rt) => {
                        let r = rt.block_on(run_trial(&spec, &workdir));
                        rt.shutdown_background();
                        r
                    }
                    Err(e) => TrialReport::lab_failure(spec.name(), format!("{e}")),
                };
                let _ = tx.send((i, Box::new(report)));
            });
        }
        match rx.recv_timeout(Duration::from_millis(120)) {
            Ok((i, r)) => {
                progress.finished(&r);
                out[i] = Some(*r);
                done += 1;
                if let Some(k) = running.iter().position(|(j, _)| *j == i) {
                    busy -= running.remove(k).1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => progress.tick(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out.into_iter().flatten().collect()
}

pub fn list(a: ListArgs) -> Result<ExitCode> {
    let imp = a.imp.load(false)?;
    for t in load_trials(a.cases.as_deref(), &imp, false)? {
        println!("{}", t.name());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check(a: CheckArgs) -> Result<ExitCode> {
    let topologies = crate::input::repo_root().join("topologies");
    let mut bad = 0;
    for path in &a.files {
        let kind = a.kind.or_else(|| FileKind::of(path));
        let result = match kind {
            Some(FileKind::Case) => Case::load(path, &topologies).map(|_| ()),
            Some(FileKind::Profile) => crate::input::profile::Profile::load(path).map(|_| ()),
            Some(FileKind::Topology) => Topology::load(path).map(|_| ()),
            Some(FileKind::KnownFailures) => crate::input::profile::load_known_failures(path).map(|_| ()),
            None => {
                // nothing says what it is: whatever the reader says about it (missing,
                // binary, empty) first, else that its kind is unknown
                match crate::input::diag::read_text(path, "input") {
                    Err(e) => Err(e),
                    Ok(_) => Err(crate::input::diag::Diagnostics(vec![crate::input::diag::Diagnostic {
                        file: path.clone(),
                        line: 1,
                        column: 1,
                        path: String::new(),
                        message: "cannot tell whether this is a case, topology or profile".into(),
                        hint: "put it under cases/, topologies/ or profiles/, or say `--kind case|topology|profile`".into(),
                    }])),
                }
            }
        };
        match result {
            Ok(()) => println!("{}: valid {}", path.display(), kind.map(FileKind::name).unwrap_or("file")),
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    if bad > 0 {
        eprintln!("flannel-lab: {bad} of {} file(s) invalid", a.files.len());
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
