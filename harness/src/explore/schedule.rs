//! Schedules: a topology, a host count, a backend and a list of operations drawn at random
//! from the step kinds the lab already has, every one a function of the seed. A schedule is
//! written out as an ordinary case: after each operation that lets the cluster settle, a
//! `wait_converged` (leases, subnet files, kernel state, data plane, canary: the same
//! checks every case uses); at the end the exact entry counts (unless a public IP changed:
//! the old lease lingers and is served), the pods' pings, the subnets kept (unless a lease
//! was revoked, a public IP changed or the backend switched), and (always, as in every
//! trial) every agent alive.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::rng::Rng;
use crate::contract::Backend;

/// A topology the explorer may use, with its host names at each host count it may run at.
#[derive(Debug, Clone)]
pub struct TopoInfo {
    pub name: String,
    pub file: PathBuf,
    pub segments: usize,
    /// Host count → the topology's hosts at that count, in order (one entry for a topology
    /// of fixed size).
    pub names_at: Vec<(u32, Vec<String>)>,
    /// A `count:` group: the host count can be chosen.
    pub scalable: bool,
}

/// One operation; the hosts it names are hosts of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    RestartAgent {
        host: String,
        new_vtep_mac: bool,
    },
    /// The agent SIGKILLed, then started again (a crash a DaemonSet recovers from).
    CrashAgent {
        host: String,
    },
    RestartEtcd {
        down_ms: u64,
    },
    PauseEtcd {
        ms: u64,
    },
    RevokeLease {
        host: String,
    },
    /// A key under `subnets/` that is no lease: `n` odd a malformed value at a lease-shaped
    /// key (outside the pod network, so it can never be a live host's lease), even a key
    /// that is not lease-shaped.
    JunkKey {
        n: u32,
    },
    CutLink {
        host: String,
        ms: u64,
    },
    FlapLink {
        host: String,
        ms: u64,
    },
    RecreateLink {
        host: String,
    },
    ChangePublicIp {
        host: String,
    },
    SwitchBackend {
        to: Backend,
    },
    RemoveHost {
        host: String,
    },
    AddHost {
        name: String,
    },
    CreatePods,
    /// Every agent stopped, then all started again: at one instant (`spread_ms` 0) or
    /// spread evenly over `spread_ms` (a node pool rebooted, a DaemonSet rolled at once).
    RestartAllAgents {
        spread_ms: u64,
    },
    /// The host's outgoing underlay traffic loses `loss_percent` of its packets for `ms`.
    ImpairLink {
        host: String,
        loss_percent: u32,
        ms: u64,
    },
}

/// The operation kinds by name, as `--ops-kinds` and the weights name them.
pub const KINDS: [&str; 16] = [
    "restart_agent",
    "crash_agent",
    "restart_etcd",
    "pause_etcd",
    "revoke_lease",
    "junk_key",
    "cut_link",
    "flap_link",
    "recreate_link",
    "change_public_ip",
    "switch_backend",
    "remove_host",
    "add_host",
    "create_pods",
    "restart_all_agents",
    "impair_link",
];

