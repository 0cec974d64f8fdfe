#!/usr/bin/env bash
# An agent that dies once it has done its work: as soon as the first pod is attached to
# cni0 on its host (after the last wait of a case like `mtu`), it is killed and the wrapper
# exits 1. Its routes, neighbours and FDB entries outlive it, so every later check of
# kernel state and traffic still passes; only watching the agent to the end of the trial
# sees it (the end-of-trial `agents_alive` check).
. "$(dirname "$0")/lib.sh"
until_true ready
pods() { [ -n "$(ip -o link show master cni0 2>/dev/null)" ]; }
until_true pods && crash "a pod appeared on cni0: exiting with status 1 while pods are created"
wait "$AGENT_PID"
