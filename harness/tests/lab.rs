//! The lab test target: one trial per case file × backend × implementation, named
//! `CASE::BACKEND::IMPLEMENTATION`. Runs under `cargo test` and nextest (`--list`,
//! `--exact`, `--ignored` work). Without root the lab trials are reported as ignored with
//! the reason. `FLANNEL_LAB_JUNIT=path.xml` writes JUnit under `cargo test`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use flannel_lab::lab::install_signal_cleanup;
use flannel_lab::report::{write_junit, JunitEntry, JunitOutcome};
use flannel_lab::runner::run_trial;
use flannel_lab::suite;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    install_signal_cleanup();
    let args = Arguments::from_args();
    let root = suite::repo_root();
    let unavailable = suite::lab_unavailable();
    // FLANNEL_LAB_IMPL picks the implementation (default: the reference agent's profile).
    // Listing must be cheap and must not build anything.
    let imp = match flannel_lab::agents::Implementation::from_env(!args.list && unavailable.is_none()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("lab: {e}");
            std::process::exit(101);
        }
    };
    let specs = match suite::trials(&root.join("cases"), &root.join("topologies"), &imp) {
        Ok(s) => s,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            std::process::exit(101);
        }
    };
    // Mutants: the case must fail on them. Only with the reference implementation (mutants
    // wrap it), and not when another implementation is under test.
    let mutants = if imp.name() == "reference" {
        match suite::mutant_trials(&root.join("cases"), &root.join("topologies"), !args.list && unavailable.is_none()) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("lab: {e}");
                std::process::exit(101);
            }
        }
    } else {
        Vec::new()
    };
    let expect_fail: std::collections::BTreeSet<String> = mutants.iter().map(|m| m.name()).collect();
    let specs: Vec<_> = specs.into_iter().chain(mutants).collect();
    if let Some(reason) = &unavailable {
        eprintln!("lab: {} lab trials will be ignored: {reason}", specs.len());
    }
    let results: Arc<Mutex<Vec<JunitEntry>>> = Arc::default();
    let workdir = suite::workdir();
    let trials: Vec<Trial> = specs
        .into_iter()
        .map(|spec| {
            let name = spec.name();
            let (unavailable, results, workdir, expect_fail) = (unavailable.clone(), results.clone(), workdir.clone(), expect_fail.clone());
            Trial::ignorable_test(name.clone(), move || {
                if let Some(reason) = unavailable {
                    results.lock().unwrap().push(JunitEntry {
                        name,
                        elapsed: Default::default(),
                        outcome: JunitOutcome::Skipped { reason: reason.clone() },
                    });
                    return Ok(Completion::ignored_with(reason));
                }
                let t = Instant::now();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Failed::from(format!("tokio runtime: {e}")))?;
                let mut report = rt.block_on(run_trial(&spec, &workdir));
                rt.shutdown_background();
                if let Some(reason) = report.ignored.take() {
                    results.lock().unwrap().push(JunitEntry {
                        name,
                        elapsed: t.elapsed(),
                        outcome: JunitOutcome::Skipped { reason: reason.clone() },
                    });
                    return Ok(Completion::ignored_with(reason));
                }
                if expect_fail.contains(&name) {
                    // a mutant: the case passing would mean it cannot catch the bug
                    report = flannel_lab::runner::invert_for_mutant(report);
                }
                let log = report.log.join("\n");
                println!("{log}");
                let outcome = match &report.failure {
                    None => JunitOutcome::Passed { log: log.clone() },
                    Some(f) => {
                        let artifacts = report.artifacts.as_ref().map(|a| format!("\nartifacts: {}", a.display())).unwrap_or_default();
                        // Jenkins/GitLab convention for attaching a file or directory
                        let attach = report.artifacts.as_ref().map(|a| format!("\n[[ATTACHMENT|{}]]", a.display())).unwrap_or_default();
                        JunitOutcome::Failed { message: format!("{f}{artifacts}"), log: format!("{log}{attach}") }
                    }
                };
                let failed = match &outcome {
                    JunitOutcome::Failed { message, .. } => Some(message.clone()),
                    _ => None,
                };
                results.lock().unwrap().push(JunitEntry { name, elapsed: t.elapsed(), outcome });
                match failed {
                    None => Ok(Completion::Completed),
                    Some(m) => Err(Failed::from(m)),
                }
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(path) = std::env::var_os("FLANNEL_LAB_JUNIT") {
        let entries = std::mem::take(&mut *results.lock().unwrap());
        if let Err(e) = write_junit(std::path::Path::new(&path), "flannel-lab", &entries) {
            eprintln!("lab: write JUnit to {}: {e}", std::path::Path::new(&path).display());
        }
    }
    conclusion.exit();
}
