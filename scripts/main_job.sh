#!/usr/bin/env bash
# The README's first command: set everything up, then train on the real Fashion-MNIST under
# `horovodrun -np 2` (Gloo) and print test accuracy. Extra arguments go to train.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
NP="${IAPDCNN_NP:-2}"
cd "$ROOT"
exec "$ROOT/.venv/bin/horovodrun" -np "$NP" -H "localhost:$NP" --gloo \
  "$ROOT/.venv/bin/python" "$ROOT/train.py" "$@"
