#!/usr/bin/env bash
# A data-plane fault with an intact control plane, for the data-plane check at size (above
# 64 hosts each host probes a window of 16 peers; the first window of h1 holds h2..h17).
# On MUTANT_FAULT_HOST, once the lease of the host whose public IP follows this host's
# appears, traffic to that peer's subnet is refused by a `prohibit` policy rule. Routes,
# neighbours, FDB entries and leases stay exactly as the agent made them, so only the
# echoes from this host to that peer fail. With MUTANT_FAULT_AFTER_ANSWER=1 the rule comes
# only once an echo reply from that peer's subnet has reached this host (an nftables
# counter): the pair has answered once, and breaks afterwards.
. "$(dirname "$0")/lib.sh"
[ "$MUTANT_HOST" = "$MUTANT_FAULT_HOST" ] || { wait "$AGENT_PID"; exit $?; }
next_ip() {
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  local n=$(((a << 24 | b << 16 | c << 8 | d) + 1))
  echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))"
}
peer_ip=$(next_ip "$MUTANT_PUBLIC_IP")
# the subnet ("A.B.C.D/LEN") of the lease whose PublicIP is the peer's
peer_subnet() {
  etcd get --prefix "$MUTANT_PREFIX/subnets/" 2>/dev/null | while read -r key && read -r value; do
    if grep -q "\"PublicIP\":\"$peer_ip\"" <<<"$value"; then
      basename "$key" | tr - /
      break
    fi
  done
}
subnet=""
found() { subnet=$(peer_subnet); [ -n "$subnet" ]; }
answered() { nft list chain ip mutant replies 2>/dev/null | grep -q 'packets [1-9]'; }
if until_true found && [ "${MUTANT_FAULT_AFTER_ANSWER:-0}" = 1 ]; then
  nft add table ip mutant &&
    nft add chain ip mutant replies '{ type filter hook input priority 0; }' &&
    nft add rule ip mutant replies ip saddr "$subnet" icmp type echo-reply counter &&
    until_true answered && say "the peer at $peer_ip ($subnet) answered an echo"
fi
if [ -n "$subnet" ] && alive; then
  ip rule add to "$subnet" prohibit priority 100 && say "traffic to $subnet (the peer at $peer_ip) refused; its kernel entries are left alone"
fi
wait "$AGENT_PID"
