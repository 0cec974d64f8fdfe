#!/usr/bin/env bash
# Field bugs #610/#1244: after etcd lost its data the running agents never registered
# again. Recreated by freezing the agent the moment etcd stops answering, before it can
# reconnect; it keeps running, with its kernel state, and never writes its lease again.
. "$(dirname "$0")/lib.sh"
until_true ready # the agent reached etcd to get here
while alive; do
  if ! etcd_up; then
    kill -STOP "$AGENT_PID" && say "etcd went away: agent frozen"
    break
  fi
  sleep 0.05
done
wait "$AGENT_PID"