/// How often each kind is drawn, relative to the others.
pub const DEFAULT_WEIGHTS: [u32; 16] = [20, 6, 8, 8, 8, 6, 8, 6, 4, 5, 3, 5, 5, 4, 4, 5];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    /// The cluster is given time to settle (and judged) after this operation; otherwise
    /// the next operation follows at once.
    pub settle: bool,
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::RestartAgent { .. } => "restart_agent",
            OpKind::CrashAgent { .. } => "crash_agent",
            OpKind::RestartEtcd { .. } => "restart_etcd",
            OpKind::PauseEtcd { .. } => "pause_etcd",
            OpKind::RevokeLease { .. } => "revoke_lease",
            OpKind::JunkKey { .. } => "junk_key",
            OpKind::CutLink { .. } => "cut_link",
            OpKind::FlapLink { .. } => "flap_link",
            OpKind::RecreateLink { .. } => "recreate_link",
            OpKind::ChangePublicIp { .. } => "change_public_ip",
            OpKind::SwitchBackend { .. } => "switch_backend",
            OpKind::RemoveHost { .. } => "remove_host",
            OpKind::AddHost { .. } => "add_host",
            OpKind::CreatePods => "create_pods",
            OpKind::RestartAllAgents { .. } => "restart_all_agents",
            OpKind::ImpairLink { .. } => "impair_link",
        }
    }

    /// The topology host it names.
    pub fn host(&self) -> Option<&str> {
        match self {
            OpKind::RestartAgent { host, .. }
            | OpKind::CrashAgent { host }
            | OpKind::RevokeLease { host }
            | OpKind::CutLink { host, .. }
            | OpKind::FlapLink { host, .. }
            | OpKind::RecreateLink { host }
            | OpKind::ChangePublicIp { host }
            | OpKind::ImpairLink { host, .. }
            | OpKind::RemoveHost { host } => Some(host),
            _ => None,
        }
    }

    fn host_mut(&mut self) -> Option<&mut String> {
        match self {
            OpKind::RestartAgent { host, .. }
            | OpKind::CrashAgent { host }
            | OpKind::RevokeLease { host }
            | OpKind::CutLink { host, .. }
            | OpKind::FlapLink { host, .. }
            | OpKind::RecreateLink { host }
            | OpKind::ChangePublicIp { host }
            | OpKind::ImpairLink { host, .. }
            | OpKind::RemoveHost { host } => Some(host),
            _ => None,
        }
    }

    /// The case steps it becomes (YAML flow lines, without the list dash).
    pub fn steps(&self) -> Vec<String> {
        match self {
            OpKind::CrashAgent { host } => {
                vec![format!("break: {{kill_agent: {{host: {host}}}}}"), format!("restart_agent: {{host: {host}, new_vtep_mac: false}}")]
            }
            OpKind::RestartAllAgents { spread_ms } => vec!["stop_agents: {}".into(), format!("start_agents: {{spread: {spread_ms}ms}}")],
            other => vec![other.step()],
        }
    }

    /// The operation in one line (its single step, or its steps joined by `; `).
    pub fn line(&self) -> String {
        self.steps().join("; ")
    }

    fn step(&self) -> String {
        let dur = |ms: &u64| format!("{ms}ms");
        match self {
            OpKind::CrashAgent { .. } | OpKind::RestartAllAgents { .. } => unreachable!("two steps: see steps()"),
            OpKind::RestartAgent { host, new_vtep_mac } => format!("restart_agent: {{host: {host}, new_vtep_mac: {new_vtep_mac}}}"),
            OpKind::RestartEtcd { down_ms } => format!("restart_etcd: {{down_for: {}}}", dur(down_ms)),
            OpKind::PauseEtcd { ms } => format!("pause_etcd: {{for: {}}}", dur(ms)),
            OpKind::RevokeLease { host } => format!("revoke_lease: {{host: {host}}}"),
            OpKind::JunkKey { n } if n % 2 == 1 => {
                format!("put_key: {{key: subnets/10.245.{}.0-24, value: \"{{not json\"}}", n % 250)
            }
            OpKind::JunkKey { n } => format!("put_key: {{key: subnets/junk-{n}, value: \"{{}}\"}}"),
            OpKind::CutLink { host, ms } => format!("cut_link: {{host: {host}, for: {}}}", dur(ms)),
            OpKind::FlapLink { host, ms } => format!("flap_link: {{host: {host}, down_for: {}}}", dur(ms)),
            OpKind::RecreateLink { host } => format!("recreate_link: {{host: {host}}}"),
            OpKind::ChangePublicIp { host } => format!("change_public_ip: {{host: {host}}}"),
            OpKind::SwitchBackend { to } => format!("switch_backend: {{to: {to}}}"),
            OpKind::RemoveHost { host } => format!("remove_host: {{host: {host}}}"),
            OpKind::AddHost { name } => format!("add_host: {{name: {name}}}"),
            OpKind::CreatePods => "create_pods: {per_host: 1}".to_string(),
            OpKind::ImpairLink { host, loss_percent, ms } => {
                format!("impair_link: {{hosts: [{host}], loss_percent: {loss_percent}, for: {}}}", dur(ms))
            }
        }
    }

    /// The same operation with its durations halved (down to 1 s: a shorter fault makes a
    /// failure hang on timing, and its reruns flaky), if it has any.
    pub fn shorter(&self) -> Option<OpKind> {
        let half = |ms: u64| (ms > 1000).then(|| (ms / 2).max(1000));
        match self {
            OpKind::RestartEtcd { down_ms } => half(*down_ms).map(|down_ms| OpKind::RestartEtcd { down_ms }),
            OpKind::PauseEtcd { ms } => half(*ms).map(|ms| OpKind::PauseEtcd { ms }),
            OpKind::CutLink { host, ms } => half(*ms).map(|ms| OpKind::CutLink { host: host.clone(), ms }),
            OpKind::FlapLink { host, ms } => half(*ms).map(|ms| OpKind::FlapLink { host: host.clone(), ms }),
            OpKind::ImpairLink { host, loss_percent, ms } => {
                half(*ms).map(|ms| OpKind::ImpairLink { host: host.clone(), loss_percent: *loss_percent, ms })
            }
            _ => None,
        }
    }

    /// Whether the cluster must have settled before it: pods are made from the subnet file
    /// (a kubelet waits for it), a lease is revoked only once the host holds one.
    fn needs_settled(&self) -> bool {
        matches!(self, OpKind::CreatePods | OpKind::RevokeLease { .. })
    }

    /// Whether every host keeps its subnet through this operation: the process, etcd or
    /// the link is disturbed, or a revoked lease is taken back (its subnet is free, as
    /// `cases/field-904-lease-deleted.yaml` states). Not after a public IP change (the
    /// old lease lingers with the old subnet) nor a backend switch.
    fn keeps_subnets(&self) -> bool {
        !matches!(self, OpKind::ChangePublicIp { .. } | OpKind::SwitchBackend { .. })
    }
}

