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
# The package sources live under python/, so `import iapdcnn` is the installed package.
# Two passes (tests/conftest.py): the whole suite with tf.keras = tf_keras (Keras 2: the trainer,
# Horovod's Keras API), then the Keras-facing files with tf.keras = Keras 3 (TF 2.21's default).
# Both passes run even when the first fails; the exit status is the first failure's.
echo "[test] pytest, tf.keras = tf_keras"
rc=0
IAPDCNN_TEST_KERAS=tf_keras "$V/python" -m pytest -p no:cacheprovider tests "$@" || rc=$?
echo "[test] pytest, tf.keras = Keras 3"
IAPDCNN_TEST_KERAS=keras3 "$V/python" -m pytest -p no:cacheprovider \
  tests/test_keras3.py tests/test_conv_layers.py tests/test_feature_layers.py \
  tests/test_pruning.py tests/test_pruning_apps.py tests/test_distributed.py tests/test_export.py \
  tests/test_optimizers.py tests/test_initializers.py \
  --deselect "tests/test_distributed.py::test_reductions_under_horovod[4]" "$@" || {
  r=$?
  [ "$rc" -ne 0 ] || rc=$r
}
exit "$rc"
