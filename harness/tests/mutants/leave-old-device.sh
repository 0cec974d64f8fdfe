#!/usr/bin/env bash
# Backend switch without cleanup: after moving off vxlan, flannel.1 and its routes stayed
# behind. Recreated by putting a flannel.1 vxlan device back once this run of the agent has
# programmed its peers without one.
start=$(stat -c %s "$MUTANT_LOG" 2>/dev/null || echo 0)
. "$(dirname "$0")/lib.sh"
programmed() { tail -c +"$((start + 1))" "$MUTANT_LOG" 2>/dev/null | grep -q 'peers programmed'; }
if until_true programmed; then
  if ! ip link show flannel.1 >/dev/null 2>&1; then
    ip link add flannel.1 type vxlan id 1 dstport 8472 nolearning dev eth0 && ip link set flannel.1 up && say "left a stale flannel.1 behind"
  fi
fi
wait "$AGENT_PID"
