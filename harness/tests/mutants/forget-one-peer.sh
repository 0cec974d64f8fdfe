#!/usr/bin/env bash
# Field bug #1726 (v0.18.0-v0.21.2): the watch kept only the first event of each response,
# so on a simultaneous start a host never learned some peers at all. Recreated on one host
# (MUTANT_FAULT_HOST) by removing one whole peer once the agent has programmed it: route,
# neighbour and FDB entry under vxlan; the route under host-gw; under udp, whose peers live
# inside the agent, every datagram to that peer is dropped (a blackhole route to its
# PublicIP), which is what the agent not knowing the peer does to its traffic. The peer
# stays forgotten: an agent that reconciles its kernel state (the reference does) puts the
# entries back, and the wrapper removes them again, as it never knew the peer.
. "$(dirname "$0")/lib.sh"
[ "$MUTANT_HOST" = "$MUTANT_FAULT_HOST" ] || { wait "$AGENT_PID"; exit $?; }
until_true ready
# What is forgotten stays forgotten: the agent never knew the peer, so nothing it does (a
# reconcile, a resync) may bring the entries back; they are removed again whenever seen.
forgotten=""
forget_vxlan() {
  local r dst gw mac
  if [ -n "$forgotten" ]; then
    read -r dst gw mac <<<"$forgotten"
  else
    r=$(ip -4 route show dev flannel.1 2>/dev/null | head -1)
    [ -n "$r" ] || return 1
    dst=$(awk '{print $1}' <<<"$r")
    gw=$(awk '{print $3}' <<<"$r")
    mac=$(ip -4 neigh show dev flannel.1 "$gw" 2>/dev/null | awk '{print $3}')
    [ -n "$mac" ] || return 1
    bridge fdb show dev flannel.1 2>/dev/null | grep -q "^$mac dst" || return 1
    forgotten="$dst $gw $mac"
    say "forgetting the peer behind $gw ($mac): route, neighbour and FDB entry"
  fi
  ip route del "$dst" dev flannel.1 2>/dev/null
  ip neigh del "$gw" dev flannel.1 2>/dev/null
  bridge fdb show dev flannel.1 2>/dev/null | grep "^$mac dst" | while read -r m _ d _; do bridge fdb del "$m" dev flannel.1 dst "$d" self; done
  return 0
}
forget_hostgw() {
  local r
  if [ -z "$forgotten" ]; then
    r=$(ip -4 route show dev eth0 2>/dev/null | awk '$2 == "via" && $1 ~ /\// {print $1; exit}')
    [ -n "$r" ] || return 1
    forgotten="$r"
    say "forgetting the peer route to $r"
  fi
  ip route del "$forgotten" dev eth0 2>/dev/null
  return 0
}
forget_udp() {
  local ip
  [ -z "$forgotten" ] || return 0 # the blackhole route stays; the agent does not touch it
  ip=$(etcd get --prefix "$MUTANT_PREFIX/subnets/" --print-value-only 2>/dev/null |
    grep -o '"PublicIP":"[0-9.]*"' | cut -d'"' -f4 | grep -vx "$MUTANT_PUBLIC_IP" | head -1)
  [ -n "$ip" ] || return 1
  ip route add blackhole "$ip/32" && forgotten="$ip" && say "dropping every datagram to the peer at $ip"
}
forget() {
  if ip link show flannel0 >/dev/null 2>&1; then forget_udp
  elif ip link show flannel.1 >/dev/null 2>&1; then forget_vxlan
  else forget_hostgw
  fi
}
until_true forget
while alive; do
  forget
  sleep 0.05
done
wait "$AGENT_PID"
