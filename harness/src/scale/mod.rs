//! Cost curves: how bring-up, convergence, kernel state, etcd traffic and agent cost grow
//! with the number of hosts, per backend and implementation (`flannel-lab scale`).
//!
//! Each point is one fresh lab of N hosts on one large segment, all agents started at one
//! instant, watched until every host holds exactly the contract's state for every peer
//! (or a deadline). The figures come from the same places the verdicts do: the contract's
//! kernel checks per host, the leases in etcd, the agents' `/proc` entries.

pub mod plot;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agents::{Agent, Implementation, Launch};
use crate::contract::{self, Backend, NetConf, DEFAULT_PREFIX};
use crate::error::{Error, Result};
use crate::input::topology::Topology;
use crate::lab::Lab;
use crate::lab_err;
use crate::probe;
use crate::store::{Provider, Store};

/// What a scale run measures.
pub struct Plan {
    pub topology: PathBuf,
    pub backends: Vec<Backend>,
    pub sizes: Vec<u32>,
    pub repeats: u32,
    /// The implementations to measure; with two, the report adds their ratios.
    pub imps: Vec<Implementation>,
    /// `Network` of the net-conf (the backend is filled in); large enough for every size.
    pub network: String,
    /// How long one point may take to converge, on top of a per-host allowance.
    pub within: Duration,
}

/// One lab: one implementation, backend, size and repeat.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub implementation: String,
    pub backend: String,
    pub hosts: u32,
    pub repeat: u32,
    /// Namespaces, links, addresses and etcd up (seconds).
    pub bring_up_s: f64,
    /// Starting every agent process.
    pub spawn_s: f64,
    /// The profile's `start_spread`: agents started evenly over this window (0: at one
    /// instant, behind a gate).
    pub start_spread_s: f64,
    /// Agents restarted by the profile's restart policy before convergence.
    pub restarts: u32,
    /// From the moment the last agent was let go until every host held the contract's full
    /// state; None when the deadline came first.
    pub converge_s: Option<f64>,
    pub converged_hosts: u32,
    /// Per host, seconds from the start until its first peer entry (median, 99th pct).
    pub first_peer_p50_s: Option<f64>,
    /// Per host, seconds from the start until its state was complete (median, 99th pct).
    pub last_peer_p50_s: Option<f64>,
    pub last_peer_p99_s: Option<f64>,
    /// Per-peer kernel entries (routes + neighbours + FDB entries) per host, and in all.
    pub entries_per_host_max: usize,
    pub entries_total: usize,
    pub etcd_keys: usize,
    /// etcd revisions from just before the agents started until convergence (every write,
    /// each one a watch event for every agent watching the prefix).
    pub etcd_writes: i64,
    pub agent_rss_kib_mean: u64,
    pub agent_rss_kib_max: u64,
    /// Proportional set size: RSS with every shared page (the binary's text, libc) divided
    /// among the processes mapping it, so what one more host costs in memory.
    pub agent_pss_kib_mean: u64,
    /// CPU time (user + system) per agent from start to convergence.
    pub agent_cpu_ms_mean: u64,
    pub agent_cpu_ms_max: u64,
    /// The harness's own CPU time while it waited, and its polls.
    pub harness_cpu_s: f64,
    pub polls: u32,
    pub poll_ms_mean: f64,
    pub teardown_s: f64,
    /// Why a point did not converge, when it did not (first findings, an exited agent).
    pub note: String,
    /// False when the lab could not measure the point at all (a lab error before the
    /// agents ran, or a size skipped for memory): its figures are zeros. Neither these nor
    /// points cut short by a lab error are plotted or fitted.
    pub measured: bool,
}

impl Point {
    /// Whether the point's figures belong in the plots and fits: measured, and not cut
    /// short by a lab error (a machine out of memory, an unreadable etcd).
    pub fn plotted(&self) -> bool {
        self.measured && !self.note.contains("lab error")
    }

    fn unmeasured(imp: &str, backend: Backend, hosts: u32, repeat: u32, note: String) -> Point {
        Point {
            implementation: imp.to_string(),
            backend: backend.to_string(),
            hosts,
            repeat,
            bring_up_s: 0.0,
            spawn_s: 0.0,
            start_spread_s: 0.0,
            restarts: 0,
            converge_s: None,
            converged_hosts: 0,
            first_peer_p50_s: None,
            last_peer_p50_s: None,
            last_peer_p99_s: None,
            entries_per_host_max: 0,
            entries_total: 0,
            etcd_keys: 0,
            etcd_writes: 0,
            agent_rss_kib_mean: 0,
            agent_rss_kib_max: 0,
            agent_pss_kib_mean: 0,
            agent_cpu_ms_mean: 0,
            agent_cpu_ms_max: 0,
            harness_cpu_s: 0.0,
            polls: 0,
            poll_ms_mean: 0.0,
            teardown_s: 0.0,
            note,
            measured: false,
        }
    }
}

