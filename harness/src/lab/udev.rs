//! udev's `MACAddressPolicy=persistent`, emulated on one host: a device the kernel gave a
//! random MAC (`addr_assign_type` 1) gets a persistent MAC derived from its host and name;
//! a device created with an explicit MAC (`addr_assign_type` 3) is left alone. This is the
//! trigger of upstream #1795: the agent read and published the random MAC, then udev
//! replaced it. The lab makes the race's losing order certain: the policy applies to a
//! `flannel.*` device once the host's subnet file exists, that is after the agent has
//! published its lease.
//!
//! `addr_assign_type` is only in sysfs, which shows the network namespace of whoever
//! mounted it, so the watcher thread enters a private mount namespace, joins the host's
//! network namespace and mounts its own sysfs there.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::Result;
use crate::lab::netns::Netns;
use crate::lab::nl::format_mac;
use crate::lab_err;

/// `addr_assign_type` of a MAC the kernel chose at random.
const NET_ADDR_RANDOM: &str = "1";

/// The watcher on one host; stops when dropped.
pub struct MacPolicy {
    stop: Arc<AtomicBool>,
    /// What the emulation could not do: a lab error, never to be read as "udev left it".
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl MacPolicy {
    /// Starts watching `ns`. Changes are logged in the caller's tracing span.
    pub fn start(ns: &Netns, host: &str, subnet_file: PathBuf) -> Result<MacPolicy> {
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let (flag, failed, name, host) = (stop.clone(), failure.clone(), ns.name().to_string(), host.to_string());
        let ns = ns.clone();
        let span = tracing::Span::current();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _entered = span.enter();
            let sys = match private_sysfs(&ns) {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = watch(&sys.path, &host, &subnet_file, &flag) {
                *failed.lock().expect("udev failure") = Some(e);
            }
            drop(sys);
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(MacPolicy { stop, failure, thread: Some(thread) }),
            Ok(Err(e)) => Err(lab_err!("udev emulation on {name}: {e}")),
            Err(_) => Err(lab_err!("udev emulation on {name} did not start within 5 s")),
        }
    }
}

impl MacPolicy {
    /// Why the emulation stopped doing its job, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("udev failure").clone()
    }
}

impl Drop for MacPolicy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A sysfs of the host's namespace, mounted in this thread's private mount namespace.
struct Sysfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sysfs {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

fn private_sysfs(ns: &Netns) -> std::result::Result<Sysfs, String> {
    let dir = tempfile::Builder::new().prefix("flannel-lab-sysfs").tempdir().map_err(|e| format!("temp dir: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("private mount namespace: {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("make / private: {e}"))?;
    setns(ns.fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("enter netns: {e}"))?;
    let path = dir.path().to_path_buf();
    mount(Some("sysfs"), &path, Some("sysfs"), MsFlags::empty(), None::<&str>).map_err(|e| format!("mount sysfs: {e}"))?;
    Ok(Sysfs { path, _dir: dir })
}

/// Applies the policy until stopped; `Err` when a MAC could not be set (the emulation then
/// stops: what it was asked to do did not happen).
fn watch(sys: &Path, host: &str, subnet_file: &Path, stop: &AtomicBool) -> std::result::Result<(), String> {
    let mut done = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        if subnet_file.exists() {
            for dev in flannel_devices(sys) {
                let read =
                    |f: &str| std::fs::read_to_string(sys.join("class/net").join(&dev).join(f)).unwrap_or_default().trim().to_string();
                let index = read("ifindex");
                if index.is_empty() || !done.insert(index.clone()) {
                    continue;
                }
                let kind = read("addr_assign_type");
                if kind != NET_ADDR_RANDOM {
                    tracing::info!("udev: {host} `{dev}` has a MAC its creator chose (addr_assign_type {kind}): left alone");
                    continue;
                }
                let (old, mac) = (read("address"), persistent_mac(host, &dev));
                set_mac(&dev, mac).map_err(|e| format!("udev emulation: set MAC of {host} `{dev}`: {e}"))?;
                tracing::info!("udev: {host} `{dev}` had a random MAC {old}; now {}", format_mac(&mac));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn flannel_devices(sys: &Path) -> Vec<String> {
    std::fs::read_dir(sys.join("class/net"))
        .map(|d| d.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with("flannel.")).collect())
        .unwrap_or_default()
}

/// A MAC stable for this host and device name (locally administered, unicast), as udev's
/// persistent policy derives one from the device's identity.
fn persistent_mac(host: &str, dev: &str) -> [u8; 6] {
    // FNV-1a: stable across runs and Rust versions
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain([0]).chain(dev.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// `struct ifreq` with a hardware address, as SIOCSIFHWADDR takes it.
#[repr(C)]
struct IfreqHwaddr {
    name: [u8; libc::IFNAMSIZ],
    family: libc::sa_family_t,
    data: [u8; 14],
    _pad: [u8; 8],
}

/// Sets a device's MAC in this thread's network namespace (`ip link set DEV address MAC`).
fn set_mac(dev: &str, mac: [u8; 6]) -> std::io::Result<()> {
    let sock = crate::lab::sock::open(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut req = IfreqHwaddr { name: [0; libc::IFNAMSIZ], family: libc::ARPHRD_ETHER, data: [0; 14], _pad: [0; 8] };
    let n = dev.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&dev.as_bytes()[..n]);
    req.data[..6].copy_from_slice(&mac);
    // SAFETY: a valid socket and a properly sized, initialised ifreq that outlives the call
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFHWADDR, &req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_macs_are_stable_local_unicast_and_differ_per_host() {
        let a = persistent_mac("h1", "flannel.1");
        assert_eq!(a, persistent_mac("h1", "flannel.1"));
        assert_ne!(a, persistent_mac("h2", "flannel.1"));
        assert_eq!(a[0] & 0x03, 0x02);
        assert_eq!(std::mem::size_of::<IfreqHwaddr>(), 40);
    }
}
