#!/usr/bin/env bash
# The README's second command (and what .ci/run runs): set everything up, check formatting and
# lint (ruff, clang-format), then run the test suite against the installed package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
V="$ROOT/.venv/bin"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
echo "[test] ruff"
"$V/ruff" check python tests benchmarks train.py
"$V/ruff" format --check python tests benchmarks train.py
echo "[test] clang-format"
mapfile -t cxx < <(git ls-files -co --exclude-standard 'csrc/*.h' 'csrc/*.cc' 'csrc/*.cu' 'csrc/*.cuh' \
  'tfops/*.h' 'tfops/*.cc' 'python/bindings/*.h' 'python/bindings/*.cc')
"$V/clang-format" --dry-run -Werror "${cxx[@]}"
echo "[test] pytest"
# The package sources live under python/, so `import iapdcnn` is the installed package.
exec "$V/python" -m pytest -p no:cacheprovider tests "$@"
