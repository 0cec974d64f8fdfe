#!/usr/bin/env bash
# Field bug #1714: a watch response with no events (etcd restarting) crashed the agent.
# Recreated by killing the agent once etcd stops answering: two failed health checks in a
# row, so one slow answer on a loaded machine does not crash it before the outage.
. "$(dirname "$0")/lib.sh"
until_true ready # the agent reached etcd to get here
misses=0
while alive; do
  if etcd_up; then misses=0; else misses=$((misses + 1)); fi
  [ "$misses" -ge 2 ] && crash "etcd went away: crashing like flanneld v0.20.1"
  sleep 0.1
done
wait "$AGENT_PID"
