//! The machine's memory as a limit of the lab, never as a verdict.
//!
//! A lab of a thousand hosts runs a thousand agents: the reference agent needs a few MiB
//! each, another implementation may need tens, and past what the machine holds the kernel's
//! OOM killer ends processes of its choosing: agents (which would read as the
//! implementation crashing), etcd, or processes outside the lab. The lab keeps that
//! apart from verdicts:
//!
//! - an agent the OOM killer ended is a lab error naming the limit, not an `agent_exit`
//!   finding ([`killed_by_oom`] reads the kernel's log for the process);
//! - a wait that sees free memory below a floor stops with a lab error ([`Watch::check`]);
//! - `scale` skips a size whose agents cannot fit, judged by what the same agents used at
//!   the smaller sizes ([`fits`]).
//!
//! The floor is 2% of the machine's memory, at least 256 MiB; `FLANNEL_LAB_MEMORY_FLOOR_MIB`
//! sets another (a larger one keeps memory for the rest of the machine).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// (The /proc readers live here, a leaf: `proc` reads process figures with them.)
/// The `KEY: N kB` line of a /proc file, in KiB.
pub(crate) fn kib_field(path: &str, key: &str) -> Option<u64> {
    kib_line(&std::fs::read_to_string(path).ok()?, key)
}

/// The `KEY: N kB` line of /proc text (`key` with its colon), in KiB.
pub(crate) fn kib_line(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub const FLOOR_ENV: &str = "FLANNEL_LAB_MEMORY_FLOOR_MIB";

pub fn available_kib() -> Option<u64> {
    kib_field("/proc/meminfo", "MemAvailable:")
}

/// The floor in KiB: the environment's, else 2% of the machine, at least 256 MiB.
pub fn floor_kib() -> u64 {
    if let Some(mib) = std::env::var(FLOOR_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        return mib * 1024;
    }
    let total = kib_field("/proc/meminfo", "MemTotal:").unwrap_or(0);
    (total / 50).max(256 * 1024)
}

/// Memory watched over a run or a wait: free memory must stay above the floor. (The OOM
/// killer's machine-wide counter is no guide: a memory cgroup's limit counts there too.)
pub struct Watch {
    floor_kib: u64,
    /// Free memory was seen below the floor at some check.
    crossed: std::cell::Cell<bool>,
}

impl Watch {
    pub fn start() -> Watch {
        Watch { floor_kib: floor_kib(), crossed: Default::default() }
    }

    /// Why the machine's memory no longer lets the lab vouch for what it sees, if so.
    pub fn check(&self) -> Result<(), String> {
        let r = judge(available_kib(), self.floor_kib);
        if r.is_err() {
            self.crossed.set(true);
        }
        r
    }

    /// Whether free memory was ever seen below the floor since the watch started (checked
    /// once more now).
    pub fn ever_short(&self) -> bool {
        let _ = self.check();
        self.crossed.get()
    }
}

/// Which limit the OOM killer enforced when it ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomLimit {
    /// The whole machine ran out ("Out of memory: Killed process …").
    Machine,
    /// A memory cgroup's limit ("Memory cgroup out of memory: Killed process …").
    Cgroup,
}

fn judge(available: Option<u64>, floor: u64) -> Result<(), String> {
    match available {
        Some(a) if a < floor => {
            Err(format!("memory: {} MiB available, below the lab's floor of {} MiB (set {FLOOR_ENV} to change it)", a / 1024, floor / 1024))
        }
        _ => Ok(()),
    }
}

/// Whether the kernel's log says its OOM killer ended process `pid` ("Killed process PID
/// (name)", for the machine and for a memory cgroup alike) at or after `since` (PIDs are
/// reused: a record from before the process started is someone else's), and for which
/// limit. Reads the whole ring buffer, so only worth calling for a process that died of
/// SIGKILL.
pub fn killed_by_oom(pid: u32, since: std::time::Instant) -> Option<OomLimit> {
    let Ok(mut f) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg") else {
        return None;
    };
    // the log's timestamps are microseconds of the monotonic clock; a second of slack for
    // the two clocks' reading
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now_us = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
    let from_us = now_us.saturating_sub(since.elapsed().as_micros() as u64 + 1_000_000);
    let needle = format!("Killed process {pid} (");
    // one record per read; EAGAIN at the end of the buffer, EPIPE for records overwritten
    // while reading (skipped)
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                if kmsg_says(&record, &needle, from_us) {
                    return Some(if record.contains("Memory cgroup out of memory") { OomLimit::Cgroup } else { OomLimit::Machine });
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => return None,
        }
    }
}

/// Whether a `/dev/kmsg` record ("PRIO,SEQ,MICROSECONDS,FLAGS;MESSAGE") from `from_us` on
/// holds `needle`.
fn kmsg_says(record: &str, needle: &str, from_us: u64) -> bool {
    let Some((head, message)) = record.split_once(';') else { return false };
    let at: u64 = head.split(',').nth(2).and_then(|t| t.parse().ok()).unwrap_or(0);
    at >= from_us && message.contains(needle)
}

/// Whether `n` more agents fit in memory, judged by the PSS per agent measured at a smaller
/// size of the same implementation (a lower bound: agents grow with their peers). The
/// reason when they do not.
pub fn fits(n: u32, pss_kib_per_agent: u64, available_kib: u64, floor_kib: u64) -> Result<(), String> {
    let need = u64::from(n) * pss_kib_per_agent;
    if need + floor_kib > available_kib {
        return Err(format!(
            "memory: {n} agents at {} MiB each (PSS measured at a smaller size, a lower bound) need at least {} MiB; {} MiB available, {} MiB kept free",
            pss_kib_per_agent / 1024,
            need / 1024,
            available_kib / 1024,
            floor_kib / 1024
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machines_memory() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:         1000 kB\nMemAvailable:   24188844 kB\n";
        assert_eq!(kib_line(meminfo, "MemAvailable:"), Some(24_188_844));
        assert_eq!(kib_line(meminfo, "MemTotal:"), Some(24_683_784));
        // this machine's file parses
        assert!(available_kib().is_some());
    }

    #[test]
    fn too_little_memory_stops_a_wait() {
        let floor = 256 * 1024;
        assert!(judge(Some(1 << 20), floor).is_ok());
        let e = judge(Some(100 * 1024), floor).unwrap_err();
        assert!(e.contains("100 MiB available, below the lab's floor of 256 MiB"), "{e}");
        // an unreadable figure judges nothing
        assert!(judge(None, floor).is_ok());
    }

    #[test]
    fn sizes_that_cannot_fit_are_refused() {
        // 1000 agents at 30 MiB: about 29 GiB
        let e = fits(1000, 30 * 1024, 24 << 20, 512 * 1024).unwrap_err();
        assert!(e.contains("need at least 30000 MiB"), "{e}");
        assert!(fits(1000, 2 * 1024, 24 << 20, 512 * 1024).is_ok());
    }

    #[test]
    fn only_records_after_the_start_name_the_process() {
        let r = "3,472696,19087087682,-;Memory cgroup out of memory: Killed process 16532 (python3) total-vm:43292kB";
        assert!(kmsg_says(r, "Killed process 16532 (", 19_000_000_000));
        assert!(!kmsg_says(r, "Killed process 16532 (", 19_100_000_000), "a record from before the start");
        assert!(!kmsg_says(r, "Killed process 1653 (", 0), "another PID's prefix");
        assert!(killed_by_oom(std::process::id(), std::time::Instant::now()).is_none());
    }
}
