#!/bin/bash
# One device call for FLuRKA: GPU tests, the C++ timing harness and the PyTorch comparison, logs under $OUT.
# Binaries come from .carry/flurka (staged on the dev machine: `bash bench/run_flurka_gpu.sh --stage`).
#   bash bench/run_flurka_gpu.sh [tests] [profile] [ncu] [harness] [bwd] [bench] [causal] [--no-compile]
# bwd: the C++ harness with --backward (times and checks flurka_backward_cuda; SPLAT_FLURKA_PROFILE per kernel).
# bench: bench/bench_flurka.py (the Python bindings against torch.compile); needs the package installed.
# causal: the causal CUDA tests (experimental kernels), once under compute-sanitizer memcheck, and the causal
# forward timed by the harness beside the non-causal one.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--stage" ]; then
  cmake --build "$ROOT/build-flurka-cuda" -j2 --target test_flurka_cuda test_flurka_cuda_backward \
    test_flurka_cuda_causal flurka_bench || exit 1
  mkdir -p "$ROOT/.carry/flurka"
  cp "$ROOT"/build-flurka-cuda/tests/cpp/test_flurka_cuda "$ROOT"/build-flurka-cuda/tests/cpp/test_flurka_cuda_backward \
    "$ROOT"/build-flurka-cuda/tests/cpp/test_flurka_cuda_causal "$ROOT"/build-flurka-cuda/bin/flurka_bench \
    "$ROOT/.carry/flurka/"
  (cd "$ROOT" && git log -1 --format=%H && git status --short -- src/flurka bench include/splat/flurka.hpp) \
    >"$ROOT/.carry/flurka/commit.txt"
  cp /lib/x86_64-linux-gnu/libgomp.so.1 "$ROOT/.carry/flurka/"
  exit 0
