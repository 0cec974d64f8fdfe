//! Case files (`cases/*.yaml`): a topology, a net-conf, the backends the case applies to,
//! optional host counts to repeat at, and steps. Parsed raw, then validated with located
//! diagnostics, like topologies.
//!
//! ```yaml
//! description: every pod reaches every other pod across hosts
//! topology: flat
//! hosts: [2, 4]
//! steps:
//!   - start_agents: {}
//!   - wait_converged: {within: 30s}
//!   - create_pods: {per_host: 1}
//!   - expect_ping: {}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::input::diag::{key, load_yaml, Collector, Diagnostics, Seg};
use crate::input::kinds::{Backend, Check};
use crate::input::names::HostName;
use crate::input::topology::Topology;

/// A duration written as `250ms`, `30s` or `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a duration like 500ms, 30s or 2m")))
    }
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    #[serde(default)]
    description: String,
    topology: String,
    #[serde(default)]
    backends: Option<Vec<String>>,
    #[serde(default)]
    hosts: Option<Vec<u32>>,
    #[serde(default = "one")]
    repeat: u32,
    #[serde(default)]
    netconf: Option<yaml_serde::Value>,
    #[serde(default)]
    netconf_raw: Option<String>,
    /// Hosts that run another implementation than the one under test (mixed clusters):
    /// host name → bundled profile name or profile path (relative to the case file).
    #[serde(default)]
    host_profiles: BTreeMap<HostName, String>,
    /// Mutants (harness/tests/mutants/NAME.yaml) this case must fail on, each with the
    /// finding it must fail with: the reference agent behind a wrapper that recreates a
    /// field bug from outside.
    #[serde(default)]
    mutants: Vec<RawMutant>,
    /// A control tests the lab, not an implementation: it runs once, on the reference
    /// agent, whatever implementation is under test.
    #[serde(default)]
    control: bool,
    /// Where etcd runs: `process`, `docker` or `auto` (default: FLANNEL_LAB_STORE, else process).
    #[serde(default)]
    store: Option<StoreChoice>,
    /// etcd cluster size (more than one needs Docker: one container per member).
    #[serde(default = "one")]
    etcd_members: u32,
    steps: Vec<Step>,
}

/// A case's or the environment's choice of etcd provider.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreChoice {
    Process,
    Docker,
    /// Docker when an engine answers, the process otherwise.
    Auto,
}

impl StoreChoice {
    /// `FLANNEL_LAB_STORE` (process, docker, auto), if set to one of those.
    pub fn from_env() -> Option<StoreChoice> {
        match std::env::var("FLANNEL_LAB_STORE").ok()?.as_str() {
            "process" => Some(StoreChoice::Process),
            "docker" => Some(StoreChoice::Docker),
            "auto" => Some(StoreChoice::Auto),
            _ => None,
        }
    }
}

fn one() -> u32 {
    1
}

/// `mutants: [{name: forget-one-peer, check: reachability, host: h2, step: 2}]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMutant {
    name: String,
    check: Check,
    host: String,
    /// The step (1-based) that must fail; any step when absent.
    #[serde(default)]
    step: Option<usize>,
    /// The backends this expectation is for (default: every backend the case and the
    /// mutant share); list one entry per backend when the finding differs.
    #[serde(default)]
    backends: Option<Vec<String>>,
}

/// The finding a negative control or a mutant must produce: this check, about this host
/// (`etcd` for the store), at this step when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub check: Check,
    pub host: String,
    pub step: Option<usize>,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.check, self.host)?;
        if let Some(s) = self.step {
            write!(f, " at step {s}")?;
        }
        Ok(())
    }
}

