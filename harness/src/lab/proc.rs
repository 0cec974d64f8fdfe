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
use crate::lab::memory::kib_field;
use crate::lab::netns::Netns;

pub use super::stopping::stop_spawning;
use super::stopping::SpawnUnderWay;

/// A start gate: children spawned through it wait on a pipe until [`Gate::open`] (or the
/// gate is dropped), so many processes start at one instant however long spawning them
/// took. Spawning a thousand agents one after another takes seconds on a loaded machine,
/// and the first would have raced ahead of the last.
pub struct Gate {
    read: std::os::fd::OwnedFd,
    write: Option<std::os::fd::OwnedFd>,
}

/// Waits for EOF on fd 3 (the gate opening), then becomes the command. A gate that cannot
/// be read fails the child (status 126) rather than letting it start early unseen.
const GATE_SCRIPT: &str = "read -r _ <&3; [ $? -le 1 ] || { echo 'start gate unreadable' >&2; exit 126; }; exec 3<&-; exec \"$@\"";

impl Gate {
    pub fn new() -> Result<Gate, Error> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Spawn {
            program: "start gate".into(),
            ns: String::new(),
            source: e.into(),
        })?;
        Ok(Gate { read, write: Some(write) })
    }

    /// Lets every waiting child go: closing the only write end gives each reader EOF.
    pub fn open(&mut self) {
        self.write = None;
    }

    /// `sh -c 'read <&3; exec "$@"' gate PROGRAM ARGS…` with the command's environment and
    /// working directory.
    fn wrap(&self, cmd: &Command) -> Command {
        let mut w = Command::new("/bin/sh");
        w.arg("-c").arg(GATE_SCRIPT).arg("gate").arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            w.current_dir(d);
        }
        w
    }
}

/// In a forked child before exec: the gate's read end as fd 3, kept open across exec
/// (dup2 clears close-on-exec; when it already is fd 3, clear it by hand). Only
/// async-signal-safe calls.
fn gate_as_fd3(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: plain syscalls on descriptors this process owns.
    let ok = unsafe {
        if fd == 3 {
            libc::fcntl(3, libc::F_SETFD, 0) == 0
        } else {
            libc::dup2(fd, 3) == 3
        }
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces: fields count from after its closing parenthesis
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz.max(1)))
}

/// Runs the calling thread at the default priority: for threads that stand in for a pod's
/// workload (throughput senders and receivers), which must compete with the agents as
/// pods would, not with the harness's head start.
pub fn at_default_priority() {
    // SAFETY: setpriority on the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 0);
    }
}

/// The nice value the harness runs at, set by [`prioritise_harness`].
pub const HARNESS_NICE: i32 = -5;

/// Runs the calling thread, and every thread it starts afterwards, at [`HARNESS_NICE`]:
/// with a thousand agents busy, an observer at the default priority gets one thousandth of
/// the machine and its polls and probes lag by tens of seconds. etcd, the lab's, keeps it;
/// agents start at the default, or lower in large labs (see `agents::agent_nice`). Call it
/// first in `main`. Without the privilege nothing changes.
pub fn prioritise_harness() {
    // SAFETY: setpriority on the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, HARNESS_NICE);
    }
}

/// The resident memory of each of these process groups (an agent and whatever it started:
/// a wrapper's child, helpers), in KiB, from one walk of /proc; a group that is gone is
/// left out.
pub fn rss_by_group(pgids: &[u32]) -> std::collections::BTreeMap<u32, u64> {
    let mut total = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return total };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let Some(pgid) = after.split_whitespace().nth(2).and_then(|g| g.parse::<u32>().ok()).filter(|g| pgids.contains(g)) else {
            continue;
        };
        if let Some(k) = kib_field(&format!("/proc/{pid}/status"), "VmRSS:") {
            *total.entry(pgid).or_insert(0) += k;
        }
    }
    total
}

/// A running child. Dropping it stops it.
#[derive(Debug)]
pub struct Child {
    label: String,
    child: std::process::Child,
    log: PathBuf,
    status: Option<ExitStatus>,
    started: std::time::Instant,
}

