//! `up`: build a lab and hold it open to work in. Without `--case` the lab gets etcd, one
//! agent per host and pods once converged; with `--case` the case's steps run and the lab
//! is held at the end, or at the first failure. Either way the lab is described in the
//! live registry (`status`, `exec`, `down` read it), its convergence is re-checked while
//! it is held, and Ctrl-C or `flannel-lab down` removes everything.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures::future::LocalBoxFuture;

use super::progress::Spinner;
use super::ImplArg;
use crate::contract::{Backend, NetConf};
use crate::error::Result;
use crate::input::case::{NetConfSpec, Overrides};
use crate::lab::live::{self, Convergence, LiveLab, LiveNode};
use crate::lab_err;
use crate::run::{run_trial_watched, TrialSpec, Verdict, Watcher};
use crate::steps::{Case, CreatePods, StartAgents, Step, Trial, WaitConverged};

/// Build a lab and keep it up to work in, until Ctrl-C or `flannel-lab down`
///
/// Without --case: etcd, one agent per host, and --pods pods per host once converged.
/// With --case: the case's steps run (its topology, unless TOPOLOGY is given) and the lab
/// is held after the last step, or at the first failure with its artifacts written.
/// While held, convergence is re-checked every few seconds (`flannel-lab status`).
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab up flat                               3 hosts, vxlan, reference agent\n  \
    flannel-lab up flat --hosts 8 --backend host-gw\n  \
    flannel-lab up two-segments --impl flanneld --netconf '{\"Network\":\"10.5.0.0/16\"}'\n  \
    flannel-lab up --case field-1348-underlay-recreated --backend vxlan\n  \
    flannel-lab up --case ping --impl ./my-agent.yaml   held at the first failure, if any\n\n\
    Then, from another terminal:\n  \
    flannel-lab status --watch\n  \
    flannel-lab exec h1 -- ip route\n  \
    flannel-lab down")]
pub struct UpArgs {
    /// Topology name (topologies/NAME.yaml) or file; with --case, replaces the case's
    pub topology: Option<String>,
    /// Run this case's steps first: a name under cases/ or a case file
    #[arg(long, value_name = "CASE")]
    pub case: Option<String>,
    /// Host count (for topologies with one `count:` group)
    #[arg(long, value_name = "N")]
    hosts: Option<u32>,
    /// Backend [default: the net-conf's, else the case's first, else vxlan]
    #[arg(long, value_name = "BACKEND", value_parser = super::parse_backend)]
    pub backend: Option<Backend>,
    /// Net-conf JSON, or a file holding it [default: 10.244.0.0/16, 10.128.0.0/12 past 250 hosts]
    #[arg(long, value_name = "JSON|FILE")]
    netconf: Option<String>,
    #[command(flatten)]
    imp: ImplArg,
    /// Pods per host, created once converged (without --case)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pods: u32,
    /// How long to wait for convergence (without --case)
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration, default_value = "60s")]
    within: Duration,
}

pub fn up(a: UpArgs) -> Result<ExitCode> {
    let imp = a.imp.load(true)?;
    let (case, backend) = match &a.case {
        Some(name) => case_of(&a, name, &imp)?,
        None => plain_case(&a)?,
    };
    if !imp.profile.backends.contains(&backend) {
        return Err(lab_err!("implementation `{}` does not run {backend} (its profile lists {:?})", imp.name(), imp.profile.backends));
    }
    super::need_lab()?;
    let spec = TrialSpec { case, backend, imp, verdict: Verdict::Pass };
    let holder = Holder { lab: RefCell::new(None), spinner: Spinner::start(std::io::stderr().is_terminal()), case: a.case.clone() };
    let rt = super::runtime()?;
    eprintln!("flannel-lab: building {} ({backend}, implementation `{}`)", spec.name(), spec.imp.name());
    let report = rt.block_on(run_trial_watched(&spec, &crate::suite::workdir(), Some(&holder)));
    rt.shutdown_background();
    // the holder returns only when the lab could not be held (it failed before its steps)
    holder.spinner.stop();
    if let Some(why) = report.ignored {
        return Err(why.into());
    }
    Err(report.failure.unwrap_or_else(|| "the lab ended".into()).into())
}

