#!/usr/bin/env bash
# host-gw across a router (#519, #765, #1520): the agent must keep serving reachable peers
# when another peer is not on its segment. Recreated by crashing on that condition, on one
# host (MUTANT_FAULT_HOST), so the finding names a host that certainly crashes.
. "$(dirname "$0")/lib.sh"
[ "$MUTANT_HOST" = "$MUTANT_FAULT_HOST" ] || { wait "$AGENT_PID"; exit $?; }
unreachable() { grep -q 'cannot route to peer' "$MUTANT_LOG" 2>/dev/null; }
until_true unreachable && crash "a peer is not directly reachable: giving up"
wait "$AGENT_PID"
