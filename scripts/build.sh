#!/usr/bin/env bash
# Configures and builds splat into build/ (or $SPLAT_BUILD_DIR). Extra arguments go to cmake's configure step.
# Rebuilds only what changed; the CUDA backend is built when the toolkit is found (a GPU is not needed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SPLAT_BUILD_DIR:-$root/build}"
jobs="${SPLAT_JOBS:-$(nproc)}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build" -j "$jobs"