/// A schedule: everything one exploration run does, a function of (seed, index) and the
/// options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub index: u32,
    pub topology: String,
    pub topology_file: PathBuf,
    /// The host count asked of a scalable topology (None: the topology's own).
    pub hosts: Option<u32>,
    /// The topology's hosts at that count, in order.
    pub host_names: Vec<String>,
    pub segments: usize,
    pub backend: Backend,
    pub ops: Vec<Op>,
    /// How long each `wait_converged` may take, in seconds.
    pub settle_s: u64,
}

/// What the generator may draw from.
#[derive(Debug, Clone)]
pub struct Space {
    pub topologies: Vec<TopoInfo>,
    /// Host counts for scalable topologies.
    pub hosts: (u32, u32),
    /// Backends to start on (also what switch_backend may switch between).
    pub backends: Vec<Backend>,
    /// Operations per schedule.
    pub ops: (u32, u32),
    /// Weight per kind, in the order of [`KINDS`].
    pub weights: [u32; KINDS.len()],
    pub settle_s: u64,
}

/// Draws schedule `index` of the run seeded with `seed`.
pub fn generate(space: &Space, seed: u64, index: u32) -> Schedule {
    let mut rng = Rng::for_schedule(seed, index);
    // host-gw needs every host on one segment: only single-segment topologies serve it
    let backend = *rng.pick(&space.backends).expect("at least one backend");
    let topos: Vec<&TopoInfo> = space.topologies.iter().filter(|t| backend != Backend::HostGw || t.segments == 1).collect();
    let topo = *rng.pick(&topos).expect("a topology for the backend (checked by the caller)");
    let fitting: Vec<&(u32, Vec<String>)> = match topo.scalable {
        true => topo.names_at.iter().filter(|(n, _)| (space.hosts.0..=space.hosts.1).contains(n)).collect(),
        false => topo.names_at.iter().collect(),
    };
    let (count, names) = *rng.pick(&fitting).expect("host counts for the topology (checked by the caller)");
    let n_ops = rng.range(u64::from(space.ops.0), u64::from(space.ops.1)) as usize;
    let mut live: Vec<String> = names.clone();
    let (mut added, mut junk, mut pods, mut now) = (0u32, 0u32, false, backend);
    let mut ops = Vec::new();
    let weighted: Vec<(usize, u32)> = space.weights.iter().copied().enumerate().collect();
    let mut tries = 0;
    while ops.len() < n_ops && tries < 1000 {
        tries += 1;
        let Some(&k) = rng.weighted(&weighted) else { break };
        let host = rng.pick(&live).cloned().expect("at least two hosts stay");
        let kind = match KINDS[k] {
            "restart_agent" => OpKind::RestartAgent { host, new_vtep_mac: now == Backend::Vxlan && rng.chance(30) },
            "crash_agent" => OpKind::CrashAgent { host },
            "restart_etcd" => OpKind::RestartEtcd { down_ms: rng.range(1, 4) * 1000 },
            "pause_etcd" => OpKind::PauseEtcd { ms: rng.range(2, 6) * 1000 },
            "revoke_lease" => OpKind::RevokeLease { host },
            "junk_key" => {
                junk += 1;
                OpKind::JunkKey { n: junk }
            }
            "cut_link" => OpKind::CutLink { host, ms: rng.range(1, 4) * 1000 },
            "flap_link" => OpKind::FlapLink { host, ms: rng.range(1, 2) * 1000 },
            "recreate_link" => OpKind::RecreateLink { host },
            "change_public_ip" => OpKind::ChangePublicIp { host },
            "switch_backend" => {
                // between vxlan and host-gw, on one segment, both allowed
                let to = match now {
                    Backend::Vxlan => Backend::HostGw,
                    Backend::HostGw => Backend::Vxlan,
                    Backend::Udp => continue,
                };
                if topo.segments != 1 || !space.backends.contains(&to) {
                    continue;
                }
                now = to;
                OpKind::SwitchBackend { to }
            }
            "remove_host" => {
                if live.len() <= 2 {
                    continue;
                }
                live.retain(|h| *h != host);
                OpKind::RemoveHost { host }
            }
            "add_host" => {
                if added >= 2 {
                    continue;
                }
                added += 1;
                OpKind::AddHost { name: format!("x{added}") }
            }
            "create_pods" => {
                if pods {
                    continue;
                }
                pods = true;
                OpKind::CreatePods
            }
            // at one instant in two draws of five, else spread over 1 to 3 s
            "restart_all_agents" => OpKind::RestartAllAgents { spread_ms: if rng.chance(40) { 0 } else { rng.range(1, 3) * 1000 } },
            "impair_link" => OpKind::ImpairLink { host, loss_percent: rng.range(2, 6) as u32 * 10, ms: rng.range(2, 5) * 1000 },
            _ => unreachable!("KINDS and the match agree"),
        };
        ops.push(Op { kind, settle: rng.chance(75) });
    }
    Schedule {
        seed,
        index,
        topology: topo.name.clone(),
        topology_file: topo.file.clone(),
        hosts: topo.scalable.then_some(*count),
        host_names: names.clone(),
        segments: topo.segments,
        backend,
        ops,
        settle_s: space.settle_s,
    }
    .valid()
}

