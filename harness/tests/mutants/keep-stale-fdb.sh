#!/usr/bin/env bash
# Stale FDB entries (as in #1330, #1788): after a peer came back with a new VTEP MAC the old FDB
# entry stayed. Recreated by putting back every FDB entry the agent removes, within 50 ms
# (the reference also removes it again at its 10 s reconcile; it comes straight back). The
# agent is not frozen: it must go on following the canary lease the lab announces, so the
# stale entry is what the case reports.
. "$(dirname "$0")/lib.sh"
declare -A seen
until_true ready
while alive; do
  now=$(bridge fdb show dev flannel.1 2>/dev/null | grep ' dst ' | cut -d' ' -f1,3 | sort)
  while read -r mac dst; do
    [ -n "$mac" ] && seen["$mac $dst"]=1
  done <<<"$now"
  for entry in "${!seen[@]}"; do
    if ! grep -qx "$entry" <<<"$now"; then
      set -- $entry
      bridge fdb append "$1" dev flannel.1 dst "$2" self permanent 2>/dev/null && say "kept stale fdb entry $entry"
    fi
  done
  sleep 0.05
done
wait "$AGENT_PID"
