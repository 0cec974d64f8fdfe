//! Running trials: one case × backend × implementation at each host count and repeat, each
//! on a fresh lab ([`trial`]), judged by its verdict; the trial log comes from tracing
//! spans ([`log`]).

pub mod log;
mod trial;

pub use trial::{run_trial, run_trial_watched, StepOutcome, StepRecord, TrialReport, TrialSpec, Verdict, Watcher};
