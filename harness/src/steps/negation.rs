//! Negation: a negative control's inner step must fail with the named finding (or, for a
//! limit of the lab itself, with the named lab error), and only that one; passing, or
//! failing otherwise, is the lab's failure to test what it claims.

use serde::Deserialize;

use super::outcome::{match_expected, Match};
use super::{Step, StepError, StepKind, StepResult, Trial};
use crate::contract::Check;
use crate::input::case::{Ref, StepSyntax};

/// Passes only if the inner step fails with the named finding: the negative control of an
/// assertion.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectFailure {
    pub check: Check,
    /// The host the finding must be about (`etcd` for the store).
    pub host: String,
    /// Other checks that may also fail about the same host (by default none may: a control
    /// breaks one thing, and its finding must come alone).
    #[serde(default)]
    pub also: Vec<Check>,
    pub step: Box<Step>,
}

impl StepKind for ExpectFailure {
    fn refs(&self) -> Vec<Ref<'_>> {
        let mut r = vec![Ref::Subject(&self.host)];
        r.extend(self.step.refs());
        r
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let e = self;
        let expected = format!("[{}] {}", e.check, e.host);
        match Box::pin(e.step.run(t)).await {
            Ok(()) => Err(StepError::Lab(crate::lab_err!(
                "`{}` passed on a deliberately broken setup (expected {expected}): the check cannot catch this fault",
                e.step.name()
            ))),
            Err(StepError::Lab(m)) => Err(StepError::Lab(m.context(format!("`{}` (expected to fail with {expected})", e.step.name())))),
            Err(StepError::Check(findings)) => {
                let seen: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
                match match_expected(e.check, &e.host, &e.also, &findings) {
                    Match::Exact => {
                        tracing::info!("`{}` failed as it should: expected {expected}; seen {}", e.step.name(), seen.join("; "));
                        if e.check == Check::AgentExit {
                            // the case has now seen and accepted this exit
                            t.agents.iter_mut().filter(|a| a.host == e.host).for_each(|a| a.exit_planned = true);
                        }
                        Ok(())
                    }
                    Match::Missing => Err(StepError::Lab(crate::lab_err!(
                        "`{}` failed, but not with the expected {expected}: seen {}",
                        e.step.name(),
                        seen.join("; ")
                    ))),
                    Match::Extra(extra) => Err(StepError::Lab(crate::lab_err!(
                        "`{}` failed with the expected {expected}, and also with {} about {}: the break did more than the control says (list the check under `also` if it must)",
                        e.step.name(),
                        extra.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "),
                        e.host
                    ))),
                }
            }
        }
    }
}

/// Passes only if the inner step ends with the lab error of a limit of the lab itself, of
/// `kind` (and about `host` when given): the negative control of that limit (control cases
/// only), which must stop a trial as the lab's failure and never as a finding about the
/// implementation. A pass, a finding, or another lab error fails it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectLabError {
    pub kind: crate::error::LimitKind,
    #[serde(default)]
    pub host: Option<crate::input::names::HostName>,
    pub step: Box<Step>,
}

impl StepKind for ExpectLabError {
    fn refs(&self) -> Vec<Ref<'_>> {
        let mut r = vec![Ref::ControlOnly("expect_lab_error")];
        if let Some(h) = &self.host {
            r.push(Ref::Host(h));
        }
        r.extend(self.step.refs());
        r
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let expected = match &self.host {
            Some(h) => format!("the lab's limit `{:?}` about {h}", self.kind),
            None => format!("the lab's limit `{:?}`", self.kind),
        };
        match Box::pin(self.step.run(t)).await {
            Ok(()) => Err(StepError::Lab(crate::lab_err!("`{}` passed (expected {expected})", self.step.name()))),
            Err(StepError::Check(findings)) => {
                let seen: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
                Err(StepError::Lab(crate::lab_err!(
                    "`{}` failed with findings about the implementation (expected {expected}): {}",
                    self.step.name(),
                    seen.join("; ")
                )))
            }
            Err(StepError::Lab(e)) => {
                let text = crate::error::chain(&e);
                let hit =
                    e.limit().is_some_and(|(kind, host)| kind == self.kind && self.host.as_ref().is_none_or(|h| Some(h.as_str()) == host));
                if hit {
                    tracing::info!("`{}` stopped as the lab's failure, as it should: {text}", self.step.name());
                    // the agents that ended in it ended as the case meant them to
                    for a in t.agents.iter_mut() {
                        if a.child.try_status().is_some() {
                            a.exit_planned = true;
                        }
                    }
                    Ok(())
                } else {
                    Err(StepError::Lab(e.context(format!("`{}` (expected {expected})", self.step.name()))))
                }
            }
        }
    }
}
