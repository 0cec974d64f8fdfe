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
  scale [--backend vxlan,host-gw,udp] [--hosts 10,50,100,250,500,1000] [--repeats 3]
        [--impl PROFILE] [--compare PROFILE] [--out DIR] [--topology flat-large]
        [--network 10.128.0.0/12] [--within 60s]
        cost curves: for each implementation, backend and host count, a fresh lab with
        every agent started at once, watched until every host holds the contract's state
        for every peer; prints a table (with ratios when comparing two profiles) and a
        linear fit per figure, and writes scale.csv, scale.json and one SVG plot per
        figure to DIR (default target/scale). Build with --release for figures at size.
  up TOPOLOGY [--hosts N] [--backend vxlan] [--netconf JSON|FILE] [--impl PROFILE]
        build a lab, start etcd and one agent per host, print how to reach it,
        and keep it until Ctrl-C (then remove everything). The net-conf is --netconf
        (with --backend as its Backend.Type), else 10.244.0.0/16 (10.128.0.0/12 past
        250 hosts) with vxlan

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
        "scale" => cmd_scale(rest),
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

fn cmd_scale(args: &[String]) -> Result<ExitCode> {
    let known = ["backend", "hosts", "repeats", "impl", "compare", "out", "topology", "network", "within"];
    let (opts, pos) = options(args, &known)?;
    if let Some(p) = pos.first() {
        return Err(lab_err!("unexpected argument `{p}`"));
    }
    let list = |k: &str, default: &str| -> Vec<String> {
        opt(&opts, k).unwrap_or(default).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    };
    let backends = list("backend", "vxlan,host-gw,udp")
        .iter()
        .map(|b| Backend::parse(b).ok_or_else(|| lab_err!("unknown backend `{b}` (vxlan, host-gw, udp)")))
        .collect::<Result<Vec<_>>>()?;
    let sizes = list("hosts", "10,50,100,250,500,1000")
        .iter()
        .map(|h| h.parse::<u32>().ok().filter(|n| *n >= 2).ok_or_else(|| lab_err!("--hosts `{h}` is not a host count of 2 or more")))
        .collect::<Result<Vec<_>>>()?;
    let repeats = match opt(&opts, "repeats") {
        None => 3,
        Some(r) => r.parse::<u32>().ok().filter(|r| *r >= 1).ok_or_else(|| lab_err!("--repeats `{r}` is not a positive number"))?,
    };
    let within = match opt(&opts, "within") {
        None => Duration::from_secs(60),
        Some(w) => crate::input::case::parse_duration(w).ok_or_else(|| lab_err!("--within `{w}` is not a duration like 60s"))?,
    };
    let topo = opt(&opts, "topology").unwrap_or("flat-large");
    let topology = if topo.ends_with(".yaml") {
        PathBuf::from(topo)
    } else {
        crate::input::repo_root().join("topologies").join(format!("{topo}.yaml"))
    };
    if let Some(why) = suite::lab_unavailable() {
        return Err(why.into());
    }
    // without --impl, the reference agent with its periodic iptables checks spaced out
    // (harness/profiles/reference-scale.yaml says why)
    let mut imps = vec![match (opt(&opts, "impl"), std::env::var("FLANNEL_LAB_IMPL")) {
        (None, Err(_)) => Implementation::load("reference-scale", true)?,
        _ => implementation(&opts, true)?,
    }];
    if let Some(other) = opt(&opts, "compare") {
        imps.push(Implementation::load(other, true)?);
    }
    let plan = crate::scale::Plan {
        topology,
        backends,
        sizes,
        repeats,
        imps,
        network: opt(&opts, "network").unwrap_or("10.128.0.0/12").to_string(),
        within,
    };
    let out = opt(&opts, "out").map(PathBuf::from).unwrap_or_else(|| crate::input::repo_root().join("target/scale"));
    let rt = runtime()?;
    let points = rt.block_on(crate::scale::run(&plan, &suite::workdir()));
    rt.shutdown_background();
    let points = points?;
    print!("{}", crate::scale::table(&points));
    print!("{}", crate::scale::linearity(&points));
    for f in crate::scale::write_files(&points, &out)? {
        println!("wrote {}", f.display());
    }
    // a point that did not converge, or whose figures the lab could not read, fails the run
    Ok(if points.iter().all(|p| p.converge_s.is_some() && !p.note.contains("lab error")) { ExitCode::SUCCESS } else { ExitCode::from(1) })
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

/// The net-conf `up` writes: `--netconf` (JSON, or a file holding it) with `--backend`
/// filled in; else vxlan (or `--backend`) on 10.244.0.0/16, widened to 10.128.0.0/12 when
/// a /16 of /24 subnets cannot hold every host.
fn up_netconf(given: Option<&str>, backend: Option<Backend>, hosts: usize) -> std::result::Result<String, String> {
    let mut v: serde_json::Value = match given {
        Some(text) => {
            let text = if text.trim_start().starts_with('{') {
                text.to_string()
            } else {
                std::fs::read_to_string(text).map_err(|e| format!("--netconf {text}: neither JSON nor a readable file: {e}"))?
            };
            serde_json::from_str(&text).map_err(|e| format!("--netconf is not JSON: {e}"))?
        }
        None => {
            let network = if hosts <= 250 { "10.244.0.0/16" } else { "10.128.0.0/12" };
            serde_json::json!({"Network": network})
        }
    };
    let obj = v.as_object_mut().ok_or("--netconf must be a JSON object")?;
    match (backend, obj.contains_key("Backend")) {
        (Some(b), true) if obj["Backend"].is_object() => {
            obj["Backend"]["Type"] = serde_json::json!(b.to_string());
        }
        (Some(b), _) => {
            obj.insert("Backend".into(), serde_json::json!({"Type": b.to_string()}));
        }
        (None, false) => {
            obj.insert("Backend".into(), serde_json::json!({"Type": "vxlan"}));
        }
        (None, true) => {}
    }
    let text = v.to_string();
    crate::contract::NetConf::from_json(&v).map_err(|e| format!("net-conf {text}: {e}"))?;
    Ok(text)
}

fn cmd_up(args: &[String]) -> Result<ExitCode> {
    let (opts, pos) = options(args, &["hosts", "backend", "impl", "netconf"])?;
    let topo = pos.first().ok_or("up needs a topology file or name")?;
    let path = if topo.ends_with(".yaml") {
        PathBuf::from(topo)
    } else {
        crate::input::repo_root().join("topologies").join(format!("{topo}.yaml"))
    };
    let hosts = opt(&opts, "hosts").map(|h| h.parse::<u32>().map_err(|_| lab_err!("--hosts `{h}` is not a number"))).transpose()?;
    let backend = match opt(&opts, "backend") {
        None => None,
        Some(b) => Some(Backend::parse(b).ok_or_else(|| format!("unknown backend `{b}`"))?),
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
        let conf = up_netconf(opt(&opts, "netconf"), backend, lab.hosts.len())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_netconf_sizes_the_network_and_keeps_what_is_given() {
        let small: serde_json::Value = serde_json::from_str(&up_netconf(None, None, 250).unwrap()).unwrap();
        assert_eq!(small, serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}));
        let large: serde_json::Value = serde_json::from_str(&up_netconf(None, Some(Backend::HostGw), 1000).unwrap()).unwrap();
        assert_eq!(large, serde_json::json!({"Network": "10.128.0.0/12", "Backend": {"Type": "host-gw"}}));
        let given = r#"{"Network":"10.0.0.0/8","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":7}}"#;
        let v: serde_json::Value = serde_json::from_str(&up_netconf(Some(given), Some(Backend::Udp), 3).unwrap()).unwrap();
        assert_eq!(v["Backend"], serde_json::json!({"Type": "udp", "VNI": 7}));
        assert_eq!(v["SubnetLen"], 26);
        assert!(up_netconf(Some(r#"{"Network":"bogus"}"#), None, 3).unwrap_err().contains("net-conf"));
        assert!(up_netconf(Some("/no/such/file"), None, 3).unwrap_err().contains("neither JSON nor a readable file"));
    }
}
