//! The step kinds: the interface each implements and the one list that names them.

use super::*;
use crate::input::case::{single_key_enum, Ref, StepSyntax};

/// One kind of step.
pub(crate) trait StepKind {
    /// What the step names (hosts, backends, profiles), checked when the case loads.
    fn refs(&self) -> Vec<Ref<'_>> {
        Vec::new()
    }

    /// Runs the step against the trial. The trial runs on one runtime's `block_on`, so the
    /// future need not be `Send`.
    #[allow(async_fn_in_trait)]
    async fn run(&self, t: &mut Trial<'_>) -> StepResult;
}

/// The step kinds, each with its name in case files. `Step` is generated from this list:
/// reading it from YAML (one key per list item), its name, what it names, and running it.
macro_rules! step_kinds {
    ($($name:literal => $ty:ident),* $(,)?) => {
        /// One step of a case.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Step {
            $($ty($ty)),*
        }

        single_key_enum!(Step, "step", { $($name => $ty($ty)),* });

        impl StepSyntax for Step {
            fn name(&self) -> &'static str {
                match self {
                    $(Step::$ty(_) => $name),*
                }
            }

            fn refs(&self) -> Vec<Ref<'_>> {
                match self {
                    $(Step::$ty(s) => s.refs()),*
                }
            }
        }

        impl Step {
            /// Runs the step against the trial.
            pub async fn run(&self, t: &mut Trial<'_>) -> StepResult {
                match self {
                    $(Step::$ty(s) => s.run(t).await),*
                }
            }
        }
    };
}

step_kinds! {
    "start_agents" => StartAgents,
    "wait_converged" => WaitConverged,
    "stay_converged" => StayConverged,
    "create_pods" => CreatePods,
    "expect_ping" => ExpectPing,
    "expect_mtu" => ExpectMtu,
    "expect_counts" => ExpectCounts,
    "expect_agents_exit" => ExpectAgentsExit,
    "expect_agents_running" => ExpectAgentsRunning,
    "measure_throughput" => MeasureThroughput,
    "inject_udp" => InjectUdp,
    "inject_vxlan" => InjectVxlan,
    "expect_source" => ExpectSource,
    "restart_etcd" => RestartEtcd,
    "revoke_lease" => RevokeLease,
    "expect_refused" => ExpectRefused,
    "restart_agent" => RestartAgent,
    "put_key" => PutKey,
    "start_traffic" => StartTraffic,
    "stop_traffic" => StopTraffic,
    "pause_etcd" => PauseEtcd,
    "cut_link" => CutLink,
    "flap_link" => FlapLink,
    "impair_link" => ImpairLink,
    "recreate_link" => RecreateLink,
    "change_public_ip" => ChangePublicIp,
    "firewall" => Firewall,
    "stop_agents" => StopAgents,
    "remove_host" => RemoveHost,
    "expect_subnets_unchanged" => ExpectSubnetsUnchanged,
    "switch_backend" => SwitchBackend,
    "stop_etcd_leader" => StopEtcdLeader,
    "add_host" => AddHost,
    "break" => Break,
    "udev_mac_policy" => UdevMacPolicy,
    "expect_failure" => ExpectFailure,
    "expect_lab_error" => ExpectLabError,
    "expect_wire" => ExpectWire,
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::contract::{Backend, Check};
    use crate::input::case::{discover, Dur};
    use crate::input::diag::Diagnostics;

    fn dirs() -> (PathBuf, PathBuf) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        (root.join("cases"), root.join("topologies"))
    }

    fn parse(src: &str) -> Result<Case, Diagnostics> {
        let (_, topos) = dirs();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, src).unwrap();
        Case::load(&file, &topos)
    }

    #[test]
    fn steps_parse_as_single_key_maps() {
        let c = parse(
            "topology: flat\nhosts: [2, 3]\nsteps:\n  - start_agents: {}\n  - wait_converged: {within: 20s}\n  - expect_failure: {check: counts, host: h2, step: {expect_counts: {}}}\n  - break: {delete_fdb: {host: h2}}\n",
        )
        .unwrap();
        assert_eq!(c.steps.len(), 4);
        assert_eq!(c.steps[1], Step::WaitConverged(WaitConverged { within: Dur(Duration::from_secs(20)), cross_segment_fails: vec![] }));
        assert_eq!(
            c.steps[2],
            Step::ExpectFailure(ExpectFailure {
                check: Check::Counts,
                host: "h2".into(),
                also: vec![],
                step: Box::new(Step::ExpectCounts(ExpectCounts {}))
            })
        );
        assert_eq!(c.backends, Backend::ALL.to_vec());
        assert_eq!(c.scales(), vec![Some(2), Some(3)]);
        assert_eq!(c.netconf.render(Backend::Vxlan), r#"{"Backend":{"Type":"vxlan"},"Network":"10.244.0.0/16"}"#);
    }

    #[test]
    fn rejections_are_located() {
        let e = parse("topology: flat\nsteps:\n  - wait_converged: {within: soon}\n").unwrap_err();
        assert!(e.to_string().contains("c.yaml:3:"), "{e}");
        assert!(e.to_string().contains("not a duration"), "{e}");
        let e = parse("topology: flat\nbackends: [vxlan, geneve]\nsteps:\n  - break: {delete_fdb: {host: h9}}\n").unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].to_string().contains("c.yaml:2:19: backends[1]: unknown backend `geneve`"), "{e}");
        assert!(e.0[1].message.contains("no host `h9`"), "{e}");
        let e = parse("topology: nowhere\nsteps:\n  - start_agents: {}\n").unwrap_err();
        assert!(e.0[0].message.contains("unknown topology `nowhere`"), "{e}");
        let e = parse("topology: flat\nsteps:\n  - start_agent: {}\n").unwrap_err();
        assert!(e.0[0].message.contains("unknown step kind `start_agent`"), "{e}");
        assert!(e.0[0].hint.starts_with("did you mean `start_agents`?"), "{e}");
        // what a step names is checked through its kind, wherever it is nested
        let e = parse("topology: flat\nsteps:\n  - expect_failure: {check: fdb, host: h7, step: {switch_backend: {to: geneve}}}\n")
            .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].message.contains("no host `h7`"), "{e}");
        assert!(e.0[1].message.contains("unknown backend `geneve`"), "{e}");
        // a step that tests the lab belongs in a control case
        let e = parse("topology: flat\nsteps:\n  - expect_lab_error: {kind: out_of_memory, step: {wait_converged: {within: 1s}}}\n")
            .unwrap_err();
        assert!(e.0[0].to_string().contains("c.yaml:3:") && e.0[0].message.contains("`expect_lab_error` tests the lab"), "{e}");
        parse("control: true\ntopology: flat\nsteps:\n  - expect_lab_error: {kind: out_of_memory, step: {wait_converged: {within: 1s}}}\n")
            .unwrap();
    }

    #[test]
    fn bundled_cases_are_valid() {
        let (cases, topos) = dirs();
        let files = discover(&cases);
        assert!(!files.is_empty());
        for f in files {
            Case::load(&f, &topos).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
