//! Steps: what a case does to a lab, in order. A step kind is one type (its YAML arguments)
//! implementing `StepKind` ([`kinds`]): what it names (checked when the case loads, with
//! file:line:col) and how it runs against the [`Trial`]. Adding a step is one type in the
//! file of its family plus one line in the list in [`kinds`].
//!
//! | family | file |
//! |---|---|
//! | agent lifecycle | [`agent`] |
//! | convergence, counts, subnets | [`converge`] |
//! | pods and their probes | [`pods`] |
//! | traffic | [`traffic`] |
//! | etcd operations | [`etcd`] |
//! | faults and sabotage | [`faults`] |
//! | negation (negative controls) | [`negation`] |
//! | the wire, from the underlay capture | [`wire_checks`] |

pub mod agent;
pub mod converge;
pub mod etcd;
pub mod faults;
mod kinds;
pub mod negation;
pub mod outcome;
pub mod pods;
pub mod traffic;
mod trial_state;
pub mod wire_checks;

pub use agent::{AddHost, ChangePublicIp, ExpectAgentsExit, ExpectAgentsRunning, RestartAgent, StartAgents, SwitchBackend};
pub use converge::{ExpectCounts, ExpectSubnetsUnchanged, StayConverged, WaitConverged};
pub use etcd::{ExpectRefused, PauseEtcd, PutKey, RestartEtcd, RevokeLease, StopEtcdLeader};
pub use faults::{Break, CutLink, Firewall, FlapLink, ImpairLink, Policy, RecreateLink, RemoveHost, Sabotage, StopAgents, UdevMacPolicy};
pub use kinds::Step;
pub(crate) use kinds::StepKind;
pub use negation::{ExpectFailure, ExpectLabError};
pub(crate) use outcome::outcome;
pub use outcome::{StepError, StepResult};
pub use pods::{CreatePods, ExpectMtu, ExpectPing};
pub use traffic::{ExpectSource, Fate, InjectUdp, InjectVxlan, MeasureThroughput, SeenAs, StartTraffic, StopTraffic};
pub(crate) use trial_state::load_profile;
pub use trial_state::Trial;
pub use wire_checks::ExpectWire;

/// A case whose steps are this crate's step kinds.
pub type Case = crate::input::case::Case<Step>;
