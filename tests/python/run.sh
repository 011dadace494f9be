#!/usr/bin/env bash
# Python tests: install what they need from PyPI (what is missing only), build and install the splat
# package (pip install ., reusing build-python/ between runs), run pytest. Exit status 0 iff all pass.
# Knobs: SPLAT_PY_CUDA=ON builds the CUDA backend into the package (default OFF here: faster, and CI has
# no GPU; tests/python/run_gpu.sh turns it on); extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"

# Debian marks its Python as externally managed; the flag lets pip install beside it.
pip_flags=(-q --disable-pip-version-check)
if "$py" -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"; then
  pip_flags+=(--break-system-packages)
fi
pip_install() { "$py" -m pip install "${pip_flags[@]}" "$@"; }

# numpy/pytest/jax for the tests; nanobind/scikit-build-core to build without isolation (keeps build-python/).
missing=()
for req in numpy pytest nanobind scikit-build-core "jax[cpu]" ml_dtypes; do
  name="${req%%\[*}"
  "$py" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null || missing+=("$req")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "python tests: installing ${missing[*]}"
  pip_install "${missing[@]}"
fi

echo "python tests: building and installing the splat package (SPLAT_WITH_CUDA=${SPLAT_PY_CUDA:-OFF})"
start=$SECONDS
pip_install --no-build-isolation --no-deps -C "cmake.define.SPLAT_WITH_CUDA=${SPLAT_PY_CUDA:-OFF}" \
  -C "build.verbose=false" "$root"
echo "python tests: package installed in $((SECONDS - start))s"

# Run from the tests directory so the source tree's python/ never shadows the installed package.
cd "$root/tests/python"
"$py" -c "import splat, sys; print('splat', splat.__version__, 'from', splat.__file__, '| CUDA build:', splat.built_with_cuda, '| CUDA usable:', splat.cuda_available())"
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "python tests: PyTorch is not installed here; its tests are skipped (run tests/python/run_gpu.sh where it is)"
fi
exec "$py" -m pytest -p no:cacheprovider -q -rs "$@" .
