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
//! | flags, `<prefix>/config` (IPv4 and/or IPv6 pools) | [`config`] |
//! | IPv4/IPv6 prefixes, and the trait code written once for both uses | [`ipnet`] |
//! | how etcd is reached: TLS files, user | [`etcd_access`] |
//! | leases in etcd (flanneld's schema; IPv4-only, dual-stack and IPv6-only keys) | [`lease`] |
//! | which subnets to lease (pure, unit-tested) | [`subnet_choice`] |
//! | `subnet.env` | [`subnet_file`] |
//! | iptables masquerade/forward rules; the vxlan source filter (nftables) | [`firewall`] over [`iptables`], [`vxlan_filter`], both running [`tool`]; set elements and leftovers over netlink: [`nfnetlink`] |
//! | peers → kernel state; each backend's constants (device names, ports, overhead) | [`backend`] over [`netlink`] |
//! | kernel change notifications (links, routes, neighbours, FDB; nftables) instead of polling | [`notify`] |
//! | the same per address family: `flannel.N` and `flannel-v6.N`, host-gw routes of each | [`backend::vxlan::VxlanNetwork`], [`backend::hostgw::HostGwNetwork`] (generic over [`ipnet::IpNet`]) |
//! | udp: TUN set-up, peer table; packets | [`backend::udp`]; [`backend::udp_datapath`] over [`tun`] |
//! | the main loop, dispatching to the configured backend | [`daemon`] |
//!
//! Dual-stack: `EnableIPv6` with `IPv6Network` adds an IPv6 subnet to the lease
//! (`10.244.1.0-24&fd00:10:244:1::-64`), `FLANNEL_IPV6_*` to the subnet file and, per
//! backend, one more instance for the IPv6 halves of leases; `EnableIPv4: false` drops
//! the IPv4 half (`0.0.0.0-0&…`). udp is IPv4 only. `--disable-ipv6` makes the agent
//! behave like an implementation from before dual-stack, for the lab's negative controls.
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
pub mod nfnetlink;
pub mod notify;
pub mod subnet_choice;
pub mod subnet_file;
pub mod tool;
pub mod tun;
pub mod vxlan_filter;
