//! Convergence: the contract, the data plane and, after a restart, fresh evidence; staying
//! converged; exact per-host counts; subnets kept across faults.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::trial_state::{PollCost, Reading, Settle, MUTANT_SETTLE, NEIGHBOUR_DUMPS_UP_TO};
use super::{outcome, StepError, StepKind, StepResult, Trial};
use crate::contract::{Backend, Check, Counts, Finding, DEFAULT_PREFIX};
use crate::input::case::{Dur, Ref};
use crate::probe;

/// The VTEP MAC of the `i`th canary lease's fake peer.
fn canary_mac(i: usize) -> String {
    format!("0e:ca:0a:00:00:{:02x}", i + 1)
}

/// One canary: a fake peer at a spare underlay address on one segment, with its lease.
struct Canary {
    /// Index in the lab's spares.
    spare: usize,
    ip: std::net::Ipv4Addr,
    subnet: crate::input::names::Ipv4Net,
    v6: Option<(crate::input::names::Ipv6Net, std::net::Ipv6Addr)>,
    mac: String,
    key: String,
    /// udp: the canary's listener on the flannel port (peers live in the agent).
    listener: Option<probe::UdpListener>,
}

/// Waits until etcd, subnet files and kernel state match the contract on every host,
/// every host reaches every peer over the overlay, and, after a restart, a canary lease
/// the harness adds and removes is followed everywhere.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WaitConverged {
    pub within: Dur,
    /// Backends under which hosts on different segments cannot reach each other's pods
    /// (host-gw across a router): those pairs are left out of the data-plane check.
    #[serde(default)]
    pub cross_segment_fails: Vec<String>,
}

impl StepKind for WaitConverged {
    fn refs(&self) -> Vec<Ref<'_>> {
        self.cross_segment_fails.iter().map(|b| Ref::Backend(b)).collect()
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.wait_converged(self).await
    }
}

/// The converged state must hold at every check (every 100 ms) for this long, and every
/// agent must keep running: faults that show up late are caught.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StayConverged {
    #[serde(rename = "for")]
    pub duration: Dur,
}

impl StepKind for StayConverged {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.stay_converged(self.duration.0).await
    }
}

/// Exactly one route, neighbour and FDB entry per peer on every host, right now.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectCounts {}

impl StepKind for ExpectCounts {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.expect_counts().await
    }
}

/// Every remaining host still holds the subnet it had at the first convergence.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectSubnetsUnchanged {}

impl StepKind for ExpectSubnetsUnchanged {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let first = t.first_subnets.clone().ok_or("no earlier convergence to compare with")?;
        let now = t.subnets().await?;
        let changed: Vec<Finding> = first
            .iter()
            .filter(|(h, _)| !t.removed.contains(*h))
            .filter(|(h, s)| now.get(*h) != Some(s))
            .map(|(h, s)| Finding::new(Check::Subnets, h.as_str(), format!("{s} became {:?}", now.get(h).map(|n| n.to_string()))))
            .collect();
        if first.is_empty() {
            return Err("expect_subnets_unchanged examined nothing: no subnets at the first convergence".into());
        }
        outcome(changed)
    }
}