/// The case `--case` names, with the command line's changes.
fn case_of(a: &UpArgs, name: &str, imp: &crate::agents::Implementation) -> Result<(Case, Backend)> {
    let root = crate::input::repo_root();
    let file = if name.ends_with(".yaml") { PathBuf::from(name) } else { root.join("cases").join(format!("{name}.yaml")) };
    let topology = a.topology.as_deref().map(|t| std::path::absolute(super::topology_path(t)).unwrap_or_default().display().to_string());
    let o = Overrides { topology, hosts: a.hosts };
    let mut case = Case::load_with(&file, &root.join("topologies"), &o).map_err(|e| e.to_string())?;
    // one lab, held: the first host count, one repeat
    if case.hosts.len() > 1 || case.repeat > 1 {
        eprintln!(
            "flannel-lab: the case runs at {:?} hosts × {} repeats; holding one lab: the first host count, once",
            case.hosts, case.repeat
        );
        case.hosts.truncate(1);
        case.repeat = 1;
    }
    let given = match &a.netconf {
        Some(text) => Some(netconf_value(Some(text), 0)?),
        None => None,
    };
    let from_conf = given.as_ref().and_then(|v| v.pointer("/Backend/Type")).and_then(|t| t.as_str()).and_then(Backend::parse);
    let backend = match a.backend.or(from_conf) {
        Some(b) if case.backends.contains(&b) => b,
        Some(b) => return Err(lab_err!("case `{}` does not run on {b} (it lists {:?})", case.name, case.backends)),
        None => *case
            .backends
            .iter()
            .find(|b| imp.profile.backends.contains(b))
            .ok_or_else(|| lab_err!("case `{}` shares no backend with implementation `{}`", case.name, imp.name()))?,
    };
    if let Some(v) = given {
        case.netconf = NetConfSpec::Object(v);
    }
    Ok((case, backend))
}

/// A case of `up`'s own: start the agents, wait for convergence, create pods.
fn plain_case(a: &UpArgs) -> Result<(Case, Backend)> {
    let Some(topology) = &a.topology else {
        return Err("up needs a TOPOLOGY (a name under topologies/ or a file), or --case CASE".into());
    };
    let topology_file = super::topology_path(topology);
    let topo = crate::input::topology::Topology::load_scaled(&topology_file, a.hosts).map_err(|e| e.to_string())?;
    let mut v = netconf_value(a.netconf.as_deref(), topo.hosts.len())?;
    let obj = v.as_object_mut().ok_or("--netconf must be a JSON object")?;
    let backend = match a.backend {
        Some(b) => b,
        None => obj.get("Backend").and_then(|b| b.get("Type")).and_then(|t| t.as_str()).and_then(Backend::parse).unwrap_or(Backend::Vxlan),
    };
    let text = NetConfSpec::Object(v.clone()).render(backend);
    let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    NetConf::from_json(&parsed).map_err(|e| lab_err!("net-conf {text}: {e}"))?;
    let mut steps = vec![
        Step::StartAgents(StartAgents::default()),
        Step::WaitConverged(WaitConverged { within: crate::input::case::Dur(a.within), cross_segment_fails: vec!["host-gw".into()] }),
    ];
    if a.pods > 0 {
        steps.push(Step::CreatePods(CreatePods { per_host: a.pods }));
    }
    let case = Case {
        name: "up".into(),
        file: PathBuf::new(),
        description: format!("flannel-lab up {topology}"),
        topology_file,
        backends: vec![backend],
        hosts: a.hosts.into_iter().collect(),
        repeat: 1,
        netconf: NetConfSpec::Object(v),
        host_profiles: Default::default(),
        mutants: Vec::new(),
        control: false,
        store: None,
        etcd_members: 1,
        etcd_tls: false,
        ip_masq: false,
        level: Default::default(),
        pod_wiring: Default::default(),
        simultaneous_start: false,
        max_restarts: 0,
        max_rss: None,
        upstream: None,
        steps,
    };
    Ok((case, backend))
}

