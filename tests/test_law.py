"""Per-sample and worker-level LAW (SPEC 3) against the NumPy oracle, with hand-worked cases:
the K = 2 rule, non-finite values, and the all-rejected case. No Horovod needed."""

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import reference
from iapdcnn.distributed import law_mask, lsg_loss, masked_median, sample_law, worker_law

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
        for centre in ("mean", "median"):
            got = worker_law(lo, no, fi, centre=centre).numpy()
            np.testing.assert_array_equal(got, ref.worker_law(lo, no, fi, centre=centre))


def test_k2_rule():
    # SPEC 3: with K = 2 the deviations are equal. Relative tau keeps both ...
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
