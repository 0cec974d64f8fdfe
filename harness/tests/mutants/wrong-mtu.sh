#!/usr/bin/env bash
# Field bugs #841/#1011/#1171: pods got an MTU larger than the overlay carries. Recreated by
# raising FLANNEL_MTU in the subnet file by the 50 bytes of VXLAN overhead.
. "$(dirname "$0")/lib.sh"
if until_true ready; then
  mtu=$(sed -n 's/^FLANNEL_MTU=//p' "$MUTANT_SUBNET_FILE")
  sed -i "s/^FLANNEL_MTU=.*/FLANNEL_MTU=$((mtu + 50))/" "$MUTANT_SUBNET_FILE" && say "advertised MTU $((mtu + 50)) instead of $mtu"
fi
wait "$AGENT_PID"
