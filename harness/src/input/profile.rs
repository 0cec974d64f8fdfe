//! Launch profiles (`harness/profiles/*.yaml`, or any file): how to run one implementation
//! on one lab host. A command template with placeholders, environment, how readiness
//! shows, which backends it claims, how to stop it.
//!
//! ```yaml
//! name: flanneld
//! command: [flanneld, "--etcd-endpoints={etcd_endpoints}", "--iface={iface}",
//!           "--public-ip={public_ip}", "--subnet-file={subnet_file}", "--ip-masq=false"]
//! env: {GODEBUG: "netdns=go"}
//! ready: {subnet_file: {}}          # or {log_line: {contains: "…"}} or {http: {url: "…"}}
//! backends: [vxlan, host-gw, udp]
//! stop: {signal: TERM, grace: 10s}
//! ```
//!
//! Placeholders: `{etcd_endpoints}` `{etcd_prefix}` `{etcd_cafile}` `{etcd_certfile}`
//! `{etcd_keyfile}` (empty when etcd is plaintext) `{ip_masq}` (`true`/`false`, the case's
//! choice) `{iface}` `{public_ip}` `{subnet_file}` `{host}` `{state_dir}` `{reference_agent}`
//! `{profile_dir}` `{flanneld}` (`$FLANNELD`, else `flanneld` on PATH: one place names the
//! upstream binary for every profile that runs it); `{{` and `}}` are literal braces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::input::diag::{key, load_yaml, Collector, Diagnostics, Seg, Source};
use crate::input::kinds::{Backend, Check};
use crate::input::values::Dur;

pub const PLACEHOLDERS: [&str; 15] = [
    "etcd_endpoints",
    "etcd_prefix",
    "etcd_cafile",
    "etcd_certfile",
    "etcd_keyfile",
    "ip_masq",
    "iface",
    "public_ip",
    "public_ipv6",
    "subnet_file",
    "host",
    "state_dir",
    "reference_agent",
    "profile_dir",
    "flanneld",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    ready: Option<Ready>,
    backends: Vec<String>,
    #[serde(default)]
    stop: Option<RawStop>,
    #[serde(default)]
    private_paths: BTreeMap<String, String>,
    #[serde(default)]
    restart: Option<RawRestart>,
    /// Failures this implementation is known to have: they still run and are reported as
    /// "known" (or "fixed" when they pass) without failing the run.
    #[serde(default)]
    known_failures: Vec<KnownFailure>,
    /// Agent starts spread evenly over this window instead of one instant (cases about the
    /// start-up race keep their simultaneous start).
    #[serde(default)]
    start_spread: Option<Dur>,
}

/// A failure an implementation is known to have, as precise as a finding: trials whose
/// `CASE::BACKEND` matches `trials` (`*` matches any run of characters) that fail with a
/// finding of `check` about a host matching `host` (at `step`, when given). A trial is
/// "known" only when every one of its findings is excused by an entry; a lab error never
/// is. One that passes is "fixed" (and fails the run unless allowed), except for an
/// `intermittent` entry (a race that fails some runs only).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KnownFailure {
    pub trials: String,
    pub check: Check,
    /// A host name, or a pattern such as `h*` (a bare `*` is refused: name the hosts).
    pub host: String,
    /// The step (1-based) the finding comes from; any step when absent.
    #[serde(default)]
    pub step: Option<usize>,
    pub reason: String,
    /// Where the bug is tracked upstream.
    #[serde(default)]
    pub link: Option<String>,
    /// The failure does not happen on every run (a start-up race): a pass is not "fixed".
    #[serde(default)]
    pub intermittent: bool,
}

impl KnownFailure {
    /// Whether the trial named `CASE::BACKEND[::IMPLEMENTATION]` is one of these.
    pub fn matches(&self, trial: &str) -> bool {
        let case_backend: String = trial.splitn(3, "::").take(2).collect::<Vec<_>>().join("::");
        glob(&self.trials, &case_backend)
    }

    /// Whether this entry excuses a finding of `check` about `host` at `step` of a trial it
    /// matches.
    pub fn excuses(&self, check: Check, host: &str, step: Option<usize>) -> bool {
        self.check == check && glob(&self.host, host) && (self.step.is_none() || self.step == step)
    }

