//! Pods and the probes made from them: pods wired from each subnet file, pod-to-pod ping,
//! and DF probes at the overlay MTU.

use std::time::Duration;

use serde::Deserialize;

use super::{StepError, StepKind, StepResult, Trial};
use crate::agents::Agent;
use crate::contract::{Check, Finding};
use crate::error::chain;
use crate::input::case::{Dur, Ref};
use crate::lab::pods as lab_pods;
use crate::lab_err;
use crate::probe::{self, PingOutcome};

/// Creates pods on every host that has none yet (so it can follow `add_host`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreatePods {
    #[serde(default = "one")]
    pub per_host: u32,
}

impl StepKind for CreatePods {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.create_pods(self.per_host).await
    }
}

fn one() -> u32 {
    1
}

/// Every pod pings every pod on every other host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectPing {
    /// Backends under which pods on different segments must NOT reach each other (while
    /// pods sharing a segment must): host-gw's documented limit.
    #[serde(default)]
    pub cross_segment_fails: Vec<String>,
    /// Keep pinging until every pair behaves or this long has passed (default: one round):
    /// for a repair the implementation makes on its own schedule.
    #[serde(default)]
    pub within: Option<Dur>,
}

impl StepKind for ExpectPing {
    fn refs(&self) -> Vec<Ref<'_>> {
        self.cross_segment_fails.iter().map(|b| Ref::Backend(b)).collect()
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let Some(within) = self.within else { return t.expect_ping(self).await };
        let t0 = std::time::Instant::now();
        loop {
            match t.expect_ping(self).await {
                Err(StepError::Check(mut f)) if t0.elapsed() >= within.0 => {
                    if let Some(first) = f.first_mut() {
                        first.what = format!("still after {within}: {}", first.what);
                    }
                    return Err(StepError::Check(f));
                }
                Err(StepError::Check(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(()) => {
                    tracing::info!("every pod pair behaved {} ms into the step", t0.elapsed().as_millis());
                    return Ok(());
                }
                other => return other,
            }
        }
    }
}

/// DF probes: the overlay MTU passes, one byte more is refused at the host; pod MTUs match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectMtu {
    /// Also: from each host's first pod, a DF packet of the pod's own MTU reaches a peer's
    /// pod in every family (dual stack: FLANNEL_MTU must fit the IPv6 tunnel too).
    #[serde(default)]
    pub pods_fit_every_family: bool,
}

impl StepKind for ExpectMtu {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.expect_mtu(self.pods_fit_every_family).await
    }
}

