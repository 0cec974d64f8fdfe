//! `bench` (throughput), `scale` (cost curves) and `gc` (what killed runs left).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::ImplArg;
use crate::agents::Implementation;
use crate::contract::Backend;
use crate::error::Result;
use crate::run::{run_trial, TrialSpec};
use crate::steps::Case;
use crate::suite;

/// Remove namespaces, processes and containers left by killed runs (live runs are kept)
#[derive(Args, Debug)]
pub struct GcArgs {}

/// Pod-to-pod TCP throughput and small-packet rate per backend against the bare underlay
///
/// Build with --release for figures worth quoting (ci/bench.sh does).
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flannel-lab bench\n  flannel-lab bench --seconds 10 --impl flanneld\n  flannel-lab bench --backend udp\n  flannel-lab bench --compare flanneld          the reference agent and flanneld, in one run"
)]
pub struct BenchArgs {
    #[command(flatten)]
    imp: ImplArg,
    /// Seconds per stream
    #[arg(long, value_name = "N")]
    seconds: Option<u64>,
    /// A second implementation, measured in the same run, with ratios
    #[arg(long, value_name = "PROFILE")]
    compare: Option<String>,
    /// Backends to measure [default: every backend]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = super::parse_backend)]
    backend: Vec<Backend>,
}

/// Cost curves: labs of growing size, every agent started at once, measured
///
/// For each implementation, backend and host count, a fresh lab is watched until every
/// host holds the contract's state for every peer. Prints a table (with ratios when
/// comparing two profiles) and a linear fit per figure, and writes scale.csv, scale.json
/// and one SVG plot per figure. Build with --release for figures at size (ci/scale.sh).
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab scale --backend vxlan --hosts 10,50,100 --repeats 3\n  \
    flannel-lab scale --compare flanneld --hosts 10,50   the reference agent and flanneld")]
pub struct ScaleArgs {
    #[command(flatten)]
    imp: ImplArg,
    /// Backends to measure
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = super::parse_backend, default_value = "vxlan,host-gw,udp")]
    backend: Vec<Backend>,
    /// Host counts
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(2..), default_value = "10,50,100,250,500,1000")]
    hosts: Vec<u32>,
    /// Labs per point
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), default_value_t = 3)]
    repeats: u32,
    /// A second profile, measured in the same run, shown as ratios
    #[arg(long, value_name = "PROFILE")]
    compare: Option<String>,
    /// Output directory [default: target/scale]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Topology name or file
    #[arg(long, value_name = "TOPOLOGY", default_value = "flat-large")]
    topology: String,
    /// The net-conf's Network
    #[arg(long, value_name = "CIDR", default_value = "10.128.0.0/12")]
    network: String,
    /// Deadline per point
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration, default_value = "60s")]
    within: Duration,
}

pub fn bench(a: BenchArgs) -> Result<ExitCode> {
    super::need_lab()?;
    let root = crate::input::repo_root();
    let mut case = Case::load(&root.join("harness/bench/throughput.yaml"), &root.join("topologies")).map_err(|e| e.to_string())?;
    if let Some(secs) = a.seconds {
        for step in &mut case.steps {
            if let crate::steps::Step::MeasureThroughput(m) = step {
                m.seconds = secs;
            }
        }
    }
    let mut imps = vec![a.imp.load(true)?];
    if let Some(other) = &a.compare {
        imps.push(Implementation::load(other, true)?);
    }
    let rt = super::runtime()?;
    let mut ok = true;
    let backends: Vec<Backend> = case.backends.iter().copied().filter(|b| a.backend.is_empty() || a.backend.contains(b)).collect();
    for backend in backends {
        // (implementation, pod-to-pod Gbit/s, delivered kpps)
        let mut figures: Vec<(String, f64, f64)> = Vec::new();
        for imp in imps.iter().filter(|i| i.profile.backends.contains(&backend)) {
            let spec = TrialSpec { case: case.clone(), backend, imp: imp.clone(), verdict: crate::run::Verdict::Pass };
            let r = rt.block_on(run_trial(&spec, &suite::workdir()));
            match &r.failure {
                None => {
                    let lines: Vec<&str> =
                        r.log.iter().map(|l| l.trim()).filter(|l| l.starts_with("throughput ") || l.starts_with("packets ")).collect();
                    for l in &lines {
                        println!("{}: {l}", imp.name());
                    }
                    let number = |prefix: &str, after: &str| -> Option<f64> {
                        let l = lines.iter().find(|l| l.starts_with(prefix))?;
                        l.split(after).nth(1)?.split_whitespace().next()?.parse().ok()
                    };
                    if let (Some(g), Some(k)) = (number("throughput", "pod-to-pod "), number("packets", "pod-to-pod ")) {
                        figures.push((imp.name().to_string(), g, k));
                    }
                }
                Some(f) => {
                    ok = false;
                    println!("{}: {backend}: {f}", imp.name());
                }
            }
        }
        if let [(a, ga, ka), (b, gb, kb)] = figures.as_slice() {
            println!("{backend}: {b} against {a}: throughput {:.3}×, small packets {:.3}×", gb / ga, kb / ka);
        }
    }
    rt.shutdown_background();
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn scale(a: ScaleArgs) -> Result<ExitCode> {
    super::need_lab()?;
    let mut imps = vec![a.imp.load(true)?];
    if let Some(other) = &a.compare {
        imps.push(Implementation::load(other, true)?);
    }
    let plan = crate::scale::Plan {
        topology: super::topology_path(&a.topology),
        backends: a.backend,
        sizes: a.hosts,
        repeats: a.repeats,
        imps,
        network: a.network,
        within: a.within,
    };
    let out = a.out.unwrap_or_else(|| crate::input::repo_root().join("target/scale"));
    let rt = super::runtime()?;
    let points = rt.block_on(crate::scale::run(&plan, &suite::workdir(), &out));
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

pub fn gc() -> Result<ExitCode> {
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