    /// `[routes] h2 at step 2 (upstream watch bug, https://…)`.
    pub fn describe(&self) -> String {
        let step = self.step.map(|s| format!(" at step {s}")).unwrap_or_default();
        let link = self.link.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
        format!("[{}] {}{step} ({}{link})", self.check, self.host, self.reason)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: RestartPolicy,
    #[serde(default)]
    backoff: Option<Dur>,
}

/// What the lab does when an agent exits, like a DaemonSet's pod restart policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// An exit is a failure of the trial.
    #[default]
    Never,
    /// Restart after a non-zero exit or a signal.
    OnFailure,
    /// Restart after any exit.
    Always,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    #[serde(default = "term")]
    signal: String,
    #[serde(default)]
    grace: Option<Dur>,
}

fn term() -> String {
    "TERM".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Contains {
    pub contains: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Url {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Nothing {}

/// How the lab tells that an agent is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// The subnet file exists (flannel writes it once it holds a lease).
    SubnetFile(Nothing),
    /// A line of the agent's log contains this text.
    LogLine(Contains),
    /// An HTTP GET (from inside the host's namespace) answers 200.
    Http(Url),
}

crate::input::values::single_key_enum!(Ready, "readiness check", {
    "subnet_file" => SubnetFile(Nothing),
    "log_line" => LogLine(Contains),
    "http" => Http(Url),
});

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ready: Ready,
    pub backends: Vec<Backend>,
    pub stop_signal: nix::sys::signal::Signal,
    pub grace: Duration,
    /// Absolute paths the implementation hard-codes → the per-host directory (a template,
    /// usually under `{state_dir}`) it sees there instead, through a private mount namespace.
    pub private_paths: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    /// First restart delay; doubles per restart up to 10 s.
    pub restart_backoff: Duration,
    pub known_failures: Vec<KnownFailure>,
    /// Agent starts spread evenly over this window (zero: all at one instant).
    pub start_spread: Duration,
}

impl Profile {
    /// The known failures that concern a trial of this implementation (by its name).
    pub fn known_failures_of(&self, trial: &str) -> Vec<&KnownFailure> {
        self.known_failures.iter().filter(|k| k.matches(trial)).collect()
    }
}

/// The upstream flanneld binary `{flanneld}` names: `$FLANNELD`, else `flanneld`.
pub fn flanneld_binary() -> String {
    std::env::var("FLANNELD").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "flanneld".into())
}

/// The values placeholders expand to for one host.
#[derive(Debug, Clone, Default)]
pub struct Values {
    pub etcd_endpoints: String,
    pub etcd_prefix: String,
    pub etcd_cafile: String,
    pub etcd_certfile: String,
    pub etcd_keyfile: String,
    pub ip_masq: String,
    pub iface: String,
    pub public_ip: String,
    /// The host's IPv6 underlay address; empty on an IPv4-only underlay.
    pub public_ipv6: String,
    pub subnet_file: String,
    pub host: String,
    pub state_dir: String,
    pub reference_agent: String,
    pub profile_dir: String,
    /// The upstream flanneld binary: `$FLANNELD`, else `flanneld` (found on PATH).
    pub flanneld: String,
}

impl Values {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "etcd_endpoints" => &self.etcd_endpoints,
            "etcd_prefix" => &self.etcd_prefix,
            "etcd_cafile" => &self.etcd_cafile,
            "etcd_certfile" => &self.etcd_certfile,
            "etcd_keyfile" => &self.etcd_keyfile,
            "ip_masq" => &self.ip_masq,
            "iface" => &self.iface,
            "public_ip" => &self.public_ip,
            "public_ipv6" => &self.public_ipv6,
            "subnet_file" => &self.subnet_file,
            "host" => &self.host,
            "state_dir" => &self.state_dir,
            "reference_agent" => &self.reference_agent,
            "profile_dir" => &self.profile_dir,
            "flanneld" => &self.flanneld,
            _ => return None,
        })
    }
}

