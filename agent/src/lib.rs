//! flannel-agent: the reference flannel agent bundled with flannel-lab.
//!
//! ```text
//! flags ─► config ─► lease (etcd: config, acquire, snapshot+watch, renew)
//!                      │   └ subnet_choice (which subnet, no I/O)
//!                      │                 │
//!                      ▼                 ▼
//!               subnet_file      backend::{vxlan, hostgw, udp} ─► netlink (kernel)
//!                                                 └ tun, udp_datapath (packets)
//! ```
//!
//! | stage | module |
//! |---|---|
//! | flags, `<prefix>/config` | [`config`] |
//! | how etcd is reached: TLS files, user | [`etcd_access`] |
//! | leases in etcd (flanneld's schema) | [`lease`] |
//! | which subnet to lease (pure, unit-tested) | [`subnet_choice`] |
//! | `subnet.env` | [`subnet_file`] |
//! | iptables masquerade/forward rules; the vxlan source filter (nftables) | [`firewall`] over [`iptables`], [`vxlan_filter`], both running [`tool`] |
//! | peers → kernel state; each backend's constants (device names, ports, overhead) | [`backend`] over [`netlink`] |
//! | udp: TUN set-up, peer table; packets | [`backend::udp`]; [`backend::udp_datapath`] over [`tun`] |
//! | the main loop, dispatching to the configured backend | [`daemon`] |
//!
//! The lab judges this agent from outside, exactly like any other implementation.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod etcd_access;
pub mod firewall;
pub mod healthz;
pub mod ipnet;
pub mod iptables;
pub mod lease;
pub mod netlink;
pub mod subnet_choice;
pub mod subnet_file;
pub mod tool;
pub mod tun;
pub mod vxlan_filter;
