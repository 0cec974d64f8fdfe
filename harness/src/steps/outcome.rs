//! How a step ends: passed, findings about the implementation (each naming its check and
//! host), or a lab error, which is never a pass.

use crate::contract::{Check, Finding};
use crate::error::{chain, Error};

/// How a step ended when it did not pass.
#[derive(Debug)]
pub enum StepError {
    /// A check found the implementation wrong: one finding or more, each naming its check
    /// and host.
    Check(Vec<Finding>),
    /// The lab could not do its job (setup, I/O, the lab's own timeouts). Never a pass.
    Lab(Error),
}

pub type StepResult = Result<(), StepError>;

impl StepError {
    pub fn check(check: Check, host: impl Into<String>, what: impl Into<String>) -> StepError {
        StepError::Check(vec![Finding::new(check, host, what)])
    }

    /// The findings, one per line, or the lab error with its whole chain.
    pub fn describe(&self) -> String {
        match self {
            StepError::Check(f) => {
                // every finding stays in the error (an expectation may match any of them);
                // the message shows the first ones
                let mut shown: Vec<String> = f.iter().take(16).map(|f| f.to_string()).collect();
                if f.len() > shown.len() {
                    shown.push(format!("(+{} more findings)", f.len() - shown.len()));
                }
                shown.join("; ")
            }
            StepError::Lab(e) => format!("lab error: {}", chain(e)),
        }
    }

    /// Passes the findings through `f` (a lab error stays as it is).
    pub(crate) fn map_findings(self, f: impl FnMut(Finding) -> Finding) -> StepError {
        match self {
            StepError::Check(v) => StepError::Check(v.into_iter().map(f).collect()),
            lab => lab,
        }
    }
}

impl From<Error> for StepError {
    fn from(e: Error) -> StepError {
        StepError::Lab(e)
    }
}

impl From<String> for StepError {
    fn from(s: String) -> StepError {
        StepError::Lab(Error::Lab(s))
    }
}

impl From<&str> for StepError {
    fn from(s: &str) -> StepError {
        StepError::Lab(Error::Lab(s.to_string()))
    }
}

/// Findings as a step's outcome: none is a pass.
pub(crate) fn outcome(findings: Vec<Finding>) -> StepResult {
    if findings.is_empty() {
        Ok(())
    } else {
        Err(StepError::Check(findings))
    }
}
