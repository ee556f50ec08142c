#!/usr/bin/env bash
# Incremental in-place build for development: compiles into build/dev and drops _C, _tfops.so and
# _build_info.py next to the sources, so `PYTHONPATH=python` imports the working tree.
# Usage: scripts/dev_build.sh [extra cmake -D options]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPY="${IAPDCNN_VENV:-$ROOT/.venv}/bin/python"
[ -x "$VPY" ] || VPY="$(cd "$ROOT" && git rev-parse --path-format=absolute --git-common-dir)/../.venv/bin/python"
BUILD="$ROOT/build/dev"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$VPY" "$@" >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
cp -f "$BUILD"/_C*.so "$BUILD"/_build_info.py "$ROOT/python/iapdcnn/"
[ ! -f "$BUILD/_tfops.so" ] || cp -f "$BUILD/_tfops.so" "$ROOT/python/iapdcnn/"
