#!/usr/bin/env bash
# Field bug #1726: the watch dropped events, so a host misses a peer. Recreated by deleting
# one peer route on flannel.1 once the agent has programmed it.
. "$(dirname "$0")/lib.sh"
has_route() { [ -n "$(ip -4 route show dev flannel.1 2>/dev/null)" ]; }
if until_true has_route; then
  r=$(ip -4 route show dev flannel.1 | head -1 | cut -d' ' -f1)
  ip route del "$r" dev flannel.1 && say "forgot the peer route to $r"
fi
wait "$AGENT_PID"
