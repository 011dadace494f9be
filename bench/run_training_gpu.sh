#!/usr/bin/env bash
# Training on the GPU machine in one device call: build the Python package with CUDA, run the gradient tests on CUDA
# (torch autograd, JAX, transformers), then the forward+backward benchmark against FlexAttention
# (bench/bench_backward.py, arguments passed on). Results and logs go to $OUT (or build-train-gpu/out).
#   bash bench/run_training_gpu.sh [bench_backward.py args...]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/build-train-gpu/out}"
mkdir -p "$out"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false SPLAT_CACHE_DIR="${SPLAT_CACHE_DIR:-$root/build-cache}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
git -C "$root" log -1 --format=%H 2>/dev/null >>"$out/device.txt"
start=$SECONDS
timeout 300 python3 -m pip install --no-build-isolation --no-deps -q -C cmake.define.SPLAT_WITH_CUDA=ON \
  -C "build-dir=build-train-gpu/{wheel_tag}" . >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "build: $((SECONDS - start))s"
cd tests/python
[ "${SPLAT_SKIP_TESTS:-0}" = 1 ] && echo "tests skipped (SPLAT_SKIP_TESTS=1)" >"$out/pytest.log"
xdist=()
python3 -c "import xdist" 2>/dev/null && xdist=(-n 6)
start=$SECONDS
[ "${SPLAT_SKIP_TESTS:-0}" = 1 ] || timeout "${SPLAT_TEST_SECONDS:-150}" python3 -m pytest -p no:cacheprovider -q -rs "${xdist[@]}" \
  test_grad.py test_hf_train.py -k "cuda or jax" 2>&1 | tee "$out/pytest.log" | tail -15
echo "pytest: $((SECONDS - start))s"
cd "$root"
start=$SECONDS
python3 bench/bench_backward.py --out "$out/backward.md" "$@" 2>"$out/bench.err" | tail -20
echo "bench: rc=$? $((SECONDS - start))s"
tail -3 "$out/bench.err"
