"""Run under horovodrun: MDCVPruning with ``fmp`` on rank-local data. Filter i of the 1x1 conv
reads input channel i, and rank 0's data is loud where rank 1's is quiet, so each rank alone
would prune the opposite filters. argv[1]: "default" (sync_ranks=None) or "off" (False). Prints
each rank's pruned filters for the calling test."""

import sys

import numpy as np
import tensorflow as tf

import horovod.tensorflow as hvd
from iapdcnn.pruning import MDCVPruning

keras = tf.keras
hvd.init()
r = hvd.rank()
c = 8
model = keras.Sequential(
    [
        keras.Input((4, 4, c)),
        keras.layers.Conv2D(c, 1, use_bias=False, name="conv"),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, name="fc"),
    ]
)
model.get_layer("conv").set_weights([np.eye(c, dtype=np.float32)[None, None]])
model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
loud = np.arange(1, c + 1, dtype=np.float32)
scale = loud if r == 0 else loud[::-1]  # rank 0: channel 7 loudest; rank 1: channel 0
x = np.random.default_rng(r).uniform(0.5, 1.0, size=(16, 4, 4, c)).astype(np.float32) * scale
y = np.zeros(16, np.int64)
cb = MDCVPruning(
    0.5,
    begin_step=0,
    end_step=2,
    frequency=1,
    criterion="fmp",
    data=x,
    sync_ranks=None if sys.argv[1] == "default" else False,
)
model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[cb])
pruned = sorted(int(i) for i in cb.current_plan.pruned["conv"])
kept_zero = sorted(
    int(i) for i in np.flatnonzero(~model.get_layer("conv").get_weights()[0].any(axis=(0, 1, 2)))
)
print(f"PRUNE_SYNC rank={r} pruned={pruned} zeroed={kept_zero}", flush=True)
