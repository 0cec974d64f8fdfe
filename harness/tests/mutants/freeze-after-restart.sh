#!/usr/bin/env bash
# An agent that hangs right after a restart (a deadlock at start-up, a blocked etcd call):
# its old kernel state and subnet file are still there, so it looks converged to a check
# that reads only state. Recreated by freezing the agent (SIGSTOP) as soon as it starts when
# a subnet file from an earlier run exists; a first start is left alone.
if [ -s "$MUTANT_SUBNET_FILE" ]; then restart=1; else restart=0; fi
. "$(dirname "$0")/lib.sh"
if [ "$restart" = 1 ]; then
  kill -STOP "$AGENT_PID" && say "restarted agent frozen"
fi
wait "$AGENT_PID"
