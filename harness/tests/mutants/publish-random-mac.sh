#!/usr/bin/env bash
# Field bug #1795 (v0.21.x-v0.22.0): flannel created flannel.VNI without choosing its MAC, so
# the kernel gave it a random one (addr_assign_type 1), which flannel read and published as
# its VtepMAC; with systemd's MACAddressPolicy=persistent, udev then replaced that MAC. Peers
# went on sending to a MAC the device no longer had. Recreated by creating the device as
# those versions did (no MAC given) before the reference agent starts: the agent reuses a
# compatible device and publishes its MAC, and the case's udev_mac_policy step plays udev.
ip link add flannel.1 type vxlan id 1 local "$MUTANT_PUBLIC_IP" dev eth0 dstport 8472 nolearning ||
  echo "mutant: could not create flannel.1" >&2
. "$(dirname "$0")/lib.sh"
say "created flannel.1 with a kernel-chosen MAC ($(cat /sys/class/net/flannel.1/address 2>/dev/null))"
wait "$AGENT_PID"
