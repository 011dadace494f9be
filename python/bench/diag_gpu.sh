#!/usr/bin/env bash
# Diagnostics for a crash while building CUDA plans from Python (device machine; writes to $OUT).
set -uo pipefail
cd "$(dirname "$0")/../.."
export XLA_PYTHON_CLIENT_PREALLOCATE=false CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) SPLAT_JIT_VERBOSE=1
python3 -m pip install --no-build-isolation --no-deps -q -C cmake.define.SPLAT_WITH_CUDA=ON \
  -C "build-dir=build-python-gpu/{wheel_tag}" . >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
cd /tmp
so=$(python3 -c "import splat._core as c; print(c.__file__)")
ldd "$so" | grep -i -E "nvrtc|cuda|gomp|stdc"
P="splat.plan('window:w=16', 256, 64, 'bf16', 'cuda')"
timeout 60 python3 -X faulthandler -c "import splat; print('no torch:', $P)" 2>&1 | tail -8
timeout 60 python3 -X faulthandler -c "import torch, splat; print('torch first:', $P)" 2>&1 | tail -8
timeout 60 python3 -X faulthandler -c "import jax, splat; print('jax first:', $P)" 2>&1 | tail -8
timeout 60 python3 -c "import torch, splat, re; 
print([l.split()[-1] for l in open('/proc/self/maps') if 'nvrtc' in l or 'cudart' in l][:8])"
timeout 120 cuda-gdb -batch -ex run -ex bt --args python3 -c "import torch, splat; $P" 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -40
