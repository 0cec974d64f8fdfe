//! JUnit XML for CI: one entry per trial, the same mapping for the CLI and the test target.

use std::path::Path;
use std::time::Duration;

use junit_report::{Duration as JDuration, ReportBuilder, TestCase, TestSuiteBuilder};

use super::text::first_line;
use crate::run::TrialReport;

/// The one mapping from a finished trial to its JUnit entry, for the CLI and the test
/// target alike: a failure carries its message, log and artifact directory.
pub fn junit_entry(r: &TrialReport) -> JunitEntry {
    let log = r.log.join("\n");
    let outcome = if let Some(reason) = &r.ignored {
        JunitOutcome::Skipped { reason: reason.clone() }
    } else if let (true, Some(k), Some(f)) = (r.is_known_failure(), &r.known, &r.failure) {
        // not counted against the implementation: JUnit's "skipped", with why and what happened
        let link = k.link.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
        JunitOutcome::Skipped { reason: format!("known failure: {}{link} (failed with: {})", k.reason, first_line(f)) }
    } else {
        match &r.failure {
            None => JunitOutcome::Passed { log },
            Some(f) => {
                let artifacts = r.artifacts.as_ref().map(|a| format!("\nartifacts: {}", a.display())).unwrap_or_default();
                // Jenkins/GitLab convention for attaching a file or directory
                let attach = r.artifacts.as_ref().map(|a| format!("\n[[ATTACHMENT|{}]]", a.display())).unwrap_or_default();
                JunitOutcome::Failed { message: format!("{f}{artifacts}"), log: format!("{log}{attach}") }
            }
        }
    };
    JunitEntry { name: r.name.clone(), elapsed: r.elapsed, outcome }
}

/// One JUnit entry per trial; a failure carries its message, log and artifact directory.
pub struct JunitEntry {
    pub name: String,
    pub elapsed: Duration,
    pub outcome: JunitOutcome,
}

pub enum JunitOutcome {
    Passed { log: String },
    Failed { message: String, log: String },
    Skipped { reason: String },
}

pub fn write_junit(path: &Path, suite: &str, entries: &[JunitEntry]) -> std::io::Result<()> {
    let mut ts = TestSuiteBuilder::new(suite);
    for e in entries {
        let d = JDuration::seconds_f64(e.elapsed.as_secs_f64());
        let mut tc = match &e.outcome {
            JunitOutcome::Passed { .. } => TestCase::success(&e.name, d),
            JunitOutcome::Failed { message, .. } => TestCase::failure(&e.name, d, "trial", message),
            JunitOutcome::Skipped { reason } => TestCase::skipped_with_cause(&e.name, "ignored", reason),
        };
        match &e.outcome {
            JunitOutcome::Passed { log } | JunitOutcome::Failed { log, .. } => tc.set_system_out(log),
            JunitOutcome::Skipped { .. } => {}
        }
        ts.add_testcase(tc);
    }
    let report = ReportBuilder::new().add_testsuite(ts.build()).build();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path)?;
    report.write_xml(file).map_err(std::io::Error::other)
}
