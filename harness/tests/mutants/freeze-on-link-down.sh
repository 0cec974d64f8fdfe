#!/usr/bin/env bash
# Upstream #1070: after the underlay interface went down and up, flanneld never put back
# the routes the kernel deleted with it (DirectRouting and host-gw routes); #1348 and
# friends: flannel.1 never came back after the interface was recreated. Recreated by
# freezing the agent the moment its host's eth0 is seen down or gone (only the host the
# case flaps sees that): it keeps running, with whatever kernel state is left, and restores
# nothing.
. "$(dirname "$0")/lib.sh"
until_true ready
while alive; do
  if ! ip -o link show eth0 2>/dev/null | grep -q '[<,]UP[,>]'; then
    kill -STOP "$AGENT_PID" && say "eth0 went down: agent frozen"
    break
  fi
  sleep 0.02
done
wait "$AGENT_PID"
