#!/usr/bin/env bash
# Remakes tests/data/ggml/stories260K.Q5_0.gguf and the text llama.cpp generates from it (docs/FIXTURES.md):
# models/stories260K.gguf quantized by llama.cpp's own quantizer to Q5_0, then decoded greedily from
# BOS for 200 tokens by llama.cpp's examples/simple. llama.cpp is the prebuilt one of npm's
# node-llama-cpp 3.22.1 (release v0.5.0; headers and the example from the source bundle in the same
# package), fetched into WORK (default /tmp/mx8_peer_llama_cpp, shared with peer_llama_cpp.sh).
set -euo pipefail
R=$(cd "$(dirname "$0")/.." && pwd)
source "$R/scripts/llama_cpp_env.sh"  # enters WORK; sets llama_cpp_link
g++ -O2 -std=c++17 "$R/scripts/llama_cpp_quantize.cpp" "${llama_cpp_link[@]}" -o llama_cpp_quantize
g++ -O2 -std=c++17 llama.cpp/examples/simple/simple.cpp "${llama_cpp_link[@]}" -o llama_cpp_simple
./llama_cpp_quantize "$R/models/stories260K.gguf" stories260K.Q5_0.gguf 8 >quantize.log 2>&1  # LLAMA_FTYPE_MOSTLY_Q5_0
./llama_cpp_simple -m stories260K.Q5_0.gguf -n 200 "" 2>simple.log >simple.txt
# simple prints the BOS piece and a space first ("<s> ") and a newline last; the fixture is the text between.
python3 - "$R/tests/data/ggml/stories260K.Q5_0.llama_cpp_greedy200.txt" <<'PY'
import sys
t = open("simple.txt", "rb").read()
assert t.startswith(b"<s> ") and t.endswith(b"\n"), t[:20]
open(sys.argv[1], "wb").write(t[4:-1])
PY
cp stories260K.Q5_0.gguf "$R/tests/data/ggml/stories260K.Q5_0.gguf"
sha256sum "$R/tests/data/ggml/stories260K.Q5_0.gguf"
