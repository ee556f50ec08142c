"""Runs under `horovodrun -np 2` with Keras 3 as tf.keras (tests/test_keras3.py launches it):
model.fit from rank 0's initial weights (broadcast) on different per-rank data, with the optimizer named on
the command line (iapdcnn's DistributedOptimizer with `mean` or `lsg`, or Horovod's own). Then
iapdcnn's DistributedGradientTape on the same model. Prints each rank's weight checksum and how
far its weights are from rank 0's, then "RANK r DONE"."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import horovod.tensorflow as hvd  # noqa: E402
from iapdcnn.distributed import DistributedGradientTape, DistributedOptimizer  # noqa: E402

MODE = sys.argv[1]  # mean | lsg | horovod
hvd.init()
R = hvd.rank()
keras = tf.keras
assert not keras.__name__.startswith("tf_keras"), f"tf.keras is {keras.__name__}, not Keras 3"


def flat(variables) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(v)) for v in variables])


def spread(variables) -> float:
    """Largest difference between this rank's values and rank 0's."""
    w = flat(variables)
    every = hvd.allgather(tf.constant(w[None])).numpy()
    return float(np.max(np.abs(every - every[0])))


keras.utils.set_random_seed(R)  # different initial weights on every rank, then rank 0's
model = keras.Sequential(
    [
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ]
)
# Keras 3 variables are not tf.Variables; their .value is (Horovod's callback is tf_keras only).
hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
print(f"RANK {R} initial spread={spread(model.trainable_variables)}", flush=True)
opt = keras.optimizers.Adam(0.05)
if MODE == "horovod":
    import horovod.tensorflow.keras as hvdk

    opt = hvdk.DistributedOptimizer(opt)
else:
    opt = DistributedOptimizer(opt, reduction=MODE)
model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(100 + R)  # different data on every rank
x = rng.normal(size=(32, 6, 6, 2)).astype(np.float32) * (1 + R)
y = rng.integers(0, 3, 32)
model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
print(f"RANK {R} fit spread={spread(model.trainable_variables)}", flush=True)
if MODE != "horovod":
    stats = {k: float(v.numpy()) for k, v in opt.reduction_stats.items()}
    print(f"RANK {R} stats workers_kept={stats['workers_kept']} loss={stats['loss']}", flush=True)

    # The tape with the same Keras 3 model: one custom step, different data per rank.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y[:8], model(x[:8]), from_logits=True)
        )
    tape = DistributedGradientTape(tape, MODE)
    grads = tape.gradient(loss, model.trainable_variables)
    print(f"RANK {R} tape grad spread={spread(grads)}", flush=True)
print(f"RANK {R} DONE", flush=True)
