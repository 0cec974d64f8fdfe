#!/usr/bin/env bash
# Field bugs #841/#1011/#1171: pods got an MTU larger than the overlay carries. Recreated by
# advertising FLANNEL_MTU 50 bytes too large: the agent writes its subnet file to a side
# path and the wrapper publishes it, with the raised MTU, at the path the lab reads, so the
# correct value is never visible there.
real="$MUTANT_SUBNET_FILE"
side="$real.agent"
args=()
for a in "$@"; do
  case "$a" in
    --subnet-file=*) args+=("--subnet-file=$side") ;;
    *) args+=("$a") ;;
  esac
done
set -- "${args[@]}"
. "$(dirname "$0")/lib.sh"
last=""
while alive; do
  if [ -s "$side" ]; then
    now=$(cat "$side")
    if [ "$now" != "$last" ]; then
      mtu=$(sed -n 's/^FLANNEL_MTU=//p' <<<"$now")
      sed "s/^FLANNEL_MTU=.*/FLANNEL_MTU=$((mtu + 50))/" <<<"$now" >"$real.tmp" && mv "$real.tmp" "$real"
      say "advertised MTU $((mtu + 50)) instead of $mtu"
      last="$now"
    fi
  fi
  sleep 0.05
done
wait "$AGENT_PID"
