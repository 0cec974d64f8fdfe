//! The `flannel-lab` command line: run the conformance suite, validate input files, clean
//! up after killed runs, or hold a lab open for hands-on debugging.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::agents::{Agent, Implementation};
use crate::contract::{Backend, DEFAULT_PREFIX};
use crate::error::{Error, Result};
use crate::input::topology::Topology;
use crate::lab::Lab;
use crate::lab_err;
use crate::report::{self, JunitEntry};
use crate::run::{run_trial, TrialSpec};
use crate::steps::Case;
use crate::store::Store;
use crate::suite;

const USAGE: &str = "\
usage: flannel-lab <command> [options]

commands:
  run [--impl PROFILE] [--filter TEXT] [--junit FILE] [--markdown FILE] [--cases DIR]
      [--start-spread 2s]
        run every case (or those whose trial name contains TEXT) against an
        implementation (a profile name under harness/profiles/ or a profile file;
        default: FLANNEL_LAB_IMPL, else `reference`) and print a per-trial table;
        exit 1 if any trial fails
  list [--impl PROFILE]
        print the trial names
  check FILE...
        validate topology, case and profile files (errors carry file:line:col)
  gc    remove namespaces and processes left by killed runs (live runs are kept)
  bench [--seconds N]
        pod-to-pod TCP throughput per backend against the bare underlay (build with
        --release for figures worth quoting: ci/bench.sh)
  up TOPOLOGY [--hosts N] [--backend vxlan]
        build a lab, start etcd and one agent per host, print how to reach it,
        and keep it until Ctrl-C (then remove everything)

environment: FLANNEL_LAB_WORKDIR (work files and artifacts, default /tmp/flannel-lab),
             FLANNEL_LAB_AGENT (reference agent binary), RUST_LOG (harness log level)
";

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "run" => cmd_run(rest),
        "list" => cmd_list(rest),
        "check" => cmd_check(rest),
        "gc" => cmd_gc(),
        "up" => cmd_up(rest),
        "bench" => cmd_bench(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(lab_err!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flannel-lab: {e}");
            ExitCode::from(2)
        }
    }
}

type Opts = Vec<(String, String)>;

/// `--name value` / `--name=value` options; returns (options, positionals).
fn options(args: &[String], known: &[&str]) -> Result<(Opts, Vec<String>)> {
    let (mut opts, mut pos) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(body) = a.strip_prefix("--") {
            let (k, v) = match body.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (body.to_string(), it.next().cloned().ok_or_else(|| format!("option --{body} needs a value"))?),
            };
            if !known.contains(&k.as_str()) {
                return Err(lab_err!("unknown option --{k} (known: {})", known.join(", ")));
            }
            opts.push((k, v));
        } else {
            pos.push(a.clone());
        }
    }
    Ok((opts, pos))
}

fn opt<'a>(opts: &'a [(String, String)], k: &str) -> Option<&'a str> {
    opts.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn load_trials(cases: &Path, imp: &Implementation, build_reference: bool) -> Result<Vec<TrialSpec>> {
    let root = crate::input::repo_root();
    suite::trials(cases, &root.join("topologies"), imp, build_reference).map_err(|errs| Error::Input(errs.join("\n")))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| lab_err!("tokio runtime: {e}"))
}

