#!/usr/bin/env bash
# One device call that exercises the CLI's CUDA path: build splat (with CUDA), then `splat demo`
# (auto -> cuda), `splat run --backend cuda --check` (bf16, f16, .npy in/out) and `splat bench` on the
# suite at N=4096 and 16384. Logs and bench JSON go to $OUT (default build-gpu-cli/out).
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=${OUT:-$root/build-gpu-cli/out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$root/build-cache}"
build="$root/build-gpu-cli"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
{ cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DSPLAT_BUILD_TESTS=OFF -DSPLAT_BUILD_BENCH=OFF &&
  cmake --build "$build" -j "$(nproc)" --target splat_cli; } >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
S="$build/bin/splat"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
(cd "$root" && git log -1 --format='commit %H' 2>/dev/null) | tee -a "$OUT/device.txt"
fails=0
step() {
  echo "\$ splat $*"
  "$S" "$@"
  local rc=$?
  echo "rc=$rc"
  [ $rc -eq 0 ] || fails=$((fails + 1))
}
{
  step demo
  for p in 'window:w=256' 'strided:s=64' 'bigbird:b=64,w=1,g=2,r=3,seed=1' 'causal_window:w=1024+sink:g=4'; do
    step run "$p" --seq-len 4096 --heads 8 --kv-heads 2 --head-dim 64 --backend cuda --dtype bf16 --check
  done
  step run 'dilated:w=256,d=4' --seq-len 4096 --heads 4 --head-dim 128 --backend cuda --dtype f16 --check
  python3 - "$OUT" <<'PY' && step run 'longformer:w=128,g=16' --q "$OUT/q.npy" --k "$OUT/k.npy" --v "$OUT/v.npy" --out "$OUT/o.npy" --backend cuda --check
import sys, numpy as np
r = np.random.default_rng(0)
for n in "qkv":
    np.save(f"{sys.argv[1]}/{n}.npy", r.standard_normal((1, 4, 2048, 64)).astype(np.float16))
PY
  step bench --backend cuda --json "$OUT/bench_cuda.json"
} 2>&1 | tee "$OUT/cli_gpu.log"
rm -f "$OUT"/q.npy "$OUT"/k.npy "$OUT"/v.npy "$OUT"/o.npy
grep -c '^rc=0' "$OUT/cli_gpu.log" | sed 's/$/ commands succeeded/'
grep '^rc=[1-9]' "$OUT/cli_gpu.log" && exit 1
exit 0
