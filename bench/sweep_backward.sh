#!/usr/bin/env bash
# A/B of the backward's tile knobs on the GPU machine (carry .carry/bwd, staged by run_backward_gpu.sh --stage):
#   bash bench/sweep_backward.sh "CONFIG1" "CONFIG2" ...   (each CONFIG: env assignments, e.g. "SPLAT_CUDA_BWD_BM=128")
# SIZES_DIMS (default "16384:128 4096:64") and ONLY (default window,dilated,blocked,longformer) pick the rows.
# Rows go to $OUT/sweep.jsonl (or build-bwd-out), prefixed with the config.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.carry/bwd"
R=${OUT:-$root/build-bwd-out}
mkdir -p "$R"
export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$root/build-cache}"
only=${ONLY:-window,dilated,blocked,longformer}
for cfg in "$@"; do
  for sd in ${SIZES_DIMS:-16384:128 4096:64}; do
    for p in ${only//,/ }; do  # fill the kernel cache in parallel (NVRTC is serial within a process)
      env $cfg timeout 200 "$bin/splat_backward_bench" --sizes ${sd%:*} --dims ${sd#*:} --reps 1 --only $p >/dev/null 2>&1 &
    done
    wait
    env $cfg timeout 200 "$bin/splat_backward_bench" --sizes ${sd%:*} --dims ${sd#*:} --reps 20 --only "$only" \
      2>>"$R/sweep.err" | sed "s/^/{\"config\":\"$cfg\",\"row\":/; s/\$/}/" | tee -a "$R/sweep.jsonl" |
      sed 's/"spec":"[^"]*",//; s/"nnz":[0-9]*,//' | cut -c1-230
  done
done
