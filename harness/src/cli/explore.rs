//! `flannel-lab explore`: random fault schedules, checked by the lab's own contract, each
//! failure shrunk to a case (see [`crate::explore`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::ImplArg;
use crate::contract::Backend;
use crate::error::{Error, Result};
use crate::explore::schedule::{DEFAULT_WEIGHTS, KINDS};
use crate::explore::{self, Options, Space};
use crate::lab_err;

/// Find unknown bugs: seeded random fault schedules, checked throughout, failures shrunk
/// to replayable cases
#[derive(Args, Debug)]
#[command(after_help = "Each schedule is a topology, a host count, a backend and 10-14 operations drawn \
    from the lab's step kinds (agent restarts and crashes, all agents restarted with or without spread, etcd \
    restarts and pauses, lease revocations, junk keys, link cuts, flaps, re-creations and packet loss, public IP \
    changes, backend switches, hosts leaving and joining, pods), each followed (mostly) by a wait for convergence judged by the same checks as every case. \
    A failure is shrunk (operations dropped, fewer hosts, one segment, shorter faults) while it fails \
    with the same finding kind, rerun to tell a flaky failure from a real one, and written to --out as a \
    case that `flannel-lab run --cases DIR` replays. The same seed gives the same schedules.\n\n\
    Examples:\n  \
    flannel-lab explore --budget 10m\n  \
    flannel-lab explore --impl flanneld --backend vxlan --hosts 3..5 --seed 42 --out found/\n  \
    flannel-lab explore --seed 42 --dry-run        # print the schedules, run nothing\n  \
    flannel-lab run --cases found/                  # replay what it found\n\n\
    Exit status: 0 nothing found, 1 a failure found (shrunk case written), 2 usage, 3 lab errors only.")]
pub struct ExploreArgs {
    #[command(flatten)]
    imp: ImplArg,
    /// Backends to start schedules on (repeatable) [default: the profile's]
    #[arg(long, value_name = "B", value_parser = super::parse_backend)]
    backend: Vec<Backend>,
    /// Host count, or a range A..B, for scalable topologies
    #[arg(long, value_name = "N|A..B", default_value = "3..8", value_parser = parse_range)]
    hosts: (u32, u32),
    /// Operations per schedule, N or A..B
    #[arg(long, value_name = "N|A..B", default_value = "10..14", value_parser = parse_range)]
    ops: (u32, u32),
    /// The seed [default: random, printed]
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Time for new schedules (shrinking comes after)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = super::parse_duration)]
    budget: Duration,
    /// Stop after this many schedules
    #[arg(long, value_name = "N")]
    max_schedules: Option<u32>,
    /// Topologies to draw from (names in topologies/ or paths)
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "flat,two-segments,flat-1400")]
    topologies: Vec<String>,
    /// How long each wait for convergence may take
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    settle: Duration,
    /// Operation kinds to draw, with weights: kind=weight,… (others 0); default: all, weighted
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    weights: Vec<String>,
    /// Schedules run side by side
    #[arg(long, value_name = "N", default_value_t = 3)]
    jobs: u16,
    /// Where shrunk cases go [default: explore-<seed>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Candidate runs each failure may take to shrink
    #[arg(long, value_name = "N", default_value_t = 40)]
    shrink_runs: u32,
    /// Runs of each shrunk case (flaky or real)
    #[arg(long, value_name = "N", default_value_t = 3)]
    reruns: u32,
    /// Write the failing schedules' reruns as an HTML report (timeline of operations)
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the schedules as case files and run nothing (needs no root)
    #[arg(long)]
    dry_run: bool,
}

/// `N` or `A..B`.
fn parse_range(s: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not a number or a range like 3..8");
    match s.split_once("..") {
        Some((a, b)) => Ok((a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?)),
        None => s.trim().parse().map(|n| (n, n)).map_err(|_| bad()),
    }
}

/// `restart_agent=5,pause_etcd=1`: those kinds with those weights, the others 0.
fn parse_weights(list: &[String]) -> Result<[u32; KINDS.len()]> {
    if list.is_empty() {
        return Ok(DEFAULT_WEIGHTS);
    }
    let mut w = [0u32; KINDS.len()];
    for item in list {
        let (k, v) = item.split_once('=').unwrap_or((item.as_str(), "1"));
        let i = KINDS.iter().position(|x| *x == k.trim()).ok_or_else(|| {
            let hint = crate::input::diag::nearest(k, KINDS.iter().copied()).map(|n| format!("did you mean `{n}`? ")).unwrap_or_default();
            Error::Usage(format!("--weights: unknown operation `{k}`: {hint}(known: {})", KINDS.join(", ")))
        })?;
        w[i] = v.trim().parse().map_err(|_| Error::Usage(format!("--weights: `{v}` is not a whole number (in `{item}`)")))?;
    }
    Ok(w)
}