/// One step of the case a schedule becomes, and the operation it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseStep {
    pub yaml: String,
    pub op: Option<usize>,
}

impl Schedule {
    /// `seed 7 #3`
    pub fn id(&self) -> String {
        format!("seed {} #{}", self.seed, self.index)
    }

    /// One line: topology, hosts, backend, operations.
    pub fn summary(&self) -> String {
        format!("{} with {} hosts, {}, {} operations", self.topology, self.host_names.len(), self.backend, self.ops.len())
    }

    /// The case's steps, in order (1-based step N is `steps()[N-1]`).
    pub fn steps(&self) -> Vec<CaseStep> {
        let wait = format!("wait_converged: {{within: {}s}}", self.settle_s);
        let mut out = vec![CaseStep { yaml: "start_agents: {}".into(), op: None }, CaseStep { yaml: wait.clone(), op: None }];
        for (i, op) in self.ops.iter().enumerate() {
            out.extend(op.kind.steps().into_iter().map(|yaml| CaseStep { yaml, op: Some(i) }));
            if op.settle {
                out.push(CaseStep { yaml: wait.clone(), op: Some(i) });
            }
        }
        // exactly N-1 entries per host holds only while every lease is a live host's: after
        // a public IP change the old lease lingers until it expires and is served like any
        if !self.ops.iter().any(|o| matches!(o.kind, OpKind::ChangePublicIp { .. })) {
            out.push(CaseStep { yaml: "expect_counts: {}".into(), op: None });
        }
        // pods keep talking, unless a host's subnet changed under them (a public IP
        // change after the pods were made: a node's pods are made again then)
        if let Some(p) = self.ops.iter().position(|o| o.kind == OpKind::CreatePods) {
            if !self.ops[p..].iter().any(|o| matches!(o.kind, OpKind::ChangePublicIp { .. })) {
                out.push(CaseStep { yaml: "expect_ping: {}".into(), op: None });
            }
        }
        if self.ops.iter().all(|o| o.kind.keeps_subnets()) {
            out.push(CaseStep { yaml: "expect_subnets_unchanged: {}".into(), op: None });
        }
        out
    }

