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

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::input::diag::{key, load_yaml, Collector, Diagnostics, Seg, Source};
use crate::input::kinds::{Backend, Check};
use crate::input::names::HostName;
use crate::input::topology::Topology;
pub(crate) use crate::input::values::single_key_enum;
pub use crate::input::values::{parse_duration, Dur, Size};

/// The most hosts a case may ask for (several segments joined by routers; one segment
/// holds fewer).
pub const MAX_HOSTS: u32 = 4000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase<S> {
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
    /// etcd speaks TLS only and requires client certificates from a per-run CA; agents get
    /// them through `{etcd_cafile}`, `{etcd_certfile}`, `{etcd_keyfile}`.
    #[serde(default)]
    etcd_tls: bool,
    /// What agents get as `{ip_masq}` (flanneld's `--ip-masq`).
    #[serde(default)]
    ip_masq: bool,
    /// `must` (flannel's contract, the default) or `should` (hardening beyond it).
    #[serde(default)]
    level: Level,
    /// Who wires pods: `auto` (the CNI plugins when installed, else the lab), `cni` or `lab`.
    #[serde(default)]
    pod_wiring: PodWiring,
    /// The case is about the start-up race: its agents start at one instant even when the
    /// implementation's profile or the run spreads starts.
    #[serde(default)]
    simultaneous_start: bool,
    /// How many times each agent may be restarted by its profile's restart policy over
    /// the trial (default 0: any unplanned exit is an `agent_exit` finding).
    #[serde(default)]
    max_restarts: u32,
    /// Each agent's memory budget (`64MiB`, `1GiB`): the resident memory of its process
    /// group above it is a `resource` finding at every wait.
    #[serde(default)]
    max_rss: Option<Size>,
    /// The upstream bug a field-bug case is about, and the releases that brought and fixed
    /// it, as far as known.
    #[serde(default)]
    upstream: Option<Upstream>,
    steps: Vec<S>,
}

/// `upstream: {issue: 1726, introduced: v0.18.0, fixed: v0.21.3}`: the upstream flannel
/// issue (or pull request) a field-bug case reproduces, and the releases that brought and
/// fixed the bug (`fixed` absent: not fixed, or not known to be).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub issue: u32,
    #[serde(default)]
    pub introduced: Option<String>,
    #[serde(default)]
    pub fixed: Option<String>,
}

impl fmt::Display for Upstream {
    /// `upstream #1726 (from v0.18.0, fixed in v0.21.3)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream #{}", self.issue)?;
        match (&self.introduced, &self.fixed) {
            (Some(a), Some(b)) => write!(f, " (from {a}, fixed in {b})"),
            (Some(a), None) => write!(f, " (from {a})"),
            (None, Some(b)) => write!(f, " (fixed in {b})"),
            (None, None) => Ok(()),
        }
    }
}

/// Who wires a case's pods to `cni0`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PodWiring {
    /// The CNI `bridge` + `host-local` plugins when they are installed, else the lab.
    #[default]
    Auto,
    /// The CNI plugins; their absence is a lab error.
    Cni,
    /// The lab's own wiring (a veth and addresses, no plugin, no plugin masquerading): for
    /// cases about the agent's own rules, which a plugin's `ipMasq` would blur.
    Lab,
}

/// How binding a case is: `must` is flannel's contract; `should` is hardening beyond it
/// (upstream flanneld fails some), reported apart.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Must,
    Should,
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
    /// Other checks that may also fail about the same host (by default none may: the
    /// mutant must fail for its own reason only).
    #[serde(default)]
    also: Vec<Check>,
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
    /// Other checks allowed to fail about the same host.
    pub also: Vec<Check>,
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

/// What the input layer needs of a step: its name and what it names. The step kinds
/// themselves (and how they run) live in `steps`; a case is generic over them.
pub trait StepSyntax: fmt::Debug + Clone {
    fn name(&self) -> &'static str;
    /// What the step names that must exist, checked against the topology at load time.
    fn refs(&self) -> Vec<Ref<'_>>;
}