/// A mutant the case must catch on one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutantSpec {
    pub profile: PathBuf,
    pub backend: Backend,
    pub expected: Expected,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Within {
    pub within: Dur,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct For {
    #[serde(rename = "for")]
    pub duration: Dur,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PerHost {
    #[serde(default = "one")]
    pub per_host: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Converge {
    pub within: Dur,
    /// Backends under which hosts on different segments cannot reach each other's pods
    /// (host-gw across a router): those pairs are left out of the data-plane check.
    #[serde(default)]
    pub cross_segment_fails: Vec<String>,
}

/// A negative control: the inner step must fail with the named finding.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectFailure {
    pub check: Check,
    /// The host the finding must be about (`etcd` for the store).
    pub host: String,
    pub step: Box<Step>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PingSpec {
    /// Backends under which pods on different segments must NOT reach each other (while
    /// pods sharing a segment must): host-gw's documented limit.
    #[serde(default)]
    pub cross_segment_fails: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// How long each direction of traffic runs.
    pub seconds: u64,
}

/// What must become of an injected datagram.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Delivered,
    Dropped,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InjectUdp {
    /// The sending node: a host, or `etcd` (on the underlay, never a flannel peer).
    pub from: String,
    /// The host whose udp port receives it; the inner packet is addressed to its first pod.
    pub to: HostName,
    /// The inner source address is taken from this host's subnet.
    pub inner_src_from: HostName,
    pub expect: Fate,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestartEtcd {
    /// How long etcd stays down (the outage being simulated).
    pub down_for: Dur,
    /// Start on an empty data directory (data loss); the harness then writes only the
    /// net-conf again.
    #[serde(default)]
    pub wipe: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestartAgent {
    pub host: HostName,
    /// Delete the host's flannel devices first, so the agent comes back with a new VTEP MAC.
    #[serde(default)]
    pub new_vtep_mac: bool,
    /// Come back as another implementation (bundled profile name, or a path relative to
    /// the case file): how a control breaks one host after a passing baseline.
    #[serde(default)]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StartTraffic {
    /// The first pod on `from` pings the first pod on `to`.
    pub from: HostName,
    pub to: HostName,
    #[serde(default = "ten_ms")]
    pub interval: Dur,
}

fn ten_ms() -> Dur {
    Dur(Duration::from_millis(10))
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopTraffic {
    /// The loss budget: at most this many echoes may go unanswered.
    pub max_lost: u64,
    /// The longest stretch without a reply allowed.
    #[serde(default)]
    pub max_gap: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostFor {
    pub host: HostName,
    #[serde(rename = "for")]
    pub duration: Dur,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SwitchBackend {
    pub to: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddHost {
    /// A new host on the first host group's segment, with the next free address.
    pub name: HostName,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    /// Relative to the etcd prefix, e.g. `subnets/junk`.
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OnHost {
    pub host: HostName,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PodMtu {
    pub host: HostName,
    pub mtu: u32,
}

/// Deliberate damage, for negative controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sabotage {
    /// Deletes one FDB entry on the host's overlay device.
    DeleteFdb(OnHost),
    /// Deletes one route through the host's overlay device.
    DeleteRoute(OnHost),
    /// Deletes one permanent neighbour on the host's overlay device.
    DeleteNeighbour(OnHost),
    /// Sets `eth0` of the host's first pod to this MTU.
    SetPodMtu(PodMtu),
    /// SIGKILLs the host's agent.
    KillAgent(OnHost),
    /// Sets the MTU of the host's overlay device (flannel.VNI, flannel0, or eth0 for
    /// host-gw) behind the agent's back; the subnet file stays right.
    SetDeviceMtu(DeviceMtu),
    /// Sets the MTU of the host's underlay port on its segment's bridge: frames larger than
    /// that vanish on the wire (a black hole no host's state shows).
    SetUnderlayMtu(PodMtu),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeviceMtu {
    pub host: HostName,
    /// Bytes added to (or, negative, taken from) the device's current MTU.
    pub by: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Starts one agent per host, all at the same instant.
    StartAgents(NoArgs),
    /// Waits until etcd, subnet files and kernel state match the contract on every host,
    /// every host reaches every peer over the overlay, and, after a restart, a canary lease
    /// the harness adds and removes is followed everywhere.
    WaitConverged(Converge),
    /// The converged state must hold at every check (every 100 ms) for this long, and every
    /// agent must keep running: faults that show up late are caught.
    StayConverged(For),
    CreatePods(PerHost),
    /// Every pod pings every pod on every other host.
    ExpectPing(PingSpec),
    /// DF probes: MTU-28 bytes of payload pass, MTU-27 do not; pod MTUs match.
    ExpectMtu(NoArgs),
    /// Exactly one route, neighbour and FDB entry per peer on every host, right now.
    ExpectCounts(NoArgs),
    /// Every agent exits non-zero within the deadline and leaves no overlay device.
    ExpectAgentsExit(Within),
    ExpectAgentsRunning(NoArgs),
    /// Benchmark: pod-to-pod TCP throughput between the first two hosts, and host-to-host
    /// over the bare underlay; logs both and their ratio (never asserts on them).
    MeasureThroughput(Measure),
    /// udp backend: sends a crafted datagram (bare inner IPv4 echo request) to a host's
    /// udp port and checks whether the pod behind it sees the echo.
    InjectUdp(InjectUdp),
    /// Stops etcd, keeps it down, starts it again (optionally wiped).
    RestartEtcd(RestartEtcd),
    /// Revokes the host's etcd lease (deleting its subnet key) behind the agent's back.
    RevokeLease(OnHost),
    /// Stops the host's agent with its profile's signal and starts it again.
    RestartAgent(RestartAgent),
    /// Background ICMP between two pods while faults happen.
    StartTraffic(StartTraffic),
    /// Ends the background probe and checks it against its loss budget.
    StopTraffic(StopTraffic),
    /// Freezes etcd (SIGSTOP / docker pause) for a while.
    PauseEtcd(For),
    /// Cuts a host's underlay link at the bridge for a while, then restores it.
    CutLink(HostFor),
    /// Node loss: SIGKILL the host's agent and delete its lease; from then on the host is
    /// out of the cluster and peers must drop it.
    RemoveHost(OnHost),
    /// Every remaining host still holds the subnet it had at the first convergence.
    ExpectSubnetsUnchanged(NoArgs),
    /// Stops the etcd member that currently leads (needs `etcd_members` > 1).
    StopEtcdLeader(NoArgs),
    /// Rewrites the net-conf with another backend and restarts every agent.
    SwitchBackend(SwitchBackend),
    /// A host joins: namespace, underlay link, and its agent started.
    AddHost(AddHost),
    PutKey(PutKey),
    Break(Sabotage),
    /// Passes only if the inner step fails with the named finding: the negative control of
    /// an assertion.
    ExpectFailure(ExpectFailure),
}

/// Reads an enum written as a single-key mapping (`- wait_converged: {within: 30s}`):
/// the style of the case files, without YAML tags.
macro_rules! single_key_enum {
    ($ty:ident, $what:literal, { $($name:literal => $variant:ident($arg:ty)),* $(,)? }) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        write!(f, "a mapping with one key naming the {}", $what)
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        const NAMES: &[&str] = &[$($name),*];
                        let Some(k) = map.next_key::<String>()? else {
                            return Err(::serde::de::Error::custom(format!("empty mapping: name the {}", $what)));
                        };
                        let v = match k.as_str() {
                            $($name => $ty::$variant(map.next_value::<$arg>()?),)*
                            other => return Err(::serde::de::Error::unknown_variant(other, NAMES)),
                        };
                        if let Some(extra) = map.next_key::<String>()? {
                            return Err(::serde::de::Error::custom(format!("one {} per list item; `{extra}` needs its own `- ` item", $what)));
                        }
                        Ok(v)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

pub(crate) use single_key_enum;

single_key_enum!(Sabotage, "sabotage", {
    "delete_fdb" => DeleteFdb(OnHost),
    "delete_route" => DeleteRoute(OnHost),
    "delete_neighbour" => DeleteNeighbour(OnHost),
    "set_pod_mtu" => SetPodMtu(PodMtu),
    "kill_agent" => KillAgent(OnHost),
    "set_device_mtu" => SetDeviceMtu(DeviceMtu),
    "set_underlay_mtu" => SetUnderlayMtu(PodMtu),
});

single_key_enum!(Step, "step", {
    "start_agents" => StartAgents(NoArgs),
    "wait_converged" => WaitConverged(Converge),
    "stay_converged" => StayConverged(For),
    "create_pods" => CreatePods(PerHost),
    "expect_ping" => ExpectPing(PingSpec),
    "expect_mtu" => ExpectMtu(NoArgs),
    "expect_counts" => ExpectCounts(NoArgs),
    "expect_agents_exit" => ExpectAgentsExit(Within),
    "expect_agents_running" => ExpectAgentsRunning(NoArgs),
    "measure_throughput" => MeasureThroughput(Measure),
    "inject_udp" => InjectUdp(InjectUdp),
    "restart_etcd" => RestartEtcd(RestartEtcd),
    "revoke_lease" => RevokeLease(OnHost),
    "restart_agent" => RestartAgent(RestartAgent),
    "put_key" => PutKey(PutKey),
    "start_traffic" => StartTraffic(StartTraffic),
    "stop_traffic" => StopTraffic(StopTraffic),
    "pause_etcd" => PauseEtcd(For),
    "cut_link" => CutLink(HostFor),
    "remove_host" => RemoveHost(OnHost),
    "expect_subnets_unchanged" => ExpectSubnetsUnchanged(NoArgs),
    "switch_backend" => SwitchBackend(SwitchBackend),
    "stop_etcd_leader" => StopEtcdLeader(NoArgs),
    "add_host" => AddHost(AddHost),
    "break" => Break(Sabotage),
    "expect_failure" => ExpectFailure(ExpectFailure),
});

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::StartAgents(_) => "start_agents",
            Step::WaitConverged(_) => "wait_converged",
            Step::StayConverged(_) => "stay_converged",
            Step::CreatePods(_) => "create_pods",
            Step::ExpectPing(_) => "expect_ping",
            Step::ExpectMtu(_) => "expect_mtu",
            Step::ExpectCounts(_) => "expect_counts",
            Step::ExpectAgentsExit(_) => "expect_agents_exit",
            Step::ExpectAgentsRunning(_) => "expect_agents_running",
            Step::MeasureThroughput(_) => "measure_throughput",
            Step::InjectUdp(_) => "inject_udp",
            Step::RestartEtcd(_) => "restart_etcd",
            Step::RevokeLease(_) => "revoke_lease",
            Step::RestartAgent(_) => "restart_agent",
            Step::PutKey(_) => "put_key",
            Step::StartTraffic(_) => "start_traffic",
            Step::StopTraffic(_) => "stop_traffic",
            Step::PauseEtcd(_) => "pause_etcd",
            Step::CutLink(_) => "cut_link",
            Step::RemoveHost(_) => "remove_host",
            Step::ExpectSubnetsUnchanged(_) => "expect_subnets_unchanged",
            Step::SwitchBackend(_) => "switch_backend",
            Step::StopEtcdLeader(_) => "stop_etcd_leader",
            Step::AddHost(_) => "add_host",
            Step::Break(_) => "break",
            Step::ExpectFailure(_) => "expect_failure",
        }
    }

    fn host(&self) -> Option<&HostName> {
        match self {
            Step::Break(Sabotage::DeleteFdb(h) | Sabotage::DeleteRoute(h) | Sabotage::DeleteNeighbour(h) | Sabotage::KillAgent(h)) => {
                Some(&h.host)
            }
            Step::Break(Sabotage::SetPodMtu(p) | Sabotage::SetUnderlayMtu(p)) => Some(&p.host),
            Step::Break(Sabotage::SetDeviceMtu(p)) => Some(&p.host),
            Step::ExpectFailure(e) => e.step.host(),
            Step::RevokeLease(h) | Step::RemoveHost(h) => Some(&h.host),
            Step::CutLink(h) => Some(&h.host),
            Step::StartTraffic(t) => Some(&t.from),
            Step::RestartAgent(r) => Some(&r.host),
            _ => None,
        }
    }
}

/// What gets written to `<prefix>/config`.
#[derive(Debug, Clone, PartialEq)]
pub enum NetConfSpec {
    /// A JSON object; `Backend.Type` is set per trial.
    Object(Value),
    /// Written verbatim, for cases about malformed config.
    Raw(String),
}

impl NetConfSpec {
    /// The text for one backend.
    pub fn render(&self, backend: Backend) -> String {
        match self {
            NetConfSpec::Raw(s) => s.clone(),
            NetConfSpec::Object(v) => {
                let mut v = v.clone();
                let obj = v.as_object_mut().expect("validated as an object");
                let b = obj.entry("Backend").or_insert_with(|| Value::Object(Default::default()));
                if let Some(b) = b.as_object_mut() {
                    b.insert("Type".into(), Value::String(backend.name().into()));
                }
                v.to_string()
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub topology_file: PathBuf,
    pub backends: Vec<Backend>,
    /// Host counts to run at; empty means the topology's own.
    pub hosts: Vec<u32>,
    pub repeat: u32,
    pub netconf: NetConfSpec,
    /// Host → profile (name or resolved path) for mixed clusters.
    pub host_profiles: BTreeMap<String, String>,
    /// Mutants the case must catch, one per backend, with the finding each must produce.
    pub mutants: Vec<MutantSpec>,
    /// Runs once, on the reference agent: it tests the lab.
    pub control: bool,
    /// The case's own store choice, if it makes one.
    pub store: Option<StoreChoice>,
    pub etcd_members: u32,
    pub steps: Vec<Step>,
}

impl Case {
    /// Loads a case; `topologies` is the folder topology names resolve in.
    pub fn load(file: &Path, topologies: &Path) -> Result<Case, Diagnostics> {
        let (raw, src): (RawCase, String) = load_yaml(file)?;
        validate(file, &src, raw, topologies)
    }

    /// The topology at one host count (None: the topology's own).
    pub fn topology(&self, hosts: Option<u32>) -> Result<Topology, Diagnostics> {
        Topology::load_scaled(&self.topology_file, hosts)
    }

    /// Host counts to run at, `None` meaning the topology's own.
    pub fn scales(&self) -> Vec<Option<u32>> {
        if self.hosts.is_empty() {
            vec![None]
        } else {
            self.hosts.iter().map(|n| Some(*n)).collect()
        }
    }
}

fn validate(file: &Path, src: &str, raw: RawCase, topologies: &Path) -> Result<Case, Diagnostics> {
    let mut c = Collector::new(file, src);
    let topology_file = if raw.topology.ends_with(".yaml") {
        file.parent().unwrap_or(Path::new(".")).join(&raw.topology)
    } else {
        topologies.join(format!("{}.yaml", raw.topology))
    };
    let mut topos = Vec::new();
    let scales: Vec<Option<u32>> = match &raw.hosts {
        None => vec![None],
        Some(v) => v.iter().map(|n| Some(*n)).collect(),
    };
    if raw.hosts.as_ref().is_some_and(|v| v.is_empty()) {
        c.push(&[key("hosts")], "empty list of host counts", "list counts such as [2, 4, 8], or drop the key");
    }
    for (i, n) in scales.iter().enumerate() {
        let at: Vec<Seg> = if n.is_some() { vec![key("hosts"), Seg::Index(i)] } else { vec![key("topology")] };
        if *n == Some(0) || n.is_some_and(|n| n > 64) {
            c.push(&at, format!("host count {} is out of range", n.unwrap_or(0)), "use 1..64 hosts");
            continue;
        }
        match Topology::load_scaled(&topology_file, *n) {
            Ok(t) => topos.push(t),
            Err(e) => {
                let first = e.0.first().map(|d| d.to_string()).unwrap_or_default();
                c.push(&at, format!("topology `{}` is not usable here: {first}", raw.topology), "fix the topology file or the host count");
            }
        }
    }
    let backends = match &raw.backends {
        None => Backend::ALL.to_vec(),
        Some(list) => Backend::parse_list(list, &mut c, &[key("backends")]),
    };
    if raw.repeat == 0 || raw.repeat > 1000 {
        c.push(&[key("repeat")], format!("repeat {} is out of range", raw.repeat), "use 1..1000");
    }
    let netconf = match (raw.netconf, raw.netconf_raw) {
        (Some(_), Some(_)) => {
            c.push(&[key("netconf_raw")], "both `netconf` and `netconf_raw` given", "keep one");
            NetConfSpec::Raw(String::new())
        }
        (None, Some(s)) => NetConfSpec::Raw(s),
        (Some(v), None) => match serde_json::to_value(&v) {
            Ok(j) if j.is_object() => NetConfSpec::Object(j),
            _ => {
                c.push(&[key("netconf")], "net-conf must be a mapping", "write e.g. `netconf: {Network: 10.244.0.0/16}`");
                NetConfSpec::Raw(String::new())
            }
        },
        (None, None) => NetConfSpec::Object(serde_json::json!({"Network": "10.244.0.0/16"})),
    };
    if raw.steps.is_empty() {
        c.push(&[key("steps")], "no steps", "add steps such as `- start_agents: {}`");
    }
    let host_ok = |h: &str| h == "etcd" || topos.iter().all(|t| t.host(h).is_some());
    for (i, s) in raw.steps.iter().enumerate() {
        let mut inner = s;
        while let Step::ExpectFailure(x) = inner {
            if !host_ok(&x.host) {
                c.push(
                    &[key("steps"), Seg::Index(i), key("expect_failure"), key("host")],
                    format!("no host `{}` in topology `{}`", x.host, raw.topology),
                    "name the host whose check must fail (or `etcd`)",
                );
            }
            inner = &x.step;
        }
        if let Step::WaitConverged(w) = inner {
            for b in w.cross_segment_fails.iter().filter(|b| Backend::parse(b).is_none()) {
                c.push(&[key("steps"), Seg::Index(i)], format!("unknown backend `{b}` in cross_segment_fails"), Backend::known());
            }
        }
        if let Step::RestartAgent(RestartAgent { profile: Some(p), .. }) = inner {
            let resolved = resolve_profile(file, p);
            if let Err(e) = crate::input::profile::Profile::find(&resolved) {
                c.push(
                    &[key("steps"), Seg::Index(i)],
                    format!("profile `{p}` is not usable: {}", e.lines().next().unwrap_or("")),
                    "name a bundled profile (harness/profiles/) or a profile file",
                );
            }
        }
        if let Step::SwitchBackend(sb) = inner {
            if Backend::parse(&sb.to).is_none() {
                c.push(&[key("steps"), Seg::Index(i)], format!("unknown backend `{}`", sb.to), Backend::known());
            }
        }
        if let Step::ExpectPing(p) = inner {
            for b in p.cross_segment_fails.iter().filter(|b| Backend::parse(b).is_none()) {
                c.push(&[key("steps"), Seg::Index(i)], format!("unknown backend `{b}` in cross_segment_fails"), Backend::known());
            }
        }
        if let Some(h) = s.host() {
            for t in &topos {
                if t.host(h.as_str()).is_none() {
                    c.push(
                        &[key("steps"), Seg::Index(i)],
                        format!("no host `{h}` in topology `{}` with {} hosts", raw.topology, t.hosts.len()),
                        "name a host of the topology (h1, h2, … for `count:` groups)",
                    );
                    break;
                }
            }
        }
    }
    let mut host_profiles = BTreeMap::new();
    for (h, p) in &raw.host_profiles {
        let at = [key("host_profiles"), key(h.as_str())];
        if let Some(t) = topos.iter().find(|t| t.host(h.as_str()).is_none()) {
            c.push(
                &at,
                format!("no host `{h}` in topology `{}` with {} hosts", raw.topology, t.hosts.len()),
                "name a host of the topology",
            );
        }
        let resolved = resolve_profile(file, p);
        if let Err(e) = crate::input::profile::Profile::find(&resolved) {
            c.push(
                &at,
                format!("profile `{p}` is not usable: {}", e.lines().next().unwrap_or("")),
                "name a bundled profile (harness/profiles/) or a profile file",
            );
        }
        host_profiles.insert(h.to_string(), resolved);
    }
    let mut mutants = Vec::new();
    for (i, m) in raw.mutants.iter().enumerate() {
        let at = [key("mutants"), Seg::Index(i)];
        let path = mutants_dir().join(format!("{}.yaml", m.name));
        let profile = match crate::input::profile::Profile::load(&path) {
            Ok(p) => p,
            Err(e) => {
                c.push(
                    &at,
                    format!("mutant `{}` is not usable: {}", m.name, e.to_string().lines().next().unwrap_or("")),
                    "mutants live in harness/tests/mutants/NAME.yaml",
                );
                continue;
            }
        };
        let wanted = match &m.backends {
            None => backends.clone(),
            Some(list) => Backend::parse_list(list, &mut c, &[key("mutants"), Seg::Index(i), key("backends")]),
        };
        let shared: Vec<Backend> = wanted.into_iter().filter(|b| backends.contains(b) && profile.backends.contains(b)).collect();
        if shared.is_empty() {
            c.push(&at, format!("mutant `{}` shares no backend with the case", m.name), "pick a mutant for one of the case's backends");
        }
        if !host_ok(&m.host) {
            c.push(&at, format!("no host `{}` in topology `{}`", m.host, raw.topology), "name the host whose check must fail (or `etcd`)");
        }
        if m.step.is_some_and(|s| s == 0 || s > raw.steps.len()) {
            c.push(&at, format!("step {} is not a step of this case", m.step.unwrap_or(0)), format!("use 1..{}", raw.steps.len()));
        }
        for b in shared {
            if mutants.iter().any(|x: &MutantSpec| x.profile == path && x.backend == b) {
                c.push(&at, format!("mutant `{}` is expected twice on {b}", m.name), "give each backend one expectation");
            }
            mutants.push(MutantSpec {
                profile: path.clone(),
                backend: b,
                expected: Expected { check: m.check, host: m.host.clone(), step: m.step },
            });
        }
    }
    if !(1..=5).contains(&raw.etcd_members) {
        c.push(&[key("etcd_members")], format!("{} etcd members", raw.etcd_members), "use 1 to 5 (3 for a leader-loss case)");
    } else if raw.etcd_members > 1 && raw.store != Some(StoreChoice::Docker) {
        c.push(&[key("etcd_members")], "an etcd cluster runs in Docker containers", "add `store: docker`");
    }
    c.finish()?;
    Ok(Case {
        control: raw.control,
        etcd_members: raw.etcd_members,
        store: raw.store,
        mutants,
        host_profiles,
        name: file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        file: file.to_path_buf(),
        description: raw.description,
        topology_file,
        backends,
        hosts: raw.hosts.unwrap_or_default(),
        repeat: raw.repeat,
        netconf,
        steps: raw.steps,
    })
}

/// A profile named in a case: a bundled name, or a `.yaml` path relative to the case file.
fn resolve_profile(case_file: &Path, p: &str) -> String {
    if p.ends_with(".yaml") {
        case_file.parent().unwrap_or(Path::new(".")).join(p).display().to_string()
    } else {
        p.to_string()
    }
}

/// Resolves a profile named in a case for running it.
pub fn profile_path(case: &Case, p: &str) -> String {
    resolve_profile(&case.file, p)
}

/// Where mutant profiles live.
pub fn mutants_dir() -> PathBuf {
    crate::input::repo_root().join("harness/tests/mutants")
}

/// Every `*.yaml` under `dir`, sorted.
pub fn discover(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (PathBuf, PathBuf) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        (root.join("cases"), root.join("topologies"))
    }

    fn parse(src: &str) -> Result<Case, Diagnostics> {
        let (_, topos) = dirs();
        let raw: RawCase = crate::input::diag::parse_yaml(Path::new("c.yaml"), src)?;
        validate(Path::new("c.yaml"), src, raw, &topos)
    }

    #[test]
    fn steps_parse_as_single_key_maps() {
        let c = parse(
            "topology: flat\nhosts: [2, 3]\nsteps:\n  - start_agents: {}\n  - wait_converged: {within: 20s}\n  - expect_failure: {check: counts, host: h2, step: {expect_counts: {}}}\n  - break: {delete_fdb: {host: h2}}\n",
        )
        .unwrap();
        assert_eq!(c.steps.len(), 4);
        assert_eq!(c.steps[1], Step::WaitConverged(Converge { within: Dur(Duration::from_secs(20)), cross_segment_fails: vec![] }));
        assert_eq!(
            c.steps[2],
            Step::ExpectFailure(ExpectFailure { check: Check::Counts, host: "h2".into(), step: Box::new(Step::ExpectCounts(NoArgs {})) })
        );
        assert_eq!(c.backends, Backend::ALL.to_vec());
        assert_eq!(c.scales(), vec![Some(2), Some(3)]);
        assert_eq!(c.netconf.render(Backend::Vxlan), r#"{"Backend":{"Type":"vxlan"},"Network":"10.244.0.0/16"}"#);
    }

    #[test]
    fn rejections_are_located() {
        let e = parse("topology: flat\nsteps:\n  - wait_converged: {within: soon}\n").unwrap_err();
        assert!(e.to_string().contains("c.yaml:3:"), "{e}");
        assert!(e.to_string().contains("not a duration"), "{e}");
        let e = parse("topology: flat\nbackends: [vxlan, geneve]\nsteps:\n  - break: {delete_fdb: {host: h9}}\n").unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].to_string().starts_with("c.yaml:2:19: backends[1]: unknown backend `geneve`"), "{e}");
        assert!(e.0[1].message.contains("no host `h9`"), "{e}");
        let e = parse("topology: nowhere\nsteps:\n  - start_agents: {}\n").unwrap_err();
        assert!(e.0[0].message.contains("cannot read file"), "{e}");
        let e = parse("topology: flat\nsteps:\n  - start_agent: {}\n").unwrap_err();
        assert!(e.0[0].message.contains("unknown variant `start_agent`"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn bundled_cases_are_valid() {
        let (cases, topos) = dirs();
        let files = discover(&cases);
        assert!(!files.is_empty());
        for f in files {
            Case::load(&f, &topos).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
