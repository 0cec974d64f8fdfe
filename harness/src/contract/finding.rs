//! A finding: one unmet expectation, naming its check and the host it is about.

use std::fmt;

use crate::input::kinds::Check;

/// One unmet expectation, phrased for a person: which check, about which host (or `etcd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: Check,
    pub host: String,
    pub what: String,
}

impl Finding {
    pub fn new(check: Check, host: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding { check, host: host.into(), what: what.into() }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.check, self.host, self.what)
    }
}
