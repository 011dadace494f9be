#!/usr/bin/env bash
# Every GPU test in one device call, on binaries built here (no GPU needed to build):
#   bash scripts/gpu-verify.sh --stage      # dev machine: build the GPU test binaries + CLI into .carry/verify
#   bash scripts/gpu-verify.sh [--no-python] # GPU machine (carry .carry/verify): C++ GPU tests (the attention
#                                            # tests with each kernel family), compute-sanitizer, `splat demo`,
#                                            # then the Python tests built there with CUDA (tests/python/run_gpu.sh)
# SPLAT_VERIFY_BUILD=DIR stages from an existing build dir; VERIFY_AB="strided,bigbird" also times those
# patterns with and without two-segment spans (SPLAT_CUDA_MERGE=0), alternating, into $OUT/ab.jsonl.
# Logs go to $OUT/verify-logs.tgz (a remote run may bring back only a few files) and the summary to $OUT/summary.txt.
# Exit status: the number of failed steps.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.carry/verify"
tests=(test_cuda_attention test_cuda_workspace test_cuda_codegen test_flurka_cuda)
if [ "${1:-}" = "--stage" ]; then
  build="${SPLAT_VERIFY_BUILD:-$root/build-verify}"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSPLAT_WITH_CUDA=ON >/dev/null &&
    cmake --build "$build" -j2 --target "${tests[@]}" splat_cli splat_cuda_bench || exit 1
  mkdir -p "$bin"
  for t in "${tests[@]}"; do cp "$build/tests/cpp/$t" "$bin/"; done
  cp "$build/bin/splat" "$build/src/jit/splat_cuda_bench" "$bin/"
  cp /lib/x86_64-linux-gnu/libgomp.so.1 "$bin/"
  git -C "$root" log -1 --format=%H >"$bin/commit.txt"
  git -C "$root" status --short --untracked-files=no >>"$bin/commit.txt"
  exit 0
fi
RESULTS=${OUT:-$root/build-verify-out}
OUT=$root/build-verify-logs
mkdir -p "$OUT" "$RESULTS"
export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$root/build-cache}"
fails=0 summary=()
step() {  # step NAME TIMEOUT CMD...: runs CMD with its log in $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || fails=$((fails + 1))
  summary+=("$name rc=$rc $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$name.log" | tr -s ' ' | tr '\n' ' ')")
  grep -E "Failure|Which is|naive error|FAILED" "$OUT/$name.log" | head -10
}
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  echo "binaries from commit $(head -1 "$bin/commit.txt") (dirty files below, if any)"
  tail -n +2 "$bin/commit.txt"
} | tee "$OUT/device.txt"
for t in test_cuda_attention test_cuda_workspace test_cuda_codegen test_flurka_cuda; do step "$t" 300 "$bin/$t"; done
SPLAT_CUDA_TILE=128x64 step attention_128rows 300 "$bin/test_cuda_attention"
SPLAT_CUDA_WGMMA=0 step attention_mma_sync 300 "$bin/test_cuda_attention"
for tool in memcheck racecheck; do
  step "sanitize_$tool" 300 compute-sanitizer --tool $tool --print-limit 20 "$bin/test_cuda_attention" \
    --gtest_filter=CudaAttention.SuiteSmall
  summary+=("  $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_$tool.log" | tail -1)")
done
step demo 300 "$bin/splat" demo
if [ -n "${VERIFY_AB:-}" ]; then
  for round in 1 2; do
    for merge in 1 0; do
      SPLAT_CUDA_MERGE=$merge timeout 200 "$bin/splat_cuda_bench" --sizes 4096,16384 --dims 64,128 --only "$VERIFY_AB" \
        --reps 50 2>>"$OUT/ab.err" | sed "s/^/merge=$merge round=$round /" >>"$RESULTS/ab.jsonl"
    done
  done
  summary+=("  A/B rows: $(wc -l <"$RESULTS/ab.jsonl")")
fi
summary+=("  demo: $(grep -E 'patterns, .* failed' "$OUT/demo.log"); $(grep -m1 -i 'backend' "$OUT/demo.log")")
if [ "${1:-}" != "--no-python" ]; then
  mkdir -p "$OUT/python"
  step python 500 env OUT="$OUT/python" SPLAT_PY_BENCH=0 bash "$root/tests/python/run_gpu.sh"
  summary+=("  $(grep -E 'passed|failed' "$OUT/python.log" | tail -1)")
fi
printf '%s\n' "${summary[@]}" | tee "$RESULTS/summary.txt"
tar czf "$RESULTS/verify-logs.tgz" -C "$OUT" .
exit $fails
