"""Runs under `horovodrun -np K`: checks the reductions of iapdcnn.distributed across real Horovod
workers against NumPy (tests/test_distributed.py launches it). Prints "RANK r OK" at the end."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import horovod.tensorflow as hvd  # noqa: E402
from iapdcnn import reference  # noqa: E402
from iapdcnn.distributed import (  # noqa: E402
    DistributedGradientTape,
    DistributedOptimizer,
    ReductionStatsCallback,
    apply_unless_skipped,
    make_reduction,
)

ref = reference.lsg
hvd.init()
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
K, R = hvd.size(), hvd.rank()
# Under Keras 3 (IAPDCNN_TEST_KERAS=keras3) Horovod's Keras callbacks and broadcast_variables do
# not apply to Keras variables: identical seeds give identical initial weights instead.
KERAS3 = not tf.keras.__name__.startswith("tf_keras")
from worker_grads import SHAPES, flat, local_grads  # noqa: E402


def gather_flat(grads):
    flat = tf.concat([tf.reshape(g, [-1]) for g in grads], 0)
    return hvd.allgather(flat[None]).numpy()


def reduce(name, grads, loss, fn=False, **opt):
    red = make_reduction(name, **opt)
    if fn:
        out, stats = tf.function(lambda g, lo: red(g, lo))(grads, tf.constant(loss))
    else:
        out, stats = red(grads, tf.constant(loss))
    return out, {k: v.numpy() for k, v in stats.items()}


def check(cond, msg):
    if not cond:
        print(f"RANK {R} FAIL: {msg}", flush=True)
        sys.exit(1)


# 1. No outlier: LSG == Horovod Average (eager and in tf.function).
g = local_grads(R, 1.0 + 0.01 * R)
avg = flat(hvd.grouped_allreduce(g, op=hvd.Average))
for fn in (False, True):
    out, st = reduce("lsg", g, 1.0 + 1e-3 * R, fn=fn)
    check(np.allclose(flat(out), avg, atol=1e-6), f"lsg != average (fn={fn})")
    check(st["workers_kept"] == K and st["skipped"] == 0, f"clean stats {st}")
out, _ = reduce("mean", g, 1.0)
check(np.allclose(flat(out), avg, atol=1e-6), "mean != horovod average")

# 2. One loss outlier (last rank) is excluded: result = mean of the others.
allg = gather_flat(g)
if K >= 3:
    loss = 100.0 if R == K - 1 else 1.0 + 1e-3 * R
    out, st = reduce("lsg", g, loss)
    check(np.allclose(flat(out), allg[:-1].mean(0), atol=1e-6), "outlier not excluded")
    check(st["workers_kept"] == K - 1, f"outlier stats {st}")
    # gradient x -10 under an honest loss: the norm screen catches it
    gs = [x * -10.0 for x in g] if R == K - 1 else g
    out, st = reduce("lsg", gs, 1.0 + 1e-3 * R)
    check(np.allclose(flat(out), allg[:-1].mean(0), atol=1e-6), "scaled grad not excluded")

# 3. NaN gradients never reach the result (any K).
gn = [x * np.nan for x in g] if R == 1 else g
others = np.delete(allg, 1, axis=0).mean(0)
for name in ("lsg", "dis_cnn", "median", "trimmed_mean"):
    out, st = reduce(name, gn, 1.0)
    check(np.all(np.isfinite(flat(out))), f"{name}: NaN reached the result")
    check(st["workers_kept"] == K - 1, f"{name}: NaN worker kept {st}")
out, _ = reduce("lsg", gn, 1.0)
check(np.allclose(flat(out), others, atol=1e-6), "NaN: lsg != mean of others")
out, _ = reduce("mean", gn, 1.0)
check(not np.all(np.isfinite(flat(out))), "mean should propagate NaN")

# 4. Every worker rejected: skipped, zeros, optimizer untouched.
v = [tf.Variable(tf.ones(s)) for s in SHAPES]
opt = tf.keras.optimizers.SGD(0.1, momentum=0.9)
red = make_reduction("lsg")
out, st = red(g, tf.constant(float("nan")))
check(st["skipped"].numpy() == 1 and np.all(flat(out) == 0), "all-rejected not skipped")
apply_unless_skipped(opt, zip(out, v, strict=False), st)
check(all(np.all(x.numpy() == 1) for x in v) and int(opt.iterations) == 0, "skipped step applied")
if R == 0:  # the reduction's own stats, for the test to read
    print(
        f"all-rejected step: workers_kept={float(st['workers_kept'])} "
        f"skipped={float(st['skipped'])} iterations={int(opt.iterations)}",
        flush=True,
    )

# 5. K = 2 (spec §3): relative tau keeps both, absolute tau rejects both.
if K == 2:
    out, st = reduce("lsg", g, 9.0 if R == 1 else 0.5)
    check(st["workers_kept"] == 2 and np.allclose(flat(out), allg.mean(0), atol=1e-6), "K=2 rel")
    out, st = reduce("lsg", g, 9.0 if R == 1 else 0.5, tau=0.1)
    check(st["skipped"] == 1 and np.all(flat(out) == 0), "K=2 abs")

# 6. Alternatives against NumPy.
losses = hvd.allgather(tf.constant([0.3 + 0.2 * R])).numpy()
fin = np.ones(K)
out, _ = reduce("dis_cnn", g, float(losses[R]))
want, _ = ref.combine(allg, ref.dis_cnn_weights(losses, fin))
check(np.allclose(flat(out), want, atol=1e-6), "dis_cnn")
out, _ = reduce("median", g, 1.0)
check(np.allclose(flat(out), ref.coordinate_median(allg, fin), atol=1e-6), "median")
out, _ = reduce("trimmed_mean", g, 1.0, fn=True)
check(np.allclose(flat(out), ref.trimmed_mean(allg, fin), atol=1e-6), "trimmed_mean")

# 7. Tape wrapper in a custom loop: a NaN batch on rank 1 never reaches the weights.
tf.keras.utils.set_random_seed(0)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
if not KERAS3:
    hvd.broadcast_variables(model.variables, 0)
opt = tf.keras.optimizers.SGD(0.1)


@tf.function
def step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, model(x), True))
    tape = DistributedGradientTape(tape, "lsg")
    grads = tape.gradient(loss, model.trainable_variables)
    apply_unless_skipped(opt, zip(grads, model.trainable_variables, strict=False), tape.stats)
    return tape.stats


rng = np.random.default_rng(R)
for _ in range(3):
    x = rng.normal(size=(8, 4)).astype(np.float32)
    if R == 1 and K > 1:
        x[0, 0] = np.nan
    st = step(x, rng.integers(0, 3, 8))
    check(st["workers_kept"].numpy() == max(K - 1, 1), f"tape stats {st}")
w = flat(model.trainable_variables)
check(np.all(np.isfinite(w)), "NaN reached the weights")
check(np.all(hvd.allgather(w[None]).numpy() == w), "weights differ across ranks")

# 8. Keras path: model.fit with DistributedOptimizer; stats reach the logs. Then the same with
# each batch's standard error (loss_with_standard_error): the same rejections.
rng = np.random.default_rng(7)  # the same data on every rank: only the NaN worker differs
x = rng.normal(size=(32, 4)).astype(np.float32)
y = rng.integers(0, 3, 32)
if R == 1 and K > 1:
    x[3, 1] = np.nan  # batch 0 of each epoch
import horovod.tensorflow.keras as hvdk  # noqa: E402

# one NaN sample on rank 1 spoils 1 of its 4 batches per epoch
want = K - 0.25 if K > 1 else 1.0
for with_se in (False, True):
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
    opt = DistributedOptimizer(tf.keras.optimizers.Adam(0.01), reduction="lsg")
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(opt, opt.loss_with_standard_error(loss) if with_se else loss)
    hist = model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[ReductionStatsCallback()]
        + ([] if KERAS3 else [hvdk.callbacks.BroadcastGlobalVariablesCallback(0)]),
    )
    logs, what = hist.history, f"keras (with_se={with_se})"
    check("lsg_workers_kept_mean" in logs, f"{what}: no stats in logs: {list(logs)}")
    check(logs["lsg_workers_kept_mean"][-1] == want, f"{what} stats {logs}")
    se = opt.reduction_stats["loss_se"].numpy()  # of the last batch, clean on every rank
    check(se > 0 if with_se else se == 0, f"{what}: loss_se {se}")
    w = flat(model.trainable_variables)
    check(np.all(np.isfinite(w)), f"{what}: NaN reached the weights")
    check(np.all(hvd.allgather(w[None]).numpy() == w), f"{what}: weights differ across ranks")


# 9. Direction screen (faults whose loss looks normal): a worker sending -1x its gradient under
# an honest loss is rejected within a few steps, and stays out; a clean run keeps everyone and
# equals Horovod's Average at every step. The weights follow the NumPy oracle step by step.
def direction_run(flip_rank, steps=25):
    red = make_reduction("lsg")
    fn = tf.function(lambda g, lo: red(g, lo))
    st_np, prev_w, prev_n, kept_log = ref.new_reputation(K), None, None, []
    for t in range(steps):
        common = local_grads(1000 + t)  # the true gradient, the same on every rank
        noise = local_grads(10_000 * (t + 1) + R, scale=0.8)
        g = [c + n for c, n in zip(common, noise, strict=True)]
        if R == flip_rank:
            g = [-x for x in g]
        out, st = fn(g, tf.constant(1.0 + 1e-3 * R))
        table, w = st["table"].numpy(), st["weights"].numpy()
        cos = np.full(K, np.nan)
        if prev_w is not None:
            cos = ref.loo_cosine(table[:, 5], prev_n, prev_w, table[0, 6])
            st_np = ref.reputation_update(st_np, cos, prev_w > 0, 0.95)
        law = ref.worker_law(table[:, 0], table[:, 1], table[:, 2], loss_se=table[:, 4])
        law = law * ref.direction_law(st_np, valid=table[:, 2] > 0.5)[0]
        check(np.array_equal(law, w), f"step {t}: weights {w} != oracle {law}")
        prev_w, prev_n = law / law.sum(), table[:, 1]
        allg = gather_flat(g)
        want = allg[w > 0].mean(0)
        check(np.allclose(flat(out), want, atol=1e-5), f"step {t}: not the mean of the kept")
        if flip_rank is None:
            avg = flat(hvd.grouped_allreduce(g, op=hvd.Average))
            check(np.allclose(flat(out), avg, atol=1e-6), f"clean step {t} != Average")
        kept_log.append(w)
    return np.array(kept_log)


clean = direction_run(None)
check(clean.min() == 1.0, f"direction screen dropped a healthy worker: {clean}")
if K >= 3:
    flipped = direction_run(K - 1)
    check(flipped[:, :-1].min() == 1.0, f"healthy worker dropped: {flipped}")
    check(np.all(flipped[5:, -1] == 0), f"sign-flipped worker kept: {flipped[:, -1]}")
    if R == 0:  # the screen's weights of the flipped worker, step by step
        print(
            f"flipped worker weights: {' '.join(str(float(w)) for w in flipped[:, -1])}", flush=True
        )

# 10. LSG's two ways to communicate agree: one allreduce with the scalars riding along (a second
# only when a finite worker is rejected) and allgather-then-allreduce; weights, stats and result,
# eager and traced, on a clean step, a NaN worker, a rejected finite worker (K >= 3: the second
# round), and float16 / float64 gradients (float64 takes the two-round path).
cases = [("clean", g, 1.0 + 1e-3 * R), ("nan", gn, 1.0)]
if K >= 3:
    cases.append(("outlier", g, 100.0 if R == K - 1 else 1.0 + 1e-3 * R))
cases.append(("float16", [tf.cast(x, tf.float16) for x in g], 1.0 + 1e-3 * R))
cases.append(("float64", [tf.cast(x, tf.float64) for x in g], 1.0 + 1e-3 * R))
for what, grads, loss in cases:
    for fn in (False, True):
        o1, s1 = reduce("lsg", grads, loss, fn=fn, rounds="one")
        o2, s2 = reduce("lsg", grads, loss, fn=fn, rounds="two")
        tol = 1e-3 if what == "float16" else 1e-6
        check([o.dtype for o in o1] == [x.dtype for x in grads], f"{what}: dtypes {o1}")
        check(np.allclose(flat(o1), flat(o2), atol=tol), f"{what} fn={fn}: one != two rounds")
        for key in ("weights", "workers_kept", "skipped", "loss", "table"):
            same = np.array_equal(s1[key], s2[key], equal_nan=True)
            check(same, f"{what} fn={fn}: {key} {s1[key]} {s2[key]}")
print(f"RANK {R} OK", flush=True)
