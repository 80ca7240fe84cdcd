#!/usr/bin/env bash
# Runs one command again and again for a while with GPU core dumps on, and names the kernel behind any
# device fault it hits (docs/CUDA_BACKEND.md, "When the GPU stops"). For faults that come once in tens
# of runs: the dumps do not change the timing that such faults need, as a sanitizer would.
#
# Usage: scripts/gpu_fault_hunt.sh SECONDS COMMAND [ARGS...]
#   e.g. scripts/gpu_fault_hunt.sh 300 build/cuda/mx8 bench serve --device cuda --clients 1,4,16 ...
# Prints one line per run, then for up to three dumps: the exception, the kernels resident at the time,
# the faulting thread's source line and the SASS around it (cuda-gdb, which the GPU machine has).
# Exits 1 if any run failed. Dumps and logs go to $HUNT_DIR (default: a fresh temporary folder).
set -uo pipefail
if [ $# -lt 2 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS COMMAND [ARGS...]" >&2
  exit 2
fi
seconds=$1
shift
dir=${HUNT_DIR:-$(mktemp -d)}
mkdir -p "$dir"
export CUDA_ENABLE_COREDUMP_ON_EXCEPTION=1 CUDA_COREDUMP_FILE="$dir/core.%p"
# Without device memory in them, dumps are a few MB.
export CUDA_COREDUMP_GENERATION_FLAGS=skip_nonrelocated_elf_images,skip_global_memory,skip_shared_memory,skip_local_memory,skip_constbank_memory

end=$((SECONDS + seconds))
runs=0
failed=0
while [ $SECONDS -lt $end ]; do
  runs=$((runs + 1))
  t0=$SECONDS
  if "$@" >"$dir/run.$runs.log" 2>&1; then
    echo "run $runs ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    echo "run $runs FAILED ($((SECONDS - t0)) s), log $dir/run.$runs.log"
  fi
done
echo "== $runs runs, $failed failed ($dir)"

shown=0
for core in "$dir"/core.*; do
  [ -e "$core" ] || continue
  [ $shown -lt 3 ] || break
  shown=$((shown + 1))
  echo "== $core"
  if command -v cuda-gdb >/dev/null; then
    cuda-gdb -batch -ex "target cudacore $core" -ex "info cuda kernels" -ex bt -ex 'x/14i $pc-0x70' 2>&1 |
      grep -v '^$' | head -60
  else
    echo "(no cuda-gdb here: read it with cuda-gdb -ex \"target cudacore $core\")"
  fi
done
[ $failed -eq 0 ]