fn cmd_run(args: &[String]) -> Result<ExitCode> {
    let (opts, pos) = options(args, &["filter", "junit", "markdown", "cases", "impl", "start-spread"])?;
    if let Some(p) = pos.first() {
        return Err(lab_err!("unexpected argument `{p}`"));
    }
    if let Some(why) = suite::lab_unavailable() {
        return Err(why.into());
    }
    let mut imp = implementation(&opts, true)?;
    if let Some(spread) = opt(&opts, "start-spread") {
        imp.set_start_spread(spread)?;
    }
    let cases = opt(&opts, "cases").map(PathBuf::from).unwrap_or_else(|| crate::input::repo_root().join("cases"));
    let mut trials = load_trials(&cases, &imp, true)?;
    if let Some(f) = opt(&opts, "filter") {
        trials.retain(|t| t.name().contains(f));
    }
    if trials.is_empty() {
        return Err("no trials match".into());
    }
    let rt = runtime()?;
    let workdir = suite::workdir();
    let mut reports = Vec::new();
    for t in &trials {
        eprintln!("running {} ...", t.name());
        let r = rt.block_on(run_trial(t, &workdir));
        eprintln!(
            "  {} in {:.1} s{}",
            report::result_word(&r),
            r.elapsed.as_secs_f64(),
            r.failure.as_ref().map(|f| format!(": {f}")).unwrap_or_default()
        );
        reports.push(r);
    }
    rt.shutdown_background();
    print!("{}", report::table(&reports));
    if let Some(path) = opt(&opts, "markdown") {
        std::fs::write(path, report::markdown(&reports)).map_err(|e| lab_err!("write Markdown to {path}: {e}"))?;
    }
    if let Some(path) = opt(&opts, "junit") {
        let entries: Vec<JunitEntry> = reports.iter().map(report::junit_entry).collect();
        report::write_junit(Path::new(path), "flannel-lab", &entries).map_err(|e| lab_err!("write JUnit to {path}: {e}"))?;
    }
    Ok(if reports.iter().any(|r| r.fails_run()) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn cmd_bench(args: &[String]) -> Result<ExitCode> {
    let (opts, pos) = options(args, &["seconds", "impl"])?;
    if let Some(p) = pos.first() {
        return Err(lab_err!("unexpected argument `{p}`"));
    }
    if let Some(why) = suite::lab_unavailable() {
        return Err(why.into());
    }
    let root = crate::input::repo_root();
    let mut case = Case::load(&root.join("harness/bench/throughput.yaml"), &root.join("topologies")).map_err(|e| e.to_string())?;
    if let Some(s) = opt(&opts, "seconds") {
        let secs: u64 = s.parse().map_err(|_| lab_err!("--seconds `{s}` is not a number"))?;
        for step in &mut case.steps {
            if let crate::steps::Step::MeasureThroughput(m) = step {
                m.seconds = secs;
            }
        }
    }
    let imp = implementation(&opts, true)?;
    let rt = runtime()?;
    let mut ok = true;
    for backend in case.backends.clone() {
        let spec = TrialSpec { case: case.clone(), backend, imp: imp.clone(), verdict: crate::run::Verdict::Pass };
        let r = rt.block_on(run_trial(&spec, &suite::workdir()));
        match &r.failure {
            None => r.log.iter().filter(|l| l.trim_start().starts_with("throughput ")).for_each(|l| println!("{}", l.trim())),
            Some(f) => {
                ok = false;
                println!("{backend}: {f}");
            }
        }
    }
    rt.shutdown_background();
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `--impl NAME|PATH`, else `FLANNEL_LAB_IMPL`, else the reference agent's profile.
fn implementation(opts: &[(String, String)], build_reference: bool) -> Result<Implementation> {
    match opt(opts, "impl") {
        Some(p) => Implementation::load(p, build_reference),
        None => Implementation::from_env(build_reference),
    }
}

fn cmd_list(args: &[String]) -> Result<ExitCode> {
    let (opts, _) = options(args, &["impl"])?;
    let imp = implementation(&opts, false)?;
    for t in load_trials(&crate::input::repo_root().join("cases"), &imp, false)? {
        println!("{}", t.name());
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(files: &[String]) -> Result<ExitCode> {
    if files.is_empty() {
        return Err("check needs at least one file".into());
    }
    let topologies = crate::input::repo_root().join("topologies");
    let mut bad = 0;
    for f in files {
        let path = Path::new(f);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let has = |k: &str| text.lines().any(|l| l.starts_with(k));
        let result = if has("steps:") {
            Case::load(path, &topologies).map(|_| "case")
        } else if has("command:") {
            crate::input::profile::Profile::load(path).map(|_| "profile")
        } else {
            Topology::load(path).map(|_| "topology")
        };
        match result {
            Ok(kind) => println!("{f}: valid {kind}"),
            Err(e) => {
                bad += 1;
                println!("{e}");
            }
        }
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn cmd_gc() -> Result<ExitCode> {
    let sweep = crate::lab::gc::sweep_all();
    for id in &sweep.skipped_live {
        println!("run {id}: still running, left alone");
    }
    println!(
        "removed {} run(s): {} namespace(s), {} process(es), {} container(s){}",
        sweep.runs.len(),
        sweep.namespaces.len(),
        sweep.killed.len(),
        sweep.containers.len(),
        if sweep.namespaces.is_empty() { String::new() } else { format!(" [{}]", sweep.namespaces.join(" ")) }
    );
    for e in &sweep.errors {
        eprintln!("gc: {e}");
    }
    Ok(if sweep.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn cmd_up(args: &[String]) -> Result<ExitCode> {
    let (opts, pos) = options(args, &["hosts", "backend", "impl"])?;
    let topo = pos.first().ok_or("up needs a topology file or name")?;
    let path = if topo.ends_with(".yaml") {
        PathBuf::from(topo)
    } else {
        crate::input::repo_root().join("topologies").join(format!("{topo}.yaml"))
    };
    let hosts = opt(&opts, "hosts").map(|h| h.parse::<u32>().map_err(|_| lab_err!("--hosts `{h}` is not a number"))).transpose()?;
    let backend = match opt(&opts, "backend") {
        None => Backend::Vxlan,
        Some(b) => Backend::parse(b).ok_or_else(|| format!("unknown backend `{b}`"))?,
    };
    let topo = Topology::load_scaled(&path, hosts).map_err(|e| e.to_string())?;
    if let Some(why) = suite::lab_unavailable() {
        return Err(why.into());
    }
    let imp = implementation(&opts, true)?;
    let rt = runtime()?;
    rt.block_on(async {
        let provider = match crate::input::case::StoreChoice::from_env() {
            Some(crate::input::case::StoreChoice::Docker) => crate::store::Provider::Docker,
            Some(crate::input::case::StoreChoice::Auto) if crate::lab::docker::engine().await.is_ok() => crate::store::Provider::Docker,
            _ => crate::store::Provider::Process,
        };
        let lab =
            Lab::build(topo, &suite::workdir(), "up", provider == crate::store::Provider::Process).await.map_err(|e| e.to_string())?;
        let store = Store::start(&lab, provider, 1, false, Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
        let conf = format!(r#"{{"Network":"10.244.0.0/16","Backend":{{"Type":"{backend}"}}}}"#);
        store.put(&format!("{DEFAULT_PREFIX}/config"), conf.clone()).await.map_err(|e| e.to_string())?;
        let launch = crate::agents::Launch {
            endpoints: store.endpoints(),
            prefix: DEFAULT_PREFIX.to_string(),
            tls: Default::default(),
            ip_masq: false,
        };
        let mut agents = Vec::new();
        for node in &lab.hosts {
            agents.push(Agent::start(&imp, node, &launch).map_err(|e| e.to_string())?);
        }
        println!("lab run {} is up; work files in {}", lab.run, lab.dir.display());
        println!("{} (namespace {}), config {conf}", store.describe(), store.netns().name());
        for node in &lab.hosts {
            println!(
                "  {:<8} {:<15} ip netns exec {} ...   log {}",
                node.name,
                node.addr,
                node.ns.name(),
                node.dir.join("agent.log").display()
            );
        }
        println!("press Ctrl-C to remove everything");
        // Ctrl-C reaches the handler of `install_signal_cleanup`, which removes this run
        // (its processes and namespaces) and exits.
        let _keep = (agents, store, lab);
        std::future::pending::<()>().await;
        Ok::<_, String>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