/// Something a step names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref<'a> {
    /// A host of the topology (at every host count the case runs at).
    Host(&'a HostName),
    /// A host or `etcd`: whom a finding is about, or where a datagram comes from.
    Subject(&'a str),
    /// A backend name.
    Backend(&'a str),
    /// A profile: a bundled name or a path relative to the case file.
    Profile(&'a str),
    /// A step kind that tests the lab, allowed in control cases only (its name).
    ControlOnly(&'static str),
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
pub struct Case<S> {
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
    pub etcd_tls: bool,
    pub ip_masq: bool,
    pub level: Level,
    pub pod_wiring: PodWiring,
    pub simultaneous_start: bool,
    /// Restarts each agent may have under a restart policy.
    pub max_restarts: u32,
    /// Each agent's memory budget in bytes.
    pub max_rss: Option<u64>,
    /// The upstream bug this field-bug case reproduces.
    pub upstream: Option<Upstream>,
    pub steps: Vec<S>,
}

/// Changes to a case made before it is validated (`up --case` on another topology or at
/// one host count), so what its steps name is checked against what will run.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A topology name (in the topologies folder) or a path.
    pub topology: Option<String>,
    pub hosts: Option<u32>,
}

impl<S: StepSyntax + DeserializeOwned> Case<S> {
    /// Loads a case; `topologies` is the folder topology names resolve in.
    pub fn load(file: &Path, topologies: &Path) -> Result<Case<S>, Diagnostics> {
        Case::load_with(file, topologies, &Overrides::default())
    }

    /// Loads a case with some of its keys replaced.
    pub fn load_with(file: &Path, topologies: &Path, o: &Overrides) -> Result<Case<S>, Diagnostics> {
        let (mut raw, src): (RawCase<S>, Source) = load_yaml(file, "case")?;
        if let Some(t) = &o.topology {
            raw.topology = t.clone();
        }
        if let Some(n) = o.hosts {
            raw.hosts = Some(vec![n]);
        }
        validate(file, &src, raw, topologies)
    }
}

impl<S> Case<S> {
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

fn validate<S: StepSyntax>(file: &Path, src: &Source, raw: RawCase<S>, topologies: &Path) -> Result<Case<S>, Diagnostics> {
    let mut c = Collector::new(file, src);
    let topology_file = if raw.topology.ends_with(".yaml") {
        file.parent().unwrap_or(Path::new(".")).join(&raw.topology)
    } else {
        topologies.join(format!("{}.yaml", raw.topology))
    };
    let mut topos = Vec::new();
    // an unknown topology is said once, at its own key, whatever else is wrong
    let topology_exists = topology_file.is_file();
    if !topology_exists {
        let known: Vec<String> = std::fs::read_dir(topologies)
            .map(|d| d.filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().to_string())).collect())
            .unwrap_or_default();
        let mut known = known;
        known.sort();
        let list = known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let hint = match crate::input::diag::nearest(&raw.topology, known.iter().map(String::as_str)) {
            Some(n) => format!("did you mean `{n}`? (known: {list})"),
            None => format!("name one of {list}, or a file ending in .yaml"),
        };
        c.push(&[key("topology")], format!("unknown topology `{}`: there is no {}", raw.topology, topology_file.display()), hint);
    }
    let scales: Vec<Option<u32>> = match &raw.hosts {
        None => vec![None],
        Some(v) => v.iter().map(|n| Some(*n)).collect(),
    };
    if raw.hosts.as_ref().is_some_and(|v| v.is_empty()) {
        c.push(&[key("hosts")], "empty list of host counts", "list counts such as [2, 4, 8], or drop the key");
    }
    for (i, n) in scales.iter().enumerate() {
        let at: Vec<Seg> = if n.is_some() { vec![key("hosts"), Seg::Index(i)] } else { vec![key("topology")] };
        if *n == Some(0) || n.is_some_and(|n| n > MAX_HOSTS) {
            c.push(
                &at,
                format!("host count {} is out of range", n.unwrap_or(0)),
                format!(
                    "use 1..{MAX_HOSTS} hosts (one segment holds at most {} hosts: see topologies/flat-large.yaml)",
                    crate::input::topology::MAX_HOSTS_PER_SEGMENT
                ),
            );
            continue;
        }
        if !topology_exists {
            continue;
        }
        match Topology::load_scaled(&topology_file, *n) {
            Ok(t) => topos.push(t),
            Err(e) => {
                let first = e.0.first().map(|d| d.to_string()).unwrap_or_default();
                let what = match n {
                    Some(n) => format!("topology `{}` cannot take {n} hosts: {first}", raw.topology),
                    None => format!("topology `{}` is not valid: {first}", raw.topology),
                };
                c.push(&at, what, "fix the topology file, or use a host count it can take");
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
    for (i, step) in raw.steps.iter().enumerate() {
        let at = [key("steps"), Seg::Index(i)];
        for r in step.refs() {
            match r {
                Ref::Host(h) => {
                    if let Some(t) = topos.iter().find(|t| t.host(h.as_str()).is_none()) {
                        let hint = match crate::input::diag::nearest(h.as_str(), t.hosts.iter().map(|x| x.name.as_str())) {
                            Some(n) => format!("did you mean `{n}`? (the topology's hosts: h1, h2, … for `count:` groups)"),
                            None => "name a host of the topology (h1, h2, … for `count:` groups)".to_string(),
                        };
                        c.push(&at, format!("no host `{h}` in topology `{}` with {} hosts", raw.topology, t.hosts.len()), hint);
                    }
                }
                Ref::Subject(h) => {
                    if !host_ok(h) {
                        c.push(&at, format!("no host `{h}` in topology `{}`", raw.topology), "name a host of the topology (or `etcd`)");
                    }
                }
                Ref::Backend(b) => {
                    if Backend::parse(b).is_none() {
                        c.push(&at, format!("unknown backend `{b}`"), Backend::suggest(b));
                    }
                }
                Ref::ControlOnly(kind) => {
                    if !raw.control {
                        c.push(&at, format!("`{kind}` tests the lab"), "use it in a control case (`control: true`)");
                    }
                }
                Ref::Profile(p) => {
                    if let Err(e) = crate::input::profile::Profile::find(&resolve_profile(file, p)) {
                        c.push(
                            &at,
                            format!("profile `{p}` is not usable: {}", e.lines().next().unwrap_or("")),
                            "name a bundled profile (harness/profiles/) or a profile file",
                        );
                    }
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
    // a case whose every host runs a profile of its own never runs the implementation
    // under test: it tests the lab
    let all_own =
        !topos.is_empty() && topos.iter().all(|t| t.hosts.iter().all(|h| raw.host_profiles.keys().any(|k| k.as_str() == h.name.as_str())));
    if all_own && !raw.control {
        c.push(
            &[key("host_profiles")],
            "every host runs a profile of its own, so no trial of this case runs the implementation under test",
            "mark the case `control: true` (it tests the lab), or leave some hosts to the implementation under test",
        );
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
        // one past the last step is the end-of-trial liveness check (`agents_alive`)
        if m.step.is_some_and(|s| s == 0 || s > raw.steps.len() + 1) {
            let n = raw.steps.len();
            c.push(
                &at,
                format!("step {} is not a step of this case", m.step.unwrap_or(0)),
                format!("use 1..{n}, or {} for the end-of-trial check that every agent still runs", n + 1),
            );
        }
        for b in shared {
            if mutants.iter().any(|x: &MutantSpec| x.profile == path && x.backend == b) {
                c.push(&at, format!("mutant `{}` is expected twice on {b}", m.name), "give each backend one expectation");
            }
            mutants.push(MutantSpec {
                profile: path.clone(),
                backend: b,
                expected: Expected { check: m.check, host: m.host.clone(), step: m.step, also: m.also.clone() },
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
        etcd_tls: raw.etcd_tls,
        ip_masq: raw.ip_masq,
        level: raw.level,
        pod_wiring: raw.pod_wiring,
        simultaneous_start: raw.simultaneous_start,
        max_restarts: raw.max_restarts,
        max_rss: raw.max_rss.map(|s| s.0),
        upstream: raw.upstream,
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
pub fn profile_path<S>(case: &Case<S>, p: &str) -> String {
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