/// `--netconf` (JSON, or a file holding it), else 10.244.0.0/16, widened to 10.128.0.0/12
/// when a /16 of /24 subnets cannot hold every host.
fn netconf_value(given: Option<&str>, hosts: usize) -> std::result::Result<serde_json::Value, String> {
    match given {
        Some(text) => {
            let text = if text.trim_start().starts_with('{') {
                text.to_string()
            } else {
                std::fs::read_to_string(text).map_err(|e| format!("--netconf {text}: neither JSON nor a readable file: {e}"))?
            };
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("--netconf is not JSON: {e}"))?;
            if !v.is_object() {
                return Err("--netconf must be a JSON object".into());
            }
            Ok(v)
        }
        None => Ok(serde_json::json!({"Network": if hosts <= 250 { "10.244.0.0/16" } else { "10.128.0.0/12" }})),
    }
}

/// Keeps the live registry's description of the lab current, and holds the lab.
struct Holder {
    lab: RefCell<Option<LiveLab>>,
    spinner: Spinner,
    case: Option<String>,
}

impl Holder {
    /// The lab as `status` and `exec` see it.
    fn describe(&self, t: &Trial<'_>, state: String) -> LiveLab {
        let previous = self.lab.borrow().clone().unwrap_or_default();
        let node = |name: &str, ns: &str, addr: String| LiveNode { name: name.into(), netns: ns.into(), addr, ..Default::default() };
        let hosts = t
            .lab
            .hosts
            .iter()
            .map(|h| {
                let agent = t.agents.iter().find(|a| a.host == h.name);
                LiveNode {
                    agent_pid: agent.map(|a| a.child.pid()),
                    log: agent.map(|a| a.child.log_file().to_path_buf()),
                    ..node(&h.name, h.ns.name(), h.addr.to_string())
                }
            })
            .collect();
        let pods = t
            .pods()
            .iter()
            .map(|p| LiveNode {
                host: Some(p.host.clone()),
                ..node(&p.name, p.ns.name(), p.addr.map(|a| a.to_string()).or(p.addr6.map(|a| a.to_string())).unwrap_or_default())
            })
            .collect();
        let etcd_addr = t.lab.etcd_node().map(|n| n.addr.to_string()).unwrap_or_default();
        LiveLab {
            run: t.lab.run.to_string(),
            pid: std::process::id(),
            started: if previous.started == 0 { live::now() } else { previous.started },
            topology: t.lab.topo.name.clone(),
            backend: t.backend.to_string(),
            implementation: t.imp.name().to_string(),
            case: self.case.clone(),
            state,
            converged: previous.converged,
            workdir: t.lab.dir.clone(),
            discard_workdir: previous.discard_workdir || previous.run.is_empty(),
            hosts,
            pods,
            etcd: Some(node("etcd", t.store.netns().name(), etcd_addr)),
            etcd_endpoints: t.store.endpoints().split(',').map(str::to_string).collect(),
        }
    }

    fn publish(&self, l: LiveLab) {
        if let Err(e) = l.write() {
            eprintln!(
                "flannel-lab: cannot write {}: {e} (status and exec will not see this lab)",
                live::path_of(l.run.parse().expect("run id")).display()
            );
        }
        *self.lab.borrow_mut() = Some(l);
    }
}

impl Watcher for Holder {
    fn step(&self, t: &Trial<'_>, n: usize, of: usize, kind: &'static str) {
        let state = format!("step {n} of {of} `{kind}`");
        self.spinner.say(&format!("run {}: {state}", t.lab.run));
        self.publish(self.describe(t, state));
    }

