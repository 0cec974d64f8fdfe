//! Reporting finished trials: a table and Markdown for people ([`text`]), JUnit XML for CI
//! ([`junit`]), JSON for tools ([`json`]) and the known failures it shows ([`pin`]), and one
//! self-contained HTML page per run ([`html`], its drawings in [`figures`]).

pub mod figures;
pub mod html;
mod json;
mod junit;
pub mod matrix;
pub mod pin;
mod text;

pub use json::run_json;
pub use junit::{junit_entry, write_junit, JunitEntry, JunitOutcome};
pub use text::{markdown, result_word, root_causes, table};