/// Runs every point of the plan, printing a line per point as it ends and writing the
/// files ([`write_files`]) into `out` after every point, so a run that is interrupted or
/// stopped keeps what it measured. A point the lab could not measure (a lab error, or a
/// size whose agents cannot fit in memory) is recorded with its reason, and the run goes on.
pub async fn run(plan: &Plan, workdir: &Path, out: &Path) -> Result<Vec<Point>> {
    let mut points: Vec<Point> = Vec::new();
    for imp in &plan.imps {
        for &backend in &plan.backends {
            for &n in &plan.sizes {
                for rep in 1..=plan.repeats {
                    let p = match room_for(&points, imp.name(), n) {
                        Err(why) => Point::unmeasured(imp.name(), backend, n, rep, format!("lab error: skipped: {why}")),
                        Ok(()) => match point(plan, imp, backend, n, rep, workdir).await {
                            Ok(p) => p,
                            Err(e) => Point::unmeasured(imp.name(), backend, n, rep, format!("lab error: {}", crate::error::chain(&e))),
                        },
                    };
                    eprintln!("{}", line(&p));
                    points.push(p);
                    write_files(&points, out)?;
                }
            }
        }
    }
    Ok(points)
}

/// Whether `n` agents of `imp` fit in memory, judged by the largest mean PSS its agents had
/// at the points measured so far (none measured: no judgement).
fn room_for(points: &[Point], imp: &str, n: u32) -> std::result::Result<(), String> {
    let pss = points.iter().filter(|p| p.measured && p.implementation == imp).map(|p| p.agent_pss_kib_mean).max().unwrap_or(0);
    match crate::lab::memory::available_kib() {
        Some(available) if pss > 0 => crate::lab::memory::fits(n, pss, available, crate::lab::memory::floor_kib()),
        _ => Ok(()),
    }
}

fn line(p: &Point) -> String {
    if !p.measured {
        return format!("{} {} n={} r{}: not measured ({})", p.implementation, p.backend, p.hosts, p.repeat, p.note);
    }
    format!(
        "{} {} n={} r{}: bring-up {:.1} s,{} converged {} ({} of {} hosts), entries/host {}, etcd writes {}, agent RSS {} KiB (PSS {} KiB), teardown {:.1} s{}",
        p.implementation,
        p.backend,
        p.hosts,
        p.repeat,
        p.bring_up_s,
        if p.start_spread_s > 0.0 { format!(" agents started over {:.1} s,", p.start_spread_s) } else { String::new() },
        p.converge_s.map(|s| format!("in {s:.2} s")).unwrap_or_else(|| "NOT".into()),
        p.converged_hosts,
        p.hosts,
        p.entries_per_host_max,
        p.etcd_writes,
        p.agent_rss_kib_max,
        p.agent_pss_kib_mean,
        p.teardown_s,
        if p.note.is_empty() { String::new() } else { format!(" ({})", p.note) }
    )
}

use crate::lab::proc::cpu_time;

/// Every host of `hosts` read at once: the expected neighbours looked up, and with
/// `complete` the whole neighbour table as well.
async fn read_hosts(
    hosts: &[&crate::lab::Node],
    conf: &NetConf,
    by_ip: &BTreeMap<Ipv4Addr, contract::LeaseView>,
    complete: bool,
) -> Vec<Result<probe::HostState>> {
    futures::future::join_all(hosts.iter().map(|h| async move {
        let query = contract::neighbour_query(conf, h.addr, by_ip);
        probe::dump_host(h, &Agent::subnet_file_path(h), false, Some(&query), complete).await
    }))
    .await
}

/// What the kernel checks look at for one scale host (IPv4 only: scale's net-conf has no IPv6).
fn host_view<'a>(
    conf: &'a contract::NetConf,
    node: &'a crate::lab::Node,
    underlay_mtu: u32,
    leases: &'a BTreeMap<Ipv4Addr, contract::LeaseView>,
    state: &'a crate::probe::HostState,
) -> contract::HostView<'a> {
    contract::HostView {
        conf,
        host: &node.name,
        host_ip: node.addr,
        host_ip6: None,
        underlay_mtu,
        leases,
        state,
        underlay: crate::lab::UNDERLAY_IF,
    }
}

fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    Some(s[idx.min(s.len() - 1)])
}

