#!/usr/bin/env bash
# Static checks on the C++ a change touches: clang-format (.clang-format), clang-tidy (.clang-tidy) and cppcheck.
#
#   scripts/lint.sh [BASE]      # the C++ files changed since BASE (default HEAD~1) plus untracked ones
#   scripts/lint.sh --all       # every C++ file of the tree (slow: clang-tidy takes ~1 min per file on 2 cores)
#
# clang-tidy needs a compilation database: the script configures build-lint/ (CUDA on when nvcc is found, so the
# CUDA backend's host files are checked too; nothing is built). .cu/.cuh files get clang-format and cppcheck only.
# Exit status 1 when any check reports something; the output names file, line and check.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
for tool in clang-format clang-tidy cppcheck; do
  command -v "$tool" >/dev/null || { echo "lint: $tool is not installed (apt-get install clang-format clang-tidy cppcheck)" >&2; exit 2; }
done
pattern=('*.cpp' '*.hpp' '*.cu' '*.cuh')
if [ "${1:-}" = "--all" ]; then
  mapfile -t files < <(git ls-files -- "${pattern[@]}")
else
  base="${1:-HEAD~1}"
  git rev-parse --verify -q "$base" >/dev/null || { echo "lint: unknown revision '$base'" >&2; exit 2; }
  mapfile -t files < <({ git diff --name-only --diff-filter=ACMR "$base" -- "${pattern[@]}";
                         git ls-files --others --exclude-standard -- "${pattern[@]}"; } | sort -u)
fi
[ "${#files[@]}" -eq 0 ] && { echo "lint: no C++ files changed"; exit 0; }
status=0

echo "lint: clang-format on ${#files[@]} files"
clang-format --dry-run --Werror "${files[@]}" || status=1

echo "lint: cppcheck"
cpp=()
for f in "${files[@]}"; do case "$f" in *.cpp|*.hpp) cpp+=("$f") ;; esac; done
if [ "${#cpp[@]}" -gt 0 ]; then
  # GoogleTest's macros read as syntax errors, and nanobind's `"name"_a = true` as a bool given to a pointer.
  cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c++20 --inline-suppr \
    --suppress='syntaxError:tests/cpp/*' --suppress='assignBoolToPointer:python/src/*' \
    -Iinclude -Isrc "${cpp[@]}" || status=1
fi

echo "lint: clang-tidy"
cuda=OFF
command -v nvcc >/dev/null && cuda=ON
mkdir -p build-lint
cmake -S . -B build-lint -DCMAKE_BUILD_TYPE=Release -DSPLAT_WITH_CUDA="$cuda" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  >build-lint/configure.log 2>&1 || { tail -20 build-lint/configure.log; exit 2; }
tidy=()
for f in "${files[@]}"; do
  case "$f" in *.cpp) grep -q "\"file\": \"$root/$f\"" build-lint/compile_commands.json && tidy+=("$f") ;; esac
done
if [ "${#tidy[@]}" -gt 0 ]; then
  # Only the checks' findings: clang-diagnostic-* are this clang's own parse errors on C++20 that g++ (the
  # compiler of record) accepts.
  out="$(clang-tidy -p build-lint --quiet "${tidy[@]}" 2>/dev/null | grep -E '(warning|error): .*\[[a-z]' |
         grep -v '\[clang-diagnostic-')"
  if [ -n "$out" ]; then
    echo "$out"
    status=1
  fi
fi
[ "$status" = 0 ] && echo "lint: quiet (${#files[@]} files)" || echo "lint: findings above"
exit "$status"
