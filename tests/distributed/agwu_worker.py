"""AGWU's merge under real Horovod workers (tests/test_agwu.py launches it): accuracy-weighted
averages against NumPy, a NaN copy left out, all-broken rounds left alone."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import horovod.tensorflow as hvd  # noqa: E402
from iapdcnn.distributed.agwu import agwu_weights, merge_models  # noqa: E402

hvd.init()
R, K = hvd.rank(), hvd.size()


def check(ok, what):
    if not ok:
        raise SystemExit(f"RANK {R} FAILED: {what}")


def values(r):
    return [np.full((3, 2), r + 1.0, np.float32), np.arange(4, dtype=np.float32) * (r + 1)]


accs = [0.9 - 0.1 * r for r in range(K)]
w = agwu_weights(accs)
# 1. the merge is sum_k w_k v_k on every rank
v = [tf.Variable(a) for a in values(R)]
step = tf.Variable(7, dtype=tf.int64)  # integer state (a step counter) is left alone
res = merge_models(v + [step], accs[R])
check(res["merged"] and np.allclose(res["weights"], w), f"weights {res['weights']} != {w}")
for i, var in enumerate(v):
    want = sum(w[k] * values(k)[i] for k in range(K))
    check(np.allclose(var.numpy(), want, atol=1e-6), f"merged {var.numpy()} != {want}")
check(int(step.numpy()) == 7, "integer variable changed")
# 2. a rank with NaN weights gets weight 0 and its NaN does not reach the others
v = [tf.Variable(a) for a in values(R)]
if R == K - 1:
    v[0].assign(tf.fill([3, 2], float("nan")))
res = merge_models(v, accs[R])
check(res["weights"][K - 1] == 0, f"NaN rank weighted {res['weights']}")
check(all(np.all(np.isfinite(x.numpy())) for x in v), "NaN reached the merge")
w2 = agwu_weights(accs[: K - 1] + [float("nan")])
want = sum(w2[k] * values(k)[1] for k in range(K - 1))
check(np.allclose(v[1].numpy(), want, atol=1e-6), "NaN round: wrong merge")
# 3. every rank scored 0: nothing merged, copies kept
v = [tf.Variable(a) for a in values(R)]
res = merge_models(v, 0.0)
check(not res["merged"] and np.allclose(v[0].numpy(), values(R)[0]), "all-zero round merged")
print(f"RANK {R} merged weights {' '.join(f'{x:.4f}' for x in w)}", flush=True)