async fn point(plan: &Plan, imp: &Implementation, backend: Backend, n: u32, rep: u32, workdir: &Path) -> Result<Point> {
    let topo = Topology::load_scaled(&plan.topology, Some(n)).map_err(|e| Error::Input(e.to_string()))?;
    let t0 = Instant::now();
    let label = format!("scale-{backend}-n{n}-r{rep}");
    let mut lab = Lab::build(topo, workdir, &label, true).await?;
    let mut store = Store::start(&lab, Provider::Process, 1, false, Duration::from_secs(30)).await?;
    let conf_text = format!(r#"{{"Network":"{}","Backend":{{"Type":"{backend}"}}}}"#, plan.network);
    let conf = NetConf::from_json(&serde_json::from_str(&conf_text).map_err(|e| lab_err!("net-conf: {e}"))?)
        .map_err(|e| lab_err!("net-conf {conf_text}: {e}"))?;
    let capacity = 1u64 << (conf.subnet_len - conf.network.prefix());
    if u64::from(n) + 1 > capacity {
        return Err(lab_err!(
            "network {} holds {capacity} /{} subnets, too few for {n} hosts (pass a larger --network)",
            conf.network,
            conf.subnet_len
        ));
    }
    store.put(&format!("{DEFAULT_PREFIX}/config"), conf_text.clone()).await?;
    let bring_up = t0.elapsed();
    let rev0 = store.revision().await?;
    let launch = Launch {
        endpoints: store.endpoints(),
        prefix: DEFAULT_PREFIX.to_string(),
        tls: Default::default(),
        ip_masq: false,
        // every point alike, so the curve compares like with like
        nice: crate::agents::AGENTS_NICE_AT_SIZE,
    };
    // every agent spawned behind one gate, then let go at one instant; or, under a profile's
    // `start_spread` (an implementation with a known start-up race), started evenly over it
    let window = imp.profile.start_spread;
    let mut gate = if window.is_zero() { Some(crate::lab::proc::Gate::new()?) } else { None };
    let gap = window / (n.max(2) - 1);
    let spawning = Instant::now();
    let mut agents = Vec::new();
    for (i, node) in lab.hosts.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            // spacing the starts is the point here, not a wait for a condition
            tokio::time::sleep_until((spawning + gap * i as u32).into()).await;
        }
        agents.push(Agent::start_gated(imp, node, &launch, gate.as_ref())?);
    }
    let spawn = spawning.elapsed();
    if let Some(g) = gate.as_mut() {
        g.open();
    }
    // convergence counts from the moment the last agent was let go
    let started = Instant::now();
    let harness_cpu0 = cpu_time(std::process::id()).unwrap_or_default();
    let memory = crate::lab::memory::Watch::start();
    let deadline = started + plan.within + Duration::from_millis(100) * n;

    let hosts: Vec<contract::HostAddrs> = lab.hosts.iter().map(|h| (h.name.clone(), h.addr, h.addr6)).collect();
    let mut first: BTreeMap<String, f64> = BTreeMap::new();
    let mut done: BTreeMap<String, f64> = BTreeMap::new();
    let (mut polls, mut poll_time, mut etcd_misses) = (0u32, Duration::ZERO, 0u32);
    let mut note = String::new();
    let mut entries: BTreeMap<String, usize> = BTreeMap::new();
    // restarts under the profile's restart policy, and why the first one was needed
    let (mut restarts, mut first_exit) = (0u32, None::<String>);
    let converged = loop {
        let p0 = Instant::now();
        // etcd slowed down by the load being measured may miss the harness's 5 s request
        // timeout: count it and poll again; at the deadline, an etcd that never answered
        // is a lab error (never converged), with the same quick teardown
        let raw = match store.list(&format!("{DEFAULT_PREFIX}/subnets/")).await {
            Ok(r) => r,
            Err(e) => {
                etcd_misses += 1;
                if Instant::now() >= deadline {
                    note = format!("lab error: the harness could not read the leases ({etcd_misses} tries): {}", crate::error::chain(&e));
                    break None;
                }
                continue;
            }
        };
        let leases: Vec<std::result::Result<contract::LeaseView, String>> =
            raw.iter().map(|(k, v)| contract::parse_lease(DEFAULT_PREFIX, k, v)).collect();
        let mut lease_findings = Vec::new();
        let by_ip: BTreeMap<Ipv4Addr, contract::LeaseView> = contract::check_leases(&conf, &hosts, &leases, &mut lease_findings);
        let pending: Vec<&crate::lab::Node> = lab.hosts.iter().filter(|h| !done.contains_key(h.name.as_str())).collect();
        // the expected neighbours looked up one by one (a dump per host walks every
        // namespace's entries: N³ per poll); extras are seen by the full read at the end
        let states = read_hosts(&pending, &conf, &by_ip, false).await;
        let now = started.elapsed().as_secs_f64();
        let mut last_findings = Vec::new();
        if let Some(e) = states.iter().find_map(|s| s.as_ref().err()) {
            note = format!("lab error: a host's state could not be read: {}", crate::error::chain(e));
            break None;
        }
        for (node, state) in pending.iter().zip(states) {
            let state = state.expect("checked above");
            let mut f = Vec::new();
            let c = contract::check_kernel(&host_view(&conf, node, lab.mtu_of(node), &by_ip, &state), &mut f);
            let have = c.routes + c.neighbours + c.fdb + c.direct;
            entries.insert(node.name.to_string(), have);
            // the first per-peer entry (under udp, the one route for the whole network)
            if have > 0 {
                first.entry(node.name.to_string()).or_insert(now);
            }
            // complete: every host's lease is in etcd and this host holds exactly the state
            // the contract asks for with all of them
            if f.is_empty() && by_ip.len() == hosts.len() {
                done.insert(node.name.to_string(), now);
            } else if last_findings.is_empty() {
                last_findings = f;
            }
        }
        polls += 1;
        poll_time += p0.elapsed();
        // an exited agent ends the point, unless its profile's restart policy brings it
        // back (as a DaemonSet would): then it is restarted after its backoff and counted
        let mut ended = None;
        for (i, a) in agents.iter_mut().enumerate() {
            let Some(st) = a.child.try_status() else { continue };
            if a.child.killed_by_oom().is_some() {
                ended = Some(format!("lab error: memory: the kernel's OOM killer ended the agent on {}", a.host));
                break;
            }
            let again = match a.profile.restart {
                crate::input::profile::RestartPolicy::Never => false,
                crate::input::profile::RestartPolicy::OnFailure => !st.success(),
                crate::input::profile::RestartPolicy::Always => true,
            };
            let status = crate::lab::proc::Child::describe_status(&st);
            if !again {
                ended = Some(format!("the agent on {} exited: {status}", a.host));
                break;
            }
            let now = Instant::now();
            let due = *a
                .next_restart
                .get_or_insert_with(|| now + (a.profile.restart_backoff * 2u32.pow(a.restarts.min(4))).min(Duration::from_secs(10)));
            if now >= due {
                let mut fresh = Agent::start(imp, &lab.hosts[i], &launch)?;
                fresh.restarts = a.restarts + 1;
                restarts += 1;
                first_exit.get_or_insert_with(|| format!("{}: {status}; {}", a.host, a.child.log_summary(1)));
                *a = fresh;
            }
        }
        if let Some(why) = ended {
            note = why;
            break None;
        }
        if let Err(why) = memory.check() {
            note = format!("lab error: {why}");
            break None;
        }
        if done.len() == hosts.len() {
            let at = started.elapsed();
            // every host once more with its whole neighbour table: nothing extra either
            let all: Vec<&crate::lab::Node> = lab.hosts.iter().collect();
            let states = read_hosts(&all, &conf, &by_ip, true).await;
            if let Some(e) = states.iter().find_map(|s| s.as_ref().err()) {
                note = format!("lab error: a host's state could not be read: {}", crate::error::chain(e));
                break None;
            }
            let mut extra = Vec::new();
            for (node, state) in all.iter().zip(states) {
                let state = state.expect("checked above");
                let mut f = Vec::new();
                contract::check_kernel(&host_view(&conf, node, lab.mtu_of(node), &by_ip, &state), &mut f);
                if !f.is_empty() {
                    done.remove(node.name.as_str());
                    extra.extend(f);
                }
            }
            if extra.is_empty() {
                break Some(at);
            }
            last_findings = extra;
        }
        if Instant::now() >= deadline {
            let first_finding = lease_findings.first().or(last_findings.first()).map(|f| format!("[{}] {}: {}", f.check, f.host, f.what));
            note = format!(
                "deadline {:?}: {} of {} leases in etcd{}",
                deadline - started,
                by_ip.len(),
                hosts.len(),
                first_finding.map(|f| format!("; first finding {f}")).unwrap_or_default()
            );
            break None;
        }
        // the kernel serializes much netlink work: pause as long as the poll took (at most
        // 2 s, so a long poll in the busiest moment does not blind the harness for as
        // long), so its reads take at most about half of the machine from the agents
        tokio::time::sleep(p0.elapsed().clamp(Duration::from_millis(50), Duration::from_secs(2))).await;
    };
    if restarts > 0 {
        let first = first_exit.unwrap_or_default();
        note = format!(
            "{note}{}{restarts} agent restart(s) by the profile's restart policy (first: {first})",
            if note.is_empty() { "" } else { "; " }
        );
    }
    if etcd_misses > 0 && !note.contains("lab error") {
        note = format!("{note}{}{etcd_misses} lease reads timed out and were retried", if note.is_empty() { "" } else { "; " });
    }
    let harness_cpu = cpu_time(std::process::id()).unwrap_or_default().saturating_sub(harness_cpu0);
    // etcd figures read after the wait; unreadable ones are said in the note, not zeroed
    let (rev1, keys) = match (store.revision().await, store.list(&format!("{DEFAULT_PREFIX}/")).await) {
        (Ok(r), Ok(k)) => (r, k.len()),
        (r, k) => {
            let why = r.err().or(k.err()).map(|e| crate::error::chain(&e)).unwrap_or_default();
            note = format!("{note}{}lab error: etcd figures unread: {why}", if note.is_empty() { "" } else { "; " });
            (rev0, 0)
        }
    };
    let rss: Vec<u64> = agents.iter().filter_map(|a| a.child.rss_kib()).collect();
    let pss: Vec<u64> = agents.iter().filter_map(|a| a.child.pss_kib()).collect();
    let cpu: Vec<u64> = agents.iter().filter_map(|a| cpu_time(a.child.pid())).map(|d| d.as_millis() as u64).collect();
    let firsts: Vec<f64> = first.values().copied().collect();
    let lasts: Vec<f64> = done.values().copied().collect();

    let t1 = Instant::now();
    // every agent told at once, then five seconds for all of them together; whatever
    // is still running after that is killed
    for a in &agents {
        a.child.signal(nix::sys::signal::Signal::SIGTERM);
    }
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace && agents.iter_mut().any(|a| a.child.try_status().is_none()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for mut a in agents {
        a.child.kill();
    }
    let _ = store.stop().await;
    drop(store);
    let sweep = lab.teardown();
    let teardown = t1.elapsed();
    if !sweep.errors.is_empty() {
        return Err(lab_err!("teardown of {label}: {}", sweep.errors.join("; ")));
    }
    // the agents' logs and etcd's data of a point that converged go; a point that did not
    // keeps them for a look, and says where
    if converged.is_some() && !note.contains("lab error") {
        let _ = std::fs::remove_dir_all(&lab.dir);
    } else {
        note = format!("{note}{}work files kept in {}", if note.is_empty() { "" } else { "; " }, lab.dir.display());
    }
    let mean = |v: &[u64]| if v.is_empty() { 0 } else { v.iter().sum::<u64>() / v.len() as u64 };
    Ok(Point {
        implementation: imp.name().to_string(),
        backend: backend.to_string(),
        hosts: n,
        repeat: rep,
        bring_up_s: bring_up.as_secs_f64(),
        spawn_s: spawn.as_secs_f64(),
        start_spread_s: window.as_secs_f64(),
        restarts,
        converge_s: converged.map(|d| d.as_secs_f64()),
        converged_hosts: done.len() as u32,
        first_peer_p50_s: percentile(&firsts, 50.0),
        last_peer_p50_s: percentile(&lasts, 50.0),
        last_peer_p99_s: percentile(&lasts, 99.0),
        entries_per_host_max: entries.values().copied().max().unwrap_or(0),
        entries_total: entries.values().sum(),
        etcd_keys: keys,
        etcd_writes: rev1 - rev0,
        agent_rss_kib_mean: mean(&rss),
        agent_rss_kib_max: rss.iter().copied().max().unwrap_or(0),
        agent_pss_kib_mean: mean(&pss),
        agent_cpu_ms_mean: mean(&cpu),
        agent_cpu_ms_max: cpu.iter().copied().max().unwrap_or(0),
        harness_cpu_s: harness_cpu.as_secs_f64(),
        polls,
        poll_ms_mean: if polls == 0 { 0.0 } else { poll_time.as_secs_f64() * 1000.0 / f64::from(polls) },
        teardown_s: teardown.as_secs_f64(),
        note,
        measured: true,
    })
}

