#!/usr/bin/env bash
# The README's first command: set everything up, then run the IA-PDCNNOA pipeline on the real
# Fashion-MNIST under `horovodrun -np 2` (Gloo): MHO-PFES features, the Im2col convolution, MDCV
# pruning and the LSG reduction. Prints accuracy, throughput and the FLOPs saved; writes the report
# and the plot under runs/main. Extra arguments go to train.py (and override these).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# The trainer is written for tf_keras (Keras 2); TensorFlow 2.21 makes tf.keras Keras 3 unless
# this is set before it loads. horovodrun passes it on to the ranks.
export TF_USE_LEGACY_KERAS=1
NP="${IAPDCNN_NP:-2}"
cd "$ROOT"
exec "$ROOT/.venv/bin/horovodrun" -np "$NP" -H "localhost:$NP" --gloo \
  "$ROOT/.venv/bin/python" "$ROOT/train.py" --dataset fashion_mnist --features --conv im2col \
  --prune 0.3 --reduction lsg --epochs 4 --steps-per-epoch 300 --bn-momentum 0.9 --out runs/main "$@"
