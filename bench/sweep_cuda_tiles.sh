#!/bin/bash
# Tile-shape sweep for the CUDA kernel (device machine): SPLAT_CUDA_TILE / SPLAT_CUDA_MINBLOCKS variants on a
# few suite patterns at N=4096; one line per (variant, pattern, D). Uses the staged harness in .carry/cuda.
B=${B:-.carry/cuda/splat_cuda_bench}
export SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build-cache}" LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
ONLY=${ONLY:-window,blocked,strided,bigbird}
for cfg in "$@"; do
  set -- ${cfg//:/ }
  SPLAT_CUDA_STAGES=${4:-3} SPLAT_CUDA_TILE=$1 SPLAT_CUDA_MINBLOCKS=$2 timeout 120 $B --sizes ${N:-4096} --dims $3 --only $ONLY --reps 30 |
    python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print('%-7s s${4:-3} mb%s D=%-4d %-14s %8.4f ms %6.1f TF/s err %.4f'%('$1','$2',r['D'],r['pattern'],r['splat_ms'],r['tflops'],r['max_err']))"
done