/// A figure: file name, title, and how to read it from a point.
pub type Figure = (&'static str, &'static str, fn(&Point) -> Option<f64>);

/// The figures a reader compares across sizes.
pub const FIGURES: &[Figure] = &[
    ("bring_up", "lab bring-up (s)", |p| Some(p.bring_up_s)),
    ("converge", "agent start to full convergence (s)", |p| p.converge_s),
    ("last_peer_p99", "per host: last peer learned, p99 (s)", |p| p.last_peer_p99_s),
    ("entries_total", "per-peer kernel entries, all hosts", |p| Some(p.entries_total as f64)),
    ("entries_per_host", "per-peer kernel entries per host", |p| Some(p.entries_per_host_max as f64)),
    ("etcd_writes", "etcd writes until convergence", |p| Some(p.etcd_writes as f64)),
    ("agent_rss", "agent RSS, max (KiB)", |p| Some(p.agent_rss_kib_max as f64)),
    ("agent_pss", "agent PSS (shared pages divided), mean (KiB)", |p| Some(p.agent_pss_kib_mean as f64)),
    ("agent_cpu", "agent CPU until convergence, mean (ms)", |p| Some(p.agent_cpu_ms_mean as f64)),
    ("harness_cpu", "harness CPU while waiting (s)", |p| Some(p.harness_cpu_s)),
    ("teardown", "teardown (s)", |p| Some(p.teardown_s)),
];

