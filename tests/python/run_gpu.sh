#!/usr/bin/env bash
# Python tests on the GPU machine (one device call): build the package with the CUDA backend, run every
# Python test (CUDA, PyTorch, JAX-GPU, CuPy, transformers included), then measure the wrappers' per-call
# overhead. That machine has torch, jax (CUDA), cupy, transformers, nanobind, scikit-build-core and no
# network, so nothing is installed. Results go to $OUT (or build-python-gpu/out). Exit status: pytest's.
# Arguments go to pytest (e.g. -k jax); SPLAT_PY_BENCH=0 skips the overhead benchmark.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
out="${OUT:-$root/build-python-gpu/out}"
mkdir -p "$out"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX shares the GPU with PyTorch (and pytest workers)

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -m pip list 2>/dev/null | grep -i -E "^(torch|jax|jaxlib|nanobind|scikit.build.core|transformers|cupy)" | tr -s " " | tr "\n" ";"; echo
  "$py" -c "import sys, torch, jax; print('python', sys.version.split()[0], '| torch', torch.__version__, '| jax', jax.__version__, jax.devices())"
} 2>&1 | tee "$out/device.txt"

start=$SECONDS
"$py" -m pip install --no-build-isolation --no-deps -q -C cmake.define.SPLAT_WITH_CUDA=ON \
  -C "build-dir=build-python-gpu/{wheel_tag}" . >"$out/build.log" 2>&1
build_rc=$?
echo "build: rc=$build_rc in $((SECONDS - start))s"
if [ $build_rc -ne 0 ]; then
  tail -60 "$out/build.log"
  exit $build_rc
fi

cd "$root/tests/python"
"$py" -c "import splat; print('splat CUDA build:', splat.built_with_cuda, '| usable:', splat.cuda_available())"
# Smoke test with torch and jax loaded first (their libraries once broke plan_cuda): stop early if it fails.
if ! "$py" -X faulthandler -c "import torch, jax, splat; print('smoke:', splat.plan('window:w=16', 256, 64, 'bf16', 'cuda'))"; then
  so=$("$py" -c "import splat._core as c; print(c.__file__)")
  readelf -d "$so" | grep NEEDED; c++ --version | head -1; echo "CXXFLAGS=${CXXFLAGS:-} LDFLAGS=${LDFLAGS:-}"
  exit 1
fi
xdist=()
"$py" -c "import xdist" 2>/dev/null && xdist=(-n 4)
"$py" -c "import pytest_timeout" 2>/dev/null && xdist+=(--timeout=300)
start=$SECONDS
"$py" -m pytest -p no:cacheprovider -q -rs "${xdist[@]}" "$@" . 2>&1 | tee "$out/pytest.log" | tail -40
rc=${PIPESTATUS[0]}
echo "pytest: rc=$rc in $((SECONDS - start))s"

cd "$root"
[ "${SPLAT_PY_BENCH:-1}" = 0 ] && exit $rc
"$py" python/bench/overhead.py --device cuda --markdown "$out/overhead_cuda.md" --json "$out/overhead_cuda.json" 2>&1 | tail -20
"$py" python/bench/overhead.py --device cpu --shape 1,1,32,16 --iters 500 --markdown "$out/overhead_cpu.md" 2>&1 | tail -14
exit $rc
