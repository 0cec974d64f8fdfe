//! The explorer under `cargo test`: a short fixed-seed exploration against the reference
//! agent must find nothing, and against two of the lab's mutants must find each one and
//! shrink it to a few operations, written as a case that loads. Without root the trials
//! are ignored with the reason (failed with `FLANNEL_LAB_REQUIRE=1`, as in CI).

use std::path::Path;
use std::time::Duration;

use flannel_lab::agents::Implementation;
use flannel_lab::contract::{Backend, Check};
use flannel_lab::explore::schedule::{generate, OpKind, DEFAULT_WEIGHTS};
use flannel_lab::explore::{self, Options, Space, Summary};
use flannel_lab::lab::install_signal_cleanup;
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    install_signal_cleanup();
    flannel_lab::run::log::init();
    let mut args = Arguments::from_args();
    // each trial runs its schedules side by side already
    args.test_threads = Some(1);
    let unavailable = flannel_lab::suite::lab_unavailable();
    let require = std::env::var("FLANNEL_LAB_REQUIRE").is_ok_and(|v| v == "1");
    let trials = vec![
        trial("explore::reference_finds_nothing", &unavailable, require, reference_finds_nothing),
        trial("explore::finds_and_shrinks_crash_on_etcd_loss", &unavailable, require, || {
            // the mutant crashes after two failed health checks of 1 s each: an outage it
            // notices every time (a 1 s restart or a 2 s pause it notices only sometimes)
            finds_and_shrinks("crash-on-etcd-loss", Backend::Vxlan, &[Check::AgentExit], |k| {
                matches!(k, OpKind::RestartEtcd { down_ms: 2000.. } | OpKind::PauseEtcd { ms: 4000.. })
            })
        }),
        trial("explore::finds_and_shrinks_keep_stale_fdb", &unavailable, require, || {
            // a departed peer's FDB entry kept: seen by the kernel checks, or by the canary
            // round (the withdrawn canary's entry stays)
            finds_and_shrinks("keep-stale-fdb", Backend::Vxlan, &[Check::Fdb, Check::Canary], |k| {
                matches!(k, OpKind::RemoveHost { .. } | OpKind::RestartAgent { new_vtep_mac: true, .. })
            })
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn trial(name: &str, unavailable: &Option<String>, require: bool, f: fn() -> Result<(), Failed>) -> Trial {
    match (unavailable, require) {
        (Some(why), true) => {
            let why = why.clone();
            Trial::test(name, move || Err(format!("the lab cannot run here (FLANNEL_LAB_REQUIRE=1): {why}").into()))
        }
        (Some(why), false) => Trial::test(name, || Ok(())).with_ignored_flag(true).with_kind(why.clone()),
        (None, _) => Trial::test(name, f),
    }
}

fn space(backends: Vec<Backend>, ops: (u32, u32)) -> Space {
    let root = flannel_lab::input::repo_root();
    let names = vec!["flat".to_string(), "two-segments".to_string()];
    Space {
        topologies: explore::topologies(&root.join("topologies"), &names, 8).expect("the repository's topologies load"),
        hosts: (3, 4),
        backends,
        ops,
        weights: DEFAULT_WEIGHTS,
        settle_s: 20,
    }
}

fn options(profile: &str, space: Space, seed: u64, schedules: u32, out: &Path) -> Options {
    Options {
        imp: Implementation::load(profile, true).expect("the profile loads"),
        space,
        seed,
        budget: Duration::from_secs(600),
        max_schedules: Some(schedules),
        jobs: 3,
        out: out.to_path_buf(),
        shrink_runs: 24,
        reruns: 2,
        workdir: flannel_lab::suite::workdir(),
    }
}

fn run(o: &Options) -> Result<Summary, Failed> {
    explore::explore(o, &mut |line| eprintln!("{line}")).map_err(|e| Failed::from(format!("explore: {e}")))
}

fn out_dir(name: &str) -> std::path::PathBuf {
    let d = flannel_lab::suite::workdir().join(format!("explore-test-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Three schedules of six operations on every backend: the reference agent passes them.
fn reference_finds_nothing() -> Result<(), Failed> {
    let o = options("reference", space(Backend::ALL.to_vec(), (6, 6)), 1, 3, &out_dir("reference"));
    let s = run(&o)?;
    eprint!("{}", explore::table(&s));
    if !s.found.is_empty() || !s.lab_errors.is_empty() || s.schedules != 3 || s.passed != 3 {
        return Err(format!("the reference agent should pass every schedule:\n{}", explore::table(&s)).into());
    }
    Ok(())
}

/// The first seed whose first schedule holds an operation that triggers the mutant's bug
/// (the seed is found by the generator alone, before anything runs), then one schedule:
/// the mutant must fail with one of `checks`, shrunk to at most 3 operations on at most 3 hosts,
/// failing the same way on every rerun, written as a case the lab loads.
fn finds_and_shrinks(mutant: &str, backend: Backend, checks: &[Check], triggers: fn(&OpKind) -> bool) -> Result<(), Failed> {
    let sp = space(vec![backend], (5, 6));
    let seed = (1..1000u64).find(|s| generate(&sp, *s, 0).ops.iter().any(|o| triggers(&o.kind))).expect("a seed");
    let root = flannel_lab::input::repo_root();
    let profile = root.join(format!("harness/tests/mutants/{mutant}.yaml"));
    let out = out_dir(mutant);
    let o = options(&profile.display().to_string(), sp, seed, 1, &out);
    let s = run(&o)?;
    eprint!("{}", explore::table(&s));
    let [f] = s.found.as_slice() else {
        return Err(format!("expected one failure from {mutant} (seed {seed}):\n{}", explore::table(&s)).into());
    };
    let Some(check) = f.shrunk.outcome.check().filter(|c| checks.contains(c)) else {
        return Err(format!("{mutant}: expected a finding of {checks:?}, got {}", f.shrunk.outcome.label()).into());
    };
    let (ops, hosts) = (f.shrunk.schedule.ops.len(), f.shrunk.schedule.host_names.len());
    if ops > 3 || hosts > 3 {
        return Err(format!("{mutant}: shrunk to {ops} operations on {hosts} hosts only:\n{}", f.shrunk.history.join("\n")).into());
    }
    if f.reproduced != f.reruns {
        return Err(format!("{mutant}: the shrunk case failed the same way in {} of {} reruns", f.reproduced, f.reruns).into());
    }
    let case = flannel_lab::steps::Case::load(&f.case_file, &root.join("topologies"))
        .map_err(|e| Failed::from(format!("the written case does not load: {e}")))?;
    if !case.description.contains(&format!("--seed {seed}")) || !case.description.contains(check.name()) {
        return Err(format!("the case does not say where it came from:\n{}", case.description).into());
    }
    Ok(())
}
