//! Reporting finished trials: a table and Markdown for people ([`text`]), JUnit XML for CI
//! ([`junit`]), and one self-contained HTML page per run ([`html`], its drawings in
//! [`figures`]).

pub mod figures;
pub mod html;
mod junit;
mod text;

pub use junit::{junit_entry, write_junit, JunitEntry, JunitOutcome};
pub use text::{markdown, result_word, root_causes, table};
