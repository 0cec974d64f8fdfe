#!/usr/bin/env bash
# Field bug #1726 (v0.18.0-v0.21.2): the watch kept only the first event of each response,
# so on a simultaneous start a host never learned some peers at all. Recreated on one host
# (MUTANT_FAULT_HOST): before its agent starts, the wrapper waits for another host's lease
# and makes that peer unreachable from this host (a `prohibit` policy rule for the peer's
# subnet under vxlan and host-gw; under udp, whose peers live inside the agent, a blackhole
# route to the peer's PublicIP, so every datagram to it is dropped). Then, once the agent
# runs, it removes that peer's kernel entries whenever they appear (route, neighbour and FDB
# entry under vxlan; the route under host-gw): the state lost events leave, kept that way
# against an agent that reconciles its kernel state, as the reference does.
MUTANT_DEFER_START=1
. "$(dirname "$0")/lib.sh"
if [ "$MUTANT_HOST" != "$MUTANT_FAULT_HOST" ]; then
  start_agent "$@"
  wait "$AGENT_PID"
  exit $?
fi
# the first lease of another host: "SUBNET/LEN PUBLICIP MAC" (MAC empty but for vxlan)
peer_lease() {
  leases | while read -r key ip mac; do
    [ -n "$ip" ] && [ "$ip" != "$MUTANT_PUBLIC_IP" ] || continue
    echo "$(basename "$key" | tr - /) $ip $mac"
    break
  done
}
peer=""
for _ in $(seq 1 600); do
  peer=$(peer_lease)
  [ -n "$peer" ] && break
  sleep 0.05
done
[ -n "$peer" ] || say "no peer lease appeared in 30 s: starting the agent unharmed"
read -r subnet peer_ip mac <<<"$peer"
backend=$(net_backend)
if [ -n "$peer" ]; then
  if [ "$backend" = vxlan ] || [ "$backend" = host-gw ]; then
    ip rule add to "$subnet" prohibit priority 100 && say "peer $subnet ($peer_ip) made unreachable before the agent starts"
  else
    ip route add blackhole "$peer_ip/32" && say "dropping every datagram to the peer at $peer_ip"
  fi
fi
start_agent "$@"
gw=${subnet%/*}
while [ -n "$peer" ] && alive; do
  case "$backend" in
    vxlan)
      ip route del "$subnet" dev flannel.1 2>/dev/null && say "removed the route to $subnet"
      ip neigh del "$gw" dev flannel.1 2>/dev/null
      [ -n "$mac" ] && bridge fdb del "$mac" dev flannel.1 dst "$peer_ip" self 2>/dev/null
      ;;
    host-gw) ip route del "$subnet" dev eth0 2>/dev/null && say "removed the route to $subnet" ;;
  esac
  sleep 0.05
done
wait "$AGENT_PID"
