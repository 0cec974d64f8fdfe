//! Finding and removing what runs left behind: namespaces named `fl<id>-…`, processes
//! living in them, and run lock files. A run that is still alive holds its lock file and
//! is left alone. Only lab resources are touched: processes are found by the namespace
//! they live in and killed by PID.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::input::names::RunId;
use crate::lab::netns;

pub const LOCK_DIR: &str = "/run/flannel-lab";

/// Holds a run's id while it is alive.
#[derive(Debug)]
pub struct RunLock {
    pub id: RunId,
    /// Holding the descriptor holds the flock; closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Picks a fresh run id and locks it.
    pub fn acquire() -> std::io::Result<RunLock> {
        std::fs::create_dir_all(LOCK_DIR)?;
        loop {
            let id = RunId::random();
            let path = Path::new(LOCK_DIR).join(format!("{id}.lock"));
            let file = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            if namespaces_of(id).is_empty() {
                // SAFETY: flock on a descriptor we own.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    return Ok(RunLock { id, _file: file, path });
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether some live process holds the run's lock.
pub fn is_live(id: RunId) -> bool {
    let path = Path::new(LOCK_DIR).join(format!("{id}.lock"));
    let Ok(file) = File::open(&path) else { return false };
    // SAFETY: flock on a descriptor we own.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !free
}

pub fn namespaces_of(id: RunId) -> Vec<String> {
    netns::list().into_iter().filter(|n| RunId::from_netns(n) == Some(id)).collect()
}

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
