//! Child processes (etcd, agents) started inside a lab namespace: each in its own process
//! group, output to a log file, stopped with SIGTERM, a grace period, then SIGKILL to the
//! whole group, and always reaped.

use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::error::Error;
use crate::lab::netns::Netns;

/// A running child. Dropping it stops it.
#[derive(Debug)]
pub struct Child {
    label: String,
    child: std::process::Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Child {
    /// Starts `cmd` inside `ns`, stdout and stderr appended to `log`.
    pub fn spawn(label: &str, ns: &Netns, cmd: Command, log: &Path) -> Result<Child, Error> {
        Child::spawn_with_mounts(label, ns, cmd, log, &[])
    }

    /// Like [`Child::spawn`], and in a mount namespace of its own where each `(source,
    /// target)` directory is bind-mounted: the child sees its own copy of `target`.
    pub fn spawn_with_mounts(label: &str, ns: &Netns, mut cmd: Command, log: &Path, mounts: &[(PathBuf, PathBuf)]) -> Result<Child, Error> {
        if let Some(dir) = log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| Error::LogFile { path: log.to_path_buf(), source })?;
        let err = out.try_clone().map_err(|source| Error::LogFile { path: log.to_path_buf(), source })?;
        let ns_fd = ns.fd().as_raw_fd();
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| Error::Spawn {
                program: label.to_string(),
                ns: ns.name().to_string(),
                source: std::io::Error::other(e),
            })
        };
        let mut binds = Vec::new();
        for (src, dst) in mounts {
            binds.push((c(src)?, c(dst)?));
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if !binds.is_empty() {
                    // `unshare -m`, keep the host's mounts from propagating back, then bind
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    for (src, dst) in &binds {
                        if libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|source| Error::Spawn { program, ns: ns.name().to_string(), source })?;
        tracing::debug!(label, pid = child.id(), ns = ns.name(), "started");
        Ok(Child { label: label.to_string(), child, log: log.to_path_buf(), status: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (VmRSS), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The exit status, if it has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends a signal to the child's process group.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), sig);
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.stop_with(Signal::SIGTERM, grace)
    }

    /// `sig`, up to `grace` to exit, then SIGKILL.
    pub fn stop_with(&mut self, sig: Signal, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_status() {
            return Some(s);
        }
        self.signal(sig);
        // a frozen process (SIGSTOP) acts on the signal only once thawed
        self.signal(Signal::SIGCONT);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.try_status() {
                self.signal(Signal::SIGKILL); // anything it left in its group
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill()
    }

    /// SIGKILL to the group, then reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
        self.status
    }

    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    pub fn describe_status(s: &ExitStatus) -> String {
        match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
