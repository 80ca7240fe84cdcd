#!/usr/bin/env bash
# Installs what mx8 needs to build (Debian/Ubuntu packages) and builds the default CPU preset.
# Idempotent and non-interactive; runs apt-get only for packages that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build pkg-config g++ libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev
          libcpp-httplib-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)"