/// A table: one row per implementation × backend × size, repeats summarized (convergence
/// as p50/p99 over repeats), and with two implementations their ratios.
pub fn table(points: &[Point]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<22} {:<8} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
        "implementation",
        "backend",
        "hosts",
        "bring-up",
        "conv p50",
        "conv p99",
        "host p50",
        "host p99",
        "entries/h",
        "entries all",
        "etcd wr",
        "RSS KiB",
        "PSS KiB",
        "CPU ms",
        "teardown"
    ));
    for ((imp, backend, n), all) in groups(points) {
        // repeats the lab could not measure are said, not averaged in as zeros
        let g: Vec<&Point> = all.iter().copied().filter(|p| p.measured).collect();
        if let Some(p) = all.iter().find(|p| !p.measured) {
            out.push_str(&format!(
                "{imp:<22} {backend:<8} {n:>5}  {} of {} repeats not measured: {}\n",
                all.len() - g.len(),
                all.len(),
                p.note
            ));
        }
        if g.is_empty() {
            continue;
        }
        let conv: Vec<f64> = g.iter().filter_map(|p| p.converge_s).collect();
        let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        let all_conv = conv.len() == g.len();
        let avg = |h: &dyn Fn(&Point) -> f64| g.iter().map(|p| h(p)).sum::<f64>() / g.len() as f64;
        out.push_str(&format!(
            "{:<22} {:<8} {:>5} {:>8.2} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9.2}{}\n",
            imp,
            backend,
            n,
            avg(&|p| p.bring_up_s),
            f(percentile(&conv, 50.0)),
            f(percentile(&conv, 99.0)),
            f(avg_opt(&g, |p| p.last_peer_p50_s)),
            f(avg_opt(&g, |p| p.last_peer_p99_s)),
            g.iter().map(|p| p.entries_per_host_max).max().unwrap_or(0),
            g.iter().map(|p| p.entries_total).max().unwrap_or(0),
            g.iter().map(|p| p.etcd_writes).max().unwrap_or(0),
            g.iter().map(|p| p.agent_rss_kib_max).max().unwrap_or(0),
            avg(&|p| p.agent_pss_kib_mean as f64) as u64,
            avg(&|p| p.agent_cpu_ms_mean as f64) as u64,
            avg(&|p| p.teardown_s),
            if all_conv {
                String::new()
            } else {
                format!(
                    "  {} of {} repeats did not converge: {}",
                    g.len() - conv.len(),
                    g.len(),
                    g.iter().find(|p| p.converge_s.is_none()).map(|p| p.note.as_str()).unwrap_or("")
                )
            }
        ));
    }
    if let Some((a, b)) = compared(points) {
        out.push_str(&format!("\nratios {b} / {a} (convergence p50, agent RSS, agent PSS, agent CPU):\n"));
        let f = |v: Option<f64>| v.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
        for r in ratios(points) {
            out.push_str(&format!(
                "  {:<8} {:>5} hosts: convergence {}, RSS {}, PSS {}, CPU {}\n",
                r.backend,
                r.hosts,
                f(r.converge),
                f(r.rss),
                f(r.pss),
                f(r.cpu)
            ));
        }
    }
    let spread: Vec<String> = dedup(points.iter().filter(|p| p.start_spread_s > 0.0).map(|p| p.implementation.as_str()))
        .into_iter()
        .map(|imp| {
            let s = points.iter().find(|p| p.implementation == imp).map(|p| p.start_spread_s).unwrap_or_default();
            format!("{imp}'s agents started evenly over {s:.1} s (its profile's start_spread)")
        })
        .collect();
    if !spread.is_empty() {
        out.push_str(&format!("\n{}; convergence counts from the last start\n", spread.join("; ")));
    }
    out
}

