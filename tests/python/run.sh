#!/usr/bin/env bash
# Python tests: the project's virtual environment (scripts/venv.sh: build-venv/ at the repository root, created once,
# then only missing packages installed: numpy, pytest, nanobind, scikit-build-core, jax[cpu], ml_dtypes, torch,
# transformers), the splat package built and installed into it (reusing build-python/ between runs), and pytest:
# NumPy, JAX, PyTorch and transformers tests, on the CPU here. Exit status 0 iff all pass.
# Knobs: SPLAT_VENV (another environment), SPLAT_PY_CUDA=ON builds the CUDA backend into the package (default OFF
# here: faster, and CI has no GPU; tests/python/run_gpu.sh turns it on); extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="$("$root/scripts/venv.sh")"

echo "python tests: building and installing the splat package into $(dirname "$(dirname "$py")") (SPLAT_WITH_CUDA=${SPLAT_PY_CUDA:-OFF})"
start=$SECONDS
"$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  -C "cmake.define.SPLAT_WITH_CUDA=${SPLAT_PY_CUDA:-OFF}" -C "build.verbose=false" "$root"
echo "python tests: package installed in $((SECONDS - start))s"

# Run from the tests directory so the source tree's python/ never shadows the installed package.
cd "$root/tests/python"
"$py" -c "import splat, sys; print('splat', splat.__version__, 'from', splat.__file__, '| CUDA build:', splat.built_with_cuda, '| CUDA usable:', splat.cuda_available())"
"$py" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| CUDA device:', torch.cuda.is_available())"
exec "$py" -m pytest -p no:cacheprovider -q -rs "$@" .
