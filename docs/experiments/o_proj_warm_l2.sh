#!/usr/bin/env bash
# The A/B run for o_proj_warm_l2.patch, one device call (docs/CUDA_BACKEND.md, seventy-fifth session):
#   git apply docs/experiments/o_proj_warm_l2.patch
#   device run: bash docs/experiments/o_proj_warm_l2.sh   (carry .carry: .carry/deps as in scripts/gpu_check.sh)
# Builds mx8, then decodes with MX8_WARM_KB = 0 and the sizes in WARM_LIST alternating (two rounds), then
# one --timeline run of each, whose exposed times say where the step's time moved. About 4 minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/build/warm-out}
mkdir -p "$OUT"
export CC=/usr/bin/gcc CXX=/usr/bin/g++
deps=$PWD/.carry/deps/usr
export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMX8_CUDA=ON \
  -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ \
  -DCMAKE_PREFIX_PATH="$deps" >"$OUT/build.log" 2>&1 &&
  cmake --build build/gpu -j"$(nproc)" --target mx8_cli >>"$OUT/build.log" 2>&1 || {
  tail -30 "$OUT/build.log"
  exit 1
}
bench="build/gpu/mx8 bench decode-cuda --layers 32 --tokens 128 --kv bf16 --prefill 0 --greedy --weights fp8 --graphs on"
sizes=${WARM_LIST:-0 16384 8192}
for round in 1 2; do
  for kb in $sizes; do
    MX8_WARM_KB=$kb $bench >"$OUT/run.txt" 2>&1
    cat "$OUT/run.txt" >>"$OUT/runs.txt"
    echo "round $round, MX8_WARM_KB=$kb: $(grep -m1 -E 'tok/s' "$OUT/run.txt")"
  done
done | tee "$OUT/ab.txt"
for kb in $sizes; do
  echo "== MX8_WARM_KB=$kb"
  MX8_WARM_KB=$kb $bench --timeline 10 2>&1 | grep -A10 '^timeline,'
done | tee "$OUT/timeline.txt"
