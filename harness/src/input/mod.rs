//! Input files: topologies, cases and implementation profiles, read from YAML into checked
//! values, each mistake reported with file:line:col. Nothing here touches the machine.

pub mod case;
pub mod diag;
pub mod kinds;
pub mod names;
pub mod profile;
pub mod topology;
pub mod values;

use std::path::PathBuf;

/// The repository root (where `cases/`, `topologies/` and `harness/` are).
/// `FLANNEL_LAB_ROOT` overrides it.
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("FLANNEL_LAB_ROOT") {
        return PathBuf::from(p);
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("harness/ has a parent").to_path_buf()
}
