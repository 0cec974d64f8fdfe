#!/usr/bin/env bash
# Set up the machine (idempotent) and run the conformance suite against an implementation
# through the CLI, printing one row per trial. The run is the same suite as `cargo test`:
# the cases on the implementation under test, the control cases on the reference agent
# (they show the lab's checks can fail), and the mutant trials (each case must catch its
# mutant with the finding it names). Extra arguments go to `flannel-lab run`
# (e.g. --impl flanneld, --filter ping, --junit report.xml).
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh conformance
cargo build --quiet -p flannel-agent -p flannel-lab
exec ./target/debug/flannel-lab run "$@"
