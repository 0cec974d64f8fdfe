//! The lab test target: one trial per case file × backend × implementation, named
//! `CASE::BACKEND::IMPLEMENTATION`, plus control cases on the reference agent and mutant
//! trials (a case that must fail with a named finding). Runs under `cargo test` and nextest
//! (`--list`, `--exact`, `--ignored` work). Without root the lab trials are reported as
//! ignored with the reason; with `FLANNEL_LAB_REQUIRE=1` (CI) they fail instead, as does a
//! trial that would be ignored for a missing Docker engine. Where the lab cannot run at all
//! (not root), trials are listed as ignored, so nextest reports them as skipped, never as
//! passed. A known failure from the profile that passes now fails its trial unless
//! `FLANNEL_LAB_ALLOW_FIXED=1`. `FLANNEL_LAB_JUNIT=path.xml` writes JUnit under `cargo test`;
//! under nextest (one process per trial) each trial writes `path-TRIAL.xml` instead, and
//! nextest's own `--profile ci` JUnit is the one to use.

use std::sync::{Arc, Mutex};

use flannel_lab::lab::install_signal_cleanup;
use flannel_lab::report::{junit_entry, write_junit, JunitEntry, JunitOutcome};
use flannel_lab::run::run_trial;
use flannel_lab::suite;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    flannel_lab::lab::proc::prioritise_harness();
    install_signal_cleanup();
    flannel_lab::run::log::init();
    let mut args = Arguments::from_args();
    // A trial spends most of its time waiting on kernel and agent state, not computing:
    // run four per core unless --test-threads or RUST_TEST_THREADS says otherwise.
    if args.test_threads.is_none() {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        args.test_threads = Some(std::env::var("RUST_TEST_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(4 * cores));
    }
    let root = flannel_lab::input::repo_root();
    let unavailable = suite::lab_unavailable();
    let require = std::env::var("FLANNEL_LAB_REQUIRE").is_ok_and(|v| v == "1");
    let allow_fixed = std::env::var("FLANNEL_LAB_ALLOW_FIXED").is_ok_and(|v| v == "1");
    // FLANNEL_LAB_IMPL picks the implementation (default: the reference agent's profile).
    // Listing must be cheap and must not build anything.
    let build = !args.list && unavailable.is_none();
    let imp = match flannel_lab::agents::Implementation::from_env(build) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("lab: {e}");
            std::process::exit(101);
        }
    };
    let specs = match suite::trials(&root.join("cases"), &root.join("topologies"), &imp, build) {
        Ok(s) => s,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            std::process::exit(101);
        }
    };
    if let Some(reason) = &unavailable {
        let what = if require { "fail (FLANNEL_LAB_REQUIRE=1)" } else { "be ignored" };
        eprintln!("lab: {} lab trials will {what}: {reason}", specs.len());
    }
    let results: Arc<Mutex<Vec<JunitEntry>>> = Arc::default();
    // trials take job slots by size, as under `flannel-lab run`: a 72-host lab runs with
    // few others beside it
    let threads = args.test_threads.unwrap_or(1);
    let slots = Arc::new(suite::Slots::new(threads));
    let workdir = suite::workdir();
    let trials: Vec<Trial> = specs
        .into_iter()
        .map(|spec| {
            let name = spec.name();
            let (unavailable, results, workdir, slots) = (unavailable.clone(), results.clone(), workdir.clone(), slots.clone());
            let weight = suite::weight(&spec, threads);
            // a trial that cannot run here is listed as ignored (unless it must fail)
            let ignored_when_listed = unavailable.is_some() && !require;
            Trial::ignorable_test(name.clone(), move || {
                let skip = |reason: String| -> Result<Completion, Failed> {
                    results.lock().unwrap().push(JunitEntry {
                        name: name.clone(),
                        elapsed: Default::default(),
                        outcome: JunitOutcome::Skipped { reason: reason.clone() },
                    });
                    if require {
                        Err(Failed::from(format!("cannot run here, and FLANNEL_LAB_REQUIRE=1 forbids ignoring it: {reason}")))
                    } else {
                        Ok(Completion::ignored_with(reason))
                    }
                };
                if let Some(reason) = unavailable {
                    return skip(reason);
                }
                let _slots = slots.take(weight);
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Failed::from(format!("tokio runtime: {e}")))?;
                let mut report = rt.block_on(run_trial(&spec, &workdir));
                rt.shutdown_background();
                report.allow_fixed = allow_fixed;
                if let Some(reason) = report.ignored.clone() {
                    return skip(reason);
                }
                println!("{}", report.log.join("\n"));
                let entry = junit_entry(&report);
                let failed = match &entry.outcome {
                    JunitOutcome::Failed { message, .. } => Some(message.clone()),
                    _ => None,
                };
                results.lock().unwrap().push(entry);
                if let Some(k) = report.known.as_ref().filter(|_| report.is_known_failure() || report.is_fixed()) {
                    let word = if report.is_fixed() { "FIXED (remove it from the profile)" } else { "KNOWN FAILURE (not counted)" };
                    println!("{word}: {}{}", k.reason, k.link.as_deref().map(|l| format!(", {l}")).unwrap_or_default());
                }
                match failed {
                    _ if report.is_known_failure() => Ok(Completion::Completed),
                    None if report.fails_run() => Err(Failed::from(format!(
                        "the profile lists this trial as a known failure, and it passes now: fixed? remove it from the profile (FLANNEL_LAB_ALLOW_FIXED=1 accepts it){}",
                        report.known.as_ref().map(|k| format!(": {}", k.describe())).unwrap_or_default()
                    ))),
                    None => Ok(Completion::Completed),
                    Some(m) if report.lab_error => Err(Failed::from(format!("LAB ERROR (never a pass): {m}"))),
                    Some(m) => Err(Failed::from(m)),
                }
            })
            .with_ignored_flag(ignored_when_listed)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(path) = std::env::var_os("FLANNEL_LAB_JUNIT") {
        let entries = std::mem::take(&mut *results.lock().unwrap());
        let path = junit_path(std::path::Path::new(&path), &entries);
        if let Err(e) = write_junit(&path, "flannel-lab", &entries) {
            eprintln!("lab: write JUnit to {}: {e}", path.display());
        }
    }
    conclusion.exit();
}

/// Where this process writes its JUnit: the path given, or under nextest (a process per
/// trial, which would overwrite one another's file) `STEM-TRIAL.xml` beside it.
fn junit_path(path: &std::path::Path, entries: &[JunitEntry]) -> std::path::PathBuf {
    match (std::env::var_os("NEXTEST"), entries) {
        (Some(_), [one]) => {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "junit".into());
            let trial: String = one.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            path.with_file_name(format!("{stem}-{trial}.xml"))
        }
        _ => path.to_path_buf(),
    }
}
