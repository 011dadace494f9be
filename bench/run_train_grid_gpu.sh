#!/usr/bin/env bash
# The training experiment (docs/TRAINING.md) on a GPU machine without network, one call per part of the grid.
#
#   bash bench/run_train_grid_gpu.sh --stage        # here: HEAD's sources as a tarball + the prepared data
#   bash bench/run_train_grid_gpu.sh [run_grid.py args...]      # there, e.g. --task mlm --budget-s 60
#   bash bench/run_train_grid_gpu.sh --install-only              # there: only build + install the package
#
# --stage writes .carry/train/src.tar.gz (git archive of HEAD, so the run builds exactly one commit even if the
# working tree has edits) and checks examples/train/data/ against its manifest; both travel to the GPU machine.
# There the package is built from that tarball with CUDA (or installed from .carry/train/wheel/*.whl when a
# previous call left one), the grid runs, and $OUT gets results.tar.gz (the JSONL logs, summary.md, the plot),
# grid.log, the wheel and device.txt. Earlier results in .carry/train/results.tar.gz are unpacked first, so runs
# that finished in an earlier call are skipped and the summary covers them all.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
carry="$root/.carry/train"
if [ "${1:-}" = "--stage" ]; then
  mkdir -p "$carry"
  git -C "$root" archive --format=tar.gz -o "$carry/src.tar.gz" HEAD
  git -C "$root" rev-parse HEAD >"$carry/commit"
  python3 "$root/examples/train/prepare_data.py" --verify || exit 1
  echo "staged $(cat "$carry/commit") ($(du -h "$carry/src.tar.gz" | cut -f1)); carry .carry/train and examples/train/data"
  exit 0
fi
out="${OUT:-$root/build-train-grid/out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-/tmp/splat-cache}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
[ -f "$carry/src.tar.gz" ] || { echo "no $carry/src.tar.gz: run --stage first" >&2; exit 2; }
commit="$(cat "$carry/commit")"
src=/tmp/splat-src
rm -rf "$src" && mkdir -p "$src" && tar -xzf "$carry/src.tar.gz" -C "$src"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $commit"; } | tee "$out/device.txt"
start=$SECONDS
wheel="$(ls "$carry"/wheel/*.whl /tmp/wheel/*.whl 2>/dev/null | head -1)"  # carried, or built by an earlier step
if [ -z "$wheel" ]; then
  mkdir -p /tmp/wheel
  timeout 300 python3 -m pip wheel --no-build-isolation --no-deps -q -w /tmp/wheel -C cmake.define.SPLAT_WITH_CUDA=ON \
    -C build-dir=/tmp/splat-build "$src" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
  wheel="$(ls /tmp/wheel/*.whl | head -1)"
  cp "$wheel" "$out/"
fi
python3 -m pip install --no-deps -q --force-reinstall "$wheel" >>"$out/build.log" 2>&1 || { tail -20 "$out/build.log"; exit 1; }
echo "package: $((SECONDS - start))s ($(basename "$wheel"))"
[ "${1:-}" = "--install-only" ] && exit 0
results=/tmp/train-results
mkdir -p "$results"
[ -f "$carry/results.tar.gz" ] && tar -xzf "$carry/results.tar.gz" -C "$results"
cd "$src/examples/train"
python3 run_grid.py --results "$results" --data "$root/examples/train/data" --commit "$commit" "$@" 2>&1 | tee -a "$out/grid.log"
rc=${PIPESTATUS[0]}
tar -czf "$out/results.tar.gz" -C "$results" .
echo "grid: rc=$rc $((SECONDS - start))s"
exit "$rc"