impl Trial<'_> {
    /// Creates pods on every host that has none yet (so it can follow `add_host`).
    async fn create_pods(&mut self, per_host: u32) -> StepResult {
        self.ensure_gateways().await?;
        let have: std::collections::BTreeSet<String> = self.pods.iter().map(|p| p.host.clone()).collect();
        let mut made = 0;
        for node in self.lab.hosts.iter().filter(|n| !have.contains(&n.name) && !self.removed.contains(&n.name)) {
            let gw = self.gateways.get(&node.name).copied().ok_or_else(|| {
                let path = Agent::subnet_file_path(node);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                StepError::check(
                    Check::SubnetFile,
                    node.name.as_str(),
                    format!("no usable FLANNEL_SUBNET/FLANNEL_MTU to wire pods from:\n{text}"),
                )
            })?;
            let wiring = self.pod_wiring(node)?;
            let pods =
                lab_pods::create(&self.lab, node, gw, per_host, &wiring).await.map_err(|e| lab_err!("{}: {}", node.name, chain(&e)))?;
            made += pods.len();
            self.pods.extend(pods);
        }
        if made == 0 && self.pods.is_empty() {
            return Err("create_pods made no pod".into());
        }
        Ok(())
    }

    /// From each host's first pod, a DF echo of exactly the pod's MTU to the first pod of the
    /// next host, in every family both have: a pod MTU larger than a tunnel's is refused at
    /// the node ("packet too big"), which PMTU discovery papers over but a DF sender meets.
    async fn pods_fit(&self, pod_mtus: &std::collections::BTreeMap<String, u32>) -> Result<Vec<Finding>, StepError> {
        let cross = self.cross_segment_fails();
        let firsts: Vec<&crate::lab::pods::Pod> = pod_mtus.keys().filter_map(|h| self.pods.iter().find(|p| &p.host == h)).collect();
        let mut jobs = Vec::new();
        for (i, src) in firsts.iter().enumerate() {
            let Some(dst) =
                (1..firsts.len()).map(|k| firsts[(i + k) % firsts.len()]).find(|d| !self.unreachable_pair(&cross, &src.host, &d.host))
            else {
                continue;
            };
            let mtu = pod_mtus[&src.host];
            let targets: Vec<std::net::IpAddr> =
                [src.addr.and(dst.addr).map(Into::into), src.addr6.and(dst.addr6).map(Into::into)].into_iter().flatten().collect();
            for to in targets {
                let (ns, label, host) = (src.ns.clone(), format!("{} -> {} ({to})", src.name, dst.name), src.host.clone());
                jobs.push(std::thread::spawn(move || {
                    let payload = (mtu - if to.is_ipv6() { 48 } else { 28 }) as usize;
                    let mut r = probe::ping_any(&ns, to, payload, true, Duration::from_secs(1));
                    for _ in 0..2 {
                        if matches!(r, Ok(PingOutcome::Timeout)) {
                            r = probe::ping_any(&ns, to, payload, true, Duration::from_secs(1));
                        }
                    }
                    (host, label, mtu, r)
                }));
            }
        }
        if jobs.is_empty() {
            return Err("expect_mtu pods_fit_every_family examined nothing: no pods on two hosts".into());
        }
        let results = tokio::task::spawn_blocking(move || jobs.into_iter().map(|j| j.join().expect("probe thread")).collect::<Vec<_>>())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (host, label, mtu, r) in results {
            match r? {
                PingOutcome::Reply { .. } => tracing::info!("{label}: a DF packet of the pod MTU {mtu} passes"),
                other => out.push(Finding::new(
                    Check::DfProbe,
                    host.as_str(),
                    format!("{label}: a DF packet of the pod's own MTU {mtu} does not fit: {other:?}"),
                )),
            }
        }
        Ok(out)
    }

    /// How this host's pods are wired: by the CNI plugins configured from its subnet file
    /// as flannel's plugin would, or by the lab (the case's `pod_wiring`; under `auto` the
    /// plugins when installed). The trial log says which.
    fn pod_wiring(&self, node: &crate::lab::Node) -> Result<lab_pods::Wiring, StepError> {
        use crate::input::case::PodWiring;
        let plugins = match self.case.pod_wiring {
            PodWiring::Lab => None,
            PodWiring::Auto => crate::lab::cni::plugin_dir(),
            PodWiring::Cni => Some(crate::lab::cni::plugin_dir().ok_or_else(|| {
                lab_err!("the case asks for CNI pod wiring, but no {:?} plugins are in $FLANNEL_LAB_CNI_PATH, /usr/lib/cni or /opt/cni/bin (ci/setup.sh installs containernetworking-plugins)", crate::lab::cni::PLUGINS)
            })?),
        };
        let Some(plugins) = plugins else {
            tracing::info!("{}: pods wired by the lab (pod_wiring {:?}; CNI plugins not used)", node.name, self.case.pod_wiring);
            return Ok(lab_pods::Wiring::Lab);
        };
        let text = std::fs::read_to_string(Agent::subnet_file_path(node)).unwrap_or_default();
        let env = crate::contract::SubnetEnv::parse(&text);
        let info = env.cni_info();
        let conf = crate::lab::cni::delegate_conf(&info, &node.dir.join("cni")).ok_or_else(|| {
            StepError::check(
                Check::SubnetFile,
                node.name.as_str(),
                format!("the subnet file lacks what flannel's CNI plugin needs:\n{text}"),
            )
        })?;
        tracing::info!("{}: pods wired by the CNI bridge plugin from {} with {conf}", node.name, plugins.display());
        Ok(lab_pods::Wiring::Cni { plugins, conf })
    }

    async fn expect_ping(&mut self, spec: &ExpectPing) -> StepResult {
        let split = spec.cross_segment_fails.iter().any(|b| b == self.backend.name());
        let segment_of = |host: &str| self.lab.host(host).map(|n| n.segment);
        let pairs: Vec<(usize, usize)> = (0..self.pods.len())
            .flat_map(|a| (0..self.pods.len()).map(move |b| (a, b)))
            .filter(|(a, b)| self.pods[*a].host != self.pods[*b].host)
            .filter(|(a, b)| !self.removed.contains(&self.pods[*a].host) && !self.removed.contains(&self.pods[*b].host))
            .collect();
        if pairs.is_empty() {
            return Err("expect_ping examined nothing: no pod pairs on different hosts (add create_pods and a second host)".into());
        }
        // every family the net-conf enables is pinged: a pod without an address of it fails
        let mut failed = Vec::new();
        if let Some(conf) = &self.conf {
            for p in self.pods.iter().filter(|p| !self.removed.contains(&p.host)) {
                if conf.enable_ipv4 && p.addr.is_none() {
                    failed.push(Finding::new(Check::Ping, p.host.as_str(), format!("{} has no IPv4 address", p.name)));
                }
                if conf.ipv6.is_some() && p.addr6.is_none() {
                    failed.push(Finding::new(
                        Check::Ping,
                        p.host.as_str(),
                        format!("{} has no IPv6 address although the net-conf enables IPv6", p.name),
                    ));
                }
            }
        }
        // every pair over IPv4, and over IPv6 too when both pods have an IPv6 address
        let targets: Vec<(usize, usize, std::net::IpAddr)> = pairs
            .iter()
            .flat_map(|&(a, b)| {
                let dst = &self.pods[b];
                let v4 = self.pods[a].addr.and(dst.addr).map(|d| (a, b, d.into()));
                v4.into_iter().chain(self.pods[a].addr6.and(dst.addr6).map(|d6| (a, b, d6.into())))
            })
            .collect();
        let jobs: Vec<_> = targets
            .iter()
            .map(|&(a, b, to)| {
                let (src, dst) = (&self.pods[a], &self.pods[b]);
                let ns = src.ns.clone();
                let label = format!("{} -> {} ({to})", src.name, dst.name);
                let reachable = !split || segment_of(&src.host) == segment_of(&dst.host);
                (
                    src.host.clone(),
                    label,
                    reachable,
                    std::thread::spawn(move || probe::ping_with_retries(&ns, to, 3, Duration::from_secs(1))),
                )
            })
            .collect();
        let results = tokio::task::spawn_blocking(move || {
            jobs.into_iter().map(|(h, l, reach, j)| (h, l, reach, j.join().expect("ping thread"))).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut worst = Duration::ZERO;
        let mut blocked = 0;
        for (host, label, reachable, r) in results {
            match (reachable, r?) {
                (true, PingOutcome::Reply { rtt }) => worst = worst.max(rtt),
                (true, other) => failed.push(Finding::new(Check::Ping, host, format!("{label}: {other:?}"))),
                (false, PingOutcome::Reply { .. }) => failed.push(Finding::new(
                    Check::Ping,
                    host,
                    format!(
                        "{label}: replied, but the case expects pods on different segments not to reach each other under {}",
                        self.backend
                    ),
                )),
                (false, _) => blocked += 1,
            }
        }
        if !failed.is_empty() {
            let n = failed.len();
            if let Some(f) = failed.first_mut() {
                f.what = format!("{n} of {} pod pings did not behave as expected; {}", targets.len(), f.what);
            }
            return Err(StepError::Check(failed));
        }
        let note =
            if split { format!("; {blocked} cross-segment pairs fail, as the case expects for {}", self.backend) } else { String::new() };
        let v6 = targets.iter().filter(|t| t.2.is_ipv6()).count();
        let over6 = if v6 > 0 { format!(", {v6} of them over IPv6") } else { String::new() };
        tracing::info!("{} pod pings answered{over6} (slowest reply {} us){note}", targets.len() - blocked, worst.as_micros());
        Ok(())
    }

    /// Pods' interface MTU equals the overlay MTU, and DF probes from an endpoint whose own
    /// MTU is larger than the overlay's (so nothing is refused before the overlay) find the
    /// path the overlay offers: a packet of exactly the overlay MTU reaches the next host,
    /// one byte more is refused at this host's overlay device with that MTU as next hop.
    async fn expect_mtu(&mut self, pods_fit_every_family: bool) -> StepResult {
        let conf = self.conf()?.clone();
        self.ensure_gateways().await?;
        let mut findings = Vec::new();
        let mut pod_mtus = std::collections::BTreeMap::new();
        for pod in &self.pods {
            let node = self.lab.host(&pod.host).expect("pod host");
            // what the host's subnet file says, among the values the contract accepts
            let accepted = conf.accepted_pod_mtus(self.lab.mtu_of(node));
            let file = self.gateways.get(&pod.host).map(|g| g.mtu);
            let links = pod.nl.links().await?;
            let l = links.iter().find(|l| l.name == "eth0").ok_or_else(|| lab_err!("{}: no eth0", pod.name))?;
            if Some(l.mtu) != file || !accepted.contains(&l.mtu) {
                findings.push(Finding::new(
                    Check::PodMtu,
                    pod.host.as_str(),
                    format!("{}: eth0 MTU {} but the subnet file says {file:?} and the overlay MTU is {accepted:?}", pod.name, l.mtu),
                ));
            }
            // the fit probe judges the MTU the pod has, right or wrong
            pod_mtus.entry(pod.host.clone()).or_insert(l.mtu);
        }
        if pods_fit_every_family {
            findings.extend(self.pods_fit(&pod_mtus).await?);
        }
        let cross = self.cross_segment_fails();
        let hosts: Vec<String> = self.active_hosts().filter(|h| self.gateways.contains_key(&h.name)).map(|h| h.name.clone()).collect();
        let mut probes = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            // the next host in ring order that this one is meant to reach
            let Some(next) = (1..hosts.len()).map(|k| &hosts[(i + k) % hosts.len()]).find(|n| !self.unreachable_pair(&cross, h, n)) else {
                continue;
            };
            let node = self.lab.host(h).expect("active host");
            let underlay = self.lab.mtu_of(node);
            let gw = self.gateways[h];
            if !self.mtu_probes.contains_key(h) {
                let p = lab_pods::create_probe(&self.lab, node, gw, underlay + 100).await.map_err(|e| lab_err!("{h}: {}", chain(&e)))?;
                self.mtu_probes.insert(h.clone(), p);
            }
            let probe_ns = self.mtu_probes[h].ns.clone();
            // each family meets its own overlay device's MTU (vxlan over IPv6 costs more); a
            // family the net-conf enables with no address to probe from is a finding
            let to = self.gateways[next];
            for (enabled, have, family) in [
                (conf.enable_ipv4, gw.v4.is_some() && to.v4.is_some(), "IPv4"),
                (conf.ipv6.is_some(), gw.v6.is_some() && to.v6.is_some(), "IPv6"),
            ] {
                if enabled && !have {
                    findings.push(Finding::new(
                        Check::DfProbe,
                        h.as_str(),
                        format!("{h} -> {next}: no {family} address on cni0 to probe with (see the subnet file)"),
                    ));
                }
            }
            if let (Some((own, _)), Some((to4, _))) = (gw.v4, to.v4) {
                probes.push((h.clone(), next.clone(), probe_ns.clone(), own.into(), to4.into(), conf.device_mtu(underlay)));
            }
            if let (Some((own6, _)), Some((to6, _))) = (gw.v6, to.v6) {
                probes.push((h.clone(), next.clone(), probe_ns, own6.into(), to6.into(), conf.device_mtu6(underlay)));
            }
        }
        if probes.is_empty() {
            return Err("expect_mtu examined nothing: no host has a peer to probe".into());
        }
        let results = tokio::task::spawn_blocking(move || {
            let jobs: Vec<_> = probes
                .into_iter()
                .map(|(h, n, ns, own_gw, dst, mtu): (String, String, crate::lab::netns::Netns, std::net::IpAddr, std::net::IpAddr, u32)| {
                    std::thread::spawn(move || {
                        // IP and ICMP headers: 20 + 8 over IPv4, 40 + 8 over IPv6
                        let headers = if dst.is_ipv6() { 48 } else { 28 };
                        let fits = (mtu - headers) as usize;
                        // the first DF probe may be eaten by ARP on a fresh path: retry it
                        let mut small = probe::ping_any(&ns, dst, fits, true, Duration::from_secs(1));
                        for _ in 0..2 {
                            if matches!(small, Ok(PingOutcome::Timeout)) {
                                small = probe::ping_any(&ns, dst, fits, true, Duration::from_secs(1));
                            }
                        }
                        let big = probe::ping_any(&ns, dst, fits + 1, true, Duration::from_secs(1));
                        (h, n, own_gw, dst, mtu, small, big)
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().expect("mtu probe thread")).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        for (h, n, own_gw, dst, mtu, small, big) in results {
            let (small, big) = (small?, big?);
            let what = format!("{h} -> {n} ({dst})");
            if !small.is_reply() {
                findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {mtu} bytes (the overlay device's MTU) should pass, got {small:?}"),
                ));
            }
            match big {
                PingOutcome::FragNeeded { from, mtu: m } if from == own_gw && u32::from(m) == mtu => {
                    lines.push(format!("{what}: {} bytes pass, {} refused at {h} with next-hop MTU {m}", mtu, mtu + 1))
                }
                PingOutcome::FragNeeded { from, mtu: m } => findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {} bytes was refused by {from} with next-hop MTU {m}, expected {own_gw} ({h}'s overlay) with {mtu}", mtu + 1),
                )),
                PingOutcome::Reply { .. } => findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {} bytes passed, but the overlay MTU is {mtu}", mtu + 1),
                )),
                other => findings.push(Finding::new(
                    Check::DfProbe,
                    h.as_str(),
                    format!("{what}: a DF packet of {} bytes vanished ({other:?}): neither a reply nor a frag-needed error (a black hole)", mtu + 1),
                )),
            }
        }
        if !findings.is_empty() {
            return Err(StepError::Check(findings));
        }
        for l in lines {
            tracing::info!("{l}");
        }
        Ok(())
    }
}