fi
OUT=${OUT:-$ROOT/build-flurka-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BIN="${FLURKA_BIN:-$ROOT/.carry/flurka}"  # FLURKA_BIN: another staged folder
export LD_LIBRARY_PATH=$BIN:${LD_LIBRARY_PATH:-}
STEPS=() EXTRA=()
for a in "$@"; do case "$a" in --*) EXTRA+=("$a") ;; *) STEPS+=("$a") ;; esac; done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests harness bench)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/flurka_device.txt"
(cd "$ROOT" && git log -1 --format='commit %H %s' 2>/dev/null) | tee -a "$OUT/flurka_device.txt"
bwd_harness() {  # C++ harness, forward + backward per method, per-kernel backward profile; $1: binary dir, $2: methods
  local bin=${1:-$BIN} meths=${2:-all}
  for cfg in "4 16 4096 64" "1 16 16384 64" "4 16 4096 128"; do
    set -- $cfg
    SPLAT_FLURKA_PROFILE=1 "$bin/flurka_bench" --B $1 --H $2 --N $3 --D $4 --k 256 --m 256 --repeats 10 --backward \
      --methods $meths 2>&1 |
      awk '/backward profile/ {p=$0} /^\{/ {print p; print $0}' | sed 's/"flops.*"bwd_ms/"bwd_ms/'
  done 2>&1
}
for s in "${STEPS[@]}"; do
  case "$s" in
    tests)
      "$BIN/test_flurka_cuda" >"$OUT/flurka_tests.log" 2>&1 &
      "$BIN/test_flurka_cuda_backward" >"$OUT/flurka_bwd_tests.log" 2>&1
      wait
      grep -hE "FAILED|Failure|Expected|Which is|error|PASSED|SKIPPED" "$OUT/flurka_tests.log" "$OUT/flurka_bwd_tests.log" |
        head -60 ;;
    bwd) bwd_harness | tee "$OUT/flurka_bwd.log" ;;
    profile)
      for cfg in "4 16 4096 64" "1 16 16384 64" "4 16 4096 128"; do
        set -- $cfg
        SPLAT_FLURKA_PROFILE=1 "$BIN/flurka_bench" --B $1 --H $2 --N $3 --D $4 --k 256 --m 256 --repeats 2 2>&1 |
          awk '/profile/ {p=$0} /^\{/ {print p; print $0}' | sed 's/"flops.*//'
      done 2>&1 | tee "$OUT/flurka_profile.log" ;;
    sweep)  # per-kernel ms of flurka-favor under SPLAT_FLURKA_<v> settings (tuning experiments)
      for cfg in "4 16 4096 64" "1 16 16384 64" "4 16 4096 128"; do
        set -- $cfg
        for v in "PROFILE=1"; do
          env $(echo " $v" | sed 's/ / SPLAT_FLURKA_/g') SPLAT_FLURKA_PROFILE=1 "$BIN/flurka_bench" --B $1 --H $2 --N $3 \
            --D $4 --k 256 --m 256 --repeats 3 --methods flurka-favor 2>&1 | awk -v v="$cfg $v" '/profile/ {p=$0} END {print v ": " p}'
        done
      done 2>&1 | tee "$OUT/flurka_sweep.log" ;;
    ncu)
      NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
      for kn in query_kernel project_ state_; do
        meth=flurka-favor; [ $kn = state_ ] && meth=performer-favor
        timeout 120 "$NCU" --kernel-name regex:$kn --launch-skip 3 --launch-count 1 --section SpeedOfLight \
          --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis "$BIN/flurka_bench" --B 4 \
          --H 16 --N 4096 --D 64 --k 256 --m 256 --repeats 1 --methods $meth >"$OUT/flurka_ncu_$kn.txt" 2>&1
        grep -E "Duration|Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|Stall|Warp Cycles Per Issued|Bank" \
          "$OUT/flurka_ncu_$kn.txt" | head -24 | sed "s/^/$kn: /"
      done ;;
    harness)
      for cfg in "4 16 4096 64" "1 16 16384 64" "4 16 4096 128"; do
        set -- $cfg
        for km in "256 256" "128 256"; do
          k=${km% *} m=${km#* }
          "$BIN/flurka_bench" --B $1 --H $2 --N $3 --D $4 --k $k --m $m --repeats 30
        done
      done 2>&1 | tee "$OUT/flurka_harness.jsonl" ;;
    bench)  # the package (CUDA) is built while the C++ tests run and 6 processes fill the inductor cache with the
      # torch.compile baselines; then one process times everything (bench/bench_flurka.py)
      export TORCHINDUCTOR_CACHE_DIR=/tmp/flurka-inductor TORCHINDUCTOR_COMPILE_THREADS=2 CMAKE_BUILD_PARALLEL_LEVEL=12
      # the package from the committed tree (HEAD), not from whatever else is being edited in the working tree;
      # FLURKA_OVERLAY=1 takes src/flurka from the working tree (kernels under test, committed once they pass)
      rm -rf /tmp/flurka-src && mkdir -p /tmp/flurka-src
      if git -C "$ROOT" rev-parse -q HEAD >/dev/null 2>&1; then
        git -C "$ROOT" archive HEAD | tar -x -C /tmp/flurka-src
      else  # a copy without its git directory: the working tree as it is
        echo "no git directory: the package is built from the working tree"
        tar -C "$ROOT" --exclude='./build*' --exclude=./.carry --exclude=./.git -cf - . | tar -x -C /tmp/flurka-src
      fi
      [ -n "${FLURKA_OVERLAY:-}" ] && cp -r "$ROOT/src/flurka/." /tmp/flurka-src/src/flurka/
      # flash-linear-attention's kernels (fla-core wheel, pure Python + Triton) for the causal linear baseline
      if ls "$BIN"/fla_core-*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fla-site "$BIN"/fla_core-*.whl \
          >"$OUT/flurka_fla_pip.log" 2>&1 && export PYTHONPATH=/tmp/fla-site${PYTHONPATH:+:$PYTHONPATH}
        # (fla's chunk kernels autotune for ~150 s at D = 64 on the H200; nothing waits for this process)
        timeout 200 python3 "$ROOT/bench/bench_flurka.py" --warm-fla >/tmp/flurka_prefla.log 2>&1 &
      fi
      (cd /tmp/flurka-src && timeout 300 python3 -m pip install --no-build-isolation --no-deps -q \
        -C cmake.define.SPLAT_WITH_CUDA=ON -C cmake.define.SPLAT_FLURKA_CUDA_ARCHS=90 -C build-dir=/tmp/flurka-py . \
        >"$OUT/flurka_pip.log" 2>&1; echo "pip rc=$? ($SECONDS s)") &
      pids=($!)
      for w in 0 1 2 3 4 5; do
        timeout 200 python3 "$ROOT/bench/bench_flurka.py" --precompile $w/6 >"/tmp/flurka_pre$w.log" 2>&1 &
        pids+=($!)
      done
      if [ -x "$BIN/test_flurka_cuda_backward" ]; then
        "$BIN/test_flurka_cuda_backward" >"$OUT/flurka_tests.log" 2>&1
        SPLAT_FLURKA_BWD=simt "$BIN/test_flurka_cuda_backward" --gtest_filter='*bf16_D64' >>"$OUT/flurka_tests.log" 2>&1
        "$BIN/test_flurka_cuda" >>"$OUT/flurka_tests.log" 2>&1
        bwd_harness >"$OUT/flurka_bwd.log"
        # A/B: the kernels of the last commit (staged in b1/), same shapes, the methods whose kernels differ
        [ -x "$BIN/b1/flurka_bench" ] && bwd_harness "$BIN/b1" flurka-favor,flurka-elu,linformer >"$OUT/flurka_bwd_b1.log"
      fi
      wait "${pids[@]}"
      (cd /tmp/flurka-src/tests/python && timeout 120 python3 -m pytest -q -p no:cacheprovider test_flurka_autograd.py \
        -k cuda 2>&1 | tail -15) >>"$OUT/flurka_tests.log"  # torch autograd through the CUDA backward
      cat /tmp/flurka_pre*.log /tmp/flurka_prefla.log >"$OUT/flurka_pre.log" 2>/dev/null
      tail -3 "$OUT/flurka_pip.log"; grep -c precompiled "$OUT/flurka_pre.log"; grep -v precompiled "$OUT/flurka_pre.log" | tail -5
      grep -hE "Failure|Expected|^\[  (PASSED|FAILED)|passed|failed" "$OUT/flurka_tests.log" | head -20
      (cd /tmp && timeout 300 python3 "$ROOT/bench/bench_flurka.py" --out "$OUT" "${EXTRA[@]}" 2>&1) |
        tee "$OUT/flurka_bench.log" ;;
    causal)  # experimental causal kernels: tests, one memcheck run, harness (C = 256, r = 64) vs non-causal k = 256
      timeout 60 "$BIN/test_flurka_cuda_causal" >"$OUT/flurka_causal_tests.log" 2>&1
      grep -hE "Failure|Expected|Which is|^\[  (PASSED|FAILED)" "$OUT/flurka_causal_tests.log" | head -30
      SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
      timeout 60 "$SAN" --tool memcheck --error-exitcode 9 "$BIN/test_flurka_cuda_causal" \
        --gtest_filter='*favor_bf16_D64:*relu_bf16_D128:*BitwiseReproducible' >"$OUT/flurka_causal_memcheck.log" 2>&1
      echo "memcheck rc=$? $(grep -c 'Invalid\|ERROR SUMMARY' "$OUT/flurka_causal_memcheck.log") lines"; grep "ERROR SUMMARY" "$OUT/flurka_causal_memcheck.log"
      for cfg in "4 16 4096 64" "1 16 16384 64" ${FLURKA_CAUSAL_MORE:+"4 16 4096 128" "1 16 65536 64"}; do
        set -- $cfg
        SPLAT_FLURKA_PROFILE=1 timeout 30 "$BIN/flurka_bench" --B $1 --H $2 --N $3 --D $4 --k 64 --m 256 --repeats 10 \
          --causal 256 --methods flurka-favor,flurka-elu,flurka-relu 2>&1 | awk '/profile/ {p=$0} /^\{/ {print p; print $0}'
        timeout 30 "$BIN/flurka_bench" --B $1 --H $2 --N $3 --D $4 --k 256 --m 256 --repeats 10 \
          --methods flurka-favor,flurka-elu,flurka-relu | sed 's/"flops.*"nonfinite/"nonfinite/'
      done 2>&1 | tee "$OUT/flurka_causal_harness.jsonl" ;;
  esac
done
[ -f "$OUT/flurka_causal_tests.log" ] && echo "causal GPU tests: $(grep -hE '^\[  (PASSED|FAILED)' "$OUT/flurka_causal_tests.log" | tr '\n' ' ')"
[ -f "$OUT/flurka_tests.log" ] && echo "GPU tests: $(grep -hE '^\[  (PASSED|FAILED)' "$OUT/flurka_tests.log" "$OUT/flurka_bwd_tests.log" | tr '\n' ' ')"
