#!/usr/bin/env bash
# Install what flannel-lab needs on a Debian machine, per purpose. Idempotent; run as root.
#   ci/setup.sh conformance    build the lab and run it: etcd, protoc, iproute2, iptables,
#                              nftables, the CNI plugins, gcc (the linker, ring's C code),
#                              Docker (the leader-loss case's 3-member etcd; dockerd started)
#   ci/setup.sh tests          the same, for every test
#   ci/setup.sh report         Chromium, for the HTML report's browser test
# Several purposes may be given; none means all three. The Rust toolchain itself comes
# from rustup (see the README); rust-toolchain.toml pins it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/setup.sh: run as root (the lab creates network namespaces)" >&2
  exit 1
fi

purposes=("$@")
[ "${#purposes[@]}" -gt 0 ] || purposes=(conformance tests report)
base=(etcd-server etcd-client protobuf-compiler libprotobuf-dev iproute2 iptables nftables containernetworking-plugins gcc libc6-dev)
packages=()
docker=0
for p in "${purposes[@]}"; do
  case "$p" in
    conformance | tests) packages+=("${base[@]}" docker.io); docker=1 ;;
    report) packages+=(chromium) ;;
    *) echo "ci/setup.sh: unknown purpose \`$p\` (conformance, tests, report)" >&2; exit 2 ;;
  esac
done

missing=()
for p in $(printf '%s\n' "${packages[@]}" | sort -u); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The pinned toolchain: rustup names it by version; a machine whose one toolchain is that
# version under the name `stable` gets it linked under its number too (nothing fetched).
pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null && ! rustup run "$pinned" rustc --version >/dev/null 2>&1; then
  if rustup run stable rustc --version 2>/dev/null | grep -q "^rustc $pinned "; then
    rustup toolchain link "$pinned" "$(rustup run stable rustc --print sysroot)"
    echo "ci/setup.sh: toolchain $pinned linked to the installed stable one"
  else
    echo "ci/setup.sh: rust-toolchain.toml pins Rust $pinned, which is not installed: rustup toolchain install $pinned" >&2
    exit 1
  fi
fi

if printf '%s\n' "${packages[@]}" | grep -qx etcd-server; then
  # Debian's etcd-server package enables a system etcd on 127.0.0.1:2379; the lab runs
  # its own etcd inside a lab namespace and never talks to that one.
  command -v etcd >/dev/null || { echo "ci/setup.sh: etcd not found after install" >&2; exit 1; }
  command -v protoc >/dev/null || { echo "ci/setup.sh: protoc not found after install" >&2; exit 1; }
  for m in vxlan veth bridge tun; do modprobe -q "$m" 2>/dev/null || true; done
fi

# Docker: `store: auto` cases run etcd in a container when an engine answers. Start one
# when none does (FLANNEL_LAB_NO_DOCKER=1 skips this; those cases then run etcd as a
# process, or fail under FLANNEL_LAB_REQUIRE=1).
if [ "$docker" = 1 ] && [ "${FLANNEL_LAB_NO_DOCKER:-0}" != 1 ] && ! docker info >/dev/null 2>&1; then
  echo "ci/setup.sh: starting dockerd"
  mkdir -p /var/log
  setsid nohup dockerd </dev/null >/var/log/flannel-lab-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "ci/setup.sh: dockerd did not come up; see /var/log/flannel-lab-dockerd.log" >&2; exit 1; }
fi
ready="ci/setup.sh: ready for ${purposes[*]}"
command -v etcd >/dev/null && ready+=" (etcd $(etcd --version | head -1 | awk '{print $3}'), $(protoc --version)"
[ "$docker" = 1 ] && ready+=", docker $(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo 'not running')"
command -v etcd >/dev/null && ready+=")"
echo "$ready"
