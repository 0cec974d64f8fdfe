//! flannel-lab: a conformance lab for flannel-style pod networking.
//!
//! ```text
//! topologies/*.yaml ─┐
//! cases/*.yaml ──────┴─► topology, case (raw serde → validate, diag: file:line:col)
//!                               │
//!                               ▼
//!              lab: namespaces, bridges, veths (netns, nl); gc after kills
//!                               │
//!              store: etcd process inside the lab, client on an in-namespace runtime
//!                               │
//!              agents: one implementation process per host (proc)
//!                               │
//!              pods: cni0 + pod namespaces from each subnet file
//!                               │
//!              probe: ICMP / DF echoes, netlink dumps
//!                               │
//!              contract: what flannel state must be (independent of agent/)
//!                               │
//!              runner: steps with deadlines ─► report: table, JUnit; artifacts
//! ```
//!
//! | stage | module |
//! |---|---|
//! | input files | [`topology`], [`case`], [`diag`], [`names`] |
//! | building and removing labs | [`lab`], [`netns`], [`nl`], [`gc`] |
//! | etcd | [`store`] |
//! | implementations under test | [`profile`], [`agents`], [`proc`] |
//! | pods and probes | [`pods`], [`probe`], [`capture`], [`throughput`] |
//! | flannel's contract | [`contract`] |
//! | running and reporting | [`runner`], [`suite`], [`report`], [`cli`] |

pub mod agents;
pub mod cli;
pub mod contract;
pub mod error;
pub mod input;
pub mod lab;
pub mod probe;
pub mod report;
pub mod run;
pub mod steps;
pub mod store;
pub mod suite;
