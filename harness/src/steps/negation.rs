//! Negation: a negative control's inner step must fail with the named finding (or, for a
//! limit of the lab itself, with the named lab error), and only that one; passing, or
//! failing otherwise, is the lab's failure to test what it claims.

use serde::Deserialize;

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
                if findings.iter().any(|f| f.check == e.check && f.host == e.host) {
                    tracing::info!("`{}` failed as it should: expected {expected}; seen {}", e.step.name(), seen.join("; "));
                    Ok(())
                } else {
                    Err(StepError::Lab(crate::lab_err!(
                        "`{}` failed, but not with the expected {expected}: seen {}",
                        e.step.name(),
                        seen.join("; ")
                    )))
                }
            }
        }
    }
}

/// Passes only if the inner step ends with a lab error whose text holds `says`: the
/// negative control of a limit of the lab itself (control cases only), which must stop a
/// trial as the lab's failure and never as a finding about the implementation. A pass, a
/// finding, or another lab error fails it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectLabError {
    pub says: String,
    pub step: Box<Step>,
}

impl StepKind for ExpectLabError {
    fn refs(&self) -> Vec<Ref<'_>> {
        let mut r = vec![Ref::ControlOnly("expect_lab_error")];
        r.extend(self.step.refs());
        r
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let expected = format!("a lab error saying `{}`", self.says);
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
                if text.contains(&self.says) {
                    tracing::info!("`{}` stopped as the lab's failure, as it should: {text}", self.step.name());
                    Ok(())
                } else {
                    Err(StepError::Lab(e.context(format!("`{}` (expected {expected})", self.step.name()))))
                }
            }
        }
    }
}
