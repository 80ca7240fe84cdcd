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

# The official OpenAI and Anthropic client libraries, for the server test that drives mx8 serve with
# them (tests/cli/serve_test.cpp skips it, saying why, when they are missing). Optional: no npm, or no
# registry, leaves the rest of the setup as it is.
if command -v npm >/dev/null 2>&1 && [[ ! -d tests/server/sdk/node_modules/openai ]]; then
  timeout 300 npm ci --prefix tests/server/sdk --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
    echo "setup: npm ci in tests/server/sdk failed; the client-library server test will skip" >&2
fi

cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)"
