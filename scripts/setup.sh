#!/usr/bin/env bash
# Installs what the build and tests need, and nothing that is already there (idempotent).
# Debian packages: scripts/apt-packages.txt (system-wide); PyPI packages: scripts/pip-requirements.txt, into the
# virtual environment build-venv/ (scripts/venv.sh; $SPLAT_VENV moves it).
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

# PyPI packages go into the project's virtual environment (build-venv/), not the system Python.
"$here/venv.sh" >/dev/null
