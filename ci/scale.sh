#!/usr/bin/env bash
# Cost curves and scale cases: release builds of the harness and the agent, then
#   ci/scale.sh                 the scale run (flannel-lab scale; options pass through)
#   ci/scale.sh cases           the 1000-host (vxlan, host-gw) and 250-host (udp) cases
# Prints figures and writes target/scale/{scale.csv,scale.json,*.svg}; not part of the
# default suite. Reference agent RSS at size is only meaningful in a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh conformance
cargo build --release --quiet -p flannel-agent -p flannel-lab
if [ "${1:-}" = cases ]; then
  shift
  exec ./target/release/flannel-lab run --cases harness/scale/cases "$@"
fi
exec ./target/release/flannel-lab scale "$@"
