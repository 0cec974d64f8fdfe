#!/usr/bin/env bash
# Judge the upstream flanneld releases beside the checkout (../shared/flanneld, or
# $FLANNELD_DIR) with the whole suite (the implementation's trials: no controls, no
# mutants), each against its committed expectation, harness/expectations/<release>.yaml:
# the known failures of that release, each naming its check, host, step and the upstream
# issue that explains it. The run fails when a verdict changes: a failure no entry
# excuses, or a known failure that passes now (except one recorded as intermittent).
# Where no releases are at hand (a user's machine), it says so and succeeds: nothing in
# the README's commands needs upstream binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${FLANNELD_DIR:-../shared/flanneld}
if [ ! -d "$dir" ]; then
  echo "ci/upstream.sh: no upstream flanneld releases at $dir; upstream verdicts not judged here"
  exit 0
fi
cargo build --quiet -p flannel-agent -p flannel-lab
mkdir -p target/upstream
status=0
for exp in harness/expectations/flanneld-*.yaml; do
  release=$(basename "$exp" .yaml)
  bin="$dir/$release"
  if [ ! -x "$bin" ]; then
    echo "ci/upstream.sh: $bin is missing: its expectation $exp cannot be checked" >&2
    status=1
    continue
  fi
  echo "ci/upstream.sh: $release against $exp"
  start=$(date +%s)
  rc=0
  FLANNELD="$bin" ./target/debug/flannel-lab run --plain --impl flanneld --impl-only \
    --known-failures "$exp" --json "target/upstream/$release.json" \
    --markdown "target/upstream/$release.md" --html "target/upstream/$release.html" || rc=$?
  echo "ci/upstream.sh: $release: exit $rc in $(($(date +%s) - start)) s (reports in target/upstream/)"
  [ "$rc" -eq 0 ] || status=1
done
exit "$status"
