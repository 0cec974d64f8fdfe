//! etcd for a lab: one member as a process inside the lab, or members in Docker
//! containers ([`container`]), behind one client API ([`cluster`]); plaintext or TLS with
//! client certificates from a per-run PKI ([`tls`]).

mod cluster;
pub mod container;
pub mod tls;

pub use cluster::{etcd_binary, Provider, Refusal, Store, ETCD_PORT};
