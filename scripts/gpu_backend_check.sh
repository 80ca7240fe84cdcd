#!/usr/bin/env bash
# The CUDA backend's GPU evidence in one device call (owned by the cudabackend engineer):
#   backend tests vs the CPU backend -> stories260K greedy golden (test + `mx8 run --device cuda`) ->
#   compute-sanitizer memcheck on the small backend tests -> `mx8 bench decode-cuda` -> logs in $OUT.
# Usage (device tool): run(command="bash scripts/gpu_backend_check.sh", carry=[".carry/cudabackend"])
# CARRY=.carry/<dir> selects another carried folder (pack and run), BUILD=build/<dir> the build to pack.
#
# The binaries are built on the development machine (2 cores there are slow, but device time is
# scarcer) and carried in .carry/cudabackend (git-ignored): `scripts/gpu_backend_check.sh --pack`
# copies them from build/cudabackend. glibc 2.36 here, 2.39 there: binaries built here run there.
# Where none are carried, it builds on the GPU machine as scripts/gpu_check.sh does (system gcc,
# the carried JSON/CLI11 headers in .carry/deps).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--pack" ]]; then
  dst=${CARRY:-.carry/cudabackend}
  mkdir -p "$dst"
  src=${BUILD:-build/cudabackend}
  cp $src/mx8 $src/test_cuda "$dst"/
  strip --strip-debug "$dst"/mx8 "$dst"/test_cuda
  ls -la "$dst"
  exit 0
fi
OUT=${OUT:-$PWD/build/gpu-backend-out}
mkdir -p "$OUT"
S="$OUT/summary.txt"
: >"$S"
note() { echo "== $*" | tee -a "$S"; }
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee -a "$S"

B=${CARRY:-.carry/cudabackend}
if [[ ! -x $B/test_cuda || ! -x $B/mx8 ]]; then
  note "no carried binaries: building on the GPU machine"
  export CC=/usr/bin/gcc CXX=/usr/bin/g++
  B=build/gpu-backend
  prefix=""
  [[ -d .carry/deps/usr ]] && prefix="-DCMAKE_PREFIX_PATH=$PWD/.carry/deps/usr"
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DMX8_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
    -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ $prefix >"$OUT/build.log" 2>&1 &&
    cmake --build $B -j"$(nproc)" --target mx8_cli test_cuda >>"$OUT/build.log" 2>&1
  note "build rc=$? ($((SECONDS - t0)) s)"
fi
ldd $B/test_cuda | grep -E "not found" | tee -a "$S"

note "backend tests ($((SECONDS - t0)) s)"
timeout 150 $B/test_cuda --gtest_color=no --gtest_filter='CudaVsCpu.*:CudaStoriesGolden.*:CudaDecodeGraphs.*' >"$OUT/tests.log" 2>&1
note "tests rc=$? : $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/tests.log" | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure|agreement" -A3 "$OUT/tests.log" | head -40 | tee -a "$S"

note "mx8 run --device cuda golden ($((SECONDS - t0)) s)"
timeout 60 $B/mx8 run -m models/stories260K.gguf --device cuda --temperature 0 -n 200 >"$OUT/golden.txt" 2>"$OUT/golden.err"
rc=$?
# `mx8 run` ends its output with a newline of its own; the comparison ignores trailing newlines.
if [[ "$(cat "$OUT/golden.txt")" == "$(cat tests/data/stories260K.greedy200.txt)" ]]; then
  note "golden rc=$rc: IDENTICAL to tests/data/stories260K.greedy200.txt (trailing newline aside)"
else note "golden rc=$rc: DIFFERS"; cmp "$OUT/golden.txt" tests/data/stories260K.greedy200.txt | tee -a "$S"; fi
tail -4 "$OUT/golden.err" | tee -a "$S"

if [[ "${SKIP_SANITIZER:-0}" != 1 ]]; then
  note "compute-sanitizer memcheck ($((SECONDS - t0)) s)"
  small='CudaVsCpu.BadIndices*:CudaVsCpu.KvWrite*:CudaVsCpu.Embedding*:CudaVsCpu.AddSilu*:CudaVsCpu.Rope*'
  small+=':CudaDecodeGraphs.*:CudaVsCpu.RopeKvWrite*:CudaVsCpu.SplitAttention*'
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B/test_cuda --gtest_filter="$small" \
    >"$OUT/sanitizer.log" 2>&1
  note "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 $B/test_cuda \
    --gtest_filter='CudaVsCpu.KvWrite*:CudaVsCpu.Rmsnorm*:CudaVsCpu.AddSilu*:CudaVsCpu.RopeKvWrite*:CudaVsCpu.SplitAttention*' >>"$OUT/sanitizer.log" 2>&1
  note "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
fi

note "bench decode-cuda ($((SECONDS - t0)) s)"
cp docs/PERF.md "$OUT/PERF.md" 2>/dev/null || touch "$OUT/PERF.md"
timeout 150 $B/mx8 bench decode-cuda --perf-md "$OUT/PERF.md" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
note "bench rc=$?"
cat "$OUT/bench.log" | tee -a "$S"
if [[ "${EXTRA:-0}" == 1 ]]; then
  MX8_CUDA_WGMMA=0 timeout 60 $B/test_cuda --gtest_color=no --gtest_filter='CudaVsCpu.Matmul*' >"$OUT/tests_wgmma.log" 2>&1
  note "SIMT path for m > 16 (MX8_CUDA_WGMMA=0) matmul tests rc=$?"
  grep -E "Failure" -A6 "$OUT/tests_wgmma.log" | head -24 | tee -a "$S"
  timeout 60 $B/mx8 bench decode-cuda --weights fp8 --kv fp8 --no-perf-md >"$OUT/bench_kvfp8.log" 2>&1
  note "fp8 KV: $(grep -E 'tok/s' "$OUT/bench_kvfp8.log")"
fi
if [[ "${PDL_AB:-0}" == 1 ]]; then
  MX8_CUDA_PDL=0 timeout 60 $B/mx8 bench decode-cuda --weights fp8 --no-perf-md >"$OUT/bench_nopdl.log" 2>&1
  note "without PDL: $(grep -E 'tok/s' "$OUT/bench_nopdl.log" | tr '\n' ';')"
fi
if [[ "${DECODE_AB:-0}" == 1 ]]; then
  # The decode engineer's A/B: attention fused with rope + kv_write off; a long context (attention's share).
  MX8_CUDA_FUSED_ATTN=0 timeout 60 $B/mx8 bench decode-cuda --weights fp8 --graphs on --no-perf-md \
    >"$OUT/bench_nofusedattn.log" 2>&1
  note "fused attention off: $(grep -E 'tok/s' "$OUT/bench_nofusedattn.log" | tr '\n' ';')"
  MX8_CUDA_SPLIT_ATTN=0 timeout 90 $B/mx8 bench decode-cuda --context 4096 --no-perf-md >"$OUT/bench_ctx4096.log" 2>&1
  note "context 4096, split attention off: $(grep -E 'tok/s|x$' "$OUT/bench_ctx4096.log" | tr '\n' ';')"
  timeout 90 $B/mx8 bench decode-cuda --context 4096 --graphs on --no-perf-md \
    >"$OUT/bench_ctx4096_split.log" 2>&1
  note "context 4096 (split attention): $(grep -E 'tok/s|x$' "$OUT/bench_ctx4096_split.log" | tr '\n' ';')"
fi
note "done ($((SECONDS - t0)) s)"
