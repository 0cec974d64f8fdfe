//! Running trials: one case × backend × implementation at each host count and repeat, each
//! on a fresh lab ([`execute`]), judged by its verdict; the trial log comes from tracing
//! spans ([`log`]).

mod execute;
pub mod log;

pub use execute::{run_trial, run_trial_watched, StepOutcome, StepRecord, TrialReport, TrialSpec, Verdict, Watcher};
