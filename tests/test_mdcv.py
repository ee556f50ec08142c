"""MDCV distances (spec §2a) through the whole chain: NumPy reference == _C == TensorFlow op, the
degenerate unshrunk case, invariances of the ranking, and clear errors on bad input."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.covariance import ledoit_wolf_shrinkage

from iapdcnn import _C, ops, reference

RTOL = {np.float32: 2e-4, np.float64: 1e-9}


def _tf(w, shrinkage=-1.0):
    return tuple(t.numpy() for t in ops.mdcv_distances(w, shrinkage))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(3, 3, 4, 8), (1, 1, 4, 16), (2, 2, 3, 12), (3, 3, 8, 64), (1, 1, 1, 2)]
)
@pytest.mark.parametrize("shrinkage", [-1.0, 0.0, 0.25, 1.0])
def test_reference_c_and_op_agree(rng, dtype, shape, shrinkage):
    # (1, 1, 4, 16) and (2, 2, 3, 12) have d < n: the dual path; the others the Gram path.
    w = rng.normal(size=shape).astype(dtype)
    want_d, want_c, want_l = reference.mdcv_distances(w, shrinkage)
    for got_d, got_c, got_l in (_C.mdcv_distances(w, shrinkage), _tf(w, shrinkage)):
        assert got_d.dtype == dtype and got_d.shape == (shape[3],) and got_c.shape == shape[:3]
        np.testing.assert_allclose(got_d, want_d, rtol=RTOL[dtype], atol=RTOL[dtype])
        np.testing.assert_allclose(got_c, want_c, rtol=RTOL[dtype], atol=1e-6)
        assert float(got_l) == pytest.approx(want_l, rel=RTOL[dtype], abs=1e-7)


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (1, 1, 5, 30)])
def test_ledoit_wolf_matches_scikit_learn(rng, shape):
    w = rng.normal(size=shape) * rng.uniform(0.1, 3, size=shape[:3] + (1,))
    x = w.reshape(-1, shape[3]).T
    assert _C.mdcv_distances(w)[2] == pytest.approx(ledoit_wolf_shrinkage(x), rel=1e-10)
    assert reference.mdcv.ledoit_wolf(x - x.mean(0)) == pytest.approx(
        ledoit_wolf_shrinkage(x), rel=1e-10
    )


def test_hand_worked_case():
    # d = 1, filters 0, 1, 2: mean 1, S = (1 + 0 + 1) / 2 = 1 = tr(S)/d, so S_l = 1 for every l
    # and the distances are |x - 1| = 1, 0, 1.
    w = np.array([0.0, 1.0, 2.0]).reshape(1, 1, 1, 3)
    for lam in (0.0, 0.5, 1.0, -1.0):
        np.testing.assert_allclose(_C.mdcv_distances(w, lam)[0], [1, 0, 1], atol=1e-12)
        np.testing.assert_allclose(_tf(w, lam)[0], [1, 0, 1], atol=1e-12)
    assert _C.mdcv_distances(w)[1].ravel().tolist() == [1.0]


@pytest.mark.parametrize("n", [3, 8, 40])
def test_unshrunk_rule_is_degenerate(rng, n):
    # spec §2a: with n <= d and the pseudo-inverse, every filter is at sqrt((n-1)^2/n).
    w = rng.normal(size=(3, 3, 8, n))
    for d, *_ in (_C.mdcv_distances(w, 0.0), _tf(w, 0.0), reference.mdcv_distances(w, 0.0)):
        np.testing.assert_allclose(d, np.sqrt((n - 1) ** 2 / n), rtol=1e-9)
    # Shrinkage is what makes the rule informative.
    d = _C.mdcv_distances(w)[0]
    assert np.ptp(d) / d.mean() > 1e-4


def test_identical_filters_give_zero(rng):
    w = np.repeat(rng.normal(size=(3, 3, 2, 1)), 5, axis=3)
    d, c, _ = _C.mdcv_distances(w)
    np.testing.assert_array_equal(d, 0.0)
    np.testing.assert_allclose(c, w[..., 0])


@pytest.mark.parametrize("shape", [(3, 3, 4, 16), (1, 1, 3, 20)])
def test_invariances(rng, shape):
    w = rng.normal(size=shape) * rng.uniform(0.2, 2.0, size=shape[:3] + (1,))
    d0 = _C.mdcv_distances(w)[0]
    # Common scale and common shift of all filters: Mahalanobis distances do not change.
    np.testing.assert_allclose(_C.mdcv_distances(3.7 * w)[0], d0, rtol=1e-9)
    np.testing.assert_allclose(
        _C.mdcv_distances(w + rng.normal(size=shape[:3] + (1,)))[0], d0, rtol=1e-8
    )
    # Reordering the filters reorders the distances; reordering input channels changes nothing.
    perm = rng.permutation(shape[3])
    np.testing.assert_allclose(_C.mdcv_distances(w[..., perm])[0], d0[perm], rtol=1e-9)
    np.testing.assert_allclose(
        _C.mdcv_distances(w[:, :, rng.permutation(shape[2])])[0], d0, rtol=1e-9
    )
    # Rotating the filter space (fixed l: Ledoit-Wolf's estimate is not rotation invariant).
    q, _ = np.linalg.qr(rng.normal(size=(w[..., 0].size,) * 2))
    wr = (q @ w.reshape(-1, shape[3])).reshape(shape)
    np.testing.assert_allclose(
        _C.mdcv_distances(wr, 0.3)[0], _C.mdcv_distances(w, 0.3)[0], rtol=1e-8
    )
    # An outlying filter is the farthest.
    w2 = w.copy()
    w2[..., 0] += 10 * np.abs(w).max()
    assert np.argmax(_C.mdcv_distances(w2)[0]) == 0


@pytest.mark.parametrize("impl", ["c", "tf"])
def test_bad_input_names_the_argument(impl):
    err = ValueError if impl == "c" else tf.errors.InvalidArgumentError
    fn = _C.mdcv_distances if impl == "c" else _tf
    with pytest.raises((err, ValueError), match="filters must be 4-D"):
        fn(np.zeros((3, 3, 4)), -1.0)
    with pytest.raises(err, match="at least 2 filters"):
        fn(np.ones((3, 3, 4, 1)), -1.0)
    with pytest.raises(err, match="shrinkage"):
        fn(np.ones((3, 3, 4, 4)), 1.5)
    with pytest.raises(err, match="shrinkage"):
        fn(np.ones((3, 3, 4, 4)), float("nan"))


def test_large_d_stays_in_gram_space(rng):
    # d = 36,000: a d x d float64 matrix would take 10 GB. The kernel's answer is checked against
    # the eigen-form of the same quantity in n x n space: d_i^2 = sum_k Q_ik^2 lam_k / (c + a lam_k).
    n, shape = 16, (3, 3, 4000, 16)
    w = rng.normal(size=shape).astype(np.float32)
    d, _, lam = _C.mdcv_distances(w)
    x = w.reshape(-1, n).T.astype(np.float64)
    xc = x - x.mean(0)
    g = xc @ xc.T
    evals, q = np.linalg.eigh(g)
    c, a = lam * np.trace(g) / ((n - 1) * x.shape[1]), (1 - lam) / (n - 1)
    want = np.sqrt((q**2 * (evals / (c + a * evals))).sum(axis=1))
    np.testing.assert_allclose(d, want, rtol=1e-4)


def test_op_shapes_in_a_graph():
    fn = tf.function(
        ops.mdcv_distances, input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)]
    )
    d, c, lam = fn.get_concrete_function().structured_outputs
    assert d.shape.rank == 1 and c.shape.rank == 3 and lam.shape.rank == 0
    d, c, lam = fn(tf.ones((1, 1, 2, 3)) * tf.constant([1.0, 2.0, 4.0]))
    assert d.shape == (3,) and c.shape == (1, 1, 2)
