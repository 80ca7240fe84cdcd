#!/usr/bin/env bash
# mx8 and llama.cpp decoding the same GGUF file on this machine, alternately, ROUNDS times (default 8):
# a 4-layer model of Llama-3-8B layer shapes in Q8_0 (scripts/make_synthetic_gguf.py), llama.cpp on
# the Q8_0 weights, mx8 with --weights fp8 (converted at load), 2 threads each. llama.cpp is the
# prebuilt one npm's node-llama-cpp ships (release v0.5.0; its headers come from the source bundle in
# the same package); it is fetched into WORK (default /tmp/mx8_peer_llama_cpp), never into the tree.
# Needs npm and a built mx8 (bash scripts/setup.sh). docs/PERF.md, decode-cpu-model, has a run.
set -euo pipefail
R=$(cd "$(dirname "$0")/.." && pwd)
source "$R/scripts/llama_cpp_env.sh"  # enters WORK; sets llama_cpp_link
g++ -O2 -std=c++17 "$R/scripts/peer_llama_cpp_decode.cpp" "${llama_cpp_link[@]}" -o peer_decode
[ -f synth4L-q8_0.gguf ] ||
  python3 "$R/scripts/make_synthetic_gguf.py" --donor "$R/models/stories260K.gguf" --out synth4L-q8_0.gguf
for i in $(seq 1 "${ROUNDS:-8}"); do
  ./peer_decode synth4L-q8_0.gguf 37 2 2>/dev/null
  "$R/build/release/mx8" bench decode --model synth4L-q8_0.gguf --weights fp8 --tokens 32 --no-perf-md 2>/dev/null |
    grep '^| fp8'
done
