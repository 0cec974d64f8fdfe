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
# The HTML report rendered in a real browser: its trials ran, none ignored.
report=$(awk '/Running tests\/report.rs/ {r = 1} r && /^test result:/ {print; exit}' "$log")
echo "ci/test.sh: report trials: ${report:-none ran}"
if ! grep -q ' 2 passed; 0 failed; 0 ignored' <<<"$report"; then
  echo "ci/test.sh: the HTML report's browser test did not run and pass" >&2
  exit 1
fi
# The explorer against the reference agent and two mutants: its trials ran, none ignored.
explore=$(awk '/Running tests\/explore.rs/ {r = 1} r && /^test result:/ {print; exit}' "$log")
echo "ci/test.sh: explore trials: ${explore:-none ran}"
if ! grep -q ' 3 passed; 0 failed; 0 ignored' <<<"$explore"; then
  echo "ci/test.sh: the explorer's trials did not run and pass" >&2
  exit 1
fi
# diagnose/import/dump, with the round trip through a lab: its trials ran, none ignored.
fieldr=$(awk '/Running tests\/field.rs/ {r = 1} r && /^test result:/ {print; exit}' "$log")
echo "ci/test.sh: field trials: ${fieldr:-none ran}"
if ! grep -q ' 8 passed; 0 failed; 0 ignored' <<<"$fieldr"; then
  echo "ci/test.sh: the field trials did not run and pass" >&2
  exit 1
fi
# Nothing may outlive the run: no lab namespaces, no lab processes.
left=$(ip netns list | awk '$1 ~ /^fl[0-9a-f]{4}-/ {print $1}')
if [ -n "$left" ]; then
  echo "ci/test.sh: lab namespaces left behind: $left" >&2
  exit 1
fi
