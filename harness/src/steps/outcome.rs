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

/// How a step's findings answer an expectation of one finding (`check` about `host`).
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'f> {
    /// The finding is there, and nothing else about that host but the allowed checks.
    Exact,
    /// The expected finding is not among them.
    Missing,
    /// It is there, and so are these other findings about the same host: the break (or
    /// the mutant) did more than the expectation says.
    Extra(Vec<&'f Finding>),
}

/// Matches findings against an expected one: present, and alone about its host except for
/// the checks in `also`. Findings about other hosts do not matter (a break on one host
/// may well show on its peers).
pub fn match_expected<'f>(check: Check, host: &str, also: &[Check], findings: &'f [Finding]) -> Match<'f> {
    if !findings.iter().any(|f| f.check == check && f.host == host) {
        return Match::Missing;
    }
    let extra: Vec<&Finding> = findings.iter().filter(|f| f.host == host && f.check != check && !also.contains(&f.check)).collect();
    if extra.is_empty() {
        Match::Exact
    } else {
        Match::Extra(extra)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_finding_must_come_alone_about_its_host() {
        let f = |c: Check, h: &str| Finding::new(c, h, "x");
        let seen = vec![f(Check::Fdb, "h2"), f(Check::Reachability, "h1"), f(Check::Neighbours, "h2")];
        assert_eq!(match_expected(Check::Fdb, "h3", &[], &seen), Match::Missing);
        assert!(matches!(match_expected(Check::Fdb, "h2", &[], &seen), Match::Extra(e) if e.len() == 1 && e[0].check == Check::Neighbours));
        assert_eq!(match_expected(Check::Fdb, "h2", &[Check::Neighbours], &seen), Match::Exact, "an allowed extra");
        assert_eq!(match_expected(Check::Reachability, "h1", &[], &seen), Match::Exact, "other hosts do not matter");
    }
}
