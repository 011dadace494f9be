#!/bin/bash
# One device call for FLuRKA: GPU tests, the C++ timing harness and the PyTorch comparison, logs under $OUT.
# Binaries come from .carry/flurka (staged on the dev machine: `bash bench/run_flurka_gpu.sh --stage`).
#   bash bench/run_flurka_gpu.sh [tests] [profile] [ncu] [harness] [bench] [--no-compile]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--stage" ]; then
  cmake --build "$ROOT/build-flurka-cuda" -j2 --target test_flurka_cuda flurka_bench || exit 1
  mkdir -p "$ROOT/.carry/flurka"
  cp "$ROOT"/build-flurka-cuda/tests/cpp/test_flurka_cuda "$ROOT"/build-flurka-cuda/bin/flurka_bench "$ROOT/.carry/flurka/"
  cp /lib/x86_64-linux-gnu/libgomp.so.1 "$ROOT/.carry/flurka/"
  exit 0
fi
OUT=${OUT:-$ROOT/build-flurka-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BIN="$ROOT/.carry/flurka"
export LD_LIBRARY_PATH=$BIN:${LD_LIBRARY_PATH:-}
STEPS=() EXTRA=()
for a in "$@"; do case "$a" in --*) EXTRA+=("$a") ;; *) STEPS+=("$a") ;; esac; done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests harness bench)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/flurka_device.txt"
(cd "$ROOT" && git log -1 --format='commit %H %s' 2>/dev/null) | tee -a "$OUT/flurka_device.txt"
for s in "${STEPS[@]}"; do
  case "$s" in
    tests)
      "$BIN/test_flurka_cuda" >"$OUT/flurka_tests.log" 2>&1
      grep -E "FAILED|Failure|Expected|PASSED|SKIPPED" "$OUT/flurka_tests.log" | head -40 ;;
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
    bench)
      timeout 480 python3 "$ROOT/bench/bench_flurka.py" --harness "$BIN/flurka_bench" --out "$OUT" "${EXTRA[@]}" 2>&1 |
        tee "$OUT/flurka_bench.log" ;;
  esac
done
[ -f "$OUT/flurka_tests.log" ] && echo "GPU tests: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/flurka_tests.log" | tr '\n' ' ')"
