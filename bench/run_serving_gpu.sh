#!/usr/bin/env bash
# The serving GPU checks and the decode benchmark in one device call, on binaries built here (no GPU needed to build):
#   bash bench/run_serving_gpu.sh --stage BUILD_DIR WHEEL   # dev machine: test binary, libgomp, wheel -> .carry/serving
#   bash bench/run_serving_gpu.sh [bench_serving.py args...] # GPU machine (carry .carry/serving)
# There: installs the wheel, runs test_cuda_decode, compute-sanitizer memcheck on a small subset of it, and the CUDA
# tests of tests/python/test_decode.py and test_hf_decode.py at once (each under a timeout), then the benchmark
# alone. Logs, bench.jsonl and summary.txt go to $OUT (or build-serving-out); the exit status counts failed steps.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.carry/serving"
if [ "${1:-}" = "--stage" ]; then
  build="${2:?build dir}" wheel="${3:?wheel}"
  rm -rf "$bin" && mkdir -p "$bin"
  cp "$build/tests/cpp/test_cuda_decode" "$bin/"
  cp /lib/x86_64-linux-gnu/libgomp.so.1 "$bin/"
  cp "$wheel" "$bin/"
  git -C "$root" log -1 --format=%H >"$bin/commit.txt"
  git -C "$root" status --short --untracked-files=no -- include/splat src/serving python tests bench >>"$bin/commit.txt"
  du -sh "$bin"
  exit 0
fi
R=${OUT:-$root/build-serving-out}
mkdir -p "$R"
export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
export SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-/tmp/splat-cache}" XLA_PYTHON_CLIENT_PREALLOCATE=false
export SPLAT_DECODE_KERNEL="${SPLAT_DECODE_KERNEL:-split}"  # the split-KV kernel (the C++ tests run both)
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; cat "$bin/commit.txt"; } | tee "$R/device.txt"
start=$SECONDS
python3 -m pip install --no-deps -q --force-reinstall "$bin"/*.whl >"$R/install.log" 2>&1 || { tail -20 "$R/install.log"; exit 1; }
echo "installed in $((SECONDS - start))s"
fails=0
pids=() names=()
steps=" ${SERVING_STEPS:-cpp sanitize pytest bench} "  # which steps run (a later call may repeat only some)
if [[ "$steps" == *" cpp "* ]]; then
  timeout "${T_TEST:-100}" "$bin/test_cuda_decode" >"$R/cpp_tests.log" 2>&1 &
  pids+=($!) names+=(cpp_tests)
fi
[[ "$steps" == *" sanitize "* ]] && timeout "${T_SAN:-100}" compute-sanitizer --tool memcheck --print-limit 20 "$bin/test_cuda_decode" \
  --gtest_filter="${SANITIZE_FILTER:-CudaDecode.GroupsOfOneTwoFourEight:CudaDecode.BadDeviceIndicesGiveNanAndStatus:CudaDecode.GraphReplaySeesNewLengths:CudaDecode.UnalignedRowsTakeTheFirstKernel}" \
  >"$R/sanitize_memcheck.log" 2>&1 &
[[ "$steps" == *" sanitize "* ]] && pids+=($!) names+=(sanitize_memcheck)
[[ "$steps" == *" pytest "* ]] && (cd "$root/tests/python" && timeout "${T_PY:-120}" python3 -m pytest -q -k "cuda and not compiles" test_decode.py test_hf_decode.py -p no:cacheprovider) \
  >"$R/pytest.log" 2>&1 &
[[ "$steps" == *" pytest "* ]] && pids+=($!) names+=(pytest)
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  rc=$?
  [ $rc -ne 0 ] && fails=$((fails + 1))
  echo "${names[$i]} rc=$rc $(grep -E '^\[  (PASSED|FAILED) |ERROR SUMMARY|passed|failed' "$R/${names[$i]}.log" | tr -s ' ' | tr '\n' ' ')" |
    tee -a "$R/summary.txt"
done
echo "tests: $((SECONDS - start))s" | tee -a "$R/summary.txt"
if [[ "$steps" == *" bench "* ]]; then
  timeout "${T_BENCH:-150}" python3 "$root/bench/bench_serving.py" --out "$R/bench.jsonl" "$@" >"$R/bench.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && fails=$((fails + 1))
  echo "bench rc=$rc $((SECONDS - start))s" | tee -a "$R/summary.txt"
  tail -5 "$R/bench.log"
fi
cd "$R" && tar -czf logs.tar.gz ./*.log && cd - >/dev/null
exit $fails
