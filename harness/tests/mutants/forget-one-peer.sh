#!/usr/bin/env bash
# Field bug #1726 (v0.18.0-v0.21.2): the watch kept only the first event of each response,
# so on a simultaneous start a host never learned some peers at all. Recreated on one host
# (MUTANT_FAULT_HOST) by removing one whole peer once the agent has programmed it: route,
# neighbour and FDB entry under vxlan; the route under host-gw; under udp, whose peers live
# inside the agent, every datagram to that peer is dropped (a blackhole route to its
# PublicIP), which is what the agent not knowing the peer does to its traffic.
. "$(dirname "$0")/lib.sh"
[ "$MUTANT_HOST" = "$MUTANT_FAULT_HOST" ] || { wait "$AGENT_PID"; exit $?; }
until_true ready
forget_vxlan() {
  local r gw mac
  r=$(ip -4 route show dev flannel.1 2>/dev/null | head -1)
  [ -n "$r" ] || return 1
  gw=$(awk '{print $3}' <<<"$r")
  mac=$(ip -4 neigh show dev flannel.1 "$gw" 2>/dev/null | awk '{print $3}')
  [ -n "$mac" ] || return 1
  bridge fdb show dev flannel.1 2>/dev/null | grep -q "^$mac dst" || return 1
  ip route del $(awk '{print $1}' <<<"$r") dev flannel.1
  ip neigh del "$gw" dev flannel.1
  bridge fdb show dev flannel.1 | grep "^$mac dst" | while read -r m _ dst _; do bridge fdb del "$m" dev flannel.1 dst "$dst" self; done
  say "forgot the peer behind $gw ($mac): route, neighbour and FDB entry"
}
forget_hostgw() {
  local r
  r=$(ip -4 route show dev eth0 2>/dev/null | awk '$2 == "via" && $1 ~ /\// {print $1; exit}')
  [ -n "$r" ] || return 1
  ip route del "$r" dev eth0 && say "forgot the peer route to $r"
}
forget_udp() {
  local ip
  ip=$(etcd get --prefix "$MUTANT_PREFIX/subnets/" --print-value-only 2>/dev/null |
    grep -o '"PublicIP":"[0-9.]*"' | cut -d'"' -f4 | grep -vx "$MUTANT_PUBLIC_IP" | head -1)
  [ -n "$ip" ] || return 1
  ip route add blackhole "$ip/32" && say "dropping every datagram to the peer at $ip"
}
forget() {
  if ip link show flannel0 >/dev/null 2>&1; then forget_udp
  elif ip link show flannel.1 >/dev/null 2>&1; then forget_vxlan
  else forget_hostgw
  fi
}
until_true forget
wait "$AGENT_PID"
