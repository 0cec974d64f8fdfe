#!/usr/bin/env bash
# Field bug (fixed by upstream PR #2539): one malformed key under <prefix>/subnets/ made
# every node drop all peers. Recreated by flushing flannel.1's peer state when junk appears,
# on one host (MUTANT_FAULT_HOST), so the finding the case must produce names a host that
# certainly has the fault (on every host, whichever flushed first would be reported).
# The fault is held while the agent runs, as the bug's state was.
. "$(dirname "$0")/lib.sh"
[ "$MUTANT_HOST" = "$MUTANT_FAULT_HOST" ] || { wait "$AGENT_PID"; exit $?; }
junk() {
  etcd get --prefix --keys-only "$MUTANT_PREFIX/subnets/" 2>/dev/null | grep -v '^$' |
    grep -qvE "^$MUTANT_PREFIX/subnets/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+-[0-9]+$" && return 0
  etcd get --prefix "$MUTANT_PREFIX/subnets/" --print-value-only 2>/dev/null | grep -v '^$' | grep -qv '^{"PublicIP"'
}
flush() {
  ip route flush dev flannel.1
  ip neigh flush dev flannel.1 nud permanent
  bridge fdb show dev flannel.1 | grep ' dst ' | while read -r mac _ _ _ dst _; do
    bridge fdb del "$mac" dev flannel.1 dst "$dst" self
  done
}
# The peers stay dropped: the reference agent repairs kernel state it sees removed, so a
# single flush would be healed within milliseconds and the fault would come and go.
if until_true junk; then
  say "malformed lease seen: dropping every peer, and again every 100 ms"
  while alive; do
    flush 2>/dev/null
    sleep 0.1
  done
fi
wait "$AGENT_PID"