    /// The operation step `n` (1-based) belongs to.
    pub fn op_of_step(&self, n: usize) -> Option<usize> {
        self.steps().get(n.checked_sub(1)?)?.op
    }

    /// The schedule as a case file; `topology` is what its `topology:` key says.
    pub fn case_yaml(&self, description: &str, topology: &str) -> String {
        let mut s = String::from("description: |\n");
        for line in description.lines() {
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(s, "topology: {topology}");
        if let Some(n) = self.hosts {
            let _ = writeln!(s, "hosts: [{n}]");
        }
        let _ = writeln!(s, "backends: [{}]", self.backend);
        s.push_str("steps:\n");
        for step in self.steps() {
            let _ = writeln!(s, "  - {}", step.yaml);
        }
        s
    }

    /// Operations in one line each, numbered.
    pub fn listing(&self) -> String {
        self.ops
            .iter()
            .enumerate()
            .map(|(i, o)| format!("{:>2}. {}{}", i + 1, o.kind.line(), if o.settle { "" } else { "  (no settling)" }))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The schedule on `names` hosts instead (a smaller count or another topology): the
    /// i-th host becomes `names[i]`; operations naming a host that no longer exists go.
    pub fn on_hosts(&self, topology: &TopoInfo, count: Option<u32>, names: &[String]) -> Schedule {
        let map = |h: &str| self.host_names.iter().position(|x| x == h).and_then(|i| names.get(i)).cloned();
        let ops = self
            .ops
            .iter()
            .filter_map(|o| {
                let mut o = o.clone();
                if let Some(h) = o.kind.host_mut() {
                    *h = map(h)?;
                }
                Some(o)
            })
            .collect();
        Schedule {
            topology: topology.name.clone(),
            topology_file: topology.file.clone(),
            hosts: count,
            host_names: names.to_vec(),
            segments: topology.segments,
            ops,
            ..self.clone()
        }
        .valid()
    }

    /// The hosts the operations name moved to the first hosts, in the order they are first
    /// named (h3, h1 → h1, h2), so that fewer hosts can keep them; None when nothing moves.
    pub fn renumbered(&self) -> Option<Schedule> {
        let mut order: Vec<String> = Vec::new();
        for o in &self.ops {
            if let Some(h) = o.kind.host() {
                if !order.iter().any(|x| x == h) {
                    order.push(h.to_string());
                }
            }
        }
        let map: Vec<(String, String)> = order.iter().cloned().zip(self.host_names.iter().cloned()).collect();
        if map.iter().all(|(a, b)| a == b) {
            return None;
        }
        let mut t = self.clone();
        for o in &mut t.ops {
            if let Some(h) = o.kind.host_mut() {
                if let Some((_, to)) = map.iter().find(|(from, _)| from == h) {
                    *h = to.clone();
                }
            }
        }
        Some(t)
    }

    /// Drops operations that cannot run any more (a removal leaving fewer than two hosts,
    /// an operation on a removed host), lets the cluster settle before the operations that
    /// need it (pods, a lease revocation) and after the last one.
    pub fn valid(mut self) -> Schedule {
        let mut live = self.host_names.clone();
        self.ops.retain(|o| match &o.kind {
            OpKind::RemoveHost { host } if live.len() <= 2 || !live.contains(host) => false,
            OpKind::RemoveHost { host } => {
                live.retain(|h| h != host);
                true
            }
            k => k.host().is_none_or(|h| live.iter().any(|x| x == h)),
        });
        for i in 1..self.ops.len() {
            if self.ops[i].kind.needs_settled() {
                self.ops[i - 1].settle = true;
            }
        }
        if let Some(last) = self.ops.last_mut() {
            last.settle = true;
        }
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn flat() -> TopoInfo {
        TopoInfo {
            name: "flat".into(),
            file: PathBuf::from("topologies/flat.yaml"),
            segments: 1,
            names_at: (2..=8).map(|n| (n, (1..=n).map(|i| format!("h{i}")).collect())).collect(),
            scalable: true,
        }
    }

    pub(crate) fn routed() -> TopoInfo {
        TopoInfo {
            name: "two-segments".into(),
            file: PathBuf::from("topologies/two-segments.yaml"),
            segments: 2,
            names_at: vec![(4, vec!["l1".into(), "l2".into(), "r1".into(), "r2".into()])],
            scalable: false,
        }
    }

    pub(crate) fn space() -> Space {
        Space {
            topologies: vec![flat(), routed()],
            hosts: (3, 8),
            backends: vec![Backend::Vxlan, Backend::HostGw, Backend::Udp],
            ops: (10, 14),
            weights: DEFAULT_WEIGHTS,
            settle_s: 30,
        }
    }

    #[test]
    fn the_seed_decides_the_schedule() {
        let sp = space();
        assert_eq!(generate(&sp, 42, 3), generate(&sp, 42, 3));
        assert_ne!(generate(&sp, 42, 3), generate(&sp, 42, 4));
        assert_ne!(generate(&sp, 42, 3), generate(&sp, 43, 3));
        assert_eq!(generate(&sp, 42, 3).case_yaml("d", "flat"), generate(&sp, 42, 3).case_yaml("d", "flat"));
    }

    #[test]
    fn schedules_stay_within_what_the_lab_can_run() {
        let sp = space();
        for i in 0..300 {
            let s = generate(&sp, 9, i);
            assert!((10..=14).contains(&s.ops.len()), "{}", s.listing());
            assert!((3..=8).contains(&(s.host_names.len() as u32)) || s.topology == "two-segments");
            if s.backend == Backend::HostGw {
                assert_eq!(s.segments, 1, "host-gw on one segment only");
            }
            assert!(s.ops.last().unwrap().settle);
            // no operation names a removed host, at least two hosts stay
            let mut live = s.host_names.clone();
            for o in &s.ops {
                if let Some(h) = o.kind.host() {
                    assert!(live.iter().any(|x| x == h), "{h} in {}", s.listing());
                }
                if let OpKind::RemoveHost { host } = &o.kind {
                    live.retain(|x| x != host);
                }
                if let OpKind::SwitchBackend { .. } = o.kind {
                    assert_eq!(s.segments, 1);
                }
            }
            assert!(live.len() >= 2);
            assert!(s.ops.iter().filter(|o| o.kind == OpKind::CreatePods).count() <= 1);
            for p in (1..s.ops.len()).filter(|p| matches!(s.ops[*p].kind, OpKind::CreatePods | OpKind::RevokeLease { .. })) {
                assert!(s.ops[p - 1].settle, "pods are made and leases revoked on a settled cluster: {}", s.listing());
            }
            assert_eq!(s.clone().valid(), s, "a generated schedule is valid as drawn");
        }
    }

    #[test]
    fn the_case_has_a_settle_after_each_settling_operation_and_the_final_checks() {
        let mut s = generate(&space(), 1, 0);
        s.ops = vec![
            Op { kind: OpKind::CreatePods, settle: true },
            Op { kind: OpKind::RestartAgent { host: s.host_names[0].clone(), new_vtep_mac: false }, settle: false },
            Op { kind: OpKind::PauseEtcd { ms: 2000 }, settle: true },
        ];
        let h = &s.host_names[0];
        let yaml = s.case_yaml("found it\nsecond line", "./flat.yaml");
        let want_steps = format!(
            "steps:\n  - start_agents: {{}}\n  - wait_converged: {{within: 30s}}\n  - create_pods: {{per_host: 1}}\n  - wait_converged: {{within: 30s}}\n  \
             - restart_agent: {{host: {h}, new_vtep_mac: false}}\n  - pause_etcd: {{for: 2000ms}}\n  - wait_converged: {{within: 30s}}\n  \
             - expect_counts: {{}}\n  - expect_ping: {{}}\n  - expect_subnets_unchanged: {{}}\n"
        );
        assert!(yaml.starts_with("description: |\n  found it\n  second line\ntopology: ./flat.yaml\n"), "{yaml}");
        assert!(yaml.ends_with(&want_steps), "{yaml}");
        assert_eq!(s.op_of_step(6), Some(2));
        assert_eq!(s.op_of_step(2), None);
        // a revoked lease is taken back with its subnet
        s.ops.push(Op { kind: OpKind::RevokeLease { host: h.clone() }, settle: true });
        assert!(s.case_yaml("", "flat").contains("expect_subnets_unchanged"));
        assert!(s.case_yaml("", "flat").contains("expect_counts"));
        // a public IP change gives the host another subnet (the old lease lingers until it
        // expires and is served): no subnets, counts or pings of pods made before it
        s.ops.push(Op { kind: OpKind::ChangePublicIp { host: h.clone() }, settle: true });
        let yaml = s.case_yaml("", "flat");
        assert!(!yaml.contains("expect_counts") && !yaml.contains("expect_subnets_unchanged") && !yaml.contains("expect_ping"), "{yaml}");
        // pods made after the change talk
        s.ops = vec![Op { kind: OpKind::ChangePublicIp { host: h.clone() }, settle: true }, Op { kind: OpKind::CreatePods, settle: true }];
        assert!(s.case_yaml("", "flat").contains("expect_ping"));
    }

    #[test]
    fn a_crash_is_a_kill_and_a_start_and_hosts_renumber() {
        let mut s = generate(&space(), 3, 0);
        s.topology = "flat".into();
        s.host_names = (1..=4).map(|i| format!("h{i}")).collect();
        s.ops = vec![
            Op { kind: OpKind::CrashAgent { host: "h3".into() }, settle: true },
            Op { kind: OpKind::RevokeLease { host: "h4".into() }, settle: true },
            Op { kind: OpKind::CutLink { host: "h3".into(), ms: 1000 }, settle: true },
        ];
        let yaml = s.case_yaml("", "flat");
        assert!(
            yaml.contains("  - break: {kill_agent: {host: h3}}\n  - restart_agent: {host: h3, new_vtep_mac: false}\n  - wait_converged"),
            "{yaml}"
        );
        assert_eq!(s.op_of_step(3), Some(0));
        assert_eq!(s.op_of_step(4), Some(0));
        let r = s.renumbered().unwrap();
        let hosts: Vec<&str> = r.ops.iter().filter_map(|o| o.kind.host()).collect();
        assert_eq!(hosts, vec!["h1", "h2", "h1"]);
        assert_eq!(r.renumbered(), None);
    }

    #[test]
    fn a_restart_of_all_agents_and_a_lossy_link_become_their_steps() {
        let mut s = generate(&space(), 3, 0);
        s.topology = "flat".into();
        s.host_names = (1..=3).map(|i| format!("h{i}")).collect();
        s.ops = vec![
            Op { kind: OpKind::RestartAllAgents { spread_ms: 0 }, settle: false },
            Op { kind: OpKind::ImpairLink { host: "h3".into(), loss_percent: 40, ms: 4000 }, settle: true },
        ];
        let yaml = s.case_yaml("", "flat");
        assert!(
            yaml.contains(
                "  - stop_agents: {}\n  - start_agents: {spread: 0ms}\n  - impair_link: {hosts: [h3], loss_percent: 40, for: 4000ms}\n  - wait_converged"
            ),
            "{yaml}"
        );
        assert_eq!(s.ops[1].kind.shorter(), Some(OpKind::ImpairLink { host: "h3".into(), loss_percent: 40, ms: 2000 }));
        assert_eq!(s.renumbered().unwrap().ops[1].kind.host(), Some("h1"));
        // both are drawn, with and without spread
        let sp = space();
        let all: Vec<OpKind> = (0..200).flat_map(|i| generate(&sp, 8, i).ops).map(|o| o.kind).collect();
        assert!(all.contains(&OpKind::RestartAllAgents { spread_ms: 0 }));
        assert!(all.iter().any(|k| matches!(k, OpKind::RestartAllAgents { spread_ms } if *spread_ms >= 1000)));
        assert!(all.iter().any(|k| matches!(k, OpKind::ImpairLink { loss_percent: 20..=60, .. })));
    }

    #[test]
    fn moving_to_fewer_hosts_drops_what_named_the_others() {
        let sp = space();
        let mut s = generate(&sp, 5, 0);
        s.topology = "two-segments".into();
        s.host_names = routed().names_at[0].1.clone();
        s.hosts = None;
        s.ops = vec![
            Op { kind: OpKind::RestartAgent { host: "r2".into(), new_vtep_mac: false }, settle: true },
            Op { kind: OpKind::RemoveHost { host: "l2".into() }, settle: true },
            Op { kind: OpKind::CutLink { host: "l2".into(), ms: 2000 }, settle: false },
            Op { kind: OpKind::RestartAgent { host: "r1".into(), new_vtep_mac: true }, settle: false },
        ];
        let names: Vec<String> = (1..=3).map(|i| format!("h{i}")).collect();
        let t = s.on_hosts(&flat(), Some(3), &names);
        assert_eq!(t.topology, "flat");
        assert_eq!(t.hosts, Some(3));
        // r2 (4th) has no counterpart; l2 → h2 removed, then l2's cut goes; r1 → h3
        let kinds: Vec<String> = t.ops.iter().map(|o| o.kind.line()).collect();
        assert_eq!(kinds, vec!["remove_host: {host: h2}", "restart_agent: {host: h3, new_vtep_mac: true}"]);
        assert!(t.ops.last().unwrap().settle);
    }
}
