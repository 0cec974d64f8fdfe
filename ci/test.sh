#!/usr/bin/env bash
# Set up the machine (idempotent) and run every test: lint, unit tests, and the lab trials.
# Run as root. Here a lab trial that cannot run (no namespaces, no Docker engine) fails
# instead of being ignored (FLANNEL_LAB_REQUIRE=1), and the run fails unless every trial the
# suite lists ran: a machine that cannot judge is a broken machine, not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh tests report
if ! command -v cargo >/dev/null; then
  echo "ci/test.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
mkdir -p target
log=target/ci-test.log
FLANNEL_LAB_REQUIRE=1 cargo test --workspace 2>&1 | tee "$log"
# Every listed lab trial ran and passed: none ignored, none filtered out.
listed=$(cargo test -q -p flannel-lab --test lab -- --list 2>/dev/null | grep -c ': test$' || true)
result=$(awk '/Running tests\/lab.rs/ {lab = 1} lab && /^test result:/ {print; exit}' "$log")
passed=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$result")
ignored=$(sed -n 's/.* \([0-9]*\) ignored.*/\1/p' <<<"$result")
echo "ci/test.sh: lab trials listed $listed, passed ${passed:-?}, ignored ${ignored:-?}"
if [ -z "$passed" ] || [ "$listed" -eq 0 ] || [ "$passed" != "$listed" ] || [ "${ignored:-0}" != 0 ]; then
  echo "ci/test.sh: not every listed lab trial ran and passed" >&2
  exit 1
fi
# The other targets that need the lab or a browser: each ran all its trials, none ignored.
target_ran() { # FILE COUNT WHAT
  local result
  result=$(awk -v f="Running tests/$1" 'index($0, f) {r = 1} r && /^test result:/ {print; exit}' "$log")
  echo "ci/test.sh: $3: ${result:-none ran}"
  if ! grep -q " $2 passed; 0 failed; 0 ignored" <<<"$result"; then
    echo "ci/test.sh: $3 did not run and pass" >&2
    exit 1
  fi
}
target_ran report.rs 2 "the HTML report in a real browser"
target_ran explore.rs 3 "the explorer against the reference agent and two mutants"
target_ran field.rs 8 "diagnose, import and dump, with the round trip through a lab"
# Nothing may outlive the run: no lab namespaces, no lab processes.
left=$(ip netns list | awk '$1 ~ /^fl[0-9a-f]{4}-/ {print $1}')
if [ -n "$left" ]; then
  echo "ci/test.sh: lab namespaces left behind: $left" >&2
  exit 1
fi
