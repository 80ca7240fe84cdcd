#!/usr/bin/env bash
# Builds mx8 for 64-bit ARM (NEON kernels) with Debian's cross compiler and runs tests under
# qemu-user: the check that the ARM build compiles and computes right on a machine without ARM
# hardware (it says nothing about ARM speed). Usage:
#   bash scripts/check_aarch64.sh                  # the CPU kernels, the model ops, the file readers
#   bash scripts/check_aarch64.sh 'format|runtime' # other test areas (ctest labels)
# Tests that start the mx8 executable start it through qemu too (tests/cli/run_mx8.h). Installs
# g++-aarch64-linux-gnu, qemu-user and the arm64 builds of the libraries (multiarch) when they are
# missing; Debian/Ubuntu x86-64 hosts only. 'all' as the labels runs every test area.
set -euo pipefail
cd "$(dirname "$0")/.."

labels=${1:-backend_cpu|model|io}
if [[ $labels == all ]]; then  # every folder of tests/ with test sources, but the GPU's
  labels=$(for d in tests/*/; do
    a=$(basename "$d")
    [[ $a != cuda ]] && compgen -G "$d*.cpp" >/dev/null && echo "$a"
  done | paste -sd'|')
fi

source scripts/install_missing_packages.sh
dpkg --print-foreign-architectures | grep -qx arm64 || as_root dpkg --add-architecture arm64
install_missing_packages g++-aarch64-linux-gnu qemu-user libgtest-dev:arm64 libgmock-dev:arm64 libcpp-httplib-dev:arm64 \
  nlohmann-json3-dev libcli11-dev cmake ninja-build pkg-config

cmake --preset aarch64 >/dev/null
targets=()
for area in ${labels//|/ }; do targets+=("test_$area"); done
cmake --build --preset aarch64 -j"$(nproc)" --target "${targets[@]}"
ctest --preset aarch64 -j"$(nproc)" -L "$labels"
