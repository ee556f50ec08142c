"""Per-sample and worker-level LAW (spec §3) against the NumPy oracle, with hand-worked cases:
the K = 2 rule, non-finite values, and the all-rejected case. No Horovod needed."""

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import reference
from iapdcnn.distributed import (
    direction_law,
    law_mask,
    loo_cosine,
    loss_standard_error,
    lsg_loss,
    masked_median,
    reputation_update,
    sample_law,
    worker_law,
)

ref = reference.lsg


def test_sample_law_hand_worked():
    # mean = 2.5; |dev| = 1.5, 0.5, 0.5, 1.5 ; absolute tau = 1 keeps the middle two (paper rule)
    losses = tf.constant([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(sample_law(losses, tau=1.0).numpy(), [0, 1, 1, 0])
    # LSG = (1/B) sum LAW_i LAD_i = (2 + 3) / 4; "kept" divides by 2
    law = sample_law(losses, tau=1.0)
    assert lsg_loss(losses, law).numpy() == pytest.approx(1.25)
    assert lsg_loss(losses, law, "kept").numpy() == pytest.approx(2.5)


@pytest.mark.parametrize("centre", ["mean", "median"])
@pytest.mark.parametrize("tau", [None, 0.5])
def test_sample_law_matches_numpy(rng, centre, tau):
    for _ in range(20):
        x = rng.gamma(2.0, 0.5, size=int(rng.integers(1, 40))).astype(np.float32)
        if rng.random() < 0.3:
            x[rng.integers(len(x))] = rng.choice([np.nan, np.inf, 50.0])
        got = sample_law(x, tau=tau, centre=centre, kappa=2.0).numpy()
        want = ref.law(x, tau=tau, centre=centre, kappa=2.0)
        np.testing.assert_array_equal(got, want)
        for norm in ("batch", "kept"):
            assert lsg_loss(x, got, norm).numpy() == pytest.approx(
                ref.lsg_loss(x, want, norm), rel=1e-5
            )


def test_lsg_loss_gradient_is_masked_sum():
    theta = tf.Variable([1.0, 2.0, 3.0, 30.0])
    with tf.GradientTape() as tape:
        per_sample = theta**2
        law = sample_law(per_sample, tau=10.0, centre="median")
        loss = lsg_loss(per_sample, law)
    g = tape.gradient(loss, theta).numpy()
    np.testing.assert_allclose(g, [2 * 1 / 4, 2 * 2 / 4, 2 * 3 / 4, 0.0])


def test_nan_sample_gets_zero_and_no_nan_loss():
    x = tf.constant([1.0, float("nan"), 1.2])
    law = sample_law(x)
    assert law.numpy()[1] == 0
    assert np.isfinite(lsg_loss(x, law).numpy())


def test_masked_median():
    assert masked_median([3.0, 1.0, 2.0, 9.0], [True] * 3 + [False]).numpy() == 2.0
    assert masked_median([3.0, 1.0], [True, True]).numpy() == 2.0
    assert masked_median([3.0, 1.0], [False, False]).numpy() == 0.0


def test_worker_law_outlier_nan_and_numpy(rng):
    losses = np.array([0.50, 0.52, 0.49, 5.0], np.float32)
    norms = np.ones(4, np.float32)
    fin = np.ones(4, np.float32)
    np.testing.assert_array_equal(worker_law(losses, norms, fin).numpy(), [1, 1, 1, 0])
    # gradient x -10 under an honest loss: caught by the norm screen only
    norms2 = np.array([1.0, 1.1, 0.9, 10.0], np.float32)
    losses2 = np.array([0.50, 0.52, 0.49, 0.51], np.float32)
    np.testing.assert_array_equal(worker_law(losses2, norms2, fin).numpy(), [1, 1, 1, 0])
    np.testing.assert_array_equal(
        worker_law(losses2, norms2, fin, grad_screen=False).numpy(), [1, 1, 1, 1]
    )
    fin2 = np.array([1, 0, 1, 1], np.float32)
    np.testing.assert_array_equal(worker_law(losses2, norms, fin2).numpy(), [1, 0, 1, 1])
    for _ in range(30):
        k = int(rng.integers(1, 9))
        lo = rng.gamma(2, 0.3, k).astype(np.float32)
        no = rng.gamma(2, 0.3, k).astype(np.float32)
        fi = (rng.random(k) > 0.2).astype(np.float32)
        se = rng.gamma(2, 0.02, k).astype(np.float32) * (rng.random(k) > 0.2)
        for centre in ("mean", "median"):
            got = worker_law(lo, no, fi, centre=centre).numpy()
            np.testing.assert_array_equal(got, ref.worker_law(lo, no, fi, centre=centre))
            got = worker_law(lo, no, fi, loss_se=se, centre=centre).numpy()
            np.testing.assert_array_equal(got, ref.worker_law(lo, no, fi, se, centre=centre))


def test_loss_standard_error(rng):
    x = rng.gamma(2, 0.3, 32).astype(np.float32)
    want = np.std(x, ddof=1) / np.sqrt(32)
    assert loss_standard_error(x).numpy() == pytest.approx(want, rel=1e-5)
    assert not np.isfinite(loss_standard_error([1.0, np.nan]).numpy())


# Rows of a clean K = 4 run (Fashion-MNIST, small ResNet, batch 32; trainer --step-log): losses,
# gradient norms and standard errors. The MAD-only rule with the old floors (tau_floor 0.25,
# grad_floor 1) rejected the hardest batch in each; sampling noise explains all of them.
CLEAN_ROWS = [
    ([0.722, 0.242, 0.304, 0.333], [1.54, 0.96, 1.37, 1.08], [0.229, 0.048, 0.069, 0.079]),
    ([0.851, 0.868, 0.580, 0.936], [1.58, 2.02, 1.34, 1.55], [0.143, 0.129, 0.115, 0.217]),
    ([0.394, 0.444, 0.401, 0.922], [1.39, 2.27, 0.95, 2.81], [0.141, 0.095, 0.114, 0.187]),
    ([0.560, 0.524, 0.160, 0.523], [1.30, 1.71, 0.61, 1.42], [0.211, 0.126, 0.040, 0.162]),
]


@pytest.mark.parametrize("row", CLEAN_ROWS)
def test_clean_rows_keep_every_worker(row):
    losses, norms, se = row
    assert worker_law(losses, norms, np.ones(4), loss_se=se).numpy().tolist() == [1, 1, 1, 1]
    # the old rule's defaults (MAD of 4 values, floor 0.25 |centre|) rejected one of them
    old = worker_law(losses, norms, np.ones(4), tau_floor=0.25, grad_floor=1.0).numpy()
    assert old.sum() == 3


def test_faults_still_caught_with_standard_errors():
    se = [0.12, 0.13, 0.11, 0.30]
    # shuffled labels (rank 3): loss 3.8 among ~1.2, 20 standard errors away
    got = worker_law([1.15, 1.22, 1.18, 3.8], [1.2, 1.3, 1.1, 2.0], np.ones(4), loss_se=se)
    assert got.numpy().tolist() == [1, 1, 1, 0]
    # corrupted inputs (rank 3): loss 2.6 among 0.55, a small own standard error
    got = worker_law([0.55, 0.52, 0.58, 2.6], [1.2, 1.3, 1.1, 1.6], np.ones(4), loss_se=se)
    assert got.numpy().tolist() == [1, 1, 1, 0]
    # gradient x -10 under an honest loss: the norm screen
    got = worker_law([0.55, 0.52, 0.58, 0.56], [1.2, 1.3, 1.1, 12.0], np.ones(4), loss_se=se)
    assert got.numpy().tolist() == [1, 1, 1, 0]
    # NaN: the finite flag
    got = worker_law([0.55, 0.52, 0.58, np.nan], [1.2, 1.3, 1.1, np.nan], [1, 1, 1, 0], loss_se=se)
    assert got.numpy().tolist() == [1, 1, 1, 0]


def test_healthy_workers_kept_in_simulation():
    """K = 4 healthy workers, each the mean of 32 skewed per-sample losses (exponential, like
    cross-entropy): the standard-error floor keeps every worker on >= 99.9% of the steps; the
    MAD-only rule of 3-4 values rejects one on several percent."""
    rng = np.random.default_rng(0)
    steps, k, b = 2000, 4, 32
    per_sample = rng.exponential(0.6, size=(steps, k, b))
    losses = per_sample.mean(-1)
    se = per_sample.std(-1, ddof=1) / np.sqrt(b)
    norms = rng.uniform(0.9, 1.1, size=(steps, k))
    ones = np.ones(k)
    new = np.array(
        [ref.worker_law(lo, n, ones, s) for lo, n, s in zip(losses, norms, se, strict=True)]
    )
    old = np.array(
        [ref.worker_law(lo, n, ones, tau_floor=0.25) for lo, n in zip(losses, norms, strict=True)]
    )
    assert (new.min(1) == 1).mean() >= 0.999
    assert (old.min(1) == 0).mean() > 0.02
    # and TensorFlow agrees with the oracle on these rows
    for i in range(0, steps, 100):
        got = worker_law(losses[i], norms[i], ones, loss_se=se[i]).numpy()
        np.testing.assert_array_equal(got, new[i])


def test_k2_rule():
    # spec §3: with K = 2 the deviations are equal. Relative tau keeps both ...
    assert worker_law([0.5, 9.0], [1.0, 1.0], [1.0, 1.0]).numpy().tolist() == [1, 1]
    # ... absolute tau keeps both or rejects both
    assert worker_law([0.5, 0.6], [1, 1], [1, 1], tau=0.1).numpy().tolist() == [1, 1]
    assert worker_law([0.5, 9.0], [1, 1], [1, 1], tau=0.1).numpy().tolist() == [0, 0]
    # and a non-finite worker is always dropped
    assert worker_law([0.5, float("nan")], [1, 1], [1, 1]).numpy().tolist() == [1, 0]


def test_all_rejected_and_identical():
    assert worker_law([1.0, 1.0], [1.0, 1.0], [0.0, 0.0]).numpy().tolist() == [0, 0]
    # identical values are kept (tau floor), K = 1 is kept
    assert law_mask([2.0, 2.0, 2.0])[0].numpy().tolist() == [1, 1, 1]
    assert worker_law([2.0], [1.0], [1.0]).numpy().tolist() == [1]


def test_bad_options():
    with pytest.raises(ValueError, match="centre"):
        sample_law([1.0], centre="mode")
    with pytest.raises(ValueError, match="kappa"):
        sample_law([1.0], kappa=0)
    with pytest.raises(ValueError, match="normalise"):
        lsg_loss([1.0], [1.0], "all")
    with pytest.raises(ValueError, match="tau"):
        sample_law([1.0], tau=-1.0)
    with pytest.raises(ValueError, match="se_kappa"):
        worker_law([1.0, 1.0], [1.0, 1.0], [1.0, 1.0], loss_se=[0.1, 0.1], se_kappa=0)
    from iapdcnn.distributed import LSGReduction

    with pytest.raises(ValueError, match="se_kappa"):
        LSGReduction(se_kappa=-1.0)
    with pytest.raises(ValueError, match="rounds must be one of one, two, got 'three'"):
        LSGReduction(rounds="three")


def test_world_single_process_and_bad_op():
    from iapdcnn import world

    x = np.array([1.0, 2.0])
    assert world.rank_size(from_environment=False) == (0, 1)
    np.testing.assert_array_equal(world.allreduce_numpy(x, "max"), x)
    assert world.broadcast_object({"a": 1}, name="t") == {"a": 1}
    with pytest.raises(ValueError, match="op must be 'sum' or 'max', got 'min'"):
        world.allreduce_numpy(x, "min")


def test_loss_with_standard_error_publishes_and_serialises(rng, tmp_path):
    # The Keras way in: the wrapped loss equals the plain one, stores the batch's standard error
    # for the optimizer's reduction, and a model compiled with it saves and loads.
    from iapdcnn.distributed import DistributedOptimizer, LossWithStandardError

    opt = DistributedOptimizer(tf.keras.optimizers.SGD(0.1), reduction="lsg")
    plain = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss = opt.loss_with_standard_error(plain)
    y = rng.integers(0, 3, 16)
    logits = tf.constant(rng.normal(size=(16, 3)).astype(np.float32))
    np.testing.assert_allclose(loss(y, logits).numpy(), plain(y, logits).numpy(), rtol=1e-6)
    per = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    se = opt.reduction_stats["loss_se"].numpy()
    assert se > 0
    np.testing.assert_allclose(se, loss_standard_error(per).numpy(), rtol=1e-6)
    by_name = opt.loss_with_standard_error("mse")
    np.testing.assert_allclose(by_name([[1.0, 2.0]], [[1.0, 4.0]]).numpy(), 2.0)
    with pytest.raises(ValueError, match="optimizer must come from"):
        LossWithStandardError("mse", tf.keras.optimizers.SGD(0.1))
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
    model.compile("sgd", loss)
    model.save(tmp_path / "m.keras")
    back = tf.keras.models.load_model(tmp_path / "m.keras")
    x = rng.normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_allclose(back.loss(y, back(x)).numpy(), plain(y, model(x)).numpy(), rtol=1e-6)


# ----------------------------------------------------------------------------- direction screen


def _tf_state(st):
    return {k: tf.constant(v, tf.float32) for k, v in st.items()}


def test_loo_cosine_from_scalars_equals_vectors(rng):
    # the cosine of g_k to A - a_k g_k, from the scalars every worker sends, equals the one
    # computed from the vectors themselves
    k, p = 5, 40
    g = rng.normal(size=(k, p))
    a = np.array([0.25, 0.25, 0.0, 0.25, 0.25])  # worker 2 was left out of A
    agg = (a[:, None] * g).sum(0)
    want = [
        np.dot(g[i], agg - a[i] * g[i]) / np.linalg.norm(g[i]) / np.linalg.norm(agg - a[i] * g[i])
        for i in range(k)
    ]
    dots, norms = g @ agg, np.linalg.norm(g, axis=1)
    np.testing.assert_allclose(ref.loo_cosine(dots, norms, a, agg @ agg), want, rtol=1e-10)
    got = loo_cosine(dots, norms, a, agg @ agg).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # a lone kept worker has no others: undefined, NaN (no evidence)
    lone = loo_cosine([4.0], [2.0], [1.0], 4.0).numpy()
    assert np.isnan(lone).all() and np.isnan(ref.loo_cosine([4.0], [2.0], [1.0], 4.0)).all()


def _simulate(rng, steps, cos_of_worker, k=4, kappa=5.0, decay=0.95):
    """Runs TF and NumPy side by side on synthetic cosines; returns the per-step laws."""
    st_np, st_tf, laws = ref.new_reputation(k), _tf_state(ref.new_reputation(k)), []
    for t in range(steps):
        cos = np.array([cos_of_worker(i, t) for i in range(k)])
        kept = np.ones(k, bool) if t == 0 else laws[-1] > 0
        st_np = ref.reputation_update(st_np, cos, kept, decay)
        st_tf = reputation_update(st_tf, tf.constant(cos, tf.float32), kept, decay)
        for key in st_np:
            np.testing.assert_allclose(st_tf[key].numpy(), st_np[key], rtol=1e-4, atol=1e-6)
        law_np, z_np = ref.direction_law(st_np, kappa=kappa)
        law_tf, info = direction_law(st_tf, kappa=kappa)
        zt = info["z"].numpy()
        # equal except where z sits on the threshold within float32 rounding
        near = np.abs(z_np + kappa) < 1e-3
        np.testing.assert_array_equal(law_tf.numpy()[~near], law_np[~near])
        np.testing.assert_allclose(zt, z_np, rtol=1e-3, atol=1e-3)
        laws.append(law_np)
    return np.array(laws)


def test_direction_screen_rejects_a_sign_flip_keeps_healthy(rng):
    # cosines as measured in mid-run (steps 100-250 of 400): healthy ~ 0.15 with a spread of
    # 0.17 per step, a sign-flipped worker ~ -0.15
    noise = rng.normal(0.0, 0.17, size=(4, 300))

    def cos(i, t):
        return (-0.15 if i == 3 else 0.15) + noise[i, t]

    laws = _simulate(rng, 300, cos)
    assert laws[:, :3].min() == 1.0  # no healthy worker dropped
    assert (laws[100:, 3] == 0).mean() > 0.9, laws[:, 3]  # the flipped one, once settled
    clean = _simulate(rng, 300, lambda i, t: 0.15 + noise[i, t])
    assert clean.min() == 1.0


def test_direction_screen_nan_first_step_and_k2(rng):
    # no evidence yet (NaN cosines, e.g. the first step): everyone passes, state unchanged
    st = ref.reputation_update(ref.new_reputation(3), [np.nan] * 3, [True] * 3, 0.9)
    assert np.all(st["s1"] == 0) and st["var_s1"] == 0
    law, _ = direction_law(_tf_state(st))
    np.testing.assert_array_equal(law.numpy(), [1, 1, 1])
    # K = 2: both reputations are equally far from their median: neither is ever rejected
    laws = _simulate(rng, 50, lambda i, t: [0.5, -0.5][i] + 0.01 * rng.normal(), k=2)
    assert laws.min() == 1.0
    # K = 2 as it really is: both leave-one-out cosines are cos(g_1, g_2), the same number up to
    # round-off, so the spread is ~0. Round-off alone once gave z = -5.2 and dropped a healthy
    # worker for the rest of a run (step 412 of bench_pipeline's pipeline, seed 0).
    same = rng.uniform(0.05, 0.4, size=500)
    laws = _simulate(rng, 500, lambda i, t: same[t] * (1 + 1e-7 * (i - 0.5)), k=2)
    assert laws.min() == 1.0
    # the state that run reached: equal reputations up to round-off, a spread of ~0
    st = {"num": [0.2567, 0.25669], "s1": [1.0, 1.0], "s2": [0.03, 0.03]}
    st |= {"var_num": 1e-14, "var_s1": 1.0}
    np.testing.assert_array_equal(direction_law(_tf_state(st))[0].numpy(), [1, 1])
    np.testing.assert_array_equal(
        ref.direction_law({k: np.asarray(v) for k, v in st.items()})[0], [1, 1]
    )
    # with 3 or more the screen works as before (the sign-flip test above), and 2 healthy
    # workers out of 3 still reject a third that disagrees
    laws = _simulate(rng, 300, lambda i, t: (-0.15 if i == 2 else 0.15) + 0.05 * rng.normal(), k=3)
    assert laws[:, :2].min() == 1.0 and (laws[100:, 2] == 0).mean() > 0.9
    with pytest.raises(ValueError, match="dir_kappa must be > 0"):
        direction_law(_tf_state(st), kappa=0.0)