/// Expands `{name}` placeholders; `{{`/`}}` are literal braces. Errors name the bad part.
pub fn expand(template: &str, values: &Values) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{") {
            out.push('{');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            out.push('}');
            rest = t;
        } else if let Some(t) = tail.strip_prefix('{') {
            let end = t.find('}').ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
            let name = &t[..end];
            let v = values.get(name).ok_or_else(|| format!("unknown placeholder `{{{name}}}` (known: {})", PLACEHOLDERS.join(", ")))?;
            out.push_str(v);
            rest = &t[end + 1..];
        } else {
            return Err(format!("stray `}}` in `{template}` (write `}}}}` for a literal brace)"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Profile {
    pub fn load(file: &Path) -> Result<Profile, Diagnostics> {
        let (raw, src): (RawProfile, Source) = load_yaml(file, "profile")?;
        validate(file, &src, raw)
    }

    /// A bundled profile by name (`reference`, `flanneld`), or a profile file by path.
    pub fn find(name_or_path: &str) -> Result<Profile, String> {
        let p = Path::new(name_or_path);
        let file = if name_or_path.ends_with(".yaml") { p.to_path_buf() } else { bundled_dir().join(format!("{name_or_path}.yaml")) };
        Profile::load(&file).map_err(|e| e.to_string())
    }

    pub fn dir(&self) -> PathBuf {
        self.file.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// The argv for one host.
    pub fn argv(&self, values: &Values) -> Result<Vec<String>, String> {
        self.command.iter().map(|a| expand(a, values)).collect()
    }

    pub fn uses_reference_agent(&self) -> bool {
        self.mentions("reference_agent")
    }

    /// Whether the command or the environment uses placeholder `{name}`.
    pub fn mentions(&self, name: &str) -> bool {
        let p = format!("{{{name}}}");
        self.command.iter().chain(self.env.values()).any(|a| a.contains(&p))
    }
}

pub fn bundled_dir() -> PathBuf {
    crate::input::repo_root().join("harness/profiles")
}

/// The checks of a `known_failures` list, in a profile or an expectations file.
fn check_known_failures(list: &[KnownFailure], c: &mut Collector) {
    for (i, k) in list.iter().enumerate() {
        let at = |f: &str| [key("known_failures"), Seg::Index(i), key(f)];
        if k.trials.trim().is_empty() || k.trials.matches("::").count() > 1 {
            c.push(&at("trials"), format!("`{}` is not a CASE::BACKEND pattern", k.trials), "write e.g. field-1726-*::vxlan or *::udp");
        } else if k.trials.split("::").all(|p| p.chars().all(|ch| ch == '*')) {
            c.push(
                &at("trials"),
                format!("`{}` excuses every trial", k.trials),
                "name the case (and backend) the failure is about, e.g. field-1726-*::vxlan",
            );
        }
        if k.host.trim().is_empty() || k.host.chars().all(|ch| ch == '*') {
            c.push(
                &at("host"),
                format!("`{}` excuses a finding about any host", k.host),
                "name the host the finding is about (h2), or a pattern such as h*",
            );
        }
        if k.step == Some(0) {
            c.push(&at("step"), "steps count from 1", "give the step the finding comes from, or drop the key");
        }
        if k.reason.trim().is_empty() {
            c.push(&at("reason"), "a known failure needs a reason", "say what the implementation gets wrong");
        }
    }
}

/// A file of expected failures for one build of an implementation (`run
/// --known-failures FILE`): a `known_failures:` list as in a profile, and why it holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectations {
    #[serde(default)]
    description: String,
    known_failures: Vec<KnownFailure>,
}

/// Reads an expectations file (`known_failures:` as in a profile), every entry checked.
pub fn load_known_failures(file: &Path) -> Result<Vec<KnownFailure>, Diagnostics> {
    let (raw, src): (RawExpectations, Source) = load_yaml(file, "known-failures")?;
    let _ = raw.description;
    let mut c = Collector::new(file, &src);
    check_known_failures(&raw.known_failures, &mut c);
    c.finish()?;
    Ok(raw.known_failures)
}

fn validate(file: &Path, src: &Source, raw: RawProfile) -> Result<Profile, Diagnostics> {
    let mut c = Collector::new(file, src);
    let ok_name = !raw.name.is_empty()
        && raw.name.len() <= 32
        && raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok_name {
        c.push(
            &[key("name")],
            format!("`{}` is not a profile name", raw.name),
            "use 1-32 of letters, digits, `-`, `_`, `.` (it appears in trial names)",
        );
    }
    if raw.command.is_empty() {
        c.push(&[key("command")], "empty command", "give the program and its arguments as a list");
    }
    let probe = Values::default();
    for (i, a) in raw.command.iter().enumerate() {
        if let Err(e) = expand(a, &probe) {
            c.push(&[key("command"), Seg::Index(i)], e, "see the placeholder list in README.md");
        }
    }
    for (k, v) in &raw.env {
        if let Err(e) = expand(v, &probe) {
            c.push(&[key("env"), key(k)], e, "see the placeholder list in README.md");
        }
    }
    let backends = Backend::parse_list(&raw.backends, &mut c, &[key("backends")]);
    if raw.backends.is_empty() {
        c.push(&[key("backends")], "no backends claimed", "list the backends the implementation supports");
    }
    let ready = raw.ready.unwrap_or(Ready::SubnetFile(Nothing {}));
    if let Ready::Http(u) = &ready {
        if let Err(e) = expand(&u.url, &probe) {
            c.push(&[key("ready")], e, "see the placeholder list in README.md");
        } else if !u.url.starts_with("http://") {
            c.push(
                &[key("ready")],
                format!("`{}` is not an http:// URL", u.url),
                "readiness probes speak plain HTTP inside the host's namespace",
            );
        }
    }
    let (sig, grace) = match &raw.stop {
        None => ("TERM".to_string(), None),
        Some(s) => (s.signal.clone(), s.grace),
    };
    let stop_signal = match sig.trim_start_matches("SIG") {
        "TERM" => nix::sys::signal::Signal::SIGTERM,
        "INT" => nix::sys::signal::Signal::SIGINT,
        "QUIT" => nix::sys::signal::Signal::SIGQUIT,
        "KILL" => nix::sys::signal::Signal::SIGKILL,
        other => {
            c.push(&[key("stop"), key("signal")], format!("unsupported stop signal `{other}`"), "use TERM, INT, QUIT or KILL");
            nix::sys::signal::Signal::SIGTERM
        }
    };
    for (target, source) in &raw.private_paths {
        let at = [key("private_paths"), key(target)];
        if !target.starts_with('/') || target == "/" {
            c.push(
                &at,
                format!("`{target}` is not an absolute path below /"),
                "write the path the implementation hard-codes, e.g. /run/flannel",
            );
        }
        if let Err(e) = expand(source, &probe) {
            c.push(&at, e, "see the placeholder list in README.md");
        }
    }
    check_known_failures(&raw.known_failures, &mut c);
    c.finish()?;
    Ok(Profile {
        known_failures: raw.known_failures,
        start_spread: raw.start_spread.map(|d| d.0).unwrap_or_default(),
        restart: raw.restart.as_ref().map(|r| r.policy).unwrap_or_default(),
        restart_backoff: raw.restart.and_then(|r| r.backoff).map(|d| d.0).unwrap_or(Duration::from_secs(1)),
        private_paths: raw.private_paths,
        name: raw.name,
        file: file.to_path_buf(),
        description: raw.description,
        command: raw.command,
        env: raw.env,
        ready,
        backends,
        stop_signal,
        grace: grace.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values {
            etcd_endpoints: "http://192.168.99.254:2379".into(),
            etcd_prefix: "/coreos.com/network".into(),
            iface: "eth0".into(),
            public_ip: "192.168.99.1".into(),
            subnet_file: "/tmp/x/h1/subnet.env".into(),
            host: "h1".into(),
            state_dir: "/tmp/x/h1".into(),
            reference_agent: "/repo/target/debug/flannel-agent".into(),
            profile_dir: "/repo/harness/profiles".into(),
            flanneld: "flanneld".into(),
            ip_masq: "false".into(),
            ..Values::default()
        }
    }

    #[test]
    fn known_failures_match_case_and_backend() {
        let k = |t: &str| KnownFailure {
            trials: t.into(),
            check: Check::Routes,
            host: "h2".into(),
            step: None,
            reason: "r".into(),
            link: None,
            intermittent: false,
        };
        assert!(k("field-1726-*::vxlan").matches("field-1726-simultaneous-start::vxlan::flanneld"));
        assert!(!k("field-1726-*::vxlan").matches("field-1726-simultaneous-start::udp::flanneld"));
        assert!(k("*::udp").matches("ping::udp::x"));
        assert!(k("ping::*").matches("ping::host-gw"));
        assert!(!k("ping::*").matches("ping-more::host-gw"));
        assert!(k("*strangers*").matches("negative-vxlan-strangers::vxlan::x"));
        assert!(!k("a*b*c::vxlan").matches("ac::vxlan::x"));
    }

    #[test]
    fn placeholders_expand() {
        let v = values();
        assert_eq!(expand("--etcd-endpoints={etcd_endpoints}", &v).unwrap(), "--etcd-endpoints=http://192.168.99.254:2379");
        assert_eq!(expand("{state_dir}/{host}.log", &v).unwrap(), "/tmp/x/h1/h1.log");
        assert_eq!(expand("json={{\"a\":1}}", &v).unwrap(), "json={\"a\":1}");
        assert!(expand("{nope}", &v).unwrap_err().contains("unknown placeholder `{nope}`"));
        assert_eq!(expand("--etcd-certfile={etcd_certfile} --ip-masq={ip_masq}", &v).unwrap(), "--etcd-certfile= --ip-masq=false");
        assert!(expand("{host", &v).unwrap_err().contains("unclosed"));
        assert!(expand("a}b", &v).unwrap_err().contains("stray"));
    }

    #[test]
    fn bundled_profiles_load_and_expand() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let r = Profile::load(&dir.join("reference.yaml")).unwrap();
        assert_eq!(r.name, "reference");
        assert!(r.uses_reference_agent());
        assert_eq!(r.backends, Backend::ALL.to_vec());
        let argv = r.argv(&values()).unwrap();
        assert_eq!(argv[0], "/repo/target/debug/flannel-agent");
        assert!(argv.contains(&"--public-ip=192.168.99.1".to_string()));
        assert!(argv.contains(&"--subnet-file=/tmp/x/h1/subnet.env".to_string()));
        let f = Profile::load(&dir.join("flanneld.yaml")).unwrap();
        let argv = f.argv(&values()).unwrap();
        assert_eq!(
            argv,
            [
                "flanneld",
                "--etcd-endpoints=http://192.168.99.254:2379",
                "--etcd-prefix=/coreos.com/network",
                "--etcd-cafile=",
                "--etcd-certfile=",
                "--etcd-keyfile=",
                "--iface=eth0",
                "--public-ip=192.168.99.1",
                "--subnet-file=/tmp/x/h1/subnet.env",
                "--ip-masq=false",
            ]
        );
        assert_eq!(f.ready, Ready::SubnetFile(Nothing {}));
    }

    #[test]
    fn invalid_profiles_are_located() {
        let src = "name: bad name\ncommand: [x, \"{iface\"]\nbackends: [vxlan, wireguard]\nready: {log_line: {contains: up}}\nstop: {signal: HUP}\n";
        let raw: RawProfile = crate::input::diag::parse_yaml(Path::new("p.yaml"), src).unwrap();
        let e = validate(Path::new("p.yaml"), &crate::input::diag::Source::plain(src), raw).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.0.len(), 4, "{text}");
        assert!(text.contains("p.yaml:1:7: name"), "{text}");
        assert!(text.contains("p.yaml:2:14: command[1]: unclosed"), "{text}");
        assert!(text.contains("p.yaml:3:19: backends[1]: unknown backend `wireguard`"), "{text}");
        assert!(text.contains("stop.signal: unsupported stop signal `HUP`"), "{text}");
    }

    #[test]
    fn start_spread_and_known_failures_are_read_and_checked() {
        let src = "name: up\ncommand: [x]\nbackends: [vxlan]\nstart_spread: 2s\nknown_failures:\n  - {trials: \"field-1726-*::vxlan\", check: routes, host: \"h*\", step: 2, reason: race, link: \"https://x\"}\n";
        let raw: RawProfile = crate::input::diag::parse_yaml(Path::new("p.yaml"), src).unwrap();
        let p = validate(Path::new("p.yaml"), &crate::input::diag::Source::plain(src), raw).unwrap();
        assert_eq!(p.start_spread, Duration::from_secs(2));
        let known = p.known_failures_of("field-1726-simultaneous-start::vxlan::up");
        assert_eq!(known.iter().map(|k| k.reason.as_str()).collect::<Vec<_>>(), ["race"]);
        assert!(known[0].excuses(Check::Routes, "h7", Some(2)));
        assert!(!known[0].excuses(Check::Fdb, "h7", Some(2)), "another check");
        assert!(!known[0].excuses(Check::Routes, "h7", Some(5)), "another step");
        assert!(!known[0].excuses(Check::Routes, "etcd", Some(2)), "another subject");
        let bad = "name: up\ncommand: [x]\nbackends: [vxlan]\nknown_failures:\n  - {trials: \"a::b::c\", check: routes, host: h1, reason: \"\"}\n  - {trials: \"*\", check: fdb, host: \"*\", step: 0, reason: r}\n";
        let raw: RawProfile = crate::input::diag::parse_yaml(Path::new("p.yaml"), bad).unwrap();
        let text = validate(Path::new("p.yaml"), &crate::input::diag::Source::plain(bad), raw).unwrap_err().to_string();
        assert!(text.contains("known_failures[0].trials: `a::b::c` is not a CASE::BACKEND pattern"), "{text}");
        assert!(text.contains("known_failures[0].reason: a known failure needs a reason"), "{text}");
        assert!(text.contains("p.yaml:6:5: known_failures[1].trials: `*` excuses every trial"), "{text}");
        assert!(text.contains("known_failures[1].host: `*` excuses a finding about any host"), "{text}");
        assert!(text.contains("known_failures[1].step: steps count from 1"), "{text}");
        let vague = "name: up\ncommand: [x]\nbackends: [vxlan]\nknown_failures:\n  - {trials: \"ping::*\", reason: r}\n";
        let text = crate::input::diag::parse_yaml::<RawProfile>(Path::new("p.yaml"), vague).unwrap_err().to_string();
        assert!(text.contains("missing field `check`"), "a known failure names its check: {text}");
    }
}
