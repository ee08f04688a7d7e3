#!/usr/bin/env bash
# Installs every Debian package budgetd needs, then configures and builds it.
# Idempotent: apt-get update runs only when a package is missing.
# Usage: scripts/setup.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build pkg-config git
  libuv1-dev libtomlplusplus-dev libspdlog-dev libfmt-dev libsystemd-dev
  libsqlite3-dev libsimdjson-dev nlohmann-json3-dev libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libhiredis-dev redis-server varlink-go
  systemd procps socat
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$build"