impl Trial<'_> {
    /// Waits for convergence; at size (up to [`super::trial_state::FULL_COVERAGE_UP_TO`] hosts)
    /// the data plane counts only once every pair answered.
    async fn wait_converged(&mut self, w: &WaitConverged) -> StepResult {
        let n = self.active_hosts().count();
        let at_size = self.lab.hosts.len() > NEIGHBOUR_DUMPS_UP_TO;
        self.cover = (at_size && n <= super::trial_state::FULL_COVERAGE_UP_TO)
            .then(|| super::trial_state::Coverage { start: self.reach_round, ..Default::default() });
        let result = self.wait_converged_polls(w).await;
        self.cover = None;
        result
    }

    async fn wait_converged_polls(&mut self, w: &WaitConverged) -> StepResult {
        let within = w.within.0;
        let t0 = Instant::now();
        let deadline = t0 + within;
        let wall_start = std::time::SystemTime::now();
        let mut next_refusal_check = t0 + Duration::from_secs(1);
        let mut settle = Settle::default();
        self.polls = PollCost::start();
        // only answers seen during this wait count (a fault may have come since the last)
        self.reach_answered.clear();
        // what the previous poll found: a lab error at the deadline's last poll does not
        // throw it away
        let mut previous: Vec<Finding> = Vec::new();
        loop {
            let last = Instant::now() >= deadline;
            let mut findings = match self.convergence_findings(&w.cross_segment_fails, last).await {
                Ok(f) => f,
                Err(StepError::Lab(e)) if last && !previous.is_empty() => {
                    tracing::info!("the deadline's last poll failed ({}); the findings of the poll before stand", crate::error::chain(&e));
                    if let Some(f) = previous.first_mut() {
                        f.what = format!(
                            "not converged within {within:?} (at the poll before the last, which failed: {}): {}",
                            crate::error::chain(&e),
                            f.what
                        );
                    }
                    return Err(StepError::Check(previous));
                }
                Err(e) => return Err(e),
            };
            // at size polls look neighbours up one by one: whole reads of a window of hosts
            // confirm (extras)
            if findings.is_empty() && !last && self.polls_look_up_neighbours() {
                findings = self.observe_reading(Reading::Sample(self.confirm_round)).await?.0;
                self.confirm_round += 1;
                if !findings.is_empty() {
                    // the control plane is not what it looked: the data plane's answers go too
                    self.voids_answers();
                }
                tracing::info!(
                    "looked for extra neighbour entries on {} of {} hosts (whole reads; a window that moves on each time)",
                    NEIGHBOUR_DUMPS_UP_TO.min(self.lab.hosts.len()),
                    self.lab.hosts.len()
                );
            }
            if findings.iter().any(|f| f.check == Check::AgentExit) {
                return Err(StepError::Check(findings));
            }
            // a mutant trial at its expected step: once nothing changes, every check once
            // more, and a stop when the expected finding is among them
            if !last && self.settle_on.is_some() && !findings.is_empty() && settle.quiet(&findings) {
                let mut all = self.convergence_findings(&w.cross_segment_fails, true).await?;
                if self.holds_expected(&all) {
                    if let Some(f) = all.first_mut() {
                        f.what = format!(
                            "not converged after {:.1} s (a mutant trial: stopped once nothing had changed for {MUTANT_SETTLE:?}; deadline {within:?}): {}",
                            t0.elapsed().as_secs_f64(),
                            f.what
                        );
                    }
                    return Err(StepError::Check(all));
                }
                settle.reset();
            }
            // settled early: during this wait etcd refused a host's certificate again and
            // again (checked once a second)
            if !last && !findings.is_empty() && self.store.pki.is_some() && Instant::now() >= next_refusal_check {
                next_refusal_check = Instant::now() + Duration::from_secs(1);
                let refused = self.refusals(Some(wall_start)).await?;
                if refused.values().any(|(n, _)| *n >= 3) {
                    let mut all = super::trial_state::refusal_findings(refused);
                    all.extend(findings);
                    return Err(StepError::Check(all));
                }
            }
            if findings.is_empty() {
                if self.canary_due.is_some() {
                    // its own deadline, the wait's whole budget: a wait that converged late
                    // does not leave the canary seconds to be followed in
                    self.canary_round(Instant::now() + within).await?;
                }
                if self.first_subnets.is_none() {
                    self.first_subnets = Some(self.subnets().await?);
                }
                let since_start = self.agents_started.map(|s| s.elapsed().as_millis()).unwrap_or(0);
                let rss = self
                    .agents
                    .iter()
                    .filter_map(|a| a.child.rss_kib())
                    .max()
                    .map(|k| format!(", largest agent RSS {k} KiB"))
                    .unwrap_or_default();
                tracing::info!(
                    "converged {since_start} ms after agents started ({} ms waiting, data plane included{rss})",
                    t0.elapsed().as_millis()
                );
                tracing::info!("polls: {}", self.polls.describe());
                return Ok(());
            }
            if last {
                let mut findings = findings;
                if let Some(f) = findings.first_mut() {
                    f.what = format!("not converged within {within:?}: {}", f.what);
                }
                tracing::info!("polls: {}", self.polls.describe());
                return Err(StepError::Check(findings));
            }
            previous = findings;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fresh evidence after a restart: the harness announces canary leases (fake peers at
    /// spare underlay addresses, one on every segment that holds hosts, so routed topologies
    /// see near and far peers) and then withdraws them; every host must follow both, which a
    /// hung or stale agent cannot fake with the state it had before. vxlan and host-gw show
    /// it in the kernel (the contract counts the canaries as peers); udp keeps peers in the
    /// agent, so each host's echo to each canary's subnet must arrive at that canary's udp
    /// port, and no longer once it is withdrawn.
    async fn canary_round(&mut self, deadline: Instant) -> StepResult {
        let (since, what) = self.canary_due.clone().expect("a canary is due");
        let conf = self.conf()?.clone();
        let mut segments: Vec<usize> = Vec::new();
        for h in &self.lab.topo.hosts {
            if !segments.contains(&h.segment) {
                segments.push(h.segment);
            }
        }
        while self.lab.spares.len() < segments.len() {
            let i = self.lab.spares.len();
            let name = if i == 0 { "canary".to_string() } else { format!("canary{}", i + 1) };
            self.lab.add_spare(&name, segments[i]).await?;
        }
        let leases: Vec<crate::contract::LeaseView> = self.leases().await?.into_iter().filter_map(|(_, l)| l.ok()).collect();
        let mut used: Vec<crate::input::names::Ipv4Net> = leases.iter().map(|l| l.subnet).collect();
        let mut used6: Vec<crate::input::names::Ipv6Net> = leases.iter().filter_map(|l| l.subnet6).collect();
        let mut canaries = Vec::new();
        for i in 0..segments.len() {
            let spare = &self.lab.spares[i];
            let (ip, ip6) = (spare.addr, spare.addr6);
            // the highest free subnet
            let subnet = if conf.enable_ipv4 {
                conf.ipv4().highest_free(&used).ok_or("no free subnet left for a canary lease")?
            } else {
                crate::input::names::Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, 0).expect("valid")
            };
            used.push(subnet);
            // the IPv6 half when the net-conf has one: the highest free IPv6 subnet, at the
            // canary's IPv6 underlay address, so IPv6 peers are judged on fresh evidence too
            let v6 = match conf.ipv6 {
                None => None,
                Some(net6) => {
                    let ip6 = ip6.ok_or(
                        "the net-conf enables IPv6 but the topology has no IPv6 underlay for the canary (give its segments a cidr6)",
                    )?;
                    let s6 = net6.highest_free(&used6).ok_or("no free IPv6 subnet left for a canary lease")?;
                    used6.push(s6);
                    Some((s6, ip6))
                }
            };
            let key = match v6 {
                None => format!("{DEFAULT_PREFIX}/subnets/{}-{}", subnet.addr(), subnet.prefix()),
                Some((s6, _)) => format!("{DEFAULT_PREFIX}/subnets/{}-{}&{}-{}", subnet.addr(), subnet.prefix(), s6.addr(), s6.prefix()),
            };
            let listener = match conf.backend {
                Backend::Udp => Some(probe::UdpListener::start(&spare.ns, conf.port)?),
                _ => None,
            };
            canaries.push(Canary { spare: i, ip, subnet, v6, mac: canary_mac(i), key, listener });
        }
        let t0 = Instant::now();
        for c in &canaries {
            let public_ip = if conf.enable_ipv4 { c.ip } else { std::net::Ipv4Addr::UNSPECIFIED };
            let mut value = match conf.backend {
                Backend::Vxlan => serde_json::json!({"PublicIP": public_ip.to_string(), "PublicIPv6": null, "BackendType": "vxlan",
                    "BackendData": {"VNI": conf.vni, "VtepMAC": c.mac}}),
                Backend::HostGw => serde_json::json!({"PublicIP": public_ip.to_string(), "PublicIPv6": null, "BackendType": "host-gw"}),
                Backend::Udp => serde_json::json!({"PublicIP": public_ip.to_string(), "PublicIPv6": null}),
            };
            if !conf.enable_ipv4 {
                value.as_object_mut().expect("object").remove("BackendData");
            }
            if let Some((_, ip6)) = c.v6 {
                value["PublicIPv6"] = serde_json::json!(ip6.to_string());
                if conf.backend == Backend::Vxlan {
                    value["BackendV6Data"] = serde_json::json!({"VNI": conf.vni, "VtepMAC": c.mac});
                }
            }
            self.store.put(&c.key, value.to_string()).await?;
        }
        let added = self.follow_canary(deadline, &canaries, true).await;
        let learned = t0.elapsed();
        // withdraw them whatever happened, so a control that goes on is not misled
        let mut deleted = Ok(());
        for c in &canaries {
            if let Err(e) = self.store.delete(&c.key).await {
                deleted = Err(StepError::from(e));
            }
        }
        // a finding that names a canary (its subnet, address or VTEP MAC; under udp the
        // listeners' reachability findings) is the canary not followed; anything else (a
        // stale FDB entry, a stale device, an exited agent) is reported as itself, so it is
        // matched for what it is
        let mut names = Vec::new();
        let mut labels = Vec::new();
        for c in &canaries {
            names.extend([c.ip.to_string(), c.mac.clone()]);
            if conf.enable_ipv4 {
                names.push(c.subnet.addr().to_string());
            }
            if let Some((s6, ip6)) = c.v6 {
                names.extend([s6.addr().to_string(), ip6.to_string()]);
            }
            let segment = &self.lab.topo.segments[segments[c.spare]].name;
            labels.push(match (conf.enable_ipv4, c.v6) {
                (true, Some((s6, _))) => format!("{} & {s6} (on {segment})", c.subnet),
                (false, Some((s6, _))) => format!("{s6} (on {segment})"),
                _ => format!("{} (on {segment})", c.subnet),
            });
        }
        let label = labels.join(", ");
        let (plural, was) = if canaries.len() > 1 { ("leases", "were") } else { ("lease", "was") };
        // (an exit is itself, whatever its log lines name)
        let about_canary = |f: &Finding| {
            f.check != Check::AgentExit && (f.check == Check::Reachability || names.iter().any(|n| f.what.contains(n.as_str())))
        };
        // a finding about a canary becomes a canary finding; one of kernel state stays as
        // well (it may be about real peers too: a stale entry beside the canary's)
        let fail = |findings: Vec<Finding>, phase: &str| {
            let mut out = Vec::new();
            for f in findings {
                if about_canary(&f) {
                    let what = format!("after {what}, the canary {plural} {label} {phase}: [{}] {}", f.check, f.what);
                    out.push(Finding::new(Check::Canary, f.host.as_str(), what));
                    if matches!(f.check, Check::Routes | Check::Neighbours | Check::Fdb) {
                        out.push(f);
                    }
                } else {
                    out.push(f);
                }
            }
            StepError::Check(out)
        };
        match added? {
            Some(findings) => return Err(fail(findings, &format!("added then {was} not followed"))),
            None => deleted?,
        }
        let mut removed = self.follow_canary(deadline, &canaries, false).await?;
        // udp keeps peers in the agent: after the withdrawal its data path must stop
        // carrying traffic to the canaries' subnets too
        if removed.is_none() && conf.backend == Backend::Udp {
            removed = self.udp_canary_dropped(deadline, &canaries).await?;
        }
        if let Some(findings) = removed {
            return Err(fail(findings, &format!("withdrawn then {was} still served")));
        }
        tracing::info!(
            "after {what}: canary {plural} {label} learned by every host in {} ms and dropped by every host in {} ms; converged again {} ms after it",
            learned.as_millis(),
            (t0.elapsed() - learned).as_millis(),
            since.elapsed().as_millis()
        );
        self.canary_due = None;
        Ok(())
    }

    /// One echo from every active host's `cni0` to each of `targets` (through its agent,
    /// for udp), each waiting up to `wait` for a reply.
    async fn echo_from_gateways(&self, targets: &[std::net::Ipv4Addr], wait: Duration) -> StepResult {
        let mut jobs = Vec::new();
        for (h, g) in self.gateways.iter().filter(|(h, _)| !self.removed.contains(*h)) {
            let ns = self.lab.host(h).expect("gateway host").ns.clone();
            let Some((src, _)) = g.v4 else { continue };
            let targets = targets.to_vec();
            jobs.push(std::thread::spawn(move || probe::sweep(&ns, src, targets, 1, wait)));
        }
        for j in jobs {
            j.join().expect("probe thread")?;
        }
        Ok(())
    }

    /// Per active host (name, PublicIP, cni0 address): whether one of `seen` (datagrams a
    /// canary's listener received) came from it carrying its echo to `target`.
    fn canary_carriers(
        &self,
        seen: &[(std::net::Ipv4Addr, Vec<u8>)],
        target: std::net::Ipv4Addr,
    ) -> Vec<(String, std::net::Ipv4Addr, std::net::Ipv4Addr, bool)> {
        self.gateways
            .iter()
            .filter(|(h, _)| !self.removed.contains(*h))
            .filter_map(|(h, g)| {
                let node = self.lab.host(h).expect("gateway host");
                let (src, _) = g.v4?;
                let carried = seen
                    .iter()
                    .any(|(from, p)| *from == node.addr && probe::inner_addresses(p).is_some_and(|(s, d)| s == src && d == target));
                Some((h.clone(), node.addr, src, carried))
            })
            .collect()
    }

    /// udp, after the canaries' withdrawal: echoes from every host to each canary's subnet
    /// no longer reach that canary through the agents. Each round sends one echo per host
    /// and canary and looks at what arrived from then on (the echo's own wait is the
    /// window); `None` once a round arrives empty, else the hosts still forwarding at the
    /// deadline.
    async fn udp_canary_dropped(&mut self, deadline: Instant, canaries: &[Canary]) -> Result<Option<Vec<Finding>>, StepError> {
        let targets: Vec<std::net::Ipv4Addr> = canaries.iter().map(|c| c.subnet.nth(1)).collect();
        loop {
            let marks: Vec<usize> = canaries.iter().map(|c| c.listener.as_ref().map(|l| l.seen().len()).unwrap_or(0)).collect();
            self.echo_from_gateways(&targets, Duration::from_millis(200)).await?;
            let mut findings = Vec::new();
            for (c, mark) in canaries.iter().zip(marks) {
                let Some(l) = &c.listener else { continue };
                let seen = l.seen();
                let target = c.subnet.nth(1);
                for (h, addr, src, carried) in self.canary_carriers(&seen[mark..], target) {
                    if carried {
                        let what =
                            format!("a datagram from {addr} carrying {src} -> {target} still reached the canary {}'s udp port", c.ip);
                        findings.push(Finding::new(Check::Reachability, h, what));
                    }
                }
            }
            if findings.is_empty() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Ok(Some(findings));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until every host follows the leases as etcd has them now (canaries included)
    /// and, for udp while the canaries are `announced`, until every host's echo to each
    /// canary's subnet reached that canary through its agent. `None` when followed (two
    /// clean polls in a row); else the findings at the deadline.
    async fn follow_canary(&mut self, deadline: Instant, canaries: &[Canary], announced: bool) -> Result<Option<Vec<Finding>>, StepError> {
        let mut settle = Settle::default();
        let settles = self.settle_on.as_ref().is_some_and(|e| e.check == Check::Canary);
        let udp: Vec<&Canary> = if announced { canaries.iter().filter(|c| c.listener.is_some()).collect() } else { Vec::new() };
        let mut clean = false;
        loop {
            // exits read after the state, and before its error: a read that failed on a
            // dying agent's host hides no exit
            let observed = self.observe().await;
            let exits = self.agent_exits()?;
            if !exits.is_empty() {
                // an agent that died (and no restart policy brings back) cannot follow:
                // settled, and the exit is the finding (as in any wait), not the state its
                // host was left in when it died during this poll
                return Ok(Some(exits));
            }
            let mut findings = observed?.0;
            if !udp.is_empty() {
                let targets: Vec<std::net::Ipv4Addr> = udp.iter().map(|c| c.subnet.nth(1)).collect();
                self.echo_from_gateways(&targets, Duration::from_millis(50)).await?;
                for c in &udp {
                    let seen = c.listener.as_ref().expect("udp canaries listen").seen();
                    let target = c.subnet.nth(1);
                    for (h, addr, src, arrived) in self.canary_carriers(&seen, target) {
                        if !arrived {
                            findings.push(Finding::new(
                                Check::Reachability,
                                h,
                                format!("no datagram from {addr} carrying {src} -> {target} reached the canary {}", c.ip),
                            ));
                        }
                    }
                }
            }
            // followed: the state held in two polls in a row, 100 ms apart (an agent that
            // installs a peer and takes it away again has not followed it)
            if findings.is_empty() {
                if clean {
                    return Ok(None);
                }
                clean = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            clean = false;
            // a mutant trial expecting the canary unfollowed: stop once nothing changes
            let settled =
                settles && settle.quiet(&findings) && findings.iter().any(|f| self.settle_on.as_ref().is_some_and(|e| e.host == f.host));
            if settled {
                tracing::info!("a mutant trial: the canary findings had not changed for {MUTANT_SETTLE:?}, stopped before the deadline");
            }
            if settled || Instant::now() >= deadline {
                return Ok(Some(findings));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stay_converged(&mut self, duration: Duration) -> StepResult {
        let t0 = Instant::now();
        let mut checks = 0;
        // each agent's memory through the window (a steady climb is a leak)
        let mut rss: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        loop {
            let exits = self.agent_exits()?;
            if !exits.is_empty() {
                return Err(StepError::Check(exits));
            }
            for (host, k) in self.agents_rss().into_iter().filter(|(h, _)| !self.case.host_profiles.contains_key(h)) {
                rss.entry(host).or_default().push(k);
            }
            let (findings, _) = self.observe().await?;
            checks += 1;
            if !findings.is_empty() {
                return Err(StepError::Check(findings).map_findings(|mut f| {
                    f.what = format!("converged state lost after {} ms: {}", t0.elapsed().as_millis(), f.what);
                    f
                }));
            }
            if t0.elapsed() >= duration {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // the data plane once more at the end: a path that died quietly is caught too
        let cross = self.cross_segment_fails();
        let reach = self.reachability(&cross).await?;
        if !reach.is_empty() {
            return Err(StepError::Check(reach));
        }
        let leaks: Vec<Finding> = rss
            .iter()
            .filter_map(|(h, samples)| {
                let (from, to) = steady_growth(samples)?;
                let what = format!(
                    "agent memory grew steadily from {} to {} MiB over {duration:?} ({} samples of its process group's RSS): a leak",
                    from / 1024,
                    to / 1024,
                    samples.len()
                );
                Some(Finding::new(Check::Resource, h.as_str(), what))
            })
            .collect();
        if !leaks.is_empty() {
            return Err(StepError::Check(leaks));
        }
        tracing::info!("stayed converged for {duration:?} ({checks} checks, data plane at the end)");
        Ok(())
    }

    /// Exactly the contract's number of entries per host, duplicates counted: with N active
    /// hosts, vxlan has N−1 routes, neighbours and FDB entries; host-gw one route per peer
    /// on its segment; udp one route and nothing per peer.
    async fn expect_counts(&mut self) -> StepResult {
        let conf = self.conf()?.clone();
        let (mut findings, counts) = self.observe().await?;
        let active: Vec<&crate::lab::Node> = self.active_hosts().collect();
        let n = active.len();
        if counts.is_empty() {
            return Err("expect_counts examined nothing: no host was read".into());
        }
        for node in &active {
            let peers = n - 1;
            let same_segment = active.iter().filter(|o| o.name != node.name && o.segment == node.segment).count();
            // (routes, neighbours, fdb, direct) of one address family
            let (r, nb, f, d) = match conf.backend {
                Backend::Vxlan if conf.direct_routing => {
                    let far = peers - same_segment;
                    (far, far, far, same_segment)
                }
                Backend::Vxlan => (peers, peers, peers, 0),
                Backend::HostGw => (same_segment, 0, 0, 0),
                Backend::Udp => (1, 0, 0, 0),
            };
            let mut want = Counts::default();
            if conf.enable_ipv4 {
                (want.routes, want.neighbours, want.fdb, want.direct) = (r, nb, f, d);
            }
            if conf.ipv6.is_some() && conf.backend != Backend::Udp {
                (want.routes6, want.neighbours6, want.fdb6, want.direct6) = (r, nb, f, d);
            }
            let have = counts.get(&node.name).copied().unwrap_or_default();
            if have != want {
                findings.push(Finding::new(
                    Check::Counts,
                    node.name.as_str(),
                    format!("{}, expected {} with {n} hosts", count_text(&have, &conf), count_text(&want, &conf)),
                ));
            }
        }
        if !findings.is_empty() {
            return Err(StepError::Check(findings));
        }
        let summary: Vec<String> = counts.iter().map(|(h, c)| format!("{h}={}", count_text(c, &conf))).collect();
        let total: usize =
            counts.values().map(|c| c.routes + c.neighbours + c.fdb + c.direct + c.routes6 + c.neighbours6 + c.fdb6 + c.direct6).sum();
        tracing::info!("{n} hosts: per host {} (total {total})", summary.join(" "));
        Ok(())
    }
}

/// `routes/neighbours/fdb 3/3/3`, with `direct 2` under DirectRouting; per family
/// (`v4 … v6 …`) when the net-conf enables IPv6.
fn count_text(c: &Counts, conf: &crate::contract::NetConf) -> String {
    let family = |r: usize, n: usize, f: usize, d: usize| {
        let base = format!("routes/neighbours/fdb {r}/{n}/{f}");
        if conf.direct_routing {
            format!("{base} direct {d}")
        } else {
            base
        }
    };
    let v4 = family(c.routes, c.neighbours, c.fdb, c.direct);
    match (conf.enable_ipv4, conf.ipv6.is_some()) {
        (true, false) => v4,
        (true, true) => format!("v4 {v4} v6 {}", family(c.routes6, c.neighbours6, c.fdb6, c.direct6)),
        (false, _) => format!("v6 {}", family(c.routes6, c.neighbours6, c.fdb6, c.direct6)),
    }
}

/// Memory that grows steadily through a window of samples (KiB): the mean of each third
/// above the one before, and the last third at least 8 MiB and a quarter above the first.
/// Returns the first and last thirds' means.
pub(super) fn steady_growth(samples: &[u64]) -> Option<(u64, u64)> {
    if samples.len() < 6 {
        return None;
    }
    let third = samples.len() / 3;
    let mean = |s: &[u64]| s.iter().sum::<u64>() / s.len() as u64;
    let (a, b, c) = (mean(&samples[..third]), mean(&samples[third..samples.len() - third]), mean(&samples[samples.len() - third..]));
    (a < b && b < c && c >= a + (8 * 1024).max(a / 4)).then_some((a, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_climb_is_a_leak_and_noise_is_not() {
        let climb: Vec<u64> = (0..30).map(|i| 8_000 + i * 1_000).collect();
        assert_eq!(steady_growth(&climb), Some((12_500, 32_500)));
        let flat: Vec<u64> = (0..30).map(|i| 8_000 + (i % 3) * 2_000).collect();
        assert_eq!(steady_growth(&flat), None, "noise around a level");
        let small: Vec<u64> = (0..30).map(|i| 8_000 + i * 100).collect();
        assert_eq!(steady_growth(&small), None, "under 8 MiB of growth");
        assert_eq!(steady_growth(&climb[..5]), None, "too few samples");
    }
}
