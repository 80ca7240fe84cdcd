#!/usr/bin/env bash
# The whole GPU check in one command, for the lent H200 (one `run` call of the device tool):
#   build the CUDA preset -> CUDA tests -> compute-sanitizer (memcheck, racecheck) on small tests ->
#   benchmarks (mx8 bench cuda) -> logs and the updated docs/PERF.md under $OUT.
# Usage (device tool): run(command="bash scripts/gpu_check.sh", carry=[".carry"])
# Locally, OUT defaults to build/gpu-check-out. Stages: GPU_CHECK_STAGES="build test sanitize bench".
#
# The GPU machine has nvcc, cmake, ninja and gtest but not the nlohmann-json, CLI11 or cpp-httplib
# -dev packages: they travel in .carry/deps (git-ignored), prepared once on the development machine
# (httplib's .pc made relocatable and its private requirements dropped; its headers include OpenSSL's,
# zlib's and brotli's, and its library needs libbrotli at run time):
#   mkdir -p .carry/deps && cd .carry && apt-get download nlohmann-json3-dev libcli11-dev \
#     libcpp-httplib-dev libcpp-httplib0.11 libbrotli1 libssl-dev zlib1g-dev libbrotli-dev && \
#     for f in *.deb; do dpkg -x "$f" deps; done && find deps -name '*.a' -delete && \
#     sed -i 's|^prefix=/usr|prefix=${pcfiledir}/../../..|; /^Requires.private/d; \
#       s|^Cflags: -I${includedir} |&-I${includedir}/x86_64-linux-gnu |' \
#       deps/usr/lib/x86_64-linux-gnu/pkgconfig/cpp-httplib.pc
# Env knobs: GPU_CHECK_STANDALONE=1 builds only the CUDA parts (scripts/gpu_check/CMakeLists.txt);
# GPU_CHECK_AB_SPLITK=1, GPU_CHECK_NOSTORE=1, GPU_CHECK_TILES_SMALL/LARGE="64x64 64x64w2 ..." add
# experiments (stage "exp") to $OUT/experiments.log.
# CC/CXX there are wrappers that link libstdc++ statically (../shared/DESIGN.md): use the system gcc.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build/gpu-check-out}
mkdir -p "$OUT"
STAGES=${GPU_CHECK_STAGES:-"build test sanitize bench"}
BUILD=build/gpu
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "== $*" | tee -a "$SUMMARY"; }
t0=$SECONDS

export CC=/usr/bin/gcc CXX=/usr/bin/g++
# libcpp-httplib's own dependencies (brotli) are found through the loader path, not the binary's RUNPATH.
[[ -d .carry/deps/usr ]] && export LD_LIBRARY_PATH="$PWD/.carry/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv \
  2>&1 | tee -a "$SUMMARY"

if [[ " $STAGES " == *" build "* ]]; then
  note "configure + build ($((SECONDS - t0)) s)"
  prefix=""
  [[ -d .carry/deps/usr ]] && prefix="-DCMAKE_PREFIX_PATH=$PWD/.carry/deps/usr"
  if [[ -n "${GPU_CHECK_STANDALONE:-}" ]]; then
    note "GPU_CHECK_STANDALONE set: skipping the full preset"
    false
  else
    cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DMX8_CUDA=ON \
    -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ $prefix \
    >"$OUT/build.log" 2>&1 && cmake --build $BUILD -j"$(nproc)" --target mx8_cli test_cuda >>"$OUT/build.log" 2>&1
  fi
  rc=$?
  grep -E "ptxas info +: (Compiling|Used)|spill" "$OUT/build.log" | grep -B1 -A1 "sm90\|Used" >"$OUT/ptxas.txt" || true
  note "build rc=$rc; spills: $(grep -c 'bytes spill stores' "$OUT/ptxas.txt") reports, non-zero: $(grep -E '[1-9][0-9]* bytes spill' "$OUT/ptxas.txt" | wc -l); wgmma serialization warnings: $(grep -c 'C75[0-9][0-9]' "$OUT/build.log")"
  if [[ $rc -ne 0 ]]; then
    grep -E "error" -A3 "$OUT/build.log" | head -20
    note "full preset failed: building the CUDA parts alone (scripts/gpu_check/CMakeLists.txt)"
    BUILD=build/gpu-standalone
    cmake -S scripts/gpu_check -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ $prefix \
      >>"$OUT/build.log" 2>&1 && cmake --build $BUILD -j"$(nproc)" >>"$OUT/build.log" 2>&1
    rc=$?
    grep -E "ptxas info +: (Compiling|Used)|spill" "$OUT/build.log" >"$OUT/ptxas.txt" || true
    note "standalone build rc=$rc; non-zero spills: $(grep -E '[1-9][0-9]* bytes spill' "$OUT/ptxas.txt" | wc -l); wgmma serialization warnings: $(grep -c 'C75[0-9][0-9]' "$OUT/build.log")"
    if [[ $rc -ne 0 ]]; then grep -E "error" -A3 "$OUT/build.log" | tail -40; exit 1; fi
  fi
