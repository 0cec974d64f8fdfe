#!/usr/bin/env bash
# Field bug #1795 (v0.21.x-v0.22.0): flannel created flannel.VNI without choosing its MAC, so
# the kernel gave it a random one (addr_assign_type 1), which flannel read and published as
# its VtepMAC; with systemd's MACAddressPolicy=persistent, udev then replaced that MAC, and
# flannel never noticed. Peers went on sending to a MAC the device no longer had. Recreated
# by creating the device as those versions did (no MAC given) before the reference agent
# starts: the agent reuses a compatible device and publishes its MAC, and the case's
# udev_mac_policy step plays udev. The reference agent would notice the change (a link
# event) and publish the new MAC 300 ms later; those versions did not, so the agent is
# frozen the moment the device's MAC differs from the one it published.
ip link add flannel.1 type vxlan id 1 local "$MUTANT_PUBLIC_IP" dev eth0 dstport 8472 nolearning ||
  echo "mutant: could not create flannel.1" >&2
. "$(dirname "$0")/lib.sh"
# /sys shows the root namespace's devices here (it is not remounted per namespace): ask ip
mac_now() { ip -o link show flannel.1 2>/dev/null | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2; }
published=$(mac_now)
say "created flannel.1 with a kernel-chosen MAC ($published)"
while alive; do
  now=$(mac_now)
  if [ -n "$now" ] && [ "$now" != "$published" ]; then
    kill -STOP "$AGENT_PID" && say "flannel.1's MAC changed to $now: agent frozen, as if it never noticed"
    break
  fi
  sleep 0.01
done
wait "$AGENT_PID"
