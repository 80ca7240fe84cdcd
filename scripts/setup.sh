#!/usr/bin/env bash
# Installs what mx8 needs to build (Debian/Ubuntu packages) and builds the default CPU preset.
# Idempotent and non-interactive; runs apt-get only for packages that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/install_missing_packages.sh
install_missing_packages cmake ninja-build pkg-config g++ libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev \
  libcli11-dev libcpp-httplib-dev

# The official OpenAI and Anthropic client libraries, for the server test that drives mx8 serve with
# them (tests/cli/serve_test.cpp skips it, saying why, when they are missing). Optional: no npm, or no
# registry, leaves the rest of the setup as it is.
if command -v npm >/dev/null 2>&1 && [[ ! -d tests/server/sdk/node_modules/openai ]]; then
  timeout 300 npm ci --prefix tests/server/sdk --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
    echo "setup: npm ci in tests/server/sdk failed; the client-library server test will skip" >&2
fi

cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)"
