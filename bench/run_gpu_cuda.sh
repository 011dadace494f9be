#!/bin/bash
# One device call for the CUDA backend: GPU tests, compute-sanitizer (memcheck + racecheck on every suite
# pattern at small N) and the benchmark, logs under $OUT. Binaries: .carry/cuda (built on the dev machine
# by `bench/run_gpu_cuda.sh --stage`) or, when absent, built here with cmake + ninja.
#   bash bench/run_gpu_cuda.sh [tests] [sanitize] [harness] [bench] [--sizes 4096,16384] [--dims 64,128]
# Tuning knobs (JIT: each variant is generated and compiled on the fly): SPLAT_CUDA_TILE=BMxBN,
# SPLAT_CUDA_STAGES, SPLAT_CUDA_MINBLOCKS, SPLAT_CUDA_MERGE=0 (no two-segment spans), SPLAT_CUDA_TMA=0|1 (producer kernel
# off / on for every contiguous plan), SPLAT_CUDA_TMA_BN, SPLAT_CUDA_PINGPONG=0; bench/sweep_cuda_tiles.sh and
# bench/sweep_cuda_tma.sh sweep them.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--stage" ]; then  # on the dev machine: build and stage the binaries to carry
  ninja -C "$ROOT/build-cuda" test_cuda_attention test_cuda_codegen splat_cuda_bench || exit 1
  mkdir -p "$ROOT/.carry/cuda"
  cp "$ROOT"/build-cuda/tests/cpp/test_cuda_attention "$ROOT"/build-cuda/tests/cpp/test_cuda_codegen \
     "$ROOT"/build-cuda/src/jit/splat_cuda_bench "$ROOT/.carry/cuda/"
  exit 0
fi
OUT=${OUT:-$ROOT/build-gpu-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$ROOT/build-cache}" PYTHONUNBUFFERED=1
SIZES=4096,16384 DIMS=64,128 STEPS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES=$2; shift ;;
    --dims) DIMS=$2; shift ;;
    *) STEPS+=("$1") ;;
  esac
  shift
done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests sanitize bench)
BIN="$ROOT/.carry/cuda"
if [ ! -x "$BIN/test_cuda_attention" ]; then
  BIN="$ROOT/build-gpu/bin-cuda"
  cmake -S "$ROOT" -B "$ROOT/build-gpu" -G Ninja -DSPLAT_BUILD_TESTS=ON >"$OUT/build.log" 2>&1 &&
    ninja -C "$ROOT/build-gpu" test_cuda_attention splat_cuda_bench >>"$OUT/build.log" 2>&1 || {
    tail -40 "$OUT/build.log"
    exit 1
  }
  mkdir -p "$BIN" && cp "$ROOT"/build-gpu/tests/cpp/test_cuda_attention "$ROOT"/build-gpu/src/jit/splat_cuda_bench "$BIN/"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
(cd "$ROOT" && git log -1 --format='commit %H %s' 2>/dev/null) | tee -a "$OUT/device.txt"
for s in "${STEPS[@]}"; do
  echo "=== $s ($(date +%T))"
  case "$s" in
    tests)
      timeout 300 "$BIN/test_cuda_attention" >"$OUT/test_cuda_attention.log" 2>&1
      echo "test_cuda_attention rc=$?"
      grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|error|Which is|naive error" "$OUT/test_cuda_attention.log" | head -40 ;;
    sanitize)
      for tool in memcheck racecheck; do
        timeout 240 compute-sanitizer --tool $tool --print-limit 20 "$BIN/test_cuda_attention" \
          --gtest_filter=CudaAttention.SuiteSmall >"$OUT/sanitizer_$tool.log" 2>&1
        echo "$tool rc=$?"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$OUT/sanitizer_$tool.log" | tail -4
      done ;;
    harness)
      TAG=${SPLAT_CUDA_TILE:-default}${SPLAT_CUDA_MINBLOCKS:+_mb$SPLAT_CUDA_MINBLOCKS}
      echo "tile $TAG"
      timeout 400 "$BIN/splat_cuda_bench" --sizes "$SIZES" --dims "$DIMS" >"$OUT/harness_$TAG.jsonl" 2>"$OUT/harness_$TAG.err"
      echo "harness rc=$?"; tail -3 "$OUT/harness_$TAG.err"
      python3 -c "
import json,sys
for l in open('$OUT/harness_$TAG.jsonl'):
    r=json.loads(l); print('%-14s N=%-6d D=%-4d %8.4f ms %6.1f TF/s waste %.2f plan %.3f ms cold %.0f ms warm %.2f ms err %.4f'%(r['pattern'],r['n'],r['D'],r['splat_ms'],r['tflops'],r['waste'],r['plan_total_ms'],r['cold_jit_ms'],r['warm_load_ms'],r['max_err']))" ;;
    bench)
      # HARNESS_JSONL: splat rows measured by an earlier `harness` step (flex compiles take most of a call)
      timeout ${BENCH_TIMEOUT:-540} python3 "$ROOT/bench/bench_cuda.py" --harness "$BIN/splat_cuda_bench" \
        ${HARNESS_JSONL:+--harness-jsonl "$HARNESS_JSONL"} --sizes "$SIZES" --dims "$DIMS" \
        --out "$OUT/bench_cuda.md" 2>"$OUT/bench_cuda.err"
      echo "bench rc=$?"; tail -5 "$OUT/bench_cuda.err" ;;
  esac
done
