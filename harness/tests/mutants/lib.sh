# Shared by the mutant wrappers. A mutant runs the reference agent (its arguments are this
# script's arguments) and recreates one upstream field bug from outside, so the lab can show
# that the matching case catches it. Mutants are test fixtures: they use iproute2 and
# etcdctl directly, which the lab itself never does.
# A wrapper that sets MUTANT_DEFER_START=1 before sourcing this file prepares its fault
# first and then calls `start_agent "$@"` itself.
set -u
AGENT_PID=""
start_agent() {
  "$@" &
  AGENT_PID=$!
}
[ "${MUTANT_DEFER_START:-0}" = 1 ] || start_agent "$@"
trap '[ -n "$AGENT_PID" ] || exit 143; kill -TERM "$AGENT_PID" 2>/dev/null; kill -CONT "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID"; exit $?' TERM INT

say() { echo "mutant: $*" >&2; }
alive() { kill -0 "$AGENT_PID" 2>/dev/null; }
crash() { say "$*"; kill -KILL "$AGENT_PID" 2>/dev/null; exit 1; }
etcd() { ETCDCTL_API=3 etcdctl --endpoints="$MUTANT_ETCD" --dial-timeout=1s --command-timeout=1s "$@"; }
etcd_up() { etcd endpoint health >/dev/null 2>&1; }
# Polls (10 per second) until the command succeeds or the agent is gone.
until_true() { while alive; do "$@" && return 0; sleep 0.1; done; return 1; }
ready() { [ -s "$MUTANT_SUBNET_FILE" ]; }
# Every lease under the prefix, a line each: "KEY PUBLICIP MAC" (MAC empty but for vxlan).
leases() {
  etcd get --prefix "$MUTANT_PREFIX/subnets/" 2>/dev/null | while read -r key && read -r value; do
    ip=$(grep -o '"PublicIP":"[0-9.]*"' <<<"$value" | cut -d'"' -f4)
    mac=$(grep -o '"VtepMAC":"[0-9a-f:]*"' <<<"$value" | cut -d'"' -f4)
    echo "$key $ip $mac"
  done
}
# The net-conf's backend type, lower case.
net_backend() {
  etcd get "$MUTANT_PREFIX/config" --print-value-only 2>/dev/null | grep -oi '"type" *: *"[a-z-]*"' | cut -d'"' -f4 | tr 'A-Z' 'a-z'
}
