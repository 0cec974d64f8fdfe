//! Launching the implementation under test: one agent process per host, inside the host's
//! namespace, with flanneld's flags, its own subnet file and log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::Result;
use crate::input::profile::{expand, Profile, Ready, Values};
use crate::lab::proc::{Child, Gate};
use crate::lab::Node;
use crate::lab_err;
use crate::store::tls::ClientFiles;

/// The implementation under test: a launch profile plus, for profiles that run it, the
/// path of the reference agent binary.
#[derive(Debug, Clone)]
pub struct Implementation {
    pub profile: Profile,
    pub reference_agent: PathBuf,
    /// What `{flanneld}` names for this implementation (`PROFILE@BINARY`), else
    /// `$FLANNELD` or `flanneld`.
    pub flanneld: Option<String>,
}

impl Implementation {
    pub fn name(&self) -> &str {
        &self.profile.name
    }

    /// Loads a profile (bundled name or path) and, when it needs it, locates the
    /// reference agent (building it if missing). `PROFILE@BINARY` runs the profile with
    /// `{flanneld}` = BINARY and names the implementation after the binary's file
    /// (`flanneld@/opt/flanneld-v0.20.2` is `flanneld-v0.20.2`): one profile, several builds.
    pub fn load(spec: &str, build_reference: bool) -> Result<Implementation> {
        let (name_or_path, binary) = match spec.split_once('@') {
            Some((p, b)) => (p, Some(b.to_string())),
            None => (spec, None),
        };
        let mut profile = Profile::find(name_or_path).map_err(crate::error::Error::Input)?;
        if let Some(b) = &binary {
            if !Path::new(b).is_file() {
                return Err(crate::error::Error::Usage(format!("`{spec}`: no file {b}")));
            }
            if !profile.mentions("flanneld") {
                return Err(crate::error::Error::Usage(format!("`{spec}`: profile `{}` does not use {{flanneld}}", profile.name)));
            }
            profile.name = Path::new(b).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| b.clone());
        }
        let reference_agent = if profile.uses_reference_agent() && build_reference {
            crate::agents::reference_agent()?
        } else {
            PathBuf::from("flannel-agent")
        };
        Ok(Implementation { profile, reference_agent, flanneld: binary })
    }

    /// The implementation chosen by `FLANNEL_LAB_IMPL` (default: `reference`).
    pub fn from_env(build_reference: bool) -> Result<Implementation> {
        let chosen = std::env::var("FLANNEL_LAB_IMPL").unwrap_or_else(|_| "reference".into());
        let mut imp = Implementation::load(&chosen, build_reference)?;
        if let Ok(v) = std::env::var("FLANNEL_LAB_START_SPREAD") {
            imp.set_start_spread(&v)?;
        }
        Ok(imp)
    }

    /// Overrides the profile's `start_spread` (`--start-spread 2s`, `FLANNEL_LAB_START_SPREAD`).
    pub fn set_start_spread(&mut self, text: &str) -> Result<()> {
        self.profile.start_spread = crate::input::case::parse_duration(text)
            .ok_or_else(|| crate::lab_err!("start spread `{text}` is not a duration like 2s or 500ms"))?;
        Ok(())
    }

    /// Finds the reference agent next to the running executable (`target/<profile>/`), or at
    /// `FLANNEL_LAB_AGENT`.
    pub fn find_reference_agent() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("FLANNEL_LAB_AGENT") {
            let bin = PathBuf::from(p);
            return if bin.is_file() { Ok(bin) } else { Err(lab_err!("FLANNEL_LAB_AGENT={} does not exist", bin.display())) };
        }
        let exe = std::env::current_exe().map_err(|e| lab_err!("locate own executable: {e}"))?;
        let mut dir = exe.parent().map(Path::to_path_buf);
        // test binaries live in target/<profile>/deps
        while let Some(d) = dir {
            let cand = d.join("flannel-agent");
            if cand.is_file() {
                return Ok(cand);
            }
            if d.file_name().is_some_and(|n| n == "target") {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Err("flannel-agent binary not found next to this executable: run `cargo build -p flannel-agent` or set FLANNEL_LAB_AGENT".into())
    }

    fn command(&self, values: &Values) -> Result<Command> {
        let argv = self.profile.argv(values)?;
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        for (k, v) in &self.profile.env {
            c.env(k, expand(v, values)?);
        }
        Ok(c)
    }
}

/// What every agent of a trial is told: where etcd is, with which TLS files, and the
/// case's ip-masq choice.
#[derive(Debug, Clone)]
pub struct Launch {
    pub endpoints: String,
    pub prefix: String,
    pub tls: ClientFiles,
    pub ip_masq: bool,
    /// The nice value agents run at ([`agent_nice`]).
    pub nice: i32,
}

