"""One worker of tests/test_tf_distribute.py: LSG (and Average) on the same per-rank inputs under
either engine, `horovod` (under horovodrun) or `tf_distribute` (under `python -m iapdcnn.tfrun`).
Rank 0 writes every case's inputs, table, weights and result to OUT/ENGINE_K.json for the test
to compare with the NumPy reference and across engines. Prints "RANK r OK" at the end.

    engine_lsg_worker.py ENGINE OUT
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

engine, out_dir = sys.argv[1], sys.argv[2]
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
if engine == "horovod":
    import horovod.tensorflow as hvd

    hvd.init()
    comm = hvd
else:
    from iapdcnn.distributed import tf_distribute

    comm = tf_distribute.init()

from iapdcnn import world  # noqa: E402
from iapdcnn.distributed import make_reduction  # noqa: E402

assert world.horovod() is comm, "the engine's collectives are not the world's"
K, R = comm.size(), comm.rank()
from worker_grads import flat, local_grads  # noqa: E402

g = local_grads(R, 1.0 + 0.01 * R)
cases = {
    "clean": (g, 1.0 + 1e-3 * R),
    "nan": ([x * np.nan for x in g] if R == 1 else g, 1.0 + 1e-3 * R),
    "scaled": ([x * -10.0 for x in g] if R == K - 1 else g, 1.0 + 1e-3 * R),
    "loss_outlier": (g, 100.0 if R == K - 1 else 1.0 + 1e-3 * R),
}
results = {}
for name, (grads, loss) in cases.items():
    for rounds in ("one", "two"):
        for traced in (False, True):
            red = make_reduction("lsg", rounds=rounds)
            call = tf.function(lambda gr, lo, red=red: red(gr, lo)) if traced else red
            out, st = call(grads, tf.constant(loss))
            inputs = comm.allgather(tf.constant(flat(grads), tf.float32)[None]).numpy()
            results[f"{name}/{rounds}/{'fn' if traced else 'eager'}"] = {
                "inputs": inputs.tolist(),
                "table": st["table"].numpy().tolist(),
                "weights": st["weights"].numpy().tolist(),
                "out": flat(out).tolist(),
                "workers_kept": float(st["workers_kept"]),
                "skipped": float(st["skipped"]),
            }
# Average (`--reduction mean`): the engine's allreduce op
out, _ = make_reduction("mean")(g, tf.constant(1.0))
results["mean"] = {"out": flat(out).tolist()}
# every rank holds the same result
mine = np.concatenate([np.asarray(v["out"]) for v in results.values()])
every = comm.allgather(tf.constant(mine, tf.float64)[None]).numpy()
assert np.array_equal(np.nan_to_num(every), np.nan_to_num(every[[0] * K])), "ranks disagree"
# the rest of Horovod's API that the trainer, pruning and the features use: the same answers
assert comm.allgather_object({"r": R}) == [{"r": k} for k in range(K)]
assert comm.broadcast_object(("plan", R), root_rank=K - 1) == ("plan", K - 1)
assert world.rank_size() == (R, K)
assert world.allreduce_numpy(np.array([R, 1.0]), op="max").tolist() == [K - 1, 1.0]
assert world.broadcast_object([R], name="w") == [0]
assert float(comm.allreduce(tf.constant(float(R)), op=comm.Average)) == (K - 1) / 2
assert float(comm.allreduce(tf.constant(float(R)), op=comm.Sum)) == K * (K - 1) / 2
v = [tf.Variable(tf.fill([2, 2], float(R))), tf.Variable(R, dtype=tf.int64)]
comm.broadcast_variables(v, root_rank=1)
assert v[0].numpy().tolist() == [[1.0, 1.0], [1.0, 1.0]] and int(v[1].numpy()) == 1, v
if R == 0:
    with open(os.path.join(out_dir, f"{engine}_{K}.json"), "w") as f:
        json.dump(results, f)
print(f"RANK {R} OK", flush=True)
