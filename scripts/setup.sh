#!/usr/bin/env bash
# Installs what the build and tests need, and nothing that is already there (idempotent).
# Debian packages: scripts/apt-packages.txt; PyPI packages: scripts/pip-requirements.txt.
# Runs as root directly, otherwise through sudo.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root or sudo to run: $*" >&2; return 1; fi
}

# Lists: one name per line; '#' starts a comment.
read_list() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$' || true; }

missing=()
for pkg in $(read_list "$here/apt-packages.txt"); do
  # Installed means dpkg status "install ok installed" (not merely known to dpkg).
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then missing+=("$pkg"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

if [ -f "$here/pip-requirements.txt" ] && command -v python3 >/dev/null; then
  pip_missing=()
  for req in $(read_list "$here/pip-requirements.txt"); do
    # The importable name is the distribution name up to any version specifier.
    name="${req%%[<>=!~\[]*}"
    if ! python3 -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null; then
      pip_missing+=("$req")
    fi
  done
  if [ "${#pip_missing[@]}" -gt 0 ]; then
    echo "setup: installing Python packages: ${pip_missing[*]}"
    # Debian marks its Python as externally managed; the flag lets pip install beside it.
    python3 -m pip install -q "${pip_missing[@]}" 2>/dev/null ||
      python3 -m pip install -q --break-system-packages "${pip_missing[@]}"
  else
    echo "setup: Python packages present"
  fi
fi
