#!/usr/bin/env bash
# Set up the machine (idempotent) and run every test: lint, unit tests, and the lab trials.
# Run as root; without root the lab trials are reported as ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
if ! command -v cargo >/dev/null; then
  echo "ci/test.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
# Nothing may outlive the run: no lab namespaces, no lab processes.
left=$(ip netns list | awk '$1 ~ /^fl[0-9a-f]{4}-/ {print $1}')
if [ -n "$left" ]; then
  echo "ci/test.sh: lab namespaces left behind: $left" >&2
  exit 1
fi
