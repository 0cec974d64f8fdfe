#!/usr/bin/env bash
# Field bug #1714: a watch response with no events (etcd restarting) crashed the agent.
# Recreated by killing the agent as soon as etcd stops answering.
. "$(dirname "$0")/lib.sh"
until_true ready # the agent reached etcd to get here
while alive; do
  etcd_up || crash "etcd went away: crashing like flanneld v0.20.1"
  sleep 0.1
done
wait "$AGENT_PID"
