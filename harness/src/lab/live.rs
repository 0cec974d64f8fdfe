//! Labs held open by `flannel-lab up`: each one's description, kept beside its run lock as
//! `/run/flannel-lab/<run>.json`, so that other invocations (`status`, `exec`, `down`) can
//! find its hosts, pods, agents and etcd, and read how far its case got and whether it is
//! converged. The holder rewrites the file as things change (atomically); the run's
//! removal (teardown, `down`, Ctrl-C, `gc`) deletes it, and the work directory with it
//! unless the holder asked to keep that.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::input::names::RunId;
use crate::lab::run_lock::{self, LOCK_DIR};

/// What a lab held open looks like to the other commands.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LiveLab {
    pub run: String,
    /// The process holding the lab (`up`); `down` signals it.
    pub pid: u32,
    /// Seconds since the epoch.
    pub started: u64,
    pub topology: String,
    pub backend: String,
    pub implementation: String,
    /// The case being run, if `up --case` named one.
    pub case: Option<String>,
    /// Where the steps are: `step 2 of 4 `wait_converged``, `held: every step passed`, or
    /// `held at the first failure: …`.
    pub state: String,
    /// The holder's last look at convergence.
    pub converged: Option<Convergence>,
    pub workdir: PathBuf,
    /// Remove `workdir` with the run (false once a step failed: it holds the artifacts).
    pub discard_workdir: bool,
    pub hosts: Vec<LiveNode>,
    pub pods: Vec<LiveNode>,
    pub etcd: Option<LiveNode>,
    pub etcd_endpoints: Vec<String>,
}

/// A namespace of the lab a person may want to enter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LiveNode {
    pub name: String,
    pub netns: String,
    pub addr: String,
    /// The agent's PID (hosts), if one runs.
    pub agent_pid: Option<u32>,
    pub log: Option<PathBuf>,
    /// The host a pod lives on.
    pub host: Option<String>,
}

/// One look at convergence: when, and what stands in its way (nothing: converged).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Convergence {
    /// Seconds since the epoch.
    pub checked: u64,
    pub findings: Vec<String>,
    /// The look itself failed (a lab error): converged or not is unknown.
    pub error: Option<String>,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn path_of(run: RunId) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{run}.json"))
}

impl LiveLab {
    /// Writes the description atomically (a reader never sees half of it).
    pub fn write(&self) -> std::io::Result<()> {
        let run: RunId = self.run.parse().map_err(std::io::Error::other)?;
        let path = path_of(run);
        let tmp = path.with_extension("json.tmp");
        std::fs::create_dir_all(LOCK_DIR)?;
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, path)
    }

    pub fn read(run: RunId) -> Option<LiveLab> {
        let text = std::fs::read(path_of(run)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The namespace of a host, pod or `etcd` by name.
    pub fn node(&self, name: &str) -> Option<&LiveNode> {
        self.hosts.iter().chain(&self.pods).chain(&self.etcd).find(|n| n.name == name)
    }
}

/// Every lab held open by a live process, oldest first.
pub fn list() -> Vec<LiveLab> {
    let Ok(dir) = std::fs::read_dir(LOCK_DIR) else { return Vec::new() };
    let mut out: Vec<LiveLab> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.strip_suffix(".json")).and_then(|s| s.parse::<RunId>().ok()))
        .filter(|id| run_lock::is_live(*id))
        .filter_map(LiveLab::read)
        .collect();
    out.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.run.cmp(&b.run)));
    out
}

/// Removes a run's description, and its work directory when the holder said so. Part of
/// removing a run (see `gc::remove_run`).
pub fn forget(run: RunId) {
    if let Some(l) = LiveLab::read(run) {
        if l.discard_workdir && !l.workdir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&l.workdir);
        }
    }
    let _ = std::fs::remove_file(path_of(run));
}

/// `2m13s`, `1h02m`: an age for people.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nodes_by_name_and_formats_ages() {
        let node = |n: &str| LiveNode { name: n.into(), netns: format!("fl0001-{n}"), ..Default::default() };
        let l = LiveLab { hosts: vec![node("h1")], pods: vec![node("h1-p1")], etcd: Some(node("etcd")), ..Default::default() };
        assert_eq!(l.node("h1-p1").unwrap().netns, "fl0001-h1-p1");
        assert_eq!(l.node("etcd").unwrap().netns, "fl0001-etcd");
        assert!(l.node("h2").is_none());
        assert_eq!(age(7), "7s");
        assert_eq!(age(133), "2m13s");
        assert_eq!(age(3720), "1h02m");
        let back: LiveLab = serde_json::from_slice(&serde_json::to_vec(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }
}