/// Labs above this many hosts run their agents at [`AGENTS_NICE_AT_SIZE`].
pub const NICE_AGENTS_ABOVE: usize = 64;
/// A thousand agents at the default priority leave the harness (nice −5) and etcd under
/// one percent of the machine between them: polls took a minute and etcd's answers
/// seconds. At 19 the agents still share the machine evenly among themselves (what the
/// measurements compare), and the lab's own parts, which a real cluster runs elsewhere,
/// keep up.
pub const AGENTS_NICE_AT_SIZE: i32 = 19;

/// The nice value for the agents of a lab of `hosts` hosts.
pub fn agent_nice(hosts: usize) -> i32 {
    if hosts > NICE_AGENTS_ABOVE {
        AGENTS_NICE_AT_SIZE
    } else {
        0
    }
}

impl Launch {
    /// Refuses a profile that cannot be told to masquerade when the case needs it (the
    /// agent would silently run another configuration). A profile without the TLS
    /// placeholders still runs: etcd refuses it, and the trial says so.
    fn check(&self, imp: &Implementation) -> Result<()> {
        let name = imp.name();
        if !self.tls.ca.is_empty() {
            let missing: Vec<&str> =
                ["etcd_cafile", "etcd_certfile", "etcd_keyfile"].into_iter().filter(|p| !imp.profile.mentions(p)).collect();
            if !missing.is_empty() {
                tracing::warn!(
                    "profile `{name}` does not use {{{}}} although etcd requires TLS client certificates: expect etcd to refuse it",
                    missing.join("}, {")
                );
            }
        }
        if self.ip_masq && !imp.profile.mentions("ip_masq") {
            return Err(lab_err!("profile `{name}` does not take the case's ip-masq choice: use \"--ip-masq={{ip_masq}}\" in its command"));
        }
        Ok(())
    }
}

/// One host's agent.
pub struct Agent {
    pub host: String,
    pub subnet_file: PathBuf,
    pub child: Child,
    pub profile: Profile,
    ns: crate::lab::netns::Netns,
    values: Values,
    /// When it was started (etcd's log times are wall-clock times).
    pub started: std::time::SystemTime,
    /// Restarts done under the profile's restart policy, and when the next is due.
    pub restarts: u32,
    pub next_restart: Option<std::time::Instant>,
    /// How each predecessor on this host ended, when the restart policy restarted it.
    pub earlier_exits: Vec<String>,
    /// The case caused this agent's exit or expects it (a `kill_agent` break,
    /// `expect_agents_exit`): the end-of-trial liveness check leaves it alone.
    pub exit_planned: bool,
    /// What readiness evidence looked like when it started: only evidence written after
    /// that counts (a restarted agent is not ready on its predecessor's subnet file or log).
    before: Evidence,
}

/// The readiness evidence on disk at an agent's start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Evidence {
    /// The subnet file's identity (device, inode, modification time), if it existed.
    subnet_file: Option<FileId>,
    /// How many bytes the log already had (a restarted agent appends to it).
    log_len: u64,
}

type FileId = (u64, u64, i64, i64);

/// A file's identity: a rewrite (atomic rename or in place) changes it.
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

impl Evidence {
    fn now(subnet_file: &Path, log: &Path) -> Evidence {
        Evidence { subnet_file: file_id(subnet_file), log_len: std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) }
    }

    /// Whether the subnet file exists and was written since.
    fn new_subnet_file(&self, path: &Path) -> bool {
        file_id(path).is_some_and(|id| Some(id) != self.subnet_file)
    }

    /// Whether the log gained a line containing `text` since.
    fn new_log_line(&self, log: &Path, text: &str) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(log) else { return false };
        let mut fresh = Vec::new();
        if f.seek(SeekFrom::Start(self.log_len)).is_err() || f.read_to_end(&mut fresh).is_err() {
            return false;
        }
        String::from_utf8_lossy(&fresh).contains(text)
    }
}

impl Agent {
    pub fn subnet_file_path(node: &Node) -> PathBuf {
        node.dir.join("subnet.env")
    }

    /// The placeholder values for a host.
    pub fn values(imp: &Implementation, node: &Node, launch: &Launch) -> Values {
        Values {
            etcd_endpoints: launch.endpoints.clone(),
            etcd_prefix: launch.prefix.clone(),
            etcd_cafile: launch.tls.ca.clone(),
            etcd_certfile: launch.tls.cert.clone(),
            etcd_keyfile: launch.tls.key.clone(),
            ip_masq: launch.ip_masq.to_string(),
            iface: crate::lab::UNDERLAY_IF.to_string(),
            public_ip: node.addr.to_string(),
            public_ipv6: node.addr6.map(|a| a.to_string()).unwrap_or_default(),
            subnet_file: Self::subnet_file_path(node).display().to_string(),
            host: node.name.clone(),
            state_dir: node.dir.display().to_string(),
            reference_agent: imp.reference_agent.display().to_string(),
            profile_dir: imp.profile.dir().display().to_string(),
            flanneld: imp.flanneld.clone().unwrap_or_else(crate::input::profile::flanneld_binary),
        }
    }

