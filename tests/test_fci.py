"""FCI (spec §1c) through the whole chain: NumPy reference == _C == TensorFlow op."""

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import _C, ops, reference

TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 3, 16), (7, 9, 49), (0, 3, 5)])
def test_reference_c_and_op_agree(rng, dtype, shape):
    n_x, n_y, length = shape
    x = rng.normal(size=(n_x, length)).astype(dtype)
    y = (rng.normal(size=(n_y, length)) * 3 + 1).astype(dtype)
    want = reference.fci(x, y)
    got_c = _C.fci(x, y)
    got_tf = ops.fci(x, y).numpy()
    assert got_c.dtype == dtype and got_tf.dtype == dtype
    assert got_c.shape == got_tf.shape == (n_x, n_y)
    np.testing.assert_allclose(got_c, want, atol=TOL[dtype])
    np.testing.assert_allclose(got_tf, want, atol=TOL[dtype])


def test_hand_worked_case():
    # x = [1, 2, 3], y = [2, 4, 6]: mean 2 and 4, var 2/3 and 8/3, cov 4/3.
    # FCI = (4/3) / (2/3 + 8/3 + 4) = (4/3) / (22/3) = 2/11.
    x = np.array([[1.0, 2.0, 3.0]])
    y = np.array([[2.0, 4.0, 6.0]])
    assert _C.fci(x, y)[0, 0] == pytest.approx(2 / 11, abs=1e-15)
    assert ops.fci(x, y).numpy()[0, 0] == pytest.approx(2 / 11, abs=1e-15)


def test_identical_blocks_give_one_half(rng):
    x = rng.uniform(size=(6, 64))
    np.testing.assert_allclose(np.diag(_C.fci(x, x)), 0.5, atol=1e-14)
    np.testing.assert_allclose(np.diag(ops.fci(x, x).numpy()), 0.5, atol=1e-14)
    # 0.5 is the maximum (2*FCI is Lin's concordance coefficient, in [-1, 1]).
    assert (_C.fci(x, rng.uniform(size=(5, 64))) <= 0.5).all()


def test_symmetric(rng):
    x = rng.normal(size=(5, 12))
    np.testing.assert_allclose(_C.fci(x, x), _C.fci(x, x).T, atol=1e-15)


@pytest.mark.parametrize("impl", ["c", "tf"])
def test_constant_blocks_are_defined(impl):
    fn = _C.fci if impl == "c" else (lambda a, b: ops.fci(a, b).numpy())
    c = np.full((1, 9), 0.1)  # 0.1 is not exact in binary: round-off must not leak in
    assert fn(c, c)[0, 0] == 0.5
    assert fn(c, np.full((1, 9), 0.7))[0, 0] == 0.0
    assert fn(c, np.linspace(0, 1, 9)[None])[0, 0] == 0.0
    assert np.isfinite(fn(np.zeros((1, 9)), np.zeros((1, 9)))).all()
    np.testing.assert_array_equal(reference.fci(c, c), [[0.5]])


@pytest.mark.parametrize(
    "x_shape,y_shape,match",
    [
        ((3, 4), (2, 5), "same block length"),
        ((3,), (2, 3), "x must be 2-D"),
        ((3, 4), (2, 4, 1), "y must be 2-D"),
        ((3, 0), (2, 0), "block_len"),
    ],
)
def test_bad_shapes_name_the_argument(x_shape, y_shape, match):
    x, y = np.ones(x_shape), np.ones(y_shape)
    with pytest.raises(ValueError, match=match):
        _C.fci(x, y)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=match):
        ops.fci(x, y)


def test_op_dtype_errors():
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        ops.fci(np.ones((2, 3), np.int32), np.ones((2, 3), np.int32))
    with pytest.raises(TypeError, match="y must have x's dtype"):
        ops.fci(np.ones((2, 3), np.float32), np.ones((2, 3), np.float64))


def test_op_in_graph_and_tf_function(rng):
    x = rng.normal(size=(4, 10))
    y = rng.normal(size=(3, 10))
    f = tf.function(ops.fci)
    np.testing.assert_allclose(f(x, y).numpy(), reference.fci(x, y), atol=1e-12)
    g = tf.Graph()
    with g.as_default():
        xp = tf.compat.v1.placeholder(tf.float64, [None, 10])
        out = ops.fci(xp, tf.constant(y))
        assert out.shape.as_list() == [None, 3]
    with tf.compat.v1.Session(graph=g) as sess:
        np.testing.assert_allclose(sess.run(out, {xp: x}), reference.fci(x, y), atol=1e-12)


# --- block screening: class statistics, prototype FCI, within-class FCI (spec §1c) ---------------