/// The two implementations a run compares (base first), when it measured exactly two.
fn compared(points: &[Point]) -> Option<(&str, &str)> {
    match dedup(points.iter().map(|p| p.implementation.as_str())).as_slice() {
        [a, b] => Some((a, b)),
        _ => None,
    }
}

/// The second implementation's figures over the first's at one backend and size (None
/// where either side has no figure: a point that never converged has no convergence).
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub backend: String,
    pub hosts: u32,
    pub converge: Option<f64>,
    pub rss: Option<f64>,
    pub pss: Option<f64>,
    pub cpu: Option<f64>,
}

/// Ratios of the compared implementations at every backend and size both measured.
pub fn ratios(points: &[Point]) -> Vec<Ratio> {
    let Some((a, b)) = compared(points) else { return Vec::new() };
    let measured: Vec<Point> = points.iter().filter(|p| p.plotted()).cloned().collect();
    let groups = groups(&measured);
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    let med = |g: &[&Point]| percentile(&g.iter().filter_map(|p| p.converge_s).collect::<Vec<_>>(), 50.0);
    let rss = |g: &[&Point]| Some(g.iter().map(|p| p.agent_rss_kib_max as f64).fold(0.0, f64::max));
    let pss = |g: &[&Point]| Some(g.iter().map(|p| p.agent_pss_kib_mean as f64).sum::<f64>() / g.len() as f64);
    let cpu = |g: &[&Point]| Some(g.iter().map(|p| p.agent_cpu_ms_mean as f64).sum::<f64>() / g.len() as f64);
    let mut out = Vec::new();
    for ((imp, backend, n), g) in &groups {
        if imp != b {
            continue;
        }
        let Some(base) = groups.get(&(a.to_string(), backend.clone(), *n)) else { continue };
        out.push(Ratio {
            backend: backend.clone(),
            hosts: *n,
            converge: ratio(med(g), med(base)),
            rss: ratio(rss(g), rss(base)),
            pss: ratio(pss(g), pss(base)),
            cpu: ratio(cpu(g), cpu(base)),
        });
    }
    out
}

