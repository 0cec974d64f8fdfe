//! Named network namespaces (`/run/netns/NAME`, as `ip netns` keeps them), and the three
//! ways the harness works inside one without ever `setns`-ing a thread it shares:
//! a short-lived thread ([`Netns::run`]), a netlink socket opened there ([`Netns::netlink`]),
//! and a small tokio runtime whose threads live there ([`Netns::runtime`]).

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::error::Result;
use crate::lab_err;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

pub const NETNS_DIR: &str = "/run/netns";

/// An open handle on a named namespace. Dropping it does not delete the namespace:
/// [`delete`] does (the lab calls it during teardown).
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
    file: Arc<File>,
}

pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

impl Netns {
    /// `ip netns add NAME`: a new namespace pinned by a bind mount at /run/netns/NAME, with
    /// `lo` left down (the lab brings it up through netlink).
    pub fn create(name: &str) -> Result<Netns, Error> {
        let err = |source| Error::NetnsCreate { name: name.to_string(), source };
        // a namespace made while the signal cleanup sweeps would outlive the run
        let _making = super::stopping::SpawnUnderWay::begin()
            .ok_or_else(|| err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the lab is being removed (signal)")))?;
        std::fs::create_dir_all(NETNS_DIR).map_err(err)?;
        let path = path_of(name);
        std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(err)?;
        let target = path.clone();
        let made = std::thread::spawn(move || -> Result<(), nix::Error> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        })
        .join()
        .expect("namespace thread panicked");
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(err(e.into()));
        }
        Netns::open(name)
    }

    /// The network namespace of a running process (a container's init, say).
    pub fn of_pid(pid: i64) -> Result<Netns, Error> {
        let name = format!("pid {pid}");
        let file = File::open(format!("/proc/{pid}/ns/net")).map_err(|source| Error::NetnsOpen { name: name.clone(), source })?;
        Ok(Netns { name, file: Arc::new(file) })
    }

    /// Opens an existing namespace by name.
    pub fn open(name: &str) -> Result<Netns, Error> {
        let file = File::open(path_of(name)).map_err(|source| Error::NetnsOpen { name: name.to_string(), source })?;
        Ok(Netns { name: name.to_string(), file: Arc::new(file) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` on a fresh thread that has entered this namespace; the thread ends with `f`.
    /// Sockets `f` creates stay bound to the namespace wherever they are used afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let file = self.file.clone();
        let name = self.name.clone();
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| Error::NetnsEnter { name, source })?;
            Ok(f())
        })
        .join()
        .expect("netns worker thread panicked")
    }

    /// A netlink route socket bound to this namespace, driven by the caller's runtime.
    /// Must be called from within a tokio runtime.
    pub fn netlink(&self) -> Result<rtnetlink::Handle, Error> {
        let fd: OwnedFd = self
            .run(|| {
                let s = netlink_sys::Socket::new(netlink_sys::constants::NETLINK_ROUTE)?;
                // SAFETY: we take over the descriptor the socket owned.
                Ok::<_, std::io::Error>(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) })
            })?
            .map_err(|source| Error::NetlinkSocket { name: self.name.clone(), source })?;
        // SAFETY: `fd` is a netlink socket we own; TokioSocket takes ownership.
        let socket = unsafe { <netlink_sys::TokioSocket as FromRawFd>::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(conn);
        Ok(handle)
    }

    /// A one-worker tokio runtime whose threads all live in this namespace, for clients
    /// (etcd) that open sockets lazily. Shut it down with `shutdown_background`.
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime, Error> {
        let file = self.file.clone();
        let name = self.name.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("ns-{}", self.name))
            .enable_all()
            .on_thread_start(move || {
                // A thread that cannot enter the namespace must not run lab I/O elsewhere.
                if let Err(e) = setns(file.as_fd(), CloneFlags::CLONE_NEWNET) {
                    panic!("enter netns `{name}` for its runtime: {e}");
                }
            })
            .build()
            .map_err(|source| Error::Runtime { name: self.name.clone(), source })
    }

    /// Writes a sysctl under /proc/sys/net as seen from this namespace, e.g.
    /// `net/ipv4/ip_forward`. (`ip netns exec NAME sysctl -w ...`)
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), Error> {
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        self.run(move || std::fs::write(&path, value))?.map_err(|source| Error::Sysctl {
            name: self.name.clone(),
            key: key.to_string(),
            source,
        })
    }
}

/// `ip netns del NAME`: unpins the namespace. It disappears once no process or open
/// handle refers to it. Missing namespaces are not an error.
pub fn delete(name: &str) -> Result<(), Error> {
    let path = path_of(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(Error::NetnsDelete { name: name.to_string(), source: e.into() }),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::NetnsDelete { name: name.to_string(), source }),
    }
}

/// Names under /run/netns.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|d| d.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The nsfs inode of a namespace path (or of /proc/PID/ns/net).
pub fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether this process may create namespaces (root with CAP_SYS_ADMIN and CAP_NET_ADMIN):
/// tried for real on a throwaway thread.
pub fn can_create() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    std::thread::spawn(|| unshare(CloneFlags::CLONE_NEWNET).map_err(|e| lab_err!("cannot create a network namespace: {e}")))
        .join()
        .unwrap_or_else(|_| Err("probe thread panicked".into()))
}
