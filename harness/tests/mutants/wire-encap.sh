#!/usr/bin/env bash
# host-gw whose kernel routes are right but whose traffic is tunnelled anyway: policy
# routing (ip rule, table 100) sends pod traffic through a VXLAN device of its own (VNI 99,
# port 4789) ahead of the main table, where the agent's `<subnet> via <PublicIP> dev eth0`
# routes stay untouched. Pods reach each other; only the wire shows the encapsulation.
MUTANT_DEFER_START=1
. "$(dirname "$0")/lib.sh"
# The lab writes the net-conf before agents start. Table 100 fails closed: a peer without a
# tunnel route yet is unreachable, not served by the agent's routes, so the tunnel is in
# use by the time the cluster converges.
network=$(etcd get "$MUTANT_PREFIX/config" --print-value-only 2>/dev/null | grep -oi '"network" *: *"[0-9./]*"' | cut -d'"' -f4)
ip link add mut0 type vxlan id 99 dstport 4789 local "$MUTANT_PUBLIC_IP" dev eth0 \
  && ip link set mut0 up \
  && ip route add unreachable "$network" table 100 \
  && ip rule add to "$network" lookup 100 priority 100 \
  || { say "cannot set up the tunnel for '$network'"; exit 2; }
say "pod traffic to $network goes through the tunnel"
start_agent "$@"
until_true ready
# the host's own pods stay on cni0
own=$(grep '^FLANNEL_SUBNET=' "$MUTANT_SUBNET_FILE" | cut -d= -f2)
IFS=./ read -r a b c d len <<<"$own"
n=$(( (a << 24 | b << 16 | c << 8 | d) & (0xffffffff << (32 - len)) & 0xffffffff ))
ip route add throw "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))/$len" table 100
declare -A done_peers
while alive; do
  # every peer: flooding to its PublicIP, and its subnet routed to it through the tunnel
  # (ARP for the PublicIP over the tunnel is answered by the peer itself)
  while read -r key && read -r value; do
    ip=$(grep -o '"PublicIP":"[0-9.]*"' <<<"$value" | cut -d'"' -f4)
    subnet=$(basename "$key" | tr - /)
    [ -n "$ip" ] && [ "$ip" != "$MUTANT_PUBLIC_IP" ] && [ -z "${done_peers[$subnet]:-}" ] || continue
    bridge fdb append 00:00:00:00:00:00 dev mut0 dst "$ip" \
      && ip route replace "$subnet" via "$ip" dev mut0 onlink table 100 \
      && done_peers[$subnet]=1 && say "tunnelling $subnet to $ip"
  done < <(etcd get --prefix "$MUTANT_PREFIX/subnets/" 2>/dev/null)
  sleep 0.2
done
wait "$AGENT_PID"
