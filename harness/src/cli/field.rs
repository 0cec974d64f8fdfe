//! `flannel-lab diagnose` (a real cluster's pasted state against flannel's contract,
//! offline) and `flannel-lab dump` (a held lab written in that layout): see
//! [`crate::field`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};
use crate::field;
use crate::input::names::RunId;
use crate::lab_err;

/// Judge a cluster's pasted state (etcd dump, kubectl nodes, ip/bridge output, subnet.env)
/// against flannel's contract, offline
#[derive(Args, Debug)]
#[command(after_help = "DIR holds etcd.json or etcd.txt (etcdctl get --prefix PREFIX [-w json]), or \
    nodes.json (kubectl get nodes -o json) with net-conf.json (the file, or kubectl get cm \
    kube-flannel-cfg -o json); and per node DIR/nodes/NODE/ with ip-link.txt (ip -d link show), \
    ip-route.txt, ip6-route.txt, ip-neigh.txt, bridge-fdb.txt (plain or -j JSON), subnet.env, \
    iptables-save.txt and public-ip (one line) where the node's address is not in its dumps. \
    Every file is optional; what cannot be parsed is reported file:line and the rest is judged.\n\n\
    Examples:\n  \
    flannel-lab diagnose ./cluster-dump\n  \
    flannel-lab diagnose ./cluster-dump --markdown findings.md --html findings.html\n\n\
    Exit status: 0 no findings, 1 findings, 2 nothing to judge (no net-conf).")]
pub struct DiagnoseArgs {
    /// The input directory
    dir: PathBuf,
    /// Also write the findings as Markdown
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Also write the findings as an HTML page
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// Turn a cluster's pasted state into a topology and a case that start an implementation
/// against it
#[derive(Args, Debug)]
#[command(after_help = "Reads DIR as `diagnose` does. The nodes become hosts h1, h2, … (one segment per \
    /24 of their addresses, joined by a router), the net-conf becomes the case's, and every key \
    under the prefix (leases with flannel's 24 h TTL, junk and malformed values as they were) is \
    written to the lab's etcd before the agents start; a departed node's lease keeps its subnet at a \
    spare address. The case's description says where the input came from, what was renamed or \
    moved, and what `diagnose` found.\n\n\
    Examples:\n  \
    flannel-lab import ./cluster-dump --out field-cases\n  \
    flannel-lab import ./big-cluster --max-hosts 8 --name field-1234 --out field-cases\n  \
    flannel-lab run --cases field-cases\n  \
    flannel-lab up --case field-cases/field-1234.yaml")]
pub struct ImportArgs {
    /// The input directory (the layout of `flannel-lab help diagnose`)
    dir: PathBuf,
    /// Where the case goes (its topology in OUT/topologies/)
    #[arg(long, value_name = "DIR", default_value = "imported")]
    out: PathBuf,
    /// The case's name [default: field-<input folder>]
    #[arg(long)]
    name: Option<String>,
    /// Keep at most this many nodes (the first by name; odd leases stay)
    #[arg(long, value_name = "N")]
    max_hosts: Option<usize>,
}

/// Write a held lab's state in the layout `diagnose` reads, with the real tools
#[derive(Args, Debug)]
#[command(after_help = "Runs etcdctl, ip -d link, ip route, ip -6 route, ip neigh, bridge fdb and \
    iptables-save inside the lab's namespaces and copies each host's subnet file.\n\n\
    Examples:\n  \
    flannel-lab up flat --hosts 3\n  \
    flannel-lab dump 3a9c ./dump\n  \
    flannel-lab diagnose ./dump")]
pub struct DumpArgs {
    /// The run id of a lab held by `flannel-lab up` (see `flannel-lab status`)
    run: RunId,
    /// Where to write
    dir: PathBuf,
    /// The `-j` JSON forms of ip and bridge instead of their plain output
    #[arg(long)]
    json: bool,
}

pub fn diagnose(a: DiagnoseArgs) -> Result<ExitCode> {
    if !a.dir.is_dir() {
        return Err(Error::Usage(format!("{} is not a directory (see `flannel-lab help diagnose` for its layout)", a.dir.display())));
    }
    let inp = field::load(&a.dir);
    let findings = field::diagnose(&inp);
    print!("{}", field::text(&inp, &findings));
    let write = |path: &PathBuf, text: String| std::fs::write(path, text).map_err(|e| lab_err!("write {}: {e}", path.display()));
    if let Some(p) = &a.markdown {
        write(p, field::markdown(&inp, &findings))?;
    }
    if let Some(p) = &a.html {
        write(p, field::html(&inp, &findings))?;
    }
    if inp.conf.is_none() {
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_FINDING) })
}

pub fn import(a: ImportArgs) -> Result<ExitCode> {
    if !a.dir.is_dir() {
        return Err(Error::Usage(format!("{} is not a directory (see `flannel-lab help diagnose` for its layout)", a.dir.display())));
    }
    let stem =
        a.dir.canonicalize().ok().and_then(|d| d.file_name().map(|f| f.to_string_lossy().to_string())).unwrap_or_else(|| "cluster".into());
    let name = a.name.clone().unwrap_or_else(|| {
        let clean: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        format!("field-{}", clean.trim_matches('-'))
    });
    let inp = field::load(&a.dir);
    for p in &inp.problems {
        eprintln!("flannel-lab: skipped: {p}");
    }
    let findings = field::diagnose(&inp);
    let out = field::import::import(&inp, &name, a.max_hosts, &findings).map_err(Error::Usage)?;
    std::fs::create_dir_all(a.out.join("topologies")).map_err(|e| lab_err!("create {}: {e}", a.out.join("topologies").display()))?;
    let (case, topo) = (a.out.join(format!("{name}.yaml")), a.out.join("topologies").join(format!("{name}.yaml")));
    std::fs::write(&topo, &out.topology).map_err(|e| lab_err!("write {}: {e}", topo.display()))?;
    std::fs::write(&case, &out.case).map_err(|e| lab_err!("write {}: {e}", case.display()))?;
    for n in &out.notes {
        eprintln!("flannel-lab: {n}");
    }
    eprintln!(
        "flannel-lab: wrote {} and {}; run it with `flannel-lab run --cases {}` or hold it with `flannel-lab up --case {}`",
        case.display(),
        topo.display(),
        a.out.display(),
        case.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn dump(a: DumpArgs) -> Result<ExitCode> {
    let lab = crate::lab::live::list()
        .into_iter()
        .find(|l| l.run == a.run.to_string())
        .ok_or_else(|| lab_err!("run {} is not held open by `flannel-lab up` (see `flannel-lab status`)", a.run))?;
    let etcd_ns = lab.etcd.as_ref().map(|e| e.netns.clone()).or_else(|| lab.hosts.first().map(|h| h.netns.clone()));
    let target = field::dump::Target {
        hosts: lab.hosts.iter().map(|h| (h.name.clone(), h.netns.clone(), lab.workdir.join(&h.name).join("subnet.env"))).collect(),
        etcd_ns: etcd_ns.ok_or_else(|| lab_err!("run {} has no hosts", a.run))?,
        endpoints: lab.etcd_endpoints.clone(),
        prefix: crate::contract::DEFAULT_PREFIX.to_string(),
    };
    field::dump::dump(&target, &a.dir, a.json)?;
    eprintln!(
        "flannel-lab: wrote {} ({} hosts); judge it with `flannel-lab diagnose {}`",
        a.dir.display(),
        target.hosts.len(),
        a.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
