//! flannel-agent: the reference flannel agent bundled with flannel-lab.
//!
//! ```text
//! flags ─► config ─► lease (etcd: config, acquire, snapshot+watch, renew)
//!                      │                 │
//!                      ▼                 ▼
//!               subnet_file      backend::vxlan ─► netlink (kernel)
//! ```
//!
//! | stage | module |
//! |---|---|
//! | flags, `<prefix>/config` | [`config`] |
//! | leases in etcd (flanneld's schema) | [`lease`] |
//! | `subnet.env` | [`subnet_file`] |
//! | peers → kernel state | [`backend`] over [`netlink`] |
//! | the main loop | [`daemon`] |
//!
//! The lab judges this agent from outside, exactly like any other implementation.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod healthz;
pub mod ipnet;
pub mod lease;
pub mod netlink;
pub mod subnet_file;
pub mod tun;
