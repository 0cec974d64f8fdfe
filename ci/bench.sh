#!/usr/bin/env bash
# Throughput benchmark: release builds of the harness and the agent, then pod-to-pod TCP
# per backend against the bare underlay. Prints figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh conformance
cargo build --release --quiet -p flannel-agent -p flannel-lab
exec ./target/release/flannel-lab bench "$@"
