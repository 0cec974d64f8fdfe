//! A run's id, held while the run is alive: a lock file under [`LOCK_DIR`] with an flock on
//! it. `gc` leaves a run alone while its lock is held; `status` lists the live ones.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

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
