//! flannel-agent: the reference flannel agent bundled with flannel-lab.
//!
//! ```text
//! flags ─► config ─► lease (etcd: config, acquire, snapshot+watch, renew)
//!            │          ├ lease::types (keys, values, events; pure)
//!            │          └ subnet_choice (which subnet; pure)
//!            ▼
//!      subnet_file     backend::{vxlan, hostgw, udp} ─► netlink (kernel)
//!                          each: plan (pure) · kernel (trait + netlink impl)
//!                          udp: packet (pure) · datapath ─► offload, tun
//! daemon: the main loop over all of them; nothing imports it
//! ```
//!
//! Imports run down this picture only (no cycle spans two files: `harness/tests/layout.rs`).
//! Leaves: [`ipnet`], [`error`], [`tool`], [`tun`], [`backend::peers`].
//!
//! | stage | module |
//! |---|---|
//! | flags, `<prefix>/config` (IPv4 and/or IPv6 pools) | [`config`] |
//! | IPv4/IPv6 prefixes, and the trait code written once for both uses | [`ipnet`] |
//! | an error and its causes on one line | [`error`] |
//! | how etcd is reached: TLS files, user | [`etcd_access`] |
//! | leases in etcd (flanneld's schema; IPv4-only, dual-stack and IPv6-only keys) | [`lease`] over [`lease::types`] |
//! | which subnets to lease (pure, unit-tested) | [`subnet_choice`] |
//! | `subnet.env` | [`subnet_file`] |
//! | iptables masquerade/forward rules; the vxlan source filter (nftables) | [`firewall`] over [`iptables`], [`vxlan_filter`], both running [`tool`]; set elements and leftovers over netlink: [`nfnetlink`] |
//! | the configured backend, its options read by that backend; the smallest MTU and peer logging | [`backend`], [`backend::peers`] |
//! | vxlan: peers → device, routes, neighbours, FDB; the pure choice of path per peer; the kernel trait and its netlink implementation | [`backend::vxlan`], [`backend::vxlan::plan`], [`backend::vxlan::kernel`] |
//! | host-gw: peers → gateway routes; its kernel trait and implementation | [`backend::hostgw`], [`backend::hostgw::kernel`] |
//! | udp: TUN set-up and peer table; packet decisions (pure); the data path and its offloads | [`backend::udp`], [`backend::udp::packet`], [`backend::udp::datapath`], [`backend::udp::offload`] over [`tun`] |
//! | netlink requests (links, addresses, routes, neighbours, FDB) | [`netlink`] |
//! | kernel change notifications (links, routes, neighbours, FDB; nftables) instead of polling | [`notify`] |
//! | the main loop, dispatching to the configured backend; clearing other backends' state | [`daemon`] |
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
pub mod error;
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