pub fn explore(a: ExploreArgs) -> Result<ExitCode> {
    let imp = a.imp.load(!a.dry_run)?;
    let backends: Vec<Backend> = match a.backend.is_empty() {
        true => imp.profile.backends.clone(),
        false => a.backend.clone(),
    };
    if let Some(b) = backends.iter().find(|b| !imp.profile.backends.contains(b)) {
        return Err(Error::Usage(format!(
            "--backend {b}: the profile `{}` does not run it (it runs {:?})",
            imp.name(),
            imp.profile.backends
        )));
    }
    let root = crate::input::repo_root();
    let topologies = explore::topologies(&root.join("topologies"), &a.topologies, a.hosts.1.max(8))?;
    let space = Space {
        topologies,
        hosts: a.hosts,
        backends,
        ops: a.ops,
        weights: parse_weights(&a.weights)?,
        settle_s: a.settle.as_secs().max(1),
    };
    explore::check_space(&space).map_err(Error::Usage)?;
    let seed = a.seed.unwrap_or_else(rand::random);
    if a.dry_run {
        for i in 0..a.max_schedules.unwrap_or(3) {
            let s = explore::schedule::generate(&space, seed, i);
            println!(
                "# schedule {}: {}\n{}",
                s.id(),
                s.summary(),
                s.case_yaml(&format!("schedule {}", s.id()), &s.topology_file.display().to_string())
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    super::need_lab()?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("explore-{seed}")));
    let o = Options {
        imp,
        space,
        seed,
        budget: a.budget,
        max_schedules: a.max_schedules,
        jobs: usize::from(a.jobs.max(1)),
        out: out.clone(),
        shrink_runs: a.shrink_runs,
        reruns: a.reruns,
        workdir: crate::suite::workdir(),
    };
    let tty = std::io::stderr().is_terminal();
    eprintln!(
        "flannel-lab: exploring `{}` with seed {seed} for {:?}{}, {} at a time; cases to {}",
        o.imp.name(),
        o.budget,
        o.max_schedules.map(|m| format!(" (at most {m} schedules)")).unwrap_or_default(),
        o.jobs,
        out.display()
    );
    let t0 = std::time::Instant::now();
    let sum = explore::explore(&o, &mut |line| {
        if tty {
            eprintln!("[{:>5.0} s] {line}", t0.elapsed().as_secs_f64());
        } else {
            eprintln!("{line}");
        }
    })?;
    let table = explore::table(&sum);
    print!("{table}");
    write_summary(&out, &table)?;
    if let Some(path) = &a.html {
        let reports: Vec<crate::run::TrialReport> = sum.found.into_iter().flat_map(|f| f.reports).collect();
        let info = crate::report::html::RunInfo::now(o.imp.name());
        std::fs::write(path, crate::report::html::page(&reports, &info)).map_err(|e| lab_err!("write HTML to {}: {e}", path.display()))?;
        eprintln!("flannel-lab: wrote {}", path.display());
        return Ok(exit(!reports.is_empty(), sum.lab_errors.is_empty(), sum.schedules));
    }
    Ok(exit(!sum.found.is_empty(), sum.lab_errors.is_empty(), sum.schedules))
}

fn write_summary(out: &Path, table: &str) -> Result<()> {
    let f = out.join("summary.txt");
    std::fs::write(&f, table).map_err(|e| lab_err!("write {}: {e}", f.display()))
}

/// 1 when something was found; 3 when the lab could not judge some schedule (or ran none).
fn exit(found: bool, no_lab_errors: bool, schedules: u32) -> ExitCode {
    if found {
        ExitCode::from(super::EXIT_FINDING)
    } else if !no_lab_errors || schedules == 0 {
        ExitCode::from(super::EXIT_LAB)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_weights() {
        assert_eq!(parse_range("3..8"), Ok((3, 8)));
        assert_eq!(parse_range("5"), Ok((5, 5)));
        assert!(parse_range("3-8").is_err());
        let w = parse_weights(&["pause_etcd=2".into(), "restart_agent".into()]).unwrap();
        assert_eq!((w[3], w[0], w[1]), (2, 1, 0));
        let e = parse_weights(&["pause_etc=1".into()]).unwrap_err().to_string();
        assert!(e.contains("did you mean `pause_etcd`"), "{e}");
        assert_eq!(parse_weights(&[]).unwrap(), DEFAULT_WEIGHTS);
    }
}
