#!/usr/bin/env bash
# An agent that, once restarted, follows new peers on its own segment but not peers that
# joined behind a router (a watch that resumes from a stale cursor for routed peers, a
# filter on the directly connected network applied to every peer). Peers it knew before
# the restart stay served, so a check with one fresh peer on the agent's own segment sees
# nothing wrong; only a fresh peer on another segment shows it. Recreated on a restart,
# before the agent starts again (a subnet file from an earlier run exists): every lease that
# appears after it, whose PublicIP this host reaches through a gateway, has its kernel
# entries removed (vxlan: route, neighbour, FDB entry) and the agent frozen the moment the
# first of them appears, so it cannot put them back (the reference agent repairs deleted
# entries at once; a mutant that only deleted them lost that race now and then) and follows
# nothing after that; under udp, whose peers live in the agent, datagrams to every peer but
# those known at the restart or on this segment are dropped (an iptables rule in the host's
# namespace).
if [ -s "$MUTANT_SUBNET_FILE" ]; then restart=1; else restart=0; fi
MUTANT_DEFER_START=1
. "$(dirname "$0")/lib.sh"
if [ "$restart" = 0 ]; then
  start_agent "$@"
  wait "$AGENT_PID"
  exit $?
fi
known=$(leases)
known_keys=$(cut -d' ' -f1 <<<"$known")
known_ips=$(cut -d' ' -f2 <<<"$known")
say "restarted with $(wc -l <<<"$known") leases known; new peers behind a router will be ignored"
# a peer this host reaches through a gateway that it did not know at the restart
far_new() { ! grep -qxF "$1" <<<"$known_ips" && ip route get "$1" 2>/dev/null | grep -q ' via '; }
backend=$(net_backend)
case "$backend" in
  vxlan)
    # the agent frozen and the FDB entry for a new far peer removed the moment it appears
    # (a check polling the kernel must not catch it complete); the loop below takes the
    # route and neighbour (line-buffered: a pipe would hold the events back). The agent's
    # PID comes through a file: this monitor starts before the agent, to miss no event.
    pidfile="${MUTANT_LOG%/*}/mutant-agent.pid"
    stdbuf -oL bridge monitor fdb 2>/dev/null | while read -r -a f; do
      [ "${f[0]}" != Deleted ] && [ "${f[2]:-}" = flannel.1 ] && [ "${f[3]:-}" = dst ] || continue
      far_new "${f[4]}" || continue
      pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] && kill -STOP "$pid" 2>/dev/null
      bridge fdb del "${f[0]}" dev flannel.1 dst "${f[4]}" self 2>/dev/null && say "froze the agent, removed the FDB entry for ${f[4]}"
    done &
    ;;
  udp)
    # datagrams to peers known at the restart, or on this segment, pass; the rest are dropped
    port=$(etcd get "$MUTANT_PREFIX/config" --print-value-only 2>/dev/null | grep -o '"Port" *: *[0-9]*' | grep -o '[0-9]*$')
    port=${port:-8285}
    own=$(ip -o -4 addr show dev eth0 | awk '{print $4}' | head -1)
    for ip in $known_ips; do iptables -I OUTPUT -p udp --dport "$port" -d "$ip" -j ACCEPT; done
    iptables -A OUTPUT -p udp --dport "$port" ! -d "$own" -j DROP && say "datagrams to new peers outside $own dropped"
    ;;
esac
start_agent "$@"
[ -n "${pidfile:-}" ] && echo "$AGENT_PID" >"$pidfile"
while alive; do
  while read -r key ip mac; do
    [ -n "$key" ] && [ -n "$ip" ] || continue
    grep -qxF "$key" <<<"$known_keys" && continue
    far_new "$ip" || continue
    subnet=$(basename "$key" | tr - /)
    if [ "$backend" = vxlan ]; then
      kill -STOP "$AGENT_PID" 2>/dev/null
      ip route del "$subnet" dev flannel.1 2>/dev/null && say "removed the route to $subnet (peer $ip behind a router)"
      ip neigh del "${subnet%/*}" dev flannel.1 2>/dev/null
      [ -n "$mac" ] && bridge fdb del "$mac" dev flannel.1 dst "$ip" self 2>/dev/null
    fi
  done <<<"$(leases)"
  sleep 0.05
done
wait "$AGENT_PID"
