#!/usr/bin/env bash
# Backend switch without cleanup: after moving off vxlan, flannel.1 and its routes stayed
# behind. Recreated by putting a flannel.1 vxlan device back whenever the agent runs
# without one.
. "$(dirname "$0")/lib.sh"
if until_true ready; then
  if ! ip link show flannel.1 >/dev/null 2>&1; then
    ip link add flannel.1 type vxlan id 1 dstport 8472 nolearning dev eth0 && ip link set flannel.1 up && say "left a stale flannel.1 behind"
  fi
fi
wait "$AGENT_PID"