/// The ratios as plot series: one per figure and backend, against host count.
fn ratio_series(points: &[Point]) -> Vec<plot::Series> {
    let rs = ratios(points);
    let mut out: Vec<plot::Series> = Vec::new();
    type Get = fn(&Ratio) -> Option<f64>;
    let figures: [(&str, Get); 4] = [("convergence", |r| r.converge), ("RSS", |r| r.rss), ("PSS", |r| r.pss), ("CPU", |r| r.cpu)];
    for backend in dedup(rs.iter().map(|r| r.backend.as_str())) {
        for (name, get) in figures {
            let pts: Vec<(f64, f64)> =
                rs.iter().filter(|r| r.backend == backend).filter_map(|r| get(r).map(|v| (f64::from(r.hosts), v))).collect();
            if !pts.is_empty() {
                out.push(plot::Series { label: format!("{name} {backend}"), points: pts });
            }
        }
    }
    out
}

fn avg_opt(g: &[&Point], f: impl Fn(&Point) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = g.iter().filter_map(|p| f(p)).collect();
    if v.is_empty() {
        None
    } else {
        Some(v.iter().sum::<f64>() / v.len() as f64)
    }
}

fn dedup<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for x in it {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

type Group<'a> = BTreeMap<(String, String, u32), Vec<&'a Point>>;

fn groups(points: &[Point]) -> Group<'_> {
    let mut g: Group = BTreeMap::new();
    for p in points {
        g.entry((p.implementation.clone(), p.backend.clone(), p.hosts)).or_default().push(p);
    }
    g
}

