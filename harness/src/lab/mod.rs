//! The lab: hosts as network namespaces on bridges and routers ([`hosts`]), and what they
//! are made of: namespaces, netlink, child processes, raw sockets, pods wired like a CNI
//! plugin would, the operator's tools for fault steps, and the cleanup of everything a run
//! made (gc, Docker containers), and the registry of labs held open by `up` (`live`).

pub mod cni;
pub mod docker;
pub mod gc;
mod hosts;
pub mod live;
pub mod memory;
pub mod neigh_get;
pub mod netns;
pub mod nl;
pub mod pods;
pub mod proc;
pub mod run_lock;
pub mod sock;
pub mod stopping;
pub mod sysctl;
pub mod tools;
pub mod udev;

pub use hosts::{install_signal_cleanup, Lab, Node, UNDERLAY_IF};
