#!/usr/bin/env bash
# Upstream #1070: after the underlay interface went down and up, flanneld never put back
# the routes the kernel deleted with it (DirectRouting and host-gw routes); #1348 and
# friends: flannel.1 never came back after the interface was recreated. Recreated by
# freezing the agent as soon as its host's eth0 is seen down, gone, or replaced by another
# interface of the same name (a new ifindex: a recreation can be over between two polls):
# it keeps running, with whatever kernel state is left, and restores nothing.
. "$(dirname "$0")/lib.sh"
until_true ready
ifindex() { ip -o link show eth0 2>/dev/null | cut -d: -f1; }
first=$(ifindex)
while alive; do
  line=$(ip -o link show eth0 2>/dev/null)
  if [ -z "$line" ] || [ "${line%%:*}" != "$first" ] || ! grep -q '[<,]UP[,>]' <<<"$line"; then
    kill -STOP "$AGENT_PID" && say "eth0 went down or was replaced: agent frozen"
    break
  fi
  sleep 0.02
done
wait "$AGENT_PID"
