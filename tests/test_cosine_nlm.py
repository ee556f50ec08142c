"""Cosine NLM (spec §1a): NumPy reference == _C == TF op, Theorem 1's noise-variance property,
and bad input rejected with errors naming the argument."""

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import _C, ops, reference

# float32 uses a vectorised exp and float cos; TF attrs h/eps are 32-bit floats.
TOL = {np.float32: 2e-5, np.float64: 1e-9}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,r,s",
    [
        ((2, 9, 11, 2), 1, 2),  # batch x channel planes
        ((1, 6, 5, 1), 2, 3),  # pads wider than the image (repeated reflection)
        ((1, 12, 13, 1), 4, 2),  # r > 3: the prefix-sum path of the horizontal box
        ((1, 1, 1, 1), 2, 2),  # one pixel
        ((1, 7, 7, 1), 0, 1),  # 1x1 patches
    ],
)
def test_reference_c_and_op_agree(rng, dtype, shape, r, s):
    x = rng.uniform(size=shape).astype(dtype)
    x[0, :3, :3, 0] = 0  # all-zero patches: cos = 0 there by the eps rule
    want = reference.cosine_nlm(x, r, s, 0.25)
    got_c = _C.cosine_nlm(x, r, s, 0.25)
    got_tf = ops.cosine_nlm(x, r, s, 0.25).numpy()
    assert got_c.dtype == dtype and got_tf.dtype == dtype
    np.testing.assert_allclose(got_c, want, atol=TOL[dtype])
    np.testing.assert_allclose(got_tf, want, atol=max(TOL[dtype], 1e-7))


def test_hand_worked_cases():
    # s = 0: the only candidate is the pixel itself, so the output is the input.
    x = np.arange(12.0).reshape(1, 3, 4, 1)
    np.testing.assert_allclose(_C.cosine_nlm(x, 1, 0, 0.1), x, rtol=1e-15)
    # A constant image stays constant (all weights equal, all candidates equal).
    c = np.full((1, 5, 6, 1), 0.3)
    np.testing.assert_allclose(_C.cosine_nlm(c, 1, 2, 0.1), c, atol=1e-15)
    # 1x3 image [1, 2, 3] with r = 0, s = 1: 1x1 patches of positive values all have cos = 1,
    # so the weights are equal and out(a) is the mean over the reflected window.
    # Window of pixel 0 is (x[1], x[0], x[1]) -> 5/3; pixel 1: 2; pixel 2: (2 + 3 + 2)/3 = 7/3.
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1)
    got = _C.cosine_nlm(x, 0, 1, 0.1)[0, 0, :, 0]
    np.testing.assert_allclose(got, [5 / 3, 2.0, 7 / 3], atol=1e-7)


def test_theorem1_noise_variance_drops_with_more_similar_patches():
    # Theorem 1: averaging k similar noisy patches divides the noise variance by about k. On a
    # flat noisy image every patch is similar, so the output variance falls, and falls further
    # as the search window (the number of averaged patches) grows.
    rng = np.random.default_rng(7)
    sigma = 0.05
    x = (0.5 + sigma * rng.standard_normal((1, 64, 64, 1))).astype(np.float32)
    var_in = x.var()
    variances = []
    for s in (1, 2, 4):
        y = _C.cosine_nlm(x, 2, s, 1.0)
        variances.append(y[0, 8:-8, 8:-8, 0].var())
    assert variances[0] < var_in / 3  # 9 candidates
    assert variances[0] > variances[1] > variances[2]  # 9 < 25 < 81 candidates
    # about var/k for k = (2s+1)^2 (neighbouring outputs share candidates, so allow 3x)
    assert variances[2] < 3 * var_in / 81


def test_threads_do_not_change_the_result(rng):
    x = rng.uniform(size=(6, 10, 9, 3)).astype(np.float32)
    whole = _C.cosine_nlm(x, 1, 2, 0.2)
    for i in range(6):
        np.testing.assert_array_equal(_C.cosine_nlm(x[i : i + 1], 1, 2, 0.2), whole[i : i + 1])


def test_in_tf_function_and_shape_inference(rng):
    x = rng.uniform(size=(2, 8, 8, 1)).astype(np.float32)
    f = tf.function(lambda t: ops.cosine_nlm(t, 1, 2, 0.2))
    np.testing.assert_allclose(f(x).numpy(), _C.cosine_nlm(x, 1, 2, 0.2), atol=1e-6)
    spec = tf.TensorSpec([None, 8, None, 1], tf.float32)
    assert f.get_concrete_function(spec).output_shapes.as_list() == [None, 8, None, 1]


@pytest.mark.parametrize(
    "shape,kwargs,match",
    [
        ((8, 8, 1), {}, "x must be 4-D"),
        ((1, 8, 8, 1), {"h": 0.0}, "h must be"),
        ((1, 8, 8, 1), {"h": -1.0}, "h must be"),
        ((1, 8, 8, 1), {"patch_radius": -1}, "patch_radius must be >= 0"),
        ((1, 8, 8, 1), {"search_radius": -2}, "search_radius must be >= 0"),
    ],
)
def test_bad_input_names_the_argument(shape, kwargs, match):
    x = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=match):
        _C.cosine_nlm(x, **kwargs)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=match):
        ops.cosine_nlm(x, **kwargs)


def test_op_dtype_error():
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        ops.cosine_nlm(np.ones((1, 4, 4, 1), np.int32))


def test_float32_running_sums_on_a_tall_8bit_image_with_black_regions(rng):
    # Tall enough that the float32 running sums restart (every 32 rows) and a single plane is cut
    # into row strips; 8-bit levels with an all-black block, where the Cauchy-Schwarz clamp must
    # keep cos exactly 0 (float leftovers divided by eps would wreck the weights).
    x = np.round(rng.uniform(size=(1, 80, 23, 1)) * 255) / 255
    x[0, 20:45, 5:17, 0] = 0.0
    want = reference.cosine_nlm(x, 2, 3, 0.1)
    got = _C.cosine_nlm(x.astype(np.float32), 2, 3, 0.1)
    np.testing.assert_allclose(got, want, atol=TOL[np.float32])
    np.testing.assert_allclose(_C.cosine_nlm(x, 2, 3, 0.1), want, atol=TOL[np.float64])
    # Deep inside the black block every patch is all-zero: all weights equal exp(-1/h), so the
    # output is the (zero) mean exactly.
    assert np.all(got[0, 27:38, 10:12, 0] == 0.0)


def test_row_strips_do_not_change_the_result(rng):
    # One plane is cut into row strips (threads get work); in a batch of many planes it is not.
    # The running-sum restarts are aligned with the strips, so the results are bit-identical.
    x = rng.uniform(size=(20, 96, 17, 1)).astype(np.float32)
    whole = _C.cosine_nlm(x, 2, 3, 0.2)
    np.testing.assert_array_equal(_C.cosine_nlm(x[3:4], 2, 3, 0.2), whole[3:4])


def test_real_parameters_are_float64_scalars_named_in_errors():
    # h, eps (and marr_hildreth's threshold) are float64 scalar inputs of the TF ops: a
    # non-scalar is refused naming the parameter
    import tensorflow as tf

    from iapdcnn._loader import load_ops

    lib = load_ops()
    x = tf.ones([1, 5, 5, 1], tf.float64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="cosine_nlm: h must be a scalar"):
        lib.iapdcnn_cosine_nlm(x=x, h=[0.1, 0.2], eps=1e-8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="marr_hildreth: threshold must be a"):
        lib.iapdcnn_marr_hildreth(x=x, threshold=[0.1])
