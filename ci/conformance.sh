#!/usr/bin/env bash
# Set up the machine (idempotent) and run the conformance suite against the reference
# agent through the CLI, printing one row per trial. Extra arguments go to `flannel-lab run`
# (e.g. --filter vxlan-ping, --junit report.xml).
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
cargo build --quiet -p flannel-agent -p flannel-lab
exec ./target/debug/flannel-lab run "$@"
