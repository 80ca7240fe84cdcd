#!/usr/bin/env bash
# Forced-tile sweep of the FP8 GEMM over the DeepSeek-V3 shapes, on a GPU machine:
#   scripts/gemm_tile_sweep.sh [path/to/mx8] > sweep.txt
# One line per (tile, shape): "<tile> M N K microseconds", the format of
# tests/cuda/data/gemm_tile_sweep_h200.txt, which scripts/fit_gemm_heuristic.py fits the tile
# heuristic to. M = 64 and 128 try every compiled tile (with the cluster K split ones, cC); M = 4096
# the 128-, 192- and 256-row ones.
set -euo pipefail
MX8=${1:-./build/cuda/mx8}
sweep() {  # M, tiles...
  local m=$1
  shift
  for t in "$@"; do
    "$MX8" bench cuda-gemm --m "$m" --tile "$t" --iters 15 --mx8-only |
      awk -v t="$t" -v m="$m" '$1 == m && NF > 8 {print t, $1, $2, $3, $8}'
  done
}
small="64x16 64x32 64x64 64x128 64x16w2 64x32w2 64x64w2 64x128w2 64x192w2 64x64w2c2 64x64w2c4 64x96w2c4 128x128c2 128x128c4"
sweep 64 $small 128x64 128x128
sweep 128 $small 128x16 128x32 128x64 128x128 128x192
sweep 4096 128x128 128x192 256x128 192x128
