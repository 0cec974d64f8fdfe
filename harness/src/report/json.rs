//! A run as JSON (`run --json FILE`): per trial its result, the step it failed at and every
//! finding (check, host, text), for tools and for `flannel-lab pin`.

use serde_json::{json, Value};

use super::text::result_word;
use crate::run::TrialReport;

/// The run's trials as one JSON document.
pub fn run_json(reports: &[TrialReport], implementation: &str) -> String {
    let trials: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "result": result_word(r),
                "seconds": r.elapsed.as_secs_f64(),
                "failed_step": r.failed_step,
                "lab_error": r.lab_error,
                "failure": r.failure,
                "findings": r.findings.iter().map(|f| json!({"check": f.check.name(), "host": f.host, "what": f.what})).collect::<Vec<_>>(),
                "known": r.known.as_ref().map(|k| k.describe()),
                "skipped": r.ignored,
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({"implementation": implementation, "trials": trials})).unwrap_or_default()
}
