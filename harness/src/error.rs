//! The crate's one error type: what went wrong in the lab's own machinery (namespaces,
//! netlink, processes, etcd, Docker, probe sockets, input files). A finding about the
//! implementation under test is not an error; it is a `contract::Finding`.
//!
//! Every variant names the operation and the object it failed on; the OS or library error
//! stays as its source, and [`chain`] prints the whole chain on one line.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("create netns `{name}`")]
    NetnsCreate {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open netns `{name}`")]
    NetnsOpen {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("enter netns `{name}`")]
    NetnsEnter {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("delete netns `{name}`")]
    NetnsDelete {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open netlink socket in netns `{name}`")]
    NetlinkSocket {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write sysctl `{key}` in netns `{name}`")]
    Sysctl {
        name: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("build runtime for netns `{name}`")]
    Runtime {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} in netns `{ns}`")]
    Netlink {
        op: String,
        ns: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("segment `{segment}` has no free address for another host")]
    SegmentFull { segment: String },
    #[error("lock a run id under {dir}")]
    RunLock {
        dir: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("create work directory {path}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open log file {path}")]
    LogFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start `{program}` in netns `{ns}`")]
    Spawn {
        program: String,
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`etcd` not found on PATH: run ci/setup.sh (Debian package etcd-server)")]
    NoEtcd,
    #[error("etcd at {endpoint} not ready within {secs} s; log tail:\n{log}")]
    EtcdNotReady { endpoint: String, secs: u64, log: String },
    #[error("etcd exited ({status}); log tail:\n{log}")]
    EtcdExited { status: String, log: String },
    #[error("etcd request `{op}` failed")]
    Etcd {
        op: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd request `{op}` did not finish: {reason}")]
    EtcdAborted { op: String, reason: String },
    #[error("{0}")]
    Docker(String),
    #[error("icmp socket in netns `{ns}`: {op}")]
    Socket {
        ns: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Input files that did not validate (every diagnostic, located).
    #[error("{0}")]
    Input(String),
    /// A command line that asks for what cannot be (no trial matches the filter).
    #[error("{0}")]
    Usage(String),
    /// What the lab could not do, said in its own words.
    #[error("{0}")]
    Lab(String),
    /// A limit of the lab itself was reached (never a verdict about the implementation):
    /// typed, so a control case names the kind it expects, not a phrase of the message.
    #[error("{what}")]
    Limit {
        kind: LimitKind,
        /// The host it happened on, when it is about one.
        host: Option<String>,
        what: String,
    },
    /// What the lab was doing when `source` happened.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Error::Lab(format!(..))`: what the lab could not do, in its own words.
#[macro_export]
macro_rules! lab_err {
    ($($arg:tt)*) => {
        $crate::error::Error::Lab(format!($($arg)*))
    };
}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error::Lab(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Error {
        Error::Lab(s.to_string())
    }
}

/// The lab's own limits a control case can expect (`expect_lab_error: {kind: …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// The kernel's OOM killer ended an agent under a memory cgroup's limit, or while the
    /// machine was seen short of memory.
    OutOfMemory,
    /// Free memory fell below the lab's floor during a wait.
    MemoryFloor,
}

impl Error {
    /// The limit of the lab this error is (through any context around it).
    pub fn limit(&self) -> Option<(LimitKind, Option<&str>)> {
        match self {
            Error::Limit { kind, host, .. } => Some((*kind, host.as_deref())),
            Error::Context { source, .. } => source.limit(),
            _ => None,
        }
    }

    /// Wraps this error in what the lab was doing.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error::Context { what: what.to_string(), source: Box::new(self) }
    }
}

/// `.context("start etcd")` on any result whose error converts into [`Error`].
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
}

/// An error and all its sources on one line: `start etcd: spawn ...: No such file`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_every_layer() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = Error::Spawn { program: "etcd".into(), ns: "flr-1-etcd".into(), source: io }.context("start etcd");
        assert_eq!(chain(&e), "start etcd: start `etcd` in netns `flr-1-etcd`: No such file or directory (os error 2)");
        let e: Result<()> = Err("no free subnet".to_string()).context("canary");
        assert_eq!(chain(&e.unwrap_err()), "canary: no free subnet");
    }
}