    fn hold<'t>(&'t self, t: &'t mut Trial<'_>, failure: Option<String>) -> LocalBoxFuture<'t, ()> {
        Box::pin(async move {
            self.spinner.stop();
            let state = match &failure {
                None if self.case.is_some() => "held: every step passed".to_string(),
                None => "held".to_string(),
                Some(f) => format!("held at the first failure: {f}"),
            };
            let mut l = self.describe(t, state.clone());
            // a failed step's artifacts stay with the work directory
            l.discard_workdir = failure.is_none();
            self.publish(l.clone());
            print_lab(&l, failure.as_deref());
            let mut last: Option<bool> = None;
            loop {
                let began = Instant::now();
                let look = match t.convergence_now().await {
                    Ok(f) => Convergence { checked: live::now(), findings: f.iter().map(|f| f.to_string()).collect(), error: None },
                    Err(e) => Convergence { checked: live::now(), findings: Vec::new(), error: Some(e.describe()) },
                };
                let now = look.error.is_none() && look.findings.is_empty();
                if last != Some(now) {
                    match (&look.error, look.findings.first()) {
                        (Some(e), _) => println!("convergence unknown (lab error): {e}"),
                        (None, None) => println!("converged"),
                        (None, Some(f)) => println!("not converged: {f}{}", more(look.findings.len())),
                    }
                    last = Some(now);
                }
                let mut l = self.describe(t, state.clone());
                l.converged = Some(look);
                self.publish(l);
                // a large lab's look costs more: never spend more than a third of the time looking
                tokio::time::sleep((began.elapsed() * 2).max(Duration::from_secs(2))).await;
            }
        })
    }
}

fn more(n: usize) -> String {
    if n > 1 {
        format!(" (+{} more)", n - 1)
    } else {
        String::new()
    }
}

/// What a person needs to start working in the lab.
fn print_lab(l: &LiveLab, failure: Option<&str>) {
    println!();
    println!(
        "lab run {} is up: topology {}, {} host(s), {}, implementation `{}`",
        l.run,
        l.topology,
        l.hosts.len(),
        l.backend,
        l.implementation
    );
    match (failure, &l.case) {
        (Some(f), _) => println!("held at the first failure: {f}\nartifacts in {}", l.workdir.display()),
        (None, Some(c)) => println!("case `{c}`: every step passed"),
        (None, None) => {}
    }
    for h in &l.hosts {
        let log = h.log.as_ref().map(|p| format!("  log {}", p.display())).unwrap_or_default();
        println!("  {:<8} {:<15} flannel-lab exec {}{log}", h.name, h.addr, h.name);
    }
    for p in &l.pods {
        println!("  {:<8} {:<15} flannel-lab exec {}  (pod on {})", p.name, p.addr, p.name, p.host.as_deref().unwrap_or("?"));
    }
    println!("  etcd     {}", l.etcd_endpoints.join(","));
    println!("work files in {}", l.workdir.display());
    println!("flannel-lab status shows convergence; Ctrl-C here or `flannel-lab down {}` removes everything", l.run);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_network_widens_past_250_hosts_and_given_net_confs_are_kept() {
        assert_eq!(netconf_value(None, 250).unwrap(), serde_json::json!({"Network": "10.244.0.0/16"}));
        assert_eq!(netconf_value(None, 1000).unwrap(), serde_json::json!({"Network": "10.128.0.0/12"}));
        let given = r#"{"Network":"10.0.0.0/8","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":7}}"#;
        let v = netconf_value(Some(given), 3).unwrap();
        let text = NetConfSpec::Object(v).render(Backend::Udp);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Backend"], serde_json::json!({"Type": "udp", "VNI": 7}));
        assert_eq!(v["SubnetLen"], 26);
        assert!(netconf_value(Some("{oops"), 3).unwrap_err().contains("not JSON"));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "[1]").unwrap();
        assert!(netconf_value(Some(file.path().to_str().unwrap()), 3).unwrap_err().contains("JSON object"));
        assert!(netconf_value(Some("/no/such/file"), 3).unwrap_err().contains("neither JSON nor a readable file"));
    }

    #[test]
    fn a_case_is_held_once_on_a_backend_it_runs() {
        let imp = crate::agents::Implementation::load("reference", false).unwrap();
        let args = |backend: Option<Backend>| UpArgs {
            topology: None,
            case: Some("mtu".into()),
            hosts: None,
            backend,
            netconf: None,
            imp: Default::default(),
            pods: 1,
            within: Duration::from_secs(60),
        };
        let (case, b) = case_of(&args(None), "mtu", &imp).unwrap();
        assert_eq!((case.hosts.len() <= 1, case.repeat, b), (true, 1, case.backends[0]));
        let (_, b) = case_of(&args(Some(Backend::Udp)), "mtu", &imp).unwrap();
        assert_eq!(b, Backend::Udp);
        let e = case_of(&args(None), "no-such-case", &imp).unwrap_err();
        assert!(e.to_string().contains("no-such-case"), "{e}");
    }
}