/// Writes `scale.csv`, `scale.json` and one SVG per figure into `dir`.
pub fn write_files(points: &[Point], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| lab_err!("create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let json = serde_json::to_string_pretty(points).map_err(|e| lab_err!("scale.json: {e}"))?;
    let path = dir.join("scale.json");
    std::fs::write(&path, json).map_err(|e| lab_err!("write {}: {e}", path.display()))?;
    written.push(path);
    let path = dir.join("scale.csv");
    std::fs::write(&path, csv(points)).map_err(|e| lab_err!("write {}: {e}", path.display()))?;
    written.push(path);
    for (name, title, get) in FIGURES {
        let series = plot::series(points, |p| get(p).map(|y| (f64::from(p.hosts), y)));
        let path = dir.join(format!("{name}.svg"));
        std::fs::write(&path, plot::svg(title, "hosts", &series)).map_err(|e| lab_err!("write {}: {e}", path.display()))?;
        written.push(path);
    }
    if let Some((a, b)) = compared(points) {
        let path = dir.join("ratios.svg");
        let title = format!("{b} / {a}");
        std::fs::write(&path, plot::svg(&title, "hosts", &ratio_series(points))).map_err(|e| lab_err!("write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The CSV's columns: every field of [`Point`], in its order.
const CSV_COLUMNS: &[&str] = &[
    "implementation",
    "backend",
    "hosts",
    "repeat",
    "bring_up_s",
    "spawn_s",
    "start_spread_s",
    "restarts",
    "converge_s",
    "converged_hosts",
    "first_peer_p50_s",
    "last_peer_p50_s",
    "last_peer_p99_s",
    "entries_per_host_max",
    "entries_total",
    "etcd_keys",
    "etcd_writes",
    "agent_rss_kib_mean",
    "agent_rss_kib_max",
    "agent_pss_kib_mean",
    "agent_cpu_ms_mean",
    "agent_cpu_ms_max",
    "harness_cpu_s",
    "polls",
    "poll_ms_mean",
    "teardown_s",
    "note",
    "measured",
];

fn csv(points: &[Point]) -> String {
    let v = serde_json::to_value(points).unwrap_or_default();
    let rows = v.as_array().cloned().unwrap_or_default();
    let cols = CSV_COLUMNS;
    let mut out = cols.join(",") + "\n";
    for r in &rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match &r[*c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => format!("\"{}\"", s.replace('"', "\"\"")),
                other => other.to_string(),
            })
            .collect();
        out += &(cells.join(",") + "\n");
    }
    out
}

/// The worst relative residual of the linear fit of each figure, per series: the points
/// where cost stops being linear stand out in the table as they do in the plots.
pub fn linearity(points: &[Point]) -> String {
    let mut out = String::from("linear fit per figure (y = a + b·hosts): R², worst residual\n");
    for (name, _, get) in FIGURES {
        let series = plot::series(points, |p| get(p).map(|y| (f64::from(p.hosts), y)));
        for s in &series {
            if let Some(fit) = plot::Fit::of(&s.points) {
                out += &format!("  {name:<17} {:<28} {}\n", s.label, fit.describe(&s.points));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_every_field_in_order() {
        let p = Point {
            implementation: "reference".into(),
            backend: "vxlan".into(),
            hosts: 10,
            repeat: 1,
            bring_up_s: 0.5,
            spawn_s: 0.01,
            start_spread_s: 0.0,
            restarts: 0,
            converge_s: None,
            converged_hosts: 9,
            first_peer_p50_s: Some(0.1),
            last_peer_p50_s: Some(0.2),
            last_peer_p99_s: Some(0.3),
            entries_per_host_max: 27,
            entries_total: 243,
            etcd_keys: 11,
            etcd_writes: 10,
            agent_rss_kib_mean: 7000,
            agent_rss_kib_max: 7100,
            agent_pss_kib_mean: 2600,
            agent_cpu_ms_mean: 12,
            agent_cpu_ms_max: 20,
            harness_cpu_s: 0.2,
            polls: 4,
            poll_ms_mean: 15.0,
            teardown_s: 0.1,
            note: "deadline, \"quoted\"".into(),
            measured: true,
        };
        let fields = serde_json::to_value(&p).unwrap().as_object().unwrap().len();
        assert_eq!(fields, CSV_COLUMNS.len(), "a Point field is missing from the CSV");
        let text = csv(&[p]);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("implementation,backend,hosts,repeat,"));
        let row = lines.next().unwrap();
        assert!(row.starts_with("\"reference\",\"vxlan\",10,1,0.5,0.01,0.0,0,,9,"), "{row}");
        assert!(row.ends_with(",\"deadline, \"\"quoted\"\"\",true"), "{row}");
    }

    #[test]
    fn ratios_pair_the_second_implementation_with_the_first_at_each_size() {
        let mk = |imp: &str, n: u32, conv: Option<f64>, rss: u64| {
            let mut p = Point::unmeasured(imp, Backend::Vxlan, n, 1, String::new());
            p.measured = true;
            p.converge_s = conv;
            p.agent_rss_kib_max = rss;
            p.agent_pss_kib_mean = rss / 2;
            p.agent_cpu_ms_mean = 10;
            p
        };
        let points = [
            mk("reference", 10, Some(0.5), 1000),
            mk("other", 10, Some(1.0), 3000),
            mk("reference", 50, Some(1.0), 1000),
            mk("other", 50, None, 2000),
        ];
        let r = ratios(&points);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].hosts, r[0].converge, r[0].rss, r[0].pss, r[0].cpu), (10, Some(2.0), Some(3.0), Some(3.0), Some(1.0)));
        // no convergence, no convergence ratio; the other figures stand
        assert_eq!((r[1].hosts, r[1].converge, r[1].rss), (50, None, Some(2.0)));
        let t = table(&points);
        assert!(t.contains("ratios other / reference") && t.contains("convergence 2.00, RSS 3.00"), "{t}");
        let series = ratio_series(&points);
        assert!(series.iter().any(|s| s.label == "convergence vxlan" && s.points == vec![(10.0, 2.0)]));
        assert!(series.iter().any(|s| s.label == "RSS vxlan" && s.points.len() == 2));
        // one implementation: nothing to compare
        assert!(ratios(&points[..1]).is_empty() && !table(&points[..1]).contains("ratios"));
    }

    #[test]
    fn a_size_whose_agents_cannot_fit_is_skipped() {
        let mut p = Point::unmeasured("fat", Backend::Vxlan, 10, 1, String::new());
        p.measured = true;
        // a petabyte per agent fits on no machine; unmeasured points and other
        // implementations are no guide
        p.agent_pss_kib_mean = 1 << 40;
        let e = room_for(std::slice::from_ref(&p), "fat", 20).unwrap_err();
        assert!(e.starts_with("memory: 20 agents at"), "{e}");
        assert!(room_for(std::slice::from_ref(&p), "lean", 20).is_ok());
        p.measured = false;
        assert!(room_for(&[p], "fat", 20).is_ok());
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 99.0), Some(5.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn cpu_time_reads_this_process() {
        // spin a little so there is something to count
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let cpu = cpu_time(std::process::id()).expect("own /proc stat");
        assert!(cpu >= Duration::from_millis(10), "{cpu:?}");
    }
}