def _blocks(rng, n=11, positions=5, length=8, classes=3, dtype=np.float64):
    # 8-bit levels in [0, 1]. As float32 these are multiples of 2^-31, so their float64 sums are
    # exact (up to 2^22 samples per class) and merges do not depend on the split.
    x = (rng.integers(0, 256, size=(n, positions, length)) / 255.0).astype(np.float32).astype(dtype)
    y = rng.integers(0, classes, size=n).astype(np.int64)
    return x, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_ops_reference_c_and_op_agree(rng, dtype):
    x, y = _blocks(rng, dtype=dtype)
    x[0, 1] = 0.25  # a constant block
    k = 3
    c_ref, s_ref = reference.fci_class_stats(x, y, k)
    for c, s in (_C.fci_class_stats(x, y, k), [t.numpy() for t in ops.fci_class_stats(x, y, k)]):
        np.testing.assert_array_equal(c, c_ref)
        np.testing.assert_allclose(s, s_ref, rtol=1e-15)
    protos = (s_ref / np.maximum(c_ref, 1)[:, None, None]).astype(dtype)
    want = reference.fci_prototype(x, y, protos)
    np.testing.assert_allclose(_C.fci_prototype(x, y, protos), want, atol=TOL[dtype])
    np.testing.assert_allclose(ops.fci_prototype(x, y, protos).numpy(), want, atol=TOL[dtype])
    want = reference.fci_within_class(x, y)
    np.testing.assert_allclose(_C.fci_within_class(x, y, k), want, atol=TOL[dtype])
    np.testing.assert_allclose(ops.fci_within_class(x, y, k).numpy(), want, atol=TOL[dtype])


def test_within_class_hand_case():
    # Two samples of class 0 with identical blocks -> 0.5; a lone class-1 sample -> 0.5 by rule;
    # a class-2 pair x, 2x: FCI = 2/11 (the hand-worked pairwise case above).
    x = np.array(
        [[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]], [[5.0, 1.0, 0.0]], [[1, 2, 3]], [[2, 4, 6]]]
    )
    y = np.array([0, 0, 1, 2, 2])
    got = _C.fci_within_class(x, y, 3)[:, 0]
    np.testing.assert_allclose(got, [0.5, 0.5, 0.5, 2 / 11, 2 / 11], atol=1e-15)


def test_class_stats_merge_exactly_across_shards(rng):
    x, y = _blocks(rng, n=40, dtype=np.float32)
    c_all, s_all = _C.fci_class_stats(x, y, 3)
    parts = [_C.fci_class_stats(x[i::3], y[i::3], 3) for i in range(3)]
    np.testing.assert_array_equal(sum(p[0] for p in parts), c_all)
    np.testing.assert_array_equal(sum(p[1] for p in parts), s_all)


def test_prototype_of_identical_class_gives_one_half(rng):
    x, _ = _blocks(rng, n=1)
    xs = np.repeat(x, 4, axis=0)
    y = np.zeros(4, np.int64)
    c, s = _C.fci_class_stats(xs, y, 1)
    np.testing.assert_allclose(_C.fci_prototype(xs, y, s / c[0]), 0.5, atol=1e-14)


@pytest.mark.parametrize(
    "fn,args,match",
    [
        ("fci_class_stats", ((4, 2, 3), [0, 1, 5, 0], 3), r"labels must be in \[0, num_classes"),
        ("fci_class_stats", ((4, 2, 3), [0, -1, 0, 0], 3), r"labels\[1\] = -1"),
        ("fci_class_stats", ((4, 2, 3), [0, 1, 0], 3), "one entry per sample"),
        ("fci_class_stats", ((4, 6), [0, 1, 0, 1], 3), "x must be 3-D"),
        ("fci_class_stats", ((4, 2, 3), [0, 1, 0, 1], 0), "num_classes must be >= 1"),
        ("fci_within_class", ((3, 2, 3), [0, 1, 0, 1], 2), "one entry per sample"),
        ("fci_within_class", ((3, 2, 3), [0, 1, 2], 2), "labels must be in"),
        ("fci_prototype", ((3, 2, 3), [0, 1, 0], (2, 2, 4)), "prototypes must be"),
        ("fci_prototype", ((3, 2, 3), [0, 1, 2], (2, 2, 3)), "labels must be in"),
    ],
)
def test_block_ops_bad_input_names_the_argument(fn, args, match):
    x = np.ones(args[0])
    y = np.array(args[1], np.int64)
    third = np.ones(args[2]) if fn == "fci_prototype" else args[2]
    with pytest.raises(ValueError, match=match):
        getattr(_C, fn)(x, y, third)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=match):
        getattr(ops, fn)(x, y, third)
