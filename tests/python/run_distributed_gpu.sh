#!/usr/bin/env bash
# Context parallelism with CUDA tensors on a single-GPU machine (one device call): the sharded call over NCCL with
# one rank, over gloo with 2 and 3 ranks sharing the GPU (messages staged through host copies), each against the
# single-process result (tests/python/test_distributed_gpu.py), and a probe of whether gloo's send/recv moves CUDA
# tensors itself. Builds the package with the CUDA backend unless a CUDA build of splat is already installed
# (SPLAT_REBUILD=1 forces it; the build dir is run_gpu.sh's, so one call can share it). Results: $OUT (or
# build-python-gpu/out): distributed_gpu.log, distributed_gpu.json, device.txt. Exit status: pytest's.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
out="${OUT:-$root/build-python-gpu/out}"
mkdir -p "$out"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/device.txt" 2>&1
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version())" \
  >>"$out/device.txt" 2>&1
cat "$out/device.txt"

# run from tests/python so that the source tree's python/ never shadows the installed package
if [ "${SPLAT_REBUILD:-0}" = 1 ] || ! (cd tests/python && "$py" -c "import splat, sys; sys.exit(0 if splat.built_with_cuda else 1)") 2>/dev/null; then
  start=$SECONDS
  "$py" -m pip install --no-build-isolation --no-deps -q -C cmake.define.SPLAT_WITH_CUDA=ON \
    -C "build-dir=build-python-gpu/{wheel_tag}" . >"$out/build_distributed.log" 2>&1
  rc=$?
  echo "build: rc=$rc in $((SECONDS - start))s"
  if [ $rc -ne 0 ]; then
    tail -60 "$out/build_distributed.log"
    exit $rc
  fi
fi

cd "$root/tests/python"
"$py" -c "import splat; print('splat CUDA build:', splat.built_with_cuda, '| usable:', splat.cuda_available())"
start=$SECONDS
SPLAT_DIST_GPU_OUT="$out" timeout "${SPLAT_DIST_GPU_TIMEOUT:-300}" "$py" -m pytest -p no:cacheprovider -q -rs -s \
  test_distributed_gpu.py "$@" 2>&1 | tee "$out/distributed_gpu.log" | tail -40
rc=${PIPESTATUS[0]}
echo "distributed GPU tests: rc=$rc in $((SECONDS - start))s"
exit $rc
