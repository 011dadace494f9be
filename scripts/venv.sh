#!/usr/bin/env bash
# The project's Python environment: a virtual environment under the build tree (build-venv/ at the repository
# root, or $SPLAT_VENV) with the PyPI packages of scripts/pip-requirements.txt. Creates it once, then installs
# only what is missing (idempotent); the user's own Python is never touched. Prints the environment's python.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SPLAT_VENV:-$root/build-venv}"
req="$root/scripts/pip-requirements.txt"

if [ ! -x "$venv/bin/python" ]; then
  echo "venv: creating $venv" >&2
  python3 -m venv "$venv" >&2
fi
py="$venv/bin/python"

missing=()
for r in $(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$req" | grep -v '^$'); do
  name="${r%%[<>=!~\[]*}"  # the distribution name, up to any extra or version specifier
  "$py" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null || missing+=("$r")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "venv: installing ${missing[*]} (PyPI)" >&2
  start=$SECONDS
  "$py" -m pip install -q --disable-pip-version-check "${missing[@]}" >&2
  echo "venv: installed in $((SECONDS - start))s" >&2
else
  echo "venv: Python packages present in $venv" >&2
fi
echo "$py"
