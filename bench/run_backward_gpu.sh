#!/usr/bin/env bash
# The CUDA backward's GPU checks and timings in one device call, on binaries built here (no GPU needed to build):
#   bash bench/run_backward_gpu.sh --stage [BUILD_DIR]   # dev machine: copy the binaries into .carry/bwd
#   bash bench/run_backward_gpu.sh tests|sanitize|check|bench|all [bench args...]   # GPU machine (carry .carry/bwd)
# tests: the backward / lse / padding tests (parallel groups, both modes) and the forward tests; sanitize:
# compute-sanitizer memcheck and racecheck on the backward at small N (SANITIZE_FILTER, default both modes' sets);
# check: tests and sanitize at once; bench: splat_backward_bench (args passed on). BWD_GROUPS (e.g. "0 4 5 6") picks
# test_cuda_backward's groups and leaves out the forward and mma.sync runs; SPLAT_CACHE_DIR may point to a kernel
# cache filled beforehand (kernels compile without a GPU).
# Logs and results go to $OUT (or build-bwd-out); the summary to $OUT/summary.txt. Exit status: failed steps.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.carry/bwd"
if [ "${1:-}" = "--stage" ]; then
  build="${2:-$root/build-cuda}"
  mkdir -p "$bin"
  for t in test_cuda_backward test_cuda_attention test_cuda_workspace; do cp "$build/tests/cpp/$t" "$bin/"; done
  cp "$build/src/jit/splat_backward_bench" "$bin/"
  cp /lib/x86_64-linux-gnu/libgomp.so.1 "$bin/"
  git -C "$root" log -1 --format=%H >"$bin/commit.txt"
  git -C "$root" status --short --untracked-files=no -- include/splat/device src/jit src/backends/cuda >>"$bin/commit.txt"
  exit 0
fi
mode=${1:-all}
shift || true
R=${OUT:-$root/build-bwd-out}
mkdir -p "$R"
export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$root/build-cache}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$R/device.txt"
cat "$bin/commit.txt" >>"$R/device.txt"
fails=0
summary() { echo "$1 rc=$2 $(grep -E '^\[  (PASSED|FAILED) |tests? ran' "$R/$1.log" | tr -s ' ' | tr '\n' ' ')"; }
# Timeouts (seconds): T_TEST per test process, T_SAN per sanitizer run, T_BENCH for the timed bench run.
t_test=${T_TEST:-420} t_san=${T_SAN:-300} t_bench=${T_BENCH:-500}
pids=()
names=()
if [ "$mode" = sanitize ] || [ "$mode" = check ] || [ "$mode" = all ]; then  # beside the tests: the sanitizers are slow, not GPU-bound
  for tool in memcheck racecheck; do
    timeout $t_san compute-sanitizer --tool $tool --print-limit 20 "$bin/test_cuda_backward" \
      --gtest_filter="${SANITIZE_FILTER:-CudaBackward.SanitizerSet*}" >"$R/sanitize_$tool.log" 2>&1 &
    pids+=($!)
    names+=("sanitize_$tool")
  done
fi
if [ "$mode" = tests ] || [ "$mode" = check ] || [ "$mode" = all ]; then
  b=CudaBackward
  nd=CudaBackwardNonDeterministic
  groups=("$b.SuiteSmall:$b.SanitizerSet*:$b.Deterministic:$b.GraphCapture*:$b.ArgumentErrors:$b.OutputsOverlapping*:CudaLse.*"
    "$b.SuiteDtypesAndHeadDims" "$b.MorePatternsAndCompositions:$b.ExplicitMask*"
    "$b.OddSequenceLengths:$b.GqaAndStridedLayouts:$b.KeyLengths" "$nd.Suite" "$nd.OddLengthsGqaPaddingAndEmptyRows"
    "$nd.DkDvBitwiseDqCloseAndWorkspace:$nd.GraphCapture")
  for g in ${BWD_GROUPS:-${!groups[@]}}; do
    timeout $t_test "$bin/test_cuda_backward" --gtest_filter="${groups[$g]}" >"$R/backward$g.log" 2>&1 &
    pids+=($!)
    names+=("backward$g")
  done
  if [ -z "${BWD_GROUPS:-}" ]; then
    timeout $t_test "$bin/test_cuda_attention" >"$R/attention.log" 2>&1 &
    pids+=($!)
    timeout $t_test "$bin/test_cuda_workspace" >"$R/workspace.log" 2>&1 &
    pids+=($!)
    SPLAT_CUDA_WGMMA=0 timeout $t_test "$bin/test_cuda_backward" \
      --gtest_filter="$b.SuiteSmall:$b.KeyLengths:$b.GqaAndStridedLayouts:$b.SuiteDtypesAndHeadDims:$nd.DkDv*" \
      >"$R/mma_sync.log" 2>&1 &
    pids+=($!)
    names+=(attention workspace mma_sync)
  fi
fi
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  rc=$?
  [ $rc -eq 0 ] || fails=$((fails + 1))
  case "${names[$i]}" in
    sanitize_*)
      echo "${names[$i]} rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$R/${names[$i]}.log" | tail -1)" |
        tee -a "$R/summary.txt"
      ;;
    *) summary "${names[$i]}" $rc | tee -a "$R/summary.txt" ;;
  esac
  grep -E "Failure|Which is|naive error|error:|Expected|ERROR" "$R/${names[$i]}.log" | head -12
done
if [ "$mode" = bench ] || [ "$mode" = all ]; then
  # Fill the kernel cache first, one process per pattern (NVRTC is serial within a process).
  for p in window causal_window dilated strided blocked longformer bigbird; do
    timeout 300 "$bin/splat_backward_bench" "$@" --reps 1 --only $p >/dev/null 2>&1 &
  done
  wait
  timeout $t_bench "$bin/splat_backward_bench" "$@" >"$R/bench.jsonl" 2>"$R/bench.err"
  rc=$?
  [ $rc -eq 0 ] || fails=$((fails + 1))
  echo "bench rc=$rc rows=$(wc -l <"$R/bench.jsonl")" | tee -a "$R/summary.txt"
  cat "$R/bench.jsonl"
  tail -3 "$R/bench.err"
fi
exit $fails
