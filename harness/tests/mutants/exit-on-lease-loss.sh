#!/usr/bin/env bash
# Field bugs #904/#1240/#621: when its lease was revoked or deleted while it ran, flanneld
# exited (leaving kernel state) instead of taking the subnet back. Recreated by watching the
# agent's own lease key and killing the agent when it is deleted.
. "$(dirname "$0")/lib.sh"
if until_true ready; then
  # FLANNEL_SUBNET=10.244.68.1/24 -> <prefix>/subnets/10.244.68.0-24 (the lab's /24 subnets)
  subnet=$(sed -n 's/^FLANNEL_SUBNET=//p' "$MUTANT_SUBNET_FILE")
  key="$MUTANT_PREFIX/subnets/${subnet%.*/*}.0-${subnet#*/}"
  # on the first DELETE of the key: kill the whole process group (agent, this wrapper,
  # etcdctl), as an agent that exits on lease loss would leave the host
  (etcd watch "$key" 2>/dev/null | grep -m1 -qx DELETE && say "own lease $key deleted: exiting like flanneld" && kill -KILL -- -$$) &
fi
wait "$AGENT_PID"
