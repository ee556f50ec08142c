#!/usr/bin/env bash
# Builds iapdcnn._C (the csrc kernels and their NumPy bindings, no CUDA) with AddressSanitizer and
# UndefinedBehaviorSanitizer into build/sanitize, and runs the csrc-level tests against it: the
# _C cases of tests/test_hostile_ops.py's worker (hostile sizes, NaN/Inf, dtypes, layouts) and
# the _C-only tests of the kernel test files. Not part of CI (the instrumented build takes
# minutes); run it after changing csrc/ or python/bindings/.
# Usage: scripts/sanitize.sh [pytest -k expression]   (default: the _C tests)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPY="${IAPDCNN_VENV:-$ROOT/.venv}/bin/python"
BUILD="$ROOT/build/sanitize"
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -O1 -g"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIAPDCNN_WITH_CUDA=OFF \
  -DPython_EXECUTABLE="$VPY" -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target _C
# A package dir holding the instrumented _C next to the Python sources.
PKG="$BUILD/pkg"
rm -rf "$PKG" && mkdir -p "$PKG"
cp -r "$ROOT/python/iapdcnn" "$PKG/"
rm -f "$PKG"/iapdcnn/_C*.so "$PKG"/iapdcnn/_tfops.so
cp "$BUILD"/_C*.so "$PKG/iapdcnn/"
ASAN_LIB="$(g++ -print-file-name=libasan.so)"
UBSAN_LIB="$(g++ -print-file-name=libubsan.so)"
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
# Python's own allocations are not leaks we can fix; report errors, not leaks.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$PKG" IAPDCNN_HOSTILE_C_ONLY=1 IAPDCNN_TEST_KERAS=tf_keras
cd "$ROOT"
"$VPY" -m pytest -p no:cacheprovider -q tests/test_hostile_ops.py -k "${1:-not fci_filter}"
