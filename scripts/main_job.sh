#!/usr/bin/env bash
# The README's first command: set everything up, then train on the real Fashion-MNIST with 2
# local workers (tf.distribute's collectives by default, `horovodrun -np 2` with Gloo under
# IAPDCNN_ENGINE=horovod) and the IA-PDCNNOA stages in the form that measured best each
# (benchmarks/bench_pipeline.py; docs/time_to_accuracy.md says what each costs and saves).
# Prints one line per epoch, what each stage did, the training seconds to 0.88/0.90/0.91 test
# accuracy and the final accuracy; writes runs/main/report.json, metrics.json, curves.png and
# TensorBoard logs. Extra arguments go to train.py (and override these).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# The trainer is written for tf_keras (Keras 2); TensorFlow 2.21 makes tf.keras Keras 3 unless
# this is set before it loads. horovodrun passes it on to the ranks.
export TF_USE_LEGACY_KERAS=1
NP="${IAPDCNN_NP:-2}"
# The engine: tf_distribute (TensorFlow's own collectives, started by iapdcnn.tfrun) measured
# faster than Horovod over Gloo on this kind of machine (docs/time_to_accuracy.md);
# IAPDCNN_ENGINE=horovod runs the same job under horovodrun.
ENGINE="${IAPDCNN_ENGINE:-tf_distribute}"
cd "$ROOT"
case "$ENGINE" in
  horovod) LAUNCH=("$ROOT/.venv/bin/horovodrun" -np "$NP" -H "localhost:$NP" --gloo) ;;
  tf_distribute) LAUNCH=("$ROOT/.venv/bin/python" -m iapdcnn.tfrun -np "$NP") ;;
  *) echo "main_job.sh: IAPDCNN_ENGINE must be horovod or tf_distribute, got '$ENGINE'" >&2; exit 2 ;;
esac
"${LAUNCH[@]}" "$ROOT/.venv/bin/python" "$ROOT/train.py" --engine "$ENGINE" \
  --dataset fashion_mnist --conv keras --prune 0.5 --prune-mode early --reduction mean \
  --lr-schedule cosine --epochs 8 --eval-every 100 --out runs/main "$@"
# Beside this run: the plain baseline's time to accuracy as bench_pipeline.py measured it (3 seeds,
# saved in benchmarks/results/), since a run alone cannot show what it saves.
OUT=runs/main
prev=""
for a in "$@"; do
  [ "$prev" = "--out" ] && OUT="$a"
  case "$a" in --out=*) OUT="${a#--out=}" ;; esac
  prev="$a"
done
if [ -f "$OUT/report.json" ]; then
  "$ROOT/.venv/bin/python" -m iapdcnn.training.compare "$OUT/report.json" \
    "$ROOT/benchmarks/results/bench_pipeline.json" || true
fi
