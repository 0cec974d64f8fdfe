//! Finding and removing what runs left behind: namespaces named `fl<id>-…`, processes
//! living in them, and run lock files. A run that is still alive holds its lock file and
//! is left alone. Only lab resources are touched: processes are found by the namespace
//! they live in and killed by PID.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::input::names::RunId;
use crate::lab::netns;

pub use crate::lab::run_lock::{is_live, namespaces_of, RunLock, LOCK_DIR};

/// Every PID whose network namespace is one of `inodes`.
fn pids_in(inodes: &BTreeSet<u64>) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id() as i32;
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| netns::inode_of(&PathBuf::from(format!("/proc/{pid}/ns/net"))).is_some_and(|i| inodes.contains(&i)))
        .collect()
}

fn is_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // the state is the first field after the parenthesised command name
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X')),
        Err(_) => false,
    }
}

/// What a sweep found and did.
#[derive(Debug, Default)]
pub struct Sweep {
    pub runs: Vec<RunId>,
    pub skipped_live: Vec<RunId>,
    pub namespaces: Vec<String>,
    pub killed: Vec<i32>,
    pub containers: Vec<String>,
    pub errors: Vec<String>,
}

/// Removes one run's namespaces and the processes in them. Continues past failures and
/// reports all of them.
pub fn remove_run(id: RunId, sweep: &mut Sweep) {
    let names = namespaces_of(id);
    let inodes: BTreeSet<u64> = names.iter().filter_map(|n| netns::inode_of(&netns::path_of(n))).collect();
    let pids = pids_in(&inodes);
    for pid in &pids {
        match kill(Pid::from_raw(*pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::Error::ESRCH) => sweep.killed.push(*pid),
            Err(e) => sweep.errors.push(format!("kill pid {pid} in run {id}: {e}")),
        }
    }
    // Wait until every killed process is gone or a zombie (which runs nothing and holds no
    // namespace); whoever is its parent reaps it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|p| is_running(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in names {
        match netns::delete(&n) {
            Ok(()) => sweep.namespaces.push(n),
            Err(e) => sweep.errors.push(format!("{e}: {}", e.source_text())),
        }
    }
    match crate::lab::docker::remove_run_containers(Some(id), is_live) {
        Ok(names) => sweep.containers.extend(names),
        Err(e) => sweep.errors.push(e.to_string()),
    }
    crate::lab::live::forget(id);
    let _ = std::fs::remove_file(Path::new(LOCK_DIR).join(format!("{id}.lock")));
    sweep.runs.push(id);
}

/// `flannel-lab gc`: removes every dead run's leftovers.
pub fn sweep_all() -> Sweep {
    let mut sweep = Sweep::default();
    let mut ids: BTreeMap<RunId, ()> = netns::list().iter().filter_map(|n| RunId::from_netns(n)).map(|id| (id, ())).collect();
    if let Ok(dir) = std::fs::read_dir(LOCK_DIR) {
        for e in dir.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let stem = name.to_str().and_then(|s| s.strip_suffix(".lock").or_else(|| s.strip_suffix(".json")));
            if let Some(id) = stem.and_then(|s| s.parse().ok()) {
                ids.insert(id, ());
            }
        }
    }
    // containers of runs whose namespaces are already gone
    match crate::lab::docker::remove_run_containers(None, is_live) {
        Ok(names) => sweep.containers.extend(names),
        Err(e) => sweep.errors.push(e.to_string()),
    }
    for id in ids.into_keys() {
        if is_live(id) {
            sweep.skipped_live.push(id);
        } else {
            remove_run(id, &mut sweep);
        }
    }
    sweep
}

trait SourceText {
    fn source_text(&self) -> String;
}

impl<E: std::error::Error> SourceText for E {
    fn source_text(&self) -> String {
        self.source().map(|s| s.to_string()).unwrap_or_default()
    }
}