    pub fn start(imp: &Implementation, node: &Node, launch: &Launch) -> Result<Agent> {
        Agent::start_gated(imp, node, launch, None)
    }

    /// Starts the agent behind `gate` when given: its process waits until the gate opens.
    pub fn start_gated(imp: &Implementation, node: &Node, launch: &Launch, gate: Option<&Gate>) -> Result<Agent> {
        launch.check(imp)?;
        let values = Self::values(imp, node, launch);
        let cmd = imp.command(&values).map_err(|e| lab_err!("profile `{}`: {e}", imp.name()))?;
        let mut mounts = Vec::new();
        for (target, source) in &imp.profile.private_paths {
            let target = PathBuf::from(target);
            if !target.is_dir() {
                let (name, t) = (imp.name(), target.display());
                return Err(lab_err!(
                    "profile `{name}`: private path {t} does not exist on this machine; create it once (mkdir -p {t}) and each host gets its own copy mounted over it"
                ));
            }
            let source = PathBuf::from(expand(source, &values)?);
            std::fs::create_dir_all(&source).map_err(|e| lab_err!("create {}: {e}", source.display()))?;
            mounts.push((source, target));
        }
        let subnet_file = Self::subnet_file_path(node);
        let before = Evidence::now(&subnet_file, &node.dir.join("agent.log"));
        let child =
            Child::spawn_gated(&format!("agent@{}", node.name), &node.ns, cmd, &node.dir.join("agent.log"), &mounts, gate, launch.nice)
                .map_err(|e| crate::error::chain(&e))?;
        Ok(Agent {
            host: node.name.clone(),
            subnet_file,
            child,
            profile: imp.profile.clone(),
            ns: node.ns.clone(),
            values,
            started: std::time::SystemTime::now(),
            restarts: 0,
            next_restart: None,
            earlier_exits: Vec::new(),
            exit_planned: false,
            before,
        })
    }

    /// Whether the profile's readiness condition holds now, on evidence written since this
    /// agent started.
    pub fn is_ready(&self) -> bool {
        match &self.profile.ready {
            Ready::SubnetFile(_) => self.before.new_subnet_file(&self.subnet_file),
            Ready::LogLine(c) => self.before.new_log_line(self.child.log_file(), &c.contains),
            Ready::Http(u) => match expand(&u.url, &self.values) {
                Ok(url) => self.ns.run(move || http_ok(&url)).unwrap_or(false),
                Err(_) => false,
            },
        }
    }

    pub fn stop(&mut self) {
        self.child.stop_with(self.profile.stop_signal, self.profile.grace);
    }
}

/// A plain HTTP/1.0 GET answering 200, with short timeouts.
fn http_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let Ok(addr) = hostport.parse::<std::net::SocketAddr>() else { return false };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Finds the reference agent, building it with cargo when it is missing (the case under
/// `cargo test -p flannel-lab`, which does not build other packages' binaries).
pub fn reference_agent() -> Result<PathBuf> {
    if let Ok(bin) = Implementation::find_reference_agent() {
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "flannel-agent", "--bin", "flannel-agent"])
        .current_dir(crate::input::repo_root())
        .status()
        .map_err(|e| lab_err!("run cargo to build flannel-agent: {e}"))?;
    if !status.success() {
        return Err(lab_err!("`cargo build -p flannel-agent` failed ({status})"));
    }
    Implementation::find_reference_agent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_evidence_written_after_the_start_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (env, log) = (dir.path().join("subnet.env"), dir.path().join("agent.log"));
        std::fs::write(&env, "FLANNEL_SUBNET=10.244.1.1/24\n").unwrap();
        std::fs::write(&log, "I1206 ready: lease acquired\n").unwrap();
        let before = Evidence::now(&env, &log);
        assert!(!before.new_subnet_file(&env), "the predecessor's subnet file");
        assert!(!before.new_log_line(&log, "lease acquired"), "the predecessor's log line");
        // rewritten atomically, as flanneld does: a new inode
        let tmp = dir.path().join(".subnet.env");
        std::fs::write(&tmp, "FLANNEL_SUBNET=10.244.1.1/24\n").unwrap();
        std::fs::rename(&tmp, &env).unwrap();
        assert!(before.new_subnet_file(&env));
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"I1206 lease acquired again\n").unwrap();
        assert!(before.new_log_line(&log, "lease acquired"));
        let missing = Evidence::now(&dir.path().join("none"), &dir.path().join("none.log"));
        assert!(!missing.new_subnet_file(&dir.path().join("none")));
        assert!(missing.new_subnet_file(&env), "a file that did not exist at the start");
    }
}
