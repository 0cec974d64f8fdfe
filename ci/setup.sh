#!/usr/bin/env bash
# Install what flannel-lab needs on a Debian machine. Idempotent; run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/setup.sh: run as root (the lab creates network namespaces)" >&2
  exit 1
fi

# chromium: the HTML report's test renders it headless (harness/tests/report.rs)
packages=(etcd-server etcd-client protobuf-compiler libprotobuf-dev iproute2 docker.io iptables nftables containernetworking-plugins chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's etcd-server package enables a system etcd on 127.0.0.1:2379; the lab runs
# its own etcd inside a lab namespace and never talks to that one.
command -v etcd >/dev/null || { echo "ci/setup.sh: etcd not found after install" >&2; exit 1; }
command -v protoc >/dev/null || { echo "ci/setup.sh: protoc not found after install" >&2; exit 1; }
for m in vxlan veth bridge tun; do modprobe -q "$m" 2>/dev/null || true; done

# Docker: cases with `store: docker` run etcd in a container. Start the engine when none
# answers (FLANNEL_LAB_NO_DOCKER=1 skips this; those cases are then reported as ignored).
if [ "${FLANNEL_LAB_NO_DOCKER:-0}" != 1 ] && ! docker info >/dev/null 2>&1; then
  echo "ci/setup.sh: starting dockerd"
  mkdir -p /var/log
  setsid nohup dockerd </dev/null >/var/log/flannel-lab-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "ci/setup.sh: dockerd did not come up; see /var/log/flannel-lab-dockerd.log" >&2; exit 1; }
fi
docker_state=$(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo "not running")
echo "ci/setup.sh: ready (etcd $(etcd --version | head -1 | awk '{print $3}'), $(protoc --version), docker $docker_state)"
