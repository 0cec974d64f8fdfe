#!/usr/bin/env bash
# A data path that works while the wire says something else: an implementation whose
# kernel state and reachability are right but whose frames on the underlay are not in
# flannel's wire format (a userspace or eBPF data path with the wrong VNI, port, addresses
# or header). Recreated with nftables payload rewrites set up before the agent starts: each
# host rewrites its outgoing tunnel frames (MUTANT_LIE) and every host undoes the rewrite
# on frames it receives, so pods still reach each other and only the wire shows the lie.
#   vni:            VXLAN VNI 1 is sent as 2
#   port:           datagrams to 8472 (vxlan) or 8285 (udp) are sent to 4789 / 8286
#   outer-address:  the outer source address 192.168.99.N is sent as 192.0.2.N
#   vtep-mac:       a VXLAN frame's inner source MAC is sent as 0e:00:00:00:00:01 (the
#                   receiving device does not learn; nothing needs undoing)
#   payload:        a udp datagram's inner packet starts 0x65 instead of 0x45
MUTANT_DEFER_START=1
. "$(dirname "$0")/lib.sh"
rules() {
  local out="" in=""
  case "$MUTANT_LIE" in
    vni)
      out="udp dport 8472 @th,96,24 set 2"
      in="udp dport 8472 @th,96,24 set 1" ;;
    port)
      out="udp dport 8472 udp dport set 4789; add rule ip flannel-lab-mutant out udp dport 8285 udp dport set 8286"
      in="udp dport 4789 udp dport set 8472; add rule ip flannel-lab-mutant in udp dport 8286 udp dport set 8285" ;;
    outer-address)
      local net=${MUTANT_PUBLIC_IP%.*} map="" n
      for n in $(seq 1 254); do map+="192.0.2.$n : $net.$n, "; done
      out="ip saddr $net.0/24 udp dport { 8472, 8285 } ip saddr set 192.0.2.${MUTANT_PUBLIC_IP##*.}"
      in="ip saddr 192.0.2.0/24 udp dport { 8472, 8285 } ip saddr set ip saddr map { ${map%, } }" ;;
    vtep-mac)
      out="udp dport 8472 @th,176,48 set 0x0e0000000001" ;;
    payload)
      out="udp dport 8285 @th,64,8 set 0x65"
      in="udp dport 8285 @th,64,8 set 0x45" ;;
    *) say "unknown MUTANT_LIE '$MUTANT_LIE'"; exit 2 ;;
  esac
  echo "add table ip flannel-lab-mutant"
  echo "add chain ip flannel-lab-mutant out { type filter hook output priority 0; }"
  echo "add rule ip flannel-lab-mutant out $out"
  if [ -n "$in" ]; then
    # before conntrack, routing and the agent's own source filter
    echo "add chain ip flannel-lab-mutant in { type filter hook prerouting priority -400; }"
    echo "add rule ip flannel-lab-mutant in $in"
  fi
}
rules | nft -f - || { say "nft rejected the rewrite rules for '$MUTANT_LIE'"; exit 2; }
say "wire rewrite '$MUTANT_LIE' in place"
start_agent "$@"
wait "$AGENT_PID"