fi

if [[ " $STAGES " == *" test "* ]]; then
  note "tests ($((SECONDS - t0)) s)"
  # The kernel suites (the backend's own tests, also in test_cuda, belong to the backend check).
  timeout 180 $BUILD/test_cuda --gtest_color=no --gtest_filter="${GPU_CHECK_TEST_FILTER:-CudaQuantize.*:CudaGemm*}" \
    >"$OUT/tests.log" 2>&1
  trc=$?
  note "test_cuda rc=$trc : $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/tests.log" | tr '\n' ' ')"
  grep -E "FAILED|Failure|error" -A4 "$OUT/tests.log" | head -60
  if [[ $trc -eq 124 ]]; then note "tests timed out (a hang?): skipping the rest"; tail -20 "$OUT/tests.log"; exit 1; fi
fi

if [[ " $STAGES " == *" sanitize "* ]]; then
  note "compute-sanitizer ($((SECONDS - t0)) s)"
  small='CudaGemmFp8.HeuristicTilesOnRaggedShapes:CudaGemmMxfp8.*:CudaQuantize.ActivationQuantizer*'
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 $BUILD/test_cuda --gtest_filter="$small" \
    >"$OUT/sanitizer.log" 2>&1
  note "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  timeout 240 compute-sanitizer --tool racecheck --error-exitcode 9 $BUILD/test_cuda \
    --gtest_filter='CudaGemmFp8.HeuristicTilesOnRaggedShapes:CudaQuantize.ActivationQuantizer*' >>"$OUT/sanitizer.log" 2>&1
  note "racecheck rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1)"
fi

if [[ " $STAGES " == *" bench "* ]]; then
  note "benchmarks ($((SECONDS - t0)) s)"
  cp docs/PERF.md "$OUT/PERF.md" 2>/dev/null || true
  timeout 400 $BUILD/mx8 bench cuda --perf-md "$OUT/PERF.md" ${GPU_CHECK_BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
  note "bench rc=$?"
  grep -E "geomean|error" "$OUT/bench.log" | tee -a "$SUMMARY"
  # The other comparator the issue names: cuBLASLt through torch._scaled_mm (needs PyTorch).
  timeout 200 python3 scripts/peer_torch_scaled_mm.py --perf-md "$OUT/PERF.md" >"$OUT/torch_peer.log" 2>&1
  note "torch._scaled_mm peer rc=$? $(grep -E 'geomean|peer_torch' "$OUT/torch_peer.log" | tr '\n' ' ')"
fi
if [[ " $STAGES " == *" exp "* ]]; then
  # Experiments for docs/CUDA.md: the K loop alone (MX8_GEMM_DEBUG=1 skips the output stores), and
  # forced tile shapes against the heuristic's choice.
  note "experiments ($((SECONDS - t0)) s)"
  {
    if [[ -n "${GPU_CHECK_AB_SPLITK:-}" ]]; then
      echo "## A/B: heuristic without the split-K tiles (MX8_GEMM_NO_SPLITK=1), M=64 128"
      MX8_GEMM_NO_SPLITK=1 timeout 90 $BUILD/mx8 bench cuda-gemm --m 64 128 --no-perf-md --iters 20
      echo "## A/B: heuristic without the split-K tiles, GEMV M=1 16"
      MX8_GEMM_NO_SPLITK=1 timeout 90 $BUILD/mx8 bench cuda-gemv --m 1 16 --no-perf-md --iters 20
    fi
    if [[ -n "${GPU_CHECK_NOSTORE:-}" ]]; then
      echo "## no stores (mainloop only), M=4096"
      MX8_GEMM_DEBUG=1 timeout 120 $BUILD/mx8 bench cuda-gemm --m 4096 --no-perf-md --iters 10
    fi
    for t in ${GPU_CHECK_TILES_SMALL-64x16 64x32 64x64 64x192w2 64x64w2c2 128x32 128x64 128x128c2}; do
      echo "## forced tile $t, M=64"
      timeout 60 $BUILD/mx8 bench cuda-gemm --m 64 --tile "$t" --no-perf-md --iters 10
    done
    for t in ${GPU_CHECK_TILES_LARGE-128x128 128x192 192x128 256x128}; do
      echo "## forced tile $t, M=4096"
      timeout 90 $BUILD/mx8 bench cuda-gemm --m 4096 --tile "$t" --no-perf-md --iters 10
    done
  } >"$OUT/experiments.log" 2>&1
  note "experiments rc=$?"
fi
note "done ($((SECONDS - t0)) s)"
