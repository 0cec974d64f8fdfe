//! flannel-lab: a conformance lab for flannel-style pod networking.
//!
//! Folders follow the data flow; no module imports one further down this list.
//!
//! ```text
//! input/     topologies, cases, profiles (YAML → checked values, file:line:col)
//!   │
//! lab/       namespaces, bridges, veths, netlink, pods, processes, udev emulation, gc
//!   │
//! store/     etcd: a process in the lab, or Docker containers
//!   │
//! agents     one implementation process per host, from its launch profile
//!   │
//! probe/     ICMP/DF echoes, sweeps, udp datagrams, state dumps, traffic, capture
//!   │
//! contract   what flannel state must be (pure checks → findings)
//!   │        field/  operators' pastes read into that model and judged; dumps of a lab
//!   │
//! steps/     step kinds (one type each) acting on the trial state → pass / findings / lab error
//!   │
//! run/       trials: scales × repeats, verdicts (mutants), artifacts, the trial log (tracing)
//!   │
//! scale/     cost curves: labs of growing size measured, tables, CSV/JSON, SVG plots
//! explore/   random fault schedules run as trials, failures shrunk to cases
//!   │
//! suite, report, cli
//! ```
//!
//! | stage | module |
//! |---|---|
//! | errors of the lab's own machinery | [`error`] |
//! | input files | [`input`] |
//! | building and removing labs | [`lab`] |
//! | etcd | [`store`] |
//! | implementations under test | [`agents`] |
//! | probes | [`probe`] |
//! | flannel's contract | [`contract`] |
//! | a real cluster's pasted state: parsers, diagnose, dump | [`field`] |
//! | steps | [`steps`] |
//! | running trials | [`run`] |
//! | cost curves at size | [`scale`] |
//! | random fault schedules, shrinking | [`explore`] |
//! | the suite, reports, the CLI | [`suite`], [`report`], [`cli`] |

pub mod agents;
pub mod cli;
pub mod contract;
pub mod error;
pub mod explore;
pub mod field;
pub mod input;
pub mod lab;
pub mod probe;
pub mod report;
pub mod run;
pub mod scale;
pub mod steps;
pub mod store;
pub mod suite;
