#!/bin/bash
# One device call comparing kernel builds and tile variants (staged binaries, no build on the device):
# .carry/base = the previous kernel (binaries staged before the change), .carry/cuda = the new one.
# GPU tests of the new kernel with each tile, then splat-only harness rows at N=16384, alternating builds so
# drift shows; a table of median ms per (pattern, D, variant) is printed last. Logs under $OUT.
#   bash bench/sweep_cuda_wg.sh
set -u
O=${OUT:-$(cd "$(dirname "$0")/.." && pwd)/build-gpu-out}
mkdir -p "$O"
export SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build-cache}" LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1
NEW=.carry/cuda BASE=.carry/base TARGETS=window,causal_window,blocked
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$O/device.txt"
tests() {  # $1 tag; env decides the tile
  timeout 110 $NEW/test_cuda_attention >"$O/tests_$1.log" 2>&1
  echo "tests $1 rc=$? ($(date +%T))"
  grep -E "^\[  (PASSED|FAILED) |Failure|Which is" "$O/tests_$1.log" | head -8
}
harness() {  # $1 tag, $2 binary dir, $3 --only list, $4 dims
  timeout 100 $2/splat_cuda_bench --sizes 16384 --dims $4 --only $3 --reps 50 2>>"$O/harness.err" |
    sed "s/^/$1 /" >>"$O/harness.txt"
  echo "harness $1 $3 D=$4 ($(date +%T))"
}
tests default
SPLAT_CUDA_TILE=128x64 tests wg2
harness base $BASE $TARGETS 64,128
harness default $NEW $TARGETS 64,128
SPLAT_CUDA_TILE=128x64 harness wg2 $NEW $TARGETS 64,128
SPLAT_CUDA_TILE=128x64 SPLAT_CUDA_STAGES=3 harness wg2s3 $NEW $TARGETS 128
harness base2 $BASE $TARGETS 64,128
harness default2 $NEW $TARGETS 64,128
SPLAT_CUDA_TILE=128x64 harness wg2b $NEW dilated,strided,longformer,bigbird 64,128
harness defaultb $NEW dilated,strided,longformer,bigbird 64,128
SPLAT_CUDA_WGMMA=0 tests mmasync
python3 - "$O/harness.txt" <<'EOF'
import json, sys, collections
t = collections.defaultdict(dict); tags = []
for line in open(sys.argv[1]):
    tag, js = line.split(' ', 1)
    r = json.loads(js)
    if tag not in tags: tags.append(tag)
    t[(r['pattern'], r['D'])][tag] = '%.3f/%.4f' % (r['splat_ms'], r['max_err'])
print('ms/max_err at N=16384 |', ' | '.join(tags))
for k, v in t.items(): print('%-14s D=%-4d' % k, ' '.join('%-14s' % v.get(x, '-') for x in tags))
EOF
