//! etcd for a lab: one member as a process inside the lab, or members in Docker
//! containers ([`container`]), behind one client API ([`cluster`]).

mod cluster;
pub mod container;

pub use cluster::{etcd_binary, Provider, Store, ETCD_PORT};
