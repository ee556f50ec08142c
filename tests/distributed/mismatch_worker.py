"""Runs under `horovodrun -np 2`: the ranks hand a reduction different gradient lists (another
count, another size, the same total split differently). Without the fingerprint in the scalar
allgather, LSG's two-round grouped allreduce blocks forever and the gather path mixes
coordinates; with it every rank raises an error that says what each rank handed in. LSG's
one-round allreduce meets Horovod's shape check when the totals differ, and the fingerprint
check when they agree. Prints one line per case and
rank; tests/test_hostile_py.py launches it with a timeout and reads them."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import horovod.tensorflow as hvd  # noqa: E402
from iapdcnn.distributed import make_reduction  # noqa: E402

hvd.init()
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
R = hvd.rank()


def grads(shapes, dtype=tf.float32):
    rng = np.random.default_rng(R)
    return [tf.constant(rng.normal(size=s), dtype) for s in shapes]


BASE = [(3, 4), (5,)]
# case -> (reduction, options, in tf.function?, rank 0's shapes, rank 1's shapes, dtype)
CASES = {
    "lsg_count": ("lsg", {"rounds": "two"}, False, BASE, BASE + [(2,)], tf.float32),
    "lsg_size_fn": ("lsg", {"rounds": "two"}, True, BASE, [(3, 5), (5,)], tf.float32),
    "lsg_off_fn": (
        "lsg",
        {"direction": "off", "rounds": "two"},
        True,
        BASE,
        BASE + [(1,)],
        tf.float32,
    ),
    # LSG's one-round form: the same total laid out differently meets the fingerprint check
    "lsg_one_split": ("lsg", {}, False, BASE, [(5,), (3, 4)], tf.float32),
    "lsg_one_split_fn": ("lsg", {"direction": "off"}, True, BASE, [(4, 3), (5,)], tf.float32),
    "dis_cnn_count": ("dis_cnn", {}, False, BASE, BASE[:1], tf.float32),
    "median_split": ("median", {}, False, BASE, [(5,), (3, 4)], tf.float32),
    "trimmed_split_fn": ("trimmed_mean", {}, True, BASE, [(4, 3), (5,)], tf.float32),
    "median_split_f16": ("median", {}, False, BASE, [(5,), (3, 4)], tf.float16),
    # another total: Horovod's own allgather check refuses it (no hang)
    "median_total": ("median", {}, False, BASE, [(3, 4), (6,)], tf.float32),
    # ... and another total size meets Horovod's allreduce shape check (no hang)
    "lsg_one_total": ("lsg", {}, False, BASE, BASE + [(2,)], tf.float32),
    # the control: identical lists reduce normally
    "lsg_same": ("lsg", {}, True, BASE, BASE, tf.float32),
    "median_same_f16": ("median", {}, False, BASE, BASE, tf.float16),
}

for case in sys.argv[1:]:
    name, opts, fn, s0, s1, dtype = CASES[case]
    red = make_reduction(name, **opts)
    g = grads(s0 if R == 0 else s1, dtype)
    call = tf.function(lambda g, lo, red=red: red(g, lo)) if fn else red
    try:
        out, _ = call(g, tf.constant(1.0 + 0.01 * R))
        total = float(sum(float(tf.reduce_sum(tf.cast(o, tf.float32))) for o in out))
        print(f"RANK {R} {case} OK {total:.6f}", flush=True)
    except tf.errors.OpError as e:
        msg = " ".join(e.message.split())
        print(f"RANK {R} {case} RAISED {type(e).__name__}: {msg[:600]}", flush=True)
print(f"RANK {R} DONE", flush=True)
