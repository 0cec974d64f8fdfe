//! `status`, `exec` and `down`: the labs `up` holds open, read from the live registry.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::Result;
use crate::input::names::RunId;
use crate::lab::gc;
use crate::lab::live::{self, age, LiveLab};
use crate::lab_err;

/// Show the labs held open by `up`: hosts, agents alive, converged or not and why
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab status\n  \
    flannel-lab status 3a9c --watch      redraw every 2 s until Ctrl-C\n  \
    flannel-lab status --json | jq '.[0].converged'")]
pub struct StatusArgs {
    /// Only this run
    run: Option<RunId>,
    /// Redraw every 2 seconds
    #[arg(long, short = 'w', conflicts_with = "json")]
    watch: bool,
    /// Print the labs as JSON
    #[arg(long)]
    json: bool,
}

/// Run a command inside a host's or pod's network namespace
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab exec h1                    a shell on h1 ($SHELL, else /bin/sh)\n  \
    flannel-lab exec h1 -- ip route\n  \
    flannel-lab exec h2-p1 -- ping -c1 10.244.7.2\n  \
    flannel-lab exec etcd -- ss -tlnp\n  \
    flannel-lab exec --run 3a9c h1 -- bridge fdb show dev flannel.1")]
pub struct ExecArgs {
    /// A host, a pod (h1-p1) or `etcd` of a lab held open
    pub target: String,
    /// The lab, when more than one is held open
    #[arg(long, value_name = "RUN")]
    run: Option<RunId>,
    /// The command and its arguments [default: $SHELL, else /bin/sh]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Tear down a lab held open by `up` (or left behind by one that was killed)
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab down             the only lab held open\n  \
    flannel-lab down 3a9c\n  \
    flannel-lab down --all")]
pub struct DownArgs {
    /// The run to remove [default: the only lab held open]
    run: Option<RunId>,
    /// Every lab held open
    #[arg(long, conflicts_with = "run")]
    all: bool,
}

pub fn status(a: StatusArgs) -> Result<ExitCode> {
    loop {
        let labs: Vec<LiveLab> = live::list().into_iter().filter(|l| a.run.is_none_or(|r| l.run == r.to_string())).collect();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&labs).map_err(|e| lab_err!("{e}"))?);
            return Ok(ExitCode::SUCCESS);
        }
        let mut text = String::new();
        if labs.is_empty() {
            text.push_str(&match a.run {
                Some(r) => format!("run {r} is not held open by `flannel-lab up`\n"),
                None => "no lab is held open (start one with `flannel-lab up TOPOLOGY`)\n".to_string(),
            });
        }
        for l in &labs {
            text.push_str(&describe(l));
        }
        if a.watch {
            print!("\x1b[H\x1b[2J{text}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        print!("{text}");
        return Ok(if labs.is_empty() && a.run.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
}

/// One lab, for people.
fn describe(l: &LiveLab) -> String {
    let mut s = format!(
        "run {}  up {}  topology {} ({} hosts)  {}  implementation `{}`{}\n",
        l.run,
        age(live::now().saturating_sub(l.started)),
        l.topology,
        l.hosts.len(),
        l.backend,
        l.implementation,
        l.case.as_ref().map(|c| format!("  case `{c}`")).unwrap_or_default()
    );
    s.push_str(&format!("  {}\n", l.state));
    let alive = l.hosts.iter().filter(|h| h.agent_pid.is_some_and(pid_alive)).count();
    let with_agent = l.hosts.iter().filter(|h| h.agent_pid.is_some()).count();
    s.push_str(&format!("  agents alive: {alive} of {with_agent}\n"));
    match &l.converged {
        None => s.push_str("  converged: not checked yet (the case is still running)\n"),
        Some(c) => {
            let when = format!("checked {} ago", age(live::now().saturating_sub(c.checked)));
            match (&c.error, c.findings.len()) {
                (Some(e), _) => s.push_str(&format!("  converged: unknown, the lab could not look ({when}): {e}\n")),
                (None, 0) => s.push_str(&format!("  converged: yes ({when})\n")),
                (None, n) => {
                    s.push_str(&format!("  converged: no ({when}), {n} finding(s):\n"));
                    for f in c.findings.iter().take(8) {
                        s.push_str(&format!("    {}\n", f.lines().next().unwrap_or("")));
                    }
                    if n > 8 {
                        s.push_str(&format!("    (+{} more)\n", n - 8));
                    }
                }
            }
        }
    }
    let shown = if l.hosts.len() > 24 { 20 } else { l.hosts.len() };
    for h in &l.hosts[..shown] {
        let agent = match h.agent_pid {
            Some(p) if pid_alive(p) => format!("agent pid {p}"),
            Some(p) => format!("agent pid {p} EXITED"),
            None => "no agent".to_string(),
        };
        s.push_str(&format!("  {:<8} {:<15} {:<20} {agent}\n", h.name, h.addr, h.netns));
    }
    if shown < l.hosts.len() {
        s.push_str(&format!("  … and {} more hosts (--json lists them all)\n", l.hosts.len() - shown));
    }
    for p in l.pods.iter().take(24) {
        s.push_str(&format!("  {:<8} {:<15} {:<20} pod on {}\n", p.name, p.addr, p.netns, p.host.as_deref().unwrap_or("?")));
    }
    if l.pods.len() > 24 {
        s.push_str(&format!("  … and {} more pods\n", l.pods.len() - 24));
    }
    if let Some(e) = &l.etcd {
        s.push_str(&format!("  etcd     {:<15} {:<20} {}\n", e.addr, e.netns, l.etcd_endpoints.join(",")));
    }
    s.push_str(&format!("  work files {}\n", l.workdir.display()));
    s
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| st.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The lab holding `target` (a host, pod or etcd), among the labs held open.
fn find(target: &str, run: Option<RunId>) -> Result<(LiveLab, String)> {
    let labs: Vec<LiveLab> = live::list().into_iter().filter(|l| run.is_none_or(|r| l.run == r.to_string())).collect();
    if labs.is_empty() {
        return Err(match run {
            Some(r) => lab_err!("run {r} is not held open by `flannel-lab up` (see `flannel-lab status`)"),
            None => lab_err!("no lab is held open (start one with `flannel-lab up TOPOLOGY`)"),
        });
    }
    let holding: Vec<&LiveLab> = labs.iter().filter(|l| l.node(target).is_some()).collect();
    match holding.as_slice() {
        [l] => {
            let ns = l.node(target).expect("found").netns.clone();
            Ok(((*l).clone(), ns))
        }
        [] => {
            let names: Vec<&str> =
                labs.iter().flat_map(|l| l.hosts.iter().chain(&l.pods).chain(&l.etcd)).map(|n| n.name.as_str()).take(30).collect();
            Err(lab_err!("no host or pod `{target}` in the labs held open (there are: {})", names.join(", ")))
        }
        many => {
            let runs: Vec<&str> = many.iter().map(|l| l.run.as_str()).collect();
            Err(lab_err!("`{target}` is in several labs ({}): pick one with --run", runs.join(", ")))
        }
    }
}

pub fn exec(a: ExecArgs) -> Result<ExitCode> {
    let (lab, ns) = find(&a.target, a.run)?;
    let file = std::fs::File::open(crate::lab::netns::path_of(&ns)).map_err(|e| lab_err!("open netns `{ns}`: {e}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| lab_err!("enter netns `{ns}`: {e}"))?;
    let argv = if a.command.is_empty() { vec![std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())] } else { a.command.clone() };
    // signals were blocked for the cleanup thread; the command gets the usual ones
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = set.thread_unblock();
    // and the default priority, not the harness's
    crate::lab::proc::at_default_priority();
    let e =
        std::process::Command::new(&argv[0]).args(&argv[1..]).env("FLANNEL_LAB_RUN", &lab.run).env("FLANNEL_LAB_NODE", &a.target).exec();
    Err(lab_err!("run `{}` in netns `{ns}`: {e}", argv[0]))
}

pub fn down(a: DownArgs) -> Result<ExitCode> {
    let runs: Vec<RunId> = match (a.run, a.all) {
        (Some(r), _) => vec![r],
        (None, true) => live::list().iter().filter_map(|l| l.run.parse().ok()).collect(),
        (None, false) => {
            let labs = live::list();
            match labs.as_slice() {
                [l] => vec![l.run.parse().map_err(|e: String| lab_err!("{e}"))?],
                [] => return Err("no lab is held open; name a run to remove what it left (or use `flannel-lab gc`)".into()),
                many => {
                    let runs: Vec<&str> = many.iter().map(|l| l.run.as_str()).collect();
                    return Err(lab_err!("several labs are held open ({}): name one, or use --all", runs.join(", ")));
                }
            }
        }
    };
    let mut failed = false;
    for run in runs {
        match take_down(run) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                failed = true;
                eprintln!("flannel-lab: run {run}: {e}");
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Asks the holder to remove its lab (SIGTERM) and waits until it has; removes a run
/// whose holder is gone directly.
fn take_down(run: RunId) -> Result<String> {
    let held = LiveLab::read(run);
    let namespaces = gc::namespaces_of(run).len();
    if namespaces == 0 && held.is_none() && !gc::is_live(run) {
        return Err(lab_err!("nothing of run {run} is left on this machine"));
    }
    let workdir = held.as_ref().map(|l| l.workdir.clone());
    let mut how = "removed";
    match held.as_ref().filter(|_| gc::is_live(run)) {
        Some(l) => {
            kill(Pid::from_raw(l.pid as i32), Signal::SIGTERM).map_err(|e| lab_err!("signal its holder (pid {}): {e}", l.pid))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while (gc::is_live(run) || !gc::namespaces_of(run).is_empty()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if gc::is_live(run) || !gc::namespaces_of(run).is_empty() {
                let _ = kill(Pid::from_raw(l.pid as i32), Signal::SIGKILL);
                how = "removed (its holder did not finish within 60 s and was killed)";
                remove_directly(run)?;
            }
        }
        None if gc::is_live(run) => return Err(lab_err!("run {run} is a running trial, not a lab held by `up`; it ends on its own")),
        None => remove_directly(run)?,
    }
    let kept =
        workdir.filter(|d| d.exists()).map(|d| format!("; work files kept in {} (a step failed there)", d.display())).unwrap_or_default();
    Ok(format!("run {run}: {how}, {namespaces} namespace(s){kept}"))
}

fn remove_directly(run: RunId) -> Result<()> {
    let mut sweep = gc::Sweep::default();
    gc::remove_run(run, &mut sweep);
    match sweep.errors.is_empty() {
        true => Ok(()),
        false => Err(sweep.errors.join("; ").into()),
    }
}
