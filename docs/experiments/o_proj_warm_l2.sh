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
# Each entry is KB or KB:FLAGS; flag d sets MX8_WARM_DEMOTE=1 (the previous regions back to evict_normal),
# flag c MX8_WARM_CP=1 (the copies by cp.async instead of loads).
sizes=${WARM_LIST:-0 16384 8192}
with() {  # with ENTRY CMD...: runs CMD under the entry's environment
  local e=$1 flags=
  shift
  [[ $e == *:* ]] && flags=${e#*:}
  MX8_WARM_KB=${e%%:*} MX8_WARM_DEMOTE=$([[ $flags == *d* ]] && echo 1 || echo 0) \
    MX8_WARM_CP=$([[ $flags == *c* ]] && echo 1 || echo 0) "$@"
}
for round in 1 2; do
  for e in $sizes; do
    with "$e" $bench >"$OUT/run.txt" 2>&1
    cat "$OUT/run.txt" >>"$OUT/runs.txt"
    echo "round $round, $e: $(grep -m1 -E 'tok/s' "$OUT/run.txt" || tail -2 "$OUT/run.txt")"
  done
done | tee "$OUT/ab.txt"
for e in $sizes; do
  echo "== $e"
  with "$e" $bench --timeline 10 2>&1 | grep -A10 '^timeline,'
done | tee "$OUT/timeline.txt"
