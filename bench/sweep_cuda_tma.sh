#!/bin/bash
# One device call for the producer (TMA) forward kernel: its GPU tests and the default ones, compute-sanitizer on
# its small cases, and the harness A/B (defaults vs SPLAT_CUDA_TMA=1 variants, interleaved rounds in one process).
# Binaries: .carry/cuda-fwd (test_cuda_attention, splat_cuda_bench copied from a build dir). Logs under $OUT.
#   bash bench/sweep_cuda_tma.sh [smoke] [tests] [alltests] [ab] [dense] [sanitize] [pybuild] [pybench]
# pybuild builds the Python package with CUDA from .carry/cuda-fwd/src.tar.gz (git archive of the commit to measure);
# pybench runs bench/bench_cuda.py --binding (splat through splat.torch, Flex, cuDNN in one process, interleaved).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/build-gpu-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$ROOT/build-cache}"
BIN="$ROOT/.carry/cuda-fwd"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(smoke tests ab dense sanitize)
VARIANTS=${VARIANTS:-"SPLAT_CUDA_TMA=1,SPLAT_CUDA_TMA=1;SPLAT_CUDA_PINGPONG=0"}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
(cd "$ROOT" && git log -1 --format='commit %H %s' 2>/dev/null) | tee -a "$OUT/device.txt"
for s in "${STEPS[@]}"; do
  echo "=== $s ($(date +%T))"
  case "$s" in
    smoke)  # the small cases first: a hang or fault stops the call here instead of in every later step
      timeout 45 "$BIN/test_cuda_attention" --gtest_filter=CudaAttention.ProducerKernelTmaSmall >"$OUT/smoke.log" 2>&1
      rc=$?
      echo "smoke rc=$rc"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|naive error|error" "$OUT/smoke.log" | head -12
      [ $rc -ne 0 ] && { echo "smoke failed: stopping"; break; } ;;
    tests)
      timeout ${TEST_TIMEOUT:-150} "$BIN/test_cuda_attention" --gtest_filter="${TEST_FILTER:-CudaAttention.ProducerKernelTma*:CudaAttention.SuiteSmall:CudaAttention.MorePatternsAndCompositions}" >"$OUT/tests.log" 2>&1
      echo "tests rc=$?"
      grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[       OK|Failure|naive error|error" "$OUT/tests.log" | head -30 ;;
    alltests)
      timeout ${TEST_TIMEOUT:-150} "$BIN/test_cuda_attention" >"$OUT/alltests.log" 2>&1
      echo "alltests rc=$?"
      grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[       OK|Failure|naive error" "$OUT/alltests.log" | head -30 ;;
    pybuild)
      src=/tmp/splat-src && rm -rf $src && mkdir -p $src && tar -xzf "$BIN/src.tar.gz" -C $src
      export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
      timeout ${BUILD_TIMEOUT:-200} python3 -m pip install --no-build-isolation --no-deps -q -C cmake.define.SPLAT_WITH_CUDA=ON \
        -C build-dir=/tmp/splat-build $src >"$OUT/pybuild.log" 2>&1
      echo "pybuild rc=$? ($SECONDS s)"; tail -3 "$OUT/pybuild.log" ;;
    pybench)  # dense/causal against cuDNN first (no Flex: fast), then the bands against Flex and cuDNN
      (cd /tmp && timeout ${PYDENSE_TIMEOUT:-80} python3 "$ROOT/bench/bench_cuda.py" --binding --sizes 8192 --dims 128 \
        --batch 2 --specs dense=dense,causal=causal --no-flex --reps ${PYREPS:-30} --rounds 3 \
        --variants SPLAT_CUDA_TMA=0 --out "$OUT/py_dense.md" 2>"$OUT/py_dense.err")
      echo "pybench dense rc=$?"; grep -v "^{" "$OUT/py_dense.err" | tail -3
      (cd /tmp && timeout ${PYBENCH_TIMEOUT:-200} python3 "$ROOT/bench/bench_cuda.py" --binding --sizes 16384,4096 \
        --dims 128,64 --only window,causal_window,blocked --reps ${PYREPS:-30} --rounds 3 --variants SPLAT_CUDA_TMA=0 \
        --out "$OUT/py_bands.md" 2>"$OUT/py_bands.err")
      echo "pybench bands rc=$?"; grep -v "^{" "$OUT/py_bands.err" | tail -3
      cat "$OUT"/py_*.md 2>/dev/null ;;
    sanitize)
      for tool in memcheck racecheck synccheck; do
        timeout ${SAN_TIMEOUT:-60} compute-sanitizer --tool $tool --print-limit 10 "$BIN/test_cuda_attention" \
          --gtest_filter=CudaAttention.ProducerKernelTmaSmall >"$OUT/sanitizer_$tool.log" 2>&1
        echo "$tool rc=$?"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Hazard|PASSED|FAILED|Error" "$OUT/sanitizer_$tool.log" | head -6
      done ;;
    ab)
      timeout ${AB_TIMEOUT:-200} "$BIN/splat_cuda_bench" --sizes 4096,16384 --dims 64,128 --only "${ONLY:-window,causal_window,blocked}" \
        --reps 30 --rounds 2 --cold 0 --variants "$VARIANTS" >"$OUT/ab.jsonl" 2>"$OUT/ab.err"
      echo "ab rc=$?"; tail -3 "$OUT/ab.err" ;;
    dense)
      timeout ${DENSE_TIMEOUT:-100} "$BIN/splat_cuda_bench" --sizes 8192 --dims 128 --batch 2 --specs dense=dense,causal=causal \
        --reps 20 --rounds 2 --cold 0 --variants "$VARIANTS" >"$OUT/dense.jsonl" 2>"$OUT/dense.err"
      echo "dense rc=$?"; tail -3 "$OUT/dense.err" ;;
  esac
done
for f in "$OUT"/ab.jsonl "$OUT"/dense.jsonl; do
  [ -f "$f" ] && python3 -c "
import json
for l in open('$f'):
    r=json.loads(l); print('%-14s N=%-6d D=%-4d %-40s %8.4f ms %6.1f TF/s err %.4f rounds %s %s'%(r['pattern'],r['n'],r['D'],r['variant'] or 'default',r['splat_ms'],r['tflops'],r['max_err'],r['round_ms'],r['kernel']))"
done
