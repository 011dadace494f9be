#!/bin/bash
# One device call for the kernel-v6 overlap work (staged binaries, no build on the device):
# .carry/base = the previous kernel, .carry/cuda = the new one. GPU tests of the new kernel (default tiles, and
# each variant given in TESTS), then splat-only harness rows at N=16384 for each variant, alternating with the
# base so drift shows; a table of median ms per (pattern, D, variant) is printed last. Logs under $OUT.
#   [SWEEP=sweep1] bash bench/sweep_cuda_overlap.sh      (SWEEP names one of the functions below)
# Variants are environment settings of the JIT (kernel_spec.cpp): SPLAT_CUDA_OVERLAP, SPLAT_CUDA_TILE, ...
set -u
O=${OUT:-$(cd "$(dirname "$0")/.." && pwd)/build-gpu-out}
mkdir -p "$O"
export SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build-cache}" LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1
NEW=.carry/cuda BASE=.carry/base ALL=window,causal_window,blocked,dilated,strided,longformer,bigbird
BANDS=window,causal_window,blocked
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$O/device.txt"
tests() {  # $1 tag; env decides the variant
  timeout 150 $NEW/test_cuda_attention >"$O/tests_$1.log" 2>&1
  echo "tests $1 rc=$? ($(date +%T))"
  grep -E "^\[  (PASSED|FAILED) |Failure|Which is" "$O/tests_$1.log" | head -8
}
harness() {  # $1 tag, $2 binary dir, $3 --only list, $4 dims
  timeout 150 $2/splat_cuda_bench --sizes 16384 --dims $4 --only $3 --reps 50 2>>"$O/harness.err" |
    sed "s/^/$1 /" >>"$O/harness.txt"
  echo "harness $1 $3 D=$4 ($(date +%T))"
}
sweep1() {
  tests default
  SPLAT_CUDA_TILE=128x128 tests t128x128
  harness base $BASE $ALL 64,128
  harness ov $NEW $ALL 64,128
  SPLAT_CUDA_TILE=128x128 harness ov128x128 $NEW $ALL 64,128
  SPLAT_CUDA_TILE=64x128 harness ov64x128 $NEW strided,longformer,bigbird 64,128
  SPLAT_CUDA_MINBLOCKS=1 harness ov_mb1 $NEW $BANDS,longformer 64
  SPLAT_CUDA_OVERLAP=0 harness serial $NEW $BANDS 64,128
  SPLAT_CUDA_TILE=128x128 SPLAT_CUDA_OVERLAP=0 harness serial128x128 $NEW $BANDS 64,128
  harness base2 $BASE $BANDS 64,128
  harness ov2 $NEW $BANDS 64,128
}
sweep2() {  # MMAs issued before the loads (new) vs after (.carry/ov1), same tiles; new defaults; ring depth
  OV1=.carry/ov1
  tests default
  harness new $NEW $ALL 64,128
  SPLAT_CUDA_TILE=128x128 harness ov1_128x128 $OV1 $BANDS 128
  SPLAT_CUDA_TILE=128x128 harness new_128x128 $NEW $BANDS 128
  SPLAT_CUDA_TILE=128x64 harness ov1_128x64 $OV1 $BANDS 64
  SPLAT_CUDA_TILE=128x64 harness new_128x64 $NEW $BANDS 64
  harness ov1_64 $OV1 longformer,strided,bigbird 128
  harness new_64 $NEW longformer,strided,bigbird 128
  SPLAT_CUDA_TILE=128x64 SPLAT_CUDA_STAGES=4 harness new_128x64s4 $NEW $BANDS 64,128
  SPLAT_CUDA_OVERLAP=1 SPLAT_CUDA_MINBLOCKS=3 harness new_ov_mb3 $NEW longformer,strided,bigbird 64
  harness base $BASE $ALL 64,128
  SPLAT_CUDA_TILE=128x128 harness ov1_128x128b $OV1 $BANDS 128
  SPLAT_CUDA_TILE=128x128 harness new_128x128b $NEW $BANDS 128
}
sanitize() {  # $1 tag; env decides the variant. SuiteSmall (every suite pattern, N=256 and 333, D=64)
  for tool in ${TOOLS:-memcheck racecheck}; do
    timeout ${SAN_TIMEOUT:-100} compute-sanitizer --tool $tool --print-limit 20 $NEW/test_cuda_attention \
      --gtest_filter=CudaAttention.SuiteSmall >"$O/sanitizer_${tool}_$1.log" 2>&1
    echo "$tool $1 rc=$? ($(date +%T))"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$O/sanitizer_${tool}_$1.log" | tail -3
  done
}
final() {  # the default kernels: GPU tests in three configurations, sanitizers on the overlap kernel, table vs Flex.
  # (At f7510ab this step also ran the K-one-step-ahead variant, SPLAT_CUDA_KAHEAD=1; it measured 8-10% slower,
  # its last step could read V before its cp.async group completed, and it was removed after the run.)
  export PATH=/usr/local/cuda/bin:$PATH
  local t0=$SECONDS
  tests default
  SPLAT_CUDA_TILE=128x64 tests t128x64
  SPLAT_CUDA_WGMMA=0 tests mmasync
  SPLAT_CUDA_TILE=128x128 sanitize t128x128  # two warpgroups, 128-key steps, overlap
  local left=$((${BENCH_LIMIT:-270}))
  echo "bench: ${left}s at most"
  timeout $left python3 bench/bench_cuda.py --harness $NEW/splat_cuda_bench --sizes ${SIZES:-16384} --dims 64,128 \
    --out "$O/bench_cuda.md" 2>"$O/bench_cuda.err"
  echo "bench rc=$? ($(date +%T))"
  tail -3 "$O/bench_cuda.err"
  echo "total $((SECONDS - t0))s"
}
n4096() {  # N=4096 (B=4): the v6 defaults against v5 (.carry/base), two rounds; the 64x128 candidate for bigbird
  for r in 1 2; do
    for b in base:$BASE v6:$NEW; do
      timeout 150 ${b#*:}/splat_cuda_bench --sizes 4096 --dims 64,128 --only $ALL --reps 50 2>>"$O/harness.err" |
        sed "s/^/${b%%:*}$r /" >>"$O/harness.txt"
      echo "harness ${b%%:*}$r N=4096 ($(date +%T))"
    done
  done
  SPLAT_CUDA_TILE=64x128 tests t64x128
  SPLAT_CUDA_TILE=64x128 harness bb64x128 $NEW bigbird 64
  SPLAT_CUDA_TILE=64x128 timeout 60 $NEW/splat_cuda_bench --sizes 4096 --dims 64 --only bigbird --reps 50 \
    2>>"$O/harness.err" | sed "s/^/bb64x128 /" >>"$O/harness.txt"
  harness v6b $NEW bigbird 64
}
${SWEEP:-sweep1}
[ -s "$O/harness.txt" ] && python3 - "$O/harness.txt" <<'PY'
import json, sys, collections
t = collections.defaultdict(dict); tags = []
for line in open(sys.argv[1]):
    tag, js = line.split(' ', 1)
    r = json.loads(js)
    if tag not in tags: tags.append(tag)
    t[(r['pattern'], r['n'], r['D'])][tag] = '%.3f/%.4f' % (r['splat_ms'], r['max_err'])
print('ms/max_err |', ' | '.join(tags))
for k, v in t.items(): print('%-14s N=%-6d D=%-4d' % k, ' '.join('%-14s' % v.get(x, '-') for x in tags))
PY