impl Child {
    /// Starts a piece of the lab (etcd) inside `ns`, stdout and stderr appended to `log`,
    /// at the harness's priority: in a real cluster etcd has machines of its own, here it
    /// shares the cores with every agent.
    pub fn spawn(label: &str, ns: &Netns, cmd: Command, log: &Path) -> Result<Child, Error> {
        Child::spawn_inner(label, ns, cmd, log, &[], None, None)
    }

    /// Starts an implementation under test (an agent) inside `ns`, at nice value `nice`,
    /// in a mount namespace of its own where each `(source, target)` directory is
    /// bind-mounted (the child sees its own copy of `target`); with a `gate`, the child
    /// waits (in `sh`, before it execs the command under the same PID) until the gate opens.
    pub fn spawn_gated(
        label: &str,
        ns: &Netns,
        cmd: Command,
        log: &Path,
        mounts: &[(PathBuf, PathBuf)],
        gate: Option<&Gate>,
        nice: i32,
    ) -> Result<Child, Error> {
        Child::spawn_inner(label, ns, cmd, log, mounts, gate, Some(nice))
    }

    fn spawn_inner(
        label: &str,
        ns: &Netns,
        cmd: Command,
        log: &Path,
        mounts: &[(PathBuf, PathBuf)],
        gate: Option<&Gate>,
        nice: Option<i32>,
    ) -> Result<Child, Error> {
        let Some(_under_way) = SpawnUnderWay::begin() else {
            return Err(Error::Lab(format!("not starting `{label}`: the lab is shutting down")));
        };
        let (mut cmd, gate_fd) = match gate {
            None => (cmd, None),
            Some(g) => (g.wrap(&cmd), Some(g.read.as_raw_fd())),
        };
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
                // the gate's read end as fd 3 for the waiting shell
                if let Some(fd) = gate_fd {
                    gate_as_fd3(fd)?;
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
                // the harness may run at a higher priority (`prioritise_harness`); what it
                // tests runs at the nice value it was given
                if let Some(n) = nice {
                    libc::setpriority(libc::PRIO_PROCESS, 0, n);
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
        Ok(Child { label: label.to_string(), child, log: log.to_path_buf(), status: None, started: std::time::Instant::now() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the kernel's OOM killer ended this process (it exited of SIGKILL and the
    /// kernel's log says so, after it started), and for which limit.
    pub fn killed_by_oom(&mut self) -> Option<super::memory::OomLimit> {
        use std::os::unix::process::ExitStatusExt;
        if self.try_status().and_then(|s| s.signal()) != Some(libc::SIGKILL) {
            return None;
        }
        super::memory::killed_by_oom(self.pid(), self.started)
    }

    /// Its process group's id (its own PID: children start in a group of their own).
    pub fn pgid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (VmRSS), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        kib_field(&format!("/proc/{}/status", self.child.id()), "VmRSS:")
    }

    /// Its proportional set size (`Pss` of /proc/PID/smaps_rollup): resident pages, each
    /// shared page counted as its share among the processes that map it.
    pub fn pss_kib(&self) -> Option<u64> {
        kib_field(&format!("/proc/{}/smaps_rollup", self.child.id()), "Pss:")
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

    /// The last `n` meaningful lines of the log on one line ([`log_summary`]).
    pub fn log_summary(&self, n: usize) -> String {
        log_summary(&self.log, n)
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

/// The last `n` meaningful lines of a log, whatever its format, as messages: klog's
/// header (`E1206 23:17:36.123456  77 main.go:3]`) and JSON's envelope (`msg`, `message`)
/// dropped, colour codes and blank lines gone; quoted and joined on one line, or "its log
/// is empty".
pub fn log_summary(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(log_message).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "its log is empty".into();
    }
    // a crash's own words, not the stack that follows them (Go, Rust)
    if let Some(crash) =
        lines.iter().rev().find(|l| l.starts_with("panic: ") || l.starts_with("fatal error: ") || l.contains("panicked at"))
    {
        return format!("it crashed: \"{crash}\" (the stack is in its log)");
    }
    let last: Vec<String> = lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("\"{l}\"")).collect();
    format!("last log lines: {}", last.join(" | "))
}

/// One log line's message (see [`log_summary`]).
fn log_message(line: &str) -> String {
    let plain = strip_ansi(line.trim());
    if plain.starts_with('{') {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&plain) {
            let level = ["level", "severity", "lvl"].iter().find_map(|k| o.get(*k)?.as_str().map(str::to_string));
            if let Some(msg) = ["msg", "message", "MESSAGE"].iter().find_map(|k| o.get(*k)?.as_str()) {
                let err = ["err", "error"].iter().find_map(|k| o.get(*k)?.as_str()).map(|e| format!(": {e}")).unwrap_or_default();
                return match level {
                    Some(l) => format!("{l}: {msg}{err}"),
                    None => format!("{msg}{err}"),
                };
            }
        }
    }
    // klog: Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg
    let b = plain.as_bytes();
    if b.len() > 6 && b"IWEF".contains(&b[0]) && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' ' {
        if let Some(end) = plain.find("] ") {
            let level = match b[0] {
                b'E' => "error: ",
                b'W' => "warning: ",
                b'F' => "fatal: ",
                _ => "",
            };
            return format!("{level}{}", plain[end + 2..].trim());
        }
    }
    plain
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gated command, its read end as fd 3 (what `spawn_gated` does in the namespace).
    fn spawn_behind(gate: &Gate, cmd: Command) -> std::process::Child {
        let mut w = gate.wrap(&cmd);
        let fd = gate.read.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            w.pre_exec(move || gate_as_fd3(fd));
        }
        w.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn /bin/sh")
    }

    #[test]
    fn log_summaries_quote_the_messages_whatever_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        std::fs::write(
            &log,
            "I1206 23:17:36.123456       1 main.go:231] Created subnet manager\n\n\
             E1206 23:17:37.000001       1 main.go:349] failed to acquire lease: subnet already exists\n   \n",
        )
        .unwrap();
        assert_eq!(
            log_summary(&log, 2),
            "last log lines: \"Created subnet manager\" | \"error: failed to acquire lease: subnet already exists\""
        );
        std::fs::write(&log, "{\"level\":\"error\",\"msg\":\"watch failed\",\"err\":\"EOF\"}\n\u{1b}[31mERROR\u{1b}[0m plain line\n")
            .unwrap();
        assert_eq!(log_summary(&log, 5), "last log lines: \"error: watch failed: EOF\" | \"ERROR plain line\"");
        std::fs::write(&log, "\n\n").unwrap();
        assert_eq!(log_summary(&log, 3), "its log is empty");
        std::fs::write(&log, "I1206 watching\npanic: runtime error: index out of range [0] with length 0\n\ngoroutine 14 [running]:\ngithub.com/x/registry.go:294 +0x4da\n").unwrap();
        assert_eq!(
            log_summary(&log, 3),
            "it crashed: \"panic: runtime error: index out of range [0] with length 0\" (the stack is in its log)"
        );
    }

    #[test]
    fn gated_children_wait_until_the_gate_opens_then_run_their_command() {
        let mut gate = Gate::new().expect("pipe");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo \"$GREETING $1\"").arg("x").arg("world").env("GREETING", "hello");
        let mut a = spawn_behind(&gate, cmd);
        let mut b = spawn_behind(&gate, Command::new("true"));
        std::thread::sleep(Duration::from_millis(150));
        if let Some(st) = a.try_wait().unwrap() {
            let mut e = String::new();
            std::io::Read::read_to_string(a.stderr.as_mut().unwrap(), &mut e).unwrap();
            panic!("ran before the gate opened: {st:?} {e}");
        }
        assert!(b.try_wait().unwrap().is_none(), "ran before the gate opened");
        gate.open();
        let out = a.wait_with_output().expect("wait");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello world\n", "arguments and environment pass through");
        assert!(b.wait().unwrap().success());
    }
}
