"""Im2col + GEMM convolution (spec §2b): the TF op against tf.nn.conv2d on a broad grid, the NumPy
reference == _C == TF op for all three kernels, gradients, random configs, and bad input."""

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvdrun import child_env
from iapdcnn import _C, ops, reference

# Max error relative to max(1, max |reference|); the reference sees the same rounded inputs.
TOL = {"float64": 1e-11, "float32": 2e-5, "float16": 4e-3, "bfloat16": 3e-2}
NP_DTYPE = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
}

# (batch, h, w, c, kh, kw, out_c, strides, padding, dilations, groups)
GRID = [
    (1, 1, 1, 1, 1, 1, 1, 1, "VALID", 1, 1),
    (3, 5, 5, 4, 1, 1, 8, 1, "VALID", 1, 1),  # pointwise: no im2col
    (3, 6, 7, 4, 1, 1, 6, 2, "SAME", 1, 1),  # 1x1 stride 2
    (3, 9, 11, 3, 3, 3, 5, 1, "SAME", 1, 1),
    (1, 12, 12, 4, 2, 5, 3, (1, 2), "VALID", 1, 1),  # non-square kernel, strides (1, 2)
    (3, 13, 11, 4, 5, 3, 6, 3, "SAME", 1, 1),
    (1, 17, 17, 3, 7, 7, 4, 2, "SAME", 1, 1),  # ResNet stem-like
    (1, 3, 3, 2, 7, 7, 3, 1, "SAME", 1, 1),  # kernel larger than the input under SAME
    (1, 2, 5, 2, 5, 4, 3, 2, "SAME", 1, 1),  # kernel larger than the input, strided
    (3, 10, 9, 4, 3, 3, 4, 1, "SAME", 2, 1),  # dilations
    (1, 14, 12, 3, 3, 2, 2, 1, "VALID", (2, 3), 1),
    (3, 8, 9, 4, 3, 3, 5, 1, [[0, 0], [1, 2], [0, 3], [0, 0]], 1, 1),  # asymmetric explicit
    (1, 9, 9, 3, 4, 4, 2, 2, [[0, 0], [3, 0], [2, 1], [0, 0]], 1, 1),
    (3, 8, 8, 8, 3, 3, 8, 1, "SAME", 1, 2),  # groups
    (1, 9, 7, 6, 3, 3, 6, 2, "VALID", 1, 3),
    (3, 6, 6, 8, 3, 3, 8, 1, "SAME", 1, 8),  # depthwise
    (0, 7, 7, 3, 3, 3, 4, 1, "SAME", 1, 1),  # empty batch
    (1, 73, 73, 16, 3, 3, 32, 1, "SAME", 1, 1),  # several tiles and row bands
    (1, 7, 7, 128, 3, 3, 64, 1, "SAME", 1, 1),  # channel blocks in grad-input
    (2, 40, 41, 8, 1, 1, 4, 1, "VALID", 1, 1),  # sharded grad-filter
    (1, 73, 5, 2, 7, 1, 3, 3, "VALID", 1, 1),
    (2, 6, 7, 2, 2, 2, 3, 1, [[0, 0], [3, 1], [0, 2], [0, 0]], 1, 1),  # pad > kernel reach
    (2, 5, 6, 40, 3, 3, 36, 1, "SAME", 1, 2),  # grad-input via the flipped filter, blocks
    (2, 30, 31, 5, 3, 4, 6, 1, [[0, 0], [2, 0], [1, 3], [0, 0]], 1, 1),  # row-view forward
    (1, 40, 40, 3, 2, 3, 4, 1, [[0, 0], [3, 0], [0, 4], [0, 0]], 1, 1),  # row view, wide pads
    (1, 7, 7, 128, 3, 3, 130, 1, "SAME", 1, 1),  # stride-1 grad-input via col2im, channel blocks
]


def _ids(cfg):
    return "n{}_{}x{}x{}_k{}x{}x{}_s{}_{}_d{}_g{}".format(*cfg).replace(" ", "")


def _to_tf_padding(padding, fmt):
    if isinstance(padding, str) or fmt == "NHWC":
        return padding
    return [padding[0], padding[3], padding[1], padding[2]]


def _make(cfg, rng, dtype="float64", fmt="NHWC"):
    n, h, w, c, kh, kw, oc, s, pad, d, g = cfg
    x = rng.normal(size=(n, h, w, c)).astype(NP_DTYPE[dtype])
    f = rng.normal(size=(kh, kw, c // g, oc)).astype(NP_DTYPE[dtype])
    if fmt == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x, f, s, _to_tf_padding(pad, fmt), d, g


def _tf_conv(x, f, s, pad, fmt, d):
    """tf.nn.conv2d in float64 (NCHW through transposes: TF's CPU conv is NHWC)."""
    x64, f64 = np.asarray(x, np.float64), np.asarray(f, np.float64)
    if fmt == "NCHW":
        x64 = x64.transpose(0, 2, 3, 1)
        pad = pad if isinstance(pad, str) else [pad[0], pad[2], pad[3], pad[1]]
    out = tf.nn.conv2d(x64, f64, s, pad, dilations=d).numpy()
    return out.transpose(0, 3, 1, 2) if fmt == "NCHW" else out


def _assert_close(got, want, dtype):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape
    if want.size:
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("cfg", GRID, ids=_ids)
def test_forward_matches_tf_nn_conv2d(rng, cfg, fmt):
    x, f, s, pad, d, g = _make(cfg, rng, "float64", fmt)
    want = (
        _tf_conv(x, f, s, pad, fmt, d)
        if g == 1
        else reference.im2col_conv2d(x, f, s, pad, fmt, d, g)
    )
    # Grouped cases use the reference, itself checked against tf.nn.conv2d on the others.
    _assert_close(reference.im2col_conv2d(x, f, s, pad, fmt, d, g), want, "float64")
    _assert_close(ops.im2col_conv2d(x, f, s, pad, fmt, d, g).numpy(), want, "float64")
    _assert_close(_C.im2col_conv2d(x, f, s, pad, fmt, d, g), want, "float64")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("cfg", GRID[:17:2] + [GRID[13]], ids=_ids)
def test_forward_dtypes(rng, cfg, fmt, dtype):
    x, f, s, pad, d, g = _make(cfg, rng, dtype, fmt)
    want = reference.im2col_conv2d(x, f, s, pad, fmt, d, g)
    got = ops.im2col_conv2d(tf.constant(x), tf.constant(f), s, pad, fmt, d, g)
    assert got.dtype.name == dtype
    _assert_close(got.numpy(), want, dtype)
    got_c = _C.im2col_conv2d(x, f, s, pad, fmt, d, g)
    assert got_c.dtype == NP_DTYPE[dtype]
    _assert_close(got_c, want, dtype)
    # TF's own low-precision conv agrees (its oneDNN conv gets the shape of an empty batch wrong).
    if g == 1 and dtype != "bfloat16" and fmt == "NHWC" and x.shape[0] > 0:
        _assert_close(tf.nn.conv2d(x, f, s, pad, dilations=d).numpy(), want, dtype)


# Float32 NHWC shapes for the forward's AVX-512 micro-kernel (csrc/conv/conv_direct_cpu.cc):
# out_c a multiple of 16, every register-tile width (16..64 channels, and 64 + 16 in two blocks),
# pixel counts that leave every row tail, and its own plan: padded-copy chunks that split the
# batch and one image, segment passes whose accumulators go through the output, dilated taps,
# and the input read in place where no pixel reads padding.
DIRECT_GRID = [
    (2, 13, 11, 5, 3, 3, 16, 1, "SAME", 1, 1),
    (1, 9, 10, 7, 3, 3, 48, 1, "VALID", 1, 1),
    (3, 8, 7, 16, 3, 3, 80, 1, "SAME", 1, 1),  # two channel blocks: 64 + 16, packed filter
    (2, 15, 13, 6, 5, 3, 32, (2, 1), "SAME", 1, 1),
    (2, 12, 14, 8, 3, 3, 32, 1, "SAME", (2, 3), 1),  # dilated: one segment per tap
    (1, 3, 3, 4, 7, 7, 16, 1, "SAME", 1, 1),  # kernel larger than the input
    (2, 9, 8, 16, 3, 4, 32, 1, [[0, 0], [3, 1], [0, 4], [0, 0]], 1, 1),  # pad > kernel reach
    (2, 17, 17, 3, 7, 7, 64, 2, "SAME", 1, 1),  # stem-like
    (0, 7, 7, 16, 3, 3, 16, 1, "SAME", 1, 1),  # empty batch
    (1, 6, 6, 256, 3, 3, 128, 1, "SAME", 1, 1),  # one segment per pass
    (3, 40, 40, 448, 3, 3, 16, 1, "SAME", 1, 1),  # padded copy in two chunks (of images)
    (1, 150, 150, 96, 3, 3, 16, 1, "SAME", 1, 1),  # one image split across chunks
    (2, 12, 12, 32, 3, 3, 64, 2, "VALID", 1, 1),
    # No pixel reads padding: the input is read in place, rows in_w * C apart.
    (2, 9, 7, 24, 1, 1, 32, 1, "VALID", 1, 1),  # pointwise
    (2, 9, 8, 24, 1, 1, 48, 2, "SAME", 1, 1),  # 1x1 stride 2
    (1, 11, 10, 8, 3, 3, 16, (2, 3), "VALID", 1, 1),  # unread last rows and columns
]


@pytest.mark.parametrize("cfg", DIRECT_GRID, ids=_ids)
def test_forward_float32_micro_kernel(rng, cfg):
    x, f, s, pad, d, g = _make(cfg, rng, "float32")
    want = _tf_conv(x, f, s, pad, "NHWC", d)
    _assert_close(ops.im2col_conv2d(x, f, s, pad, "NHWC", d, g).numpy(), want, "float32")
    _assert_close(_C.im2col_conv2d(x, f, s, pad, "NHWC", d, g), want, "float32")
    if s == 1:  # the stride-1 gradient w.r.t. the input runs as a forward convolution
        dy = rng.normal(size=want.shape).astype(np.float32)
        _assert_close(
            _C.im2col_conv2d_backprop_input(x.shape, f, dy, s, pad, "NHWC", d, g),
            reference.im2col_conv2d_backprop_input(x.shape, f, dy, s, pad, "NHWC", d, g),
            "float32",
        )


@pytest.mark.parametrize(
    "cfg",
    [
        (2, 9, 7, 24, 1, 1, 32, 1, "VALID", 1, 1),
        (3, 20, 20, 13, 1, 1, 80, 1, "SAME", 1, 1),  # pixel shards with their own dW; packed dY
        (1, 5, 5, 70, 1, 1, 144, 1, "VALID", 1, 1),  # channel tiles split over tasks
        (4, 16, 16, 64, 1, 1, 16, 1, "VALID", 1, 1),
        (1, 32, 40, 1024, 1, 1, 528, 1, "VALID", 1, 1),  # large dW: tiles over three chunks
    ],
    ids=_ids,
)
def test_filter_gradient_float32_pointwise_micro_kernel(rng, cfg):
    x, f, s, pad, d, g = _make(cfg, rng, "float32")
    dy = rng.normal(size=x.shape[:3] + (f.shape[3],)).astype(np.float32)
    want = reference.im2col_conv2d_backprop_filter(x, f.shape, dy, s, pad, "NHWC", d, g)
    got = _C.im2col_conv2d_backprop_filter(x, f.shape, dy, s, pad, "NHWC", d, g)
    _assert_close(got, want, "float32")
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch(ft)
        loss = tf.reduce_sum(ops.im2col_conv2d(xt, ft, s, pad) * dy)
    _assert_close(tape.gradient(loss, ft).numpy(), want, "float32")


# Float32 NHWC filter gradients of BackpropFilterSmall (csrc/conv/conv_direct_cpu.cc: dW <= 1 MiB,
# not pointwise): small_resnet's layers (the trainer's model), both orientations (dW^T where
# out_c < 64 and k_w * C is a multiple of 16), units of several images, dilation, padding
# wider than the kernel's reach, and one-unit problems (one ParallelFor call, dW in place).
SMALL_FILTER_GRID = [
    (64, 28, 28, 1, 3, 3, 16, 1, "SAME", 1, 1),  # stem: 9 dW rows across taps
    (64, 28, 28, 2, 3, 3, 16, 1, "SAME", 1, 1),  # the --features stem
    (8, 28, 28, 16, 3, 3, 16, 1, "SAME", 1, 1),  # transposed, 8 x 48 tiles
    (8, 28, 28, 16, 3, 3, 32, 2, "SAME", 1, 1),
    (8, 28, 28, 16, 1, 1, 32, 2, "SAME", 1, 1),  # 1x1 stride 2: input read in place
    (8, 14, 14, 32, 3, 3, 32, 1, "SAME", 1, 1),  # kernel row of 96: two 48-wide blocks
    (8, 14, 14, 32, 3, 3, 64, 2, "SAME", 1, 1),
    (12, 7, 7, 64, 3, 3, 64, 1, "SAME", 1, 1),  # out_c 64: untransposed, units of many images
    (3, 12, 14, 16, 3, 3, 32, 1, "SAME", (2, 3), 1),  # dilated: untransposed
    (2, 13, 11, 5, 3, 3, 48, 1, "VALID", 1, 1),
    (2, 9, 8, 16, 3, 4, 16, 1, [[0, 0], [3, 1], [0, 4], [0, 0]], 1, 1),  # pad > kernel reach
    (1, 5, 6, 16, 2, 2, 16, (2, 1), "SAME", 1, 1),  # one unit: one call, dW^T of one slot
    (1, 5, 6, 3, 2, 2, 80, 1, "VALID", 1, 1),  # one unit, two channel blocks, dW in place
    (2, 6, 6, 256, 3, 3, 64, 1, "SAME", 1, 1),  # the largest dW it takes (576 KiB)
]


@pytest.mark.parametrize("cfg", SMALL_FILTER_GRID, ids=_ids)
def test_filter_gradient_float32_small_micro_kernel(rng, cfg):
    x, f, s, pad, d, g = _make(cfg, rng, "float32")
    want_y = _tf_conv(x, f, s, pad, "NHWC", d)
    dy = rng.normal(size=want_y.shape).astype(np.float32)
    want = reference.im2col_conv2d_backprop_filter(x, f.shape, dy, s, pad, "NHWC", d, g)
    _assert_close(
        _C.im2col_conv2d_backprop_filter(x, f.shape, dy, s, pad, "NHWC", d, g), want, "float32"
    )
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch(ft)
        loss = tf.reduce_sum(ops.im2col_conv2d(xt, ft, s, pad, dilations=d) * dy)
    _assert_close(tape.gradient(loss, ft).numpy(), want, "float32")


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_configs_float32_small_filter_gradient(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    # any out_c: the micro-kernel masks the last block of out_c % 16 channels (pruned layers)
    oc = data.draw(st.one_of(st.integers(1, 80), st.sampled_from([8, 24, 40, 48, 72])))
    c = data.draw(st.sampled_from([1, 2, 3, 8, 16, 32, 48]))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    h, w = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
    strides = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dil = (
        (1, 1) if max(strides) > 1 else (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    )
    padding = data.draw(st.sampled_from(["SAME", "VALID"]))
    if padding == "VALID" and (h < (kh - 1) * dil[0] + 1 or w < (kw - 1) * dil[1] + 1):
        padding = "SAME"
    n = data.draw(st.integers(1, 12))
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    f = rng.normal(size=(kh, kw, c, oc)).astype(np.float32)
    dy = rng.normal(size=_tf_conv(x, f, strides, padding, "NHWC", dil).shape).astype(np.float32)
    want = reference.im2col_conv2d_backprop_filter(x, f.shape, dy, strides, padding, "NHWC", dil, 1)
    got = _C.im2col_conv2d_backprop_filter(x, f.shape, dy, strides, padding, "NHWC", dil, 1)
    _assert_close(got, want, "float32")


def test_micro_kernel_switch_selects_the_eigen_path(rng, monkeypatch):
    # IAPDCNN_CONV_MICROKERNEL=0 (what bench_conv.py compares against) gives the same answer.
    x, f, s, pad, d, g = _make(DIRECT_GRID[2], rng, "float32")
    want = _tf_conv(x, f, s, pad, "NHWC", d)
    micro = _C.im2col_conv2d(x, f, s, pad, "NHWC", d, g)
    monkeypatch.setenv("IAPDCNN_CONV_MICROKERNEL", "0")
    eigen = _C.im2col_conv2d(x, f, s, pad, "NHWC", d, g)
    _assert_close(micro, want, "float32")
    _assert_close(eigen, want, "float32")


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_configs_float32_micro_kernel(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    oc = data.draw(st.one_of(st.integers(1, 144), st.sampled_from([8, 24, 40, 72, 136])))
    c = data.draw(st.integers(1, 40))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    h, w = data.draw(st.integers(1, 24)), data.draw(st.integers(1, 24))
    strides = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dil = (
        (1, 1) if max(strides) > 1 else (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    )
    padding = data.draw(st.sampled_from(["SAME", "VALID"]))
    if padding == "VALID" and (h < (kh - 1) * dil[0] + 1 or w < (kw - 1) * dil[1] + 1):
        padding = "SAME"
    n = data.draw(st.integers(0, 3))
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    f = rng.normal(size=(kh, kw, c, oc)).astype(np.float32)
    want = _tf_conv(x, f, strides, padding, "NHWC", dil)
    _assert_close(ops.im2col_conv2d(x, f, strides, padding, dilations=dil).numpy(), want, "float32")


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("cfg", GRID, ids=_ids)
def test_gradients_match_reference_and_tf(rng, cfg, fmt):
    x, f, s, pad, d, g = _make(cfg, rng, "float64", fmt)
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch([xt, ft])
        y = ops.im2col_conv2d(xt, ft, s, pad, fmt, d, g)
        dy = tf.constant(rng.normal(size=y.shape))
        loss = tf.reduce_sum(y * dy)
    dx, df = tape.gradient(loss, [xt, ft])
    want_dx = reference.im2col_conv2d_backprop_input(x.shape, f, dy.numpy(), s, pad, fmt, d, g)
    want_df = reference.im2col_conv2d_backprop_filter(x, f.shape, dy.numpy(), s, pad, fmt, d, g)
    _assert_close(dx.numpy(), want_dx, "float64")
    _assert_close(df.numpy(), want_df, "float64")
    _assert_close(
        _C.im2col_conv2d_backprop_input(x.shape, f, dy.numpy(), s, pad, fmt, d, g),
        want_dx,
        "float64",
    )
    _assert_close(
        _C.im2col_conv2d_backprop_filter(x, f.shape, dy.numpy(), s, pad, fmt, d, g),
        want_df,
        "float64",
    )
    # The reference against TF's own gradients (TF's CPU gradients lack groups and dilations).
    if g == 1 and d == 1 and x.shape[0] > 0 and fmt == "NHWC":
        with tf.GradientTape() as tape:
            tape.watch([xt, ft])
            loss = tf.reduce_sum(tf.nn.conv2d(xt, ft, s, pad, dilations=d) * dy)
        tdx, tdf = tape.gradient(loss, [xt, ft])
        _assert_close(want_dx, tdx.numpy(), "float64")
        _assert_close(want_df, tdf.numpy(), "float64")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
def test_gradients_low_precision(rng, dtype, fmt):
    cfg = (2, 9, 8, 4, 3, 3, 6, (1, 2), [[0, 0], [1, 2], [0, 1], [0, 0]], 1, 2)
    x, f, s, pad, d, g = _make(cfg, rng, dtype, fmt)
    y_shape = _C.im2col_conv2d(x, f, s, pad, fmt, d, g).shape
    dy = rng.normal(size=y_shape).astype(NP_DTYPE[dtype])
    want_dx = reference.im2col_conv2d_backprop_input(x.shape, f, dy, s, pad, fmt, d, g)
    want_df = reference.im2col_conv2d_backprop_filter(x, f.shape, dy, s, pad, fmt, d, g)
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch([xt, ft])
        y = ops.im2col_conv2d(xt, ft, s, pad, fmt, d, g)
    dx, df = tape.gradient(y, [xt, ft], output_gradients=tf.constant(dy))
    assert dx.dtype.name == df.dtype.name == dtype
    _assert_close(dx.numpy(), want_dx, dtype)
    _assert_close(df.numpy(), want_df, dtype)


@pytest.mark.parametrize(
    "cfg,fmt",
    [
        ((2, 5, 6, 3, 3, 2, 4, (1, 2), "SAME", 1, 1), "NHWC"),
        ((1, 6, 5, 4, 3, 3, 4, 1, [[0, 0], [2, 0], [1, 1], [0, 0]], 2, 2), "NHWC"),
        ((2, 5, 5, 4, 2, 2, 2, 2, "VALID", 1, 2), "NCHW"),
        ((1, 4, 4, 3, 1, 1, 2, 1, "VALID", 1, 1), "NCHW"),
    ],
    ids=["strided", "explicit_dilated_groups", "nchw_groups", "pointwise"],
)
def test_numeric_gradient_float64(rng, cfg, fmt):
    x, f, s, pad, d, g = _make(cfg, rng, "float64", fmt)
    theoretical, numerical = tf.test.compute_gradient(
        lambda a, b: ops.im2col_conv2d(a, b, s, pad, fmt, d, g), [tf.constant(x), tf.constant(f)]
    )
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, atol=1e-8)


def test_hand_worked_case():
    # 3x3 image 1..9, 2x2 filter of ones, VALID: each output is the sum of a 2x2 window.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    f = np.ones((2, 2, 1, 1), np.float32)
    want = np.array([[12, 16], [24, 28]], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(ops.im2col_conv2d(x, f, 1, "VALID").numpy(), want)
    np.testing.assert_array_equal(_C.im2col_conv2d(x, f, 1, "VALID"), want)
    # SAME pads one row/column after (TF's rule): the last row/column sums what is left.
    same = _C.im2col_conv2d(x, f, 1, "SAME")[0, :, :, 0]
    np.testing.assert_array_equal(same, [[12, 16, 9], [24, 28, 15], [15, 17, 9]])


def test_modes_eager_function_graph(rng):
    x, f, s, pad, d, g = _make((2, 8, 8, 4, 3, 3, 5, 2, "SAME", 1, 1), rng, "float32")
    eager = ops.im2col_conv2d(x, f, s, pad).numpy()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4], tf.float32)])
    def fn(inp):
        return ops.im2col_conv2d(inp, f, s, pad)

    np.testing.assert_array_equal(fn(x).numpy(), eager)
    assert fn.get_concrete_function().output_shapes.as_list() == [None, None, None, 5]
    shaped = tf.function(lambda inp: ops.im2col_conv2d(inp, f, s, pad))
    spec = tf.TensorSpec([None, 8, 8, 4], tf.float32)
    assert shaped.get_concrete_function(spec).output_shapes.as_list() == [None, 4, 4, 5]
    graph = tf.Graph()
    with graph.as_default():
        ph = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 4])
        out = ops.im2col_conv2d(ph, f, s, pad)
        assert out.shape.as_list() == [None, 4, 4, 5]
        grads = tf.gradients(tf.reduce_sum(out), [ph])
        with tf.compat.v1.Session(graph=graph) as sess:
            got, gx = sess.run([out, grads[0]], {ph: x})
    np.testing.assert_array_equal(got, eager)
    assert gx.shape == x.shape


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_configs(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    groups = data.draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * data.draw(st.integers(1, 4))
    oc = groups * data.draw(st.integers(1, 4))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    h, w = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
    strides = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dil = (
        (1, 1) if max(strides) > 1 else (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    )
    kind = data.draw(st.sampled_from(["SAME", "VALID", "EXPLICIT"]))
    pads = [data.draw(st.integers(0, 3)) for _ in range(4)]
    ekh, ekw = (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1
    if kind == "VALID" and (h < ekh or w < ekw):
        kind = "SAME"
    if kind == "EXPLICIT" and (h + pads[0] + pads[1] < ekh or w + pads[2] + pads[3] < ekw):
        kind = "SAME"
    fmt = data.draw(st.sampled_from(["NHWC", "NCHW"]))
    n = data.draw(st.integers(0, 3))
    padding = kind if kind != "EXPLICIT" else [[pads[0], pads[1]], [pads[2], pads[3]]]
    x = rng.normal(size=(n, c, h, w) if fmt == "NCHW" else (n, h, w, c))
    f = rng.normal(size=(kh, kw, c // groups, oc))
    want = reference.im2col_conv2d(x, f, strides, padding, fmt, dil, groups)
    _assert_close(
        ops.im2col_conv2d(x, f, strides, padding, fmt, dil, groups).numpy(), want, "float64"
    )
    dy = rng.normal(size=want.shape)
    _assert_close(
        _C.im2col_conv2d_backprop_input(x.shape, f, dy, strides, padding, fmt, dil, groups),
        reference.im2col_conv2d_backprop_input(x.shape, f, dy, strides, padding, fmt, dil, groups),
        "float64",
    )
    _assert_close(
        _C.im2col_conv2d_backprop_filter(x, f.shape, dy, strides, padding, fmt, dil, groups),
        reference.im2col_conv2d_backprop_filter(x, f.shape, dy, strides, padding, fmt, dil, groups),
        "float64",
    )


BAD = [
    ("wrong input rank", np.zeros((2, 5, 5)), np.zeros((3, 3, 5, 2)), {}, "input must be 4-D"),
    ("wrong filter rank", np.zeros((1, 5, 5, 2)), np.zeros((3, 2, 2)), {}, "filters must be 4-D"),
    (
        "channels",
        np.zeros((1, 5, 5, 3)),
        np.zeros((3, 3, 2, 2)),
        {"groups": 1},
        "input channels (3)",
    ),
    ("zero stride", np.zeros((1, 5, 5, 2)), np.zeros((3, 3, 2, 2)), {"strides": 0}, "strides"),
    (
        "negative stride",
        np.zeros((1, 5, 5, 2)),
        np.zeros((3, 3, 2, 2)),
        {"strides": (1, -2)},
        "strides",
    ),
    (
        "groups not dividing",
        np.zeros((1, 5, 5, 4)),
        np.zeros((3, 3, 2, 3)),
        {"groups": 2},
        "groups (2)",
    ),
    (
        "negative groups",
        np.zeros((1, 5, 5, 4)),
        np.zeros((3, 3, 2, 4)),
        {"groups": -1},
        "groups must be >= 1 (or 0: inferred from the shapes), got -1",
    ),
    (
        "groups not inferable",
        np.zeros((1, 5, 5, 5)),
        np.zeros((3, 3, 2, 4)),
        {},
        "input channels (5) must be a multiple of filters' in_channels",
    ),
    (
        "data_format",
        np.zeros((1, 5, 5, 2)),
        np.zeros((3, 3, 2, 2)),
        {"data_format": "nhwc"},
        "data_format must be 'NHWC' or 'NCHW', got 'nhwc'",
    ),
    (
        "stride with dilation",
        np.zeros((1, 9, 9, 2)),
        np.zeros((3, 3, 2, 2)),
        {"strides": 2, "dilations": 2},
        "strides > 1 together with dilations > 1",
    ),
    (
        "kernel too big",
        np.zeros((1, 2, 2, 1)),
        np.zeros((5, 5, 1, 1)),
        {"padding": "VALID"},
        "negative",
    ),
    (
        "negative pads",
        np.zeros((1, 5, 5, 1)),
        np.zeros((3, 3, 1, 1)),
        {"padding": [[0, 0], [1, -1], [0, 0], [0, 0]]},
        "explicit_paddings",
    ),
    (
        "zero dilation",
        np.zeros((1, 5, 5, 1)),
        np.zeros((3, 3, 1, 1)),
        {"dilations": 0},
        "dilations",
    ),
]


@pytest.mark.parametrize("impl", ["tf", "c"])
@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_error(case, impl):
    _, x, f, kwargs, needle = case
    kwargs = {"strides": 1, "padding": "SAME", **kwargs}
    if impl == "tf":
        with pytest.raises(tf.errors.InvalidArgumentError, match="im2col_conv2d: .*") as e:
            ops.im2col_conv2d(x, f, **kwargs)
    else:
        with pytest.raises(ValueError) as e:
            _C.im2col_conv2d(x, f, **kwargs)
    assert needle in str(e.value)


def test_bad_input_in_graph_mode_is_caught_by_the_shape_function():
    @tf.function
    def fn():
        return ops.im2col_conv2d(
            tf.zeros([1, 5, 5, 4]), tf.zeros([3, 3, 2, 3]), 1, "SAME", groups=2
        )

    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="groups"):
        fn()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None])])
    def unknown(x):  # nothing known but the attributes: data_format is still checked
        return ops.im2col_conv2d(x, tf.zeros([3, 3, 2, 2]), 1, "SAME", data_format="CHWN")

    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="data_format must be"):
        unknown.get_concrete_function()


_ODD_BATCH_WORKER = """
import numpy as np, tensorflow as tf
from iapdcnn import ops, reference
rng = np.random.default_rng(0)
for n, h, c in [(33, 28, 8), (3, 14, 8), (1, 14, 8), (7, 14, 4)]:
    for it in range(60):
        x = tf.constant(rng.normal(size=(n, h, h, c)).astype(np.float32))
        f = tf.constant(rng.normal(size=(1, 1, c, 2 * c)).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch([x, f])
            y = ops.im2col_conv2d(x, f, 2, "SAME")
        dy = tf.ones_like(y)
        dx, df = tape.gradient(y, [x, f], output_gradients=dy)
    want = reference.im2col_conv2d_backprop_filter(
        x.numpy(), f.shape, dy.numpy(), 2, "SAME", "NHWC", 1, 1)
    assert np.allclose(df.numpy(), want, atol=1e-3 * max(1, abs(want).max())), (n, h, c)
print("OK")
"""


def test_strided_gradients_on_odd_batches_do_not_corrupt_memory():
    # TensorFlow 2.21's own oneDNN kernels abort on exactly these (docs/known_issues.md); ours
    # run them, in a subprocess so that a corruption would fail this test and not the session
    p = subprocess.run(
        [sys.executable, "-c", _ODD_BATCH_WORKER],
        capture_output=True,
        text=True,
        timeout=600,
        env=child_env(),
    )
    assert p.returncode == 0 and "OK" in p.stdout, (p.stdout + p.stderr)[-3000:]


def test_groups_are_inferred_from_the_shapes_by_default(rng):
    # as tf.nn.conv2d: input channels / filters' in_channels, in the op, _C and the gradients
    x = rng.normal(size=(2, 6, 6, 6))
    f = rng.normal(size=(3, 3, 2, 9))
    want = reference.im2col_conv2d(x, f, 1, "SAME", "NHWC", 1, 3)
    _assert_close(_C.im2col_conv2d(x, f, 1, "SAME"), want, "float64")
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch([xt, ft])
        y = ops.im2col_conv2d(xt, ft, 1, "SAME")
    _assert_close(y.numpy(), want, "float64")
    dy = np.ones(want.shape)
    dx, df = tape.gradient(y, [xt, ft], output_gradients=tf.constant(dy))
    _assert_close(
        dx.numpy(),
        reference.im2col_conv2d_backprop_input(x.shape, f, dy, 1, "SAME", "NHWC", 1, 3),
        "float64",
    )
    _assert_close(
        df.numpy(),
        reference.im2col_conv2d_backprop_filter(x, f.shape, dy, 1, "SAME", "NHWC", 1, 3),
        "float64",
    )


def test_bad_gradient_shapes_name_the_argument():
    x, f = np.zeros((1, 5, 5, 2)), np.zeros((3, 3, 2, 4))
    with pytest.raises(ValueError, match="out_backprop must have shape"):
        _C.im2col_conv2d_backprop_filter(x, f.shape, np.zeros((1, 5, 5, 3)), 1, "SAME")
    lib = ops.conv.load_ops()
    with pytest.raises(tf.errors.InvalidArgumentError, match="out_backprop must have shape"):
        lib.iapdcnn_im2col_conv2d_backprop_input(
            input_sizes=[1, 5, 5, 2], filters=f, out_backprop=np.zeros((1, 4, 5, 4)), padding="SAME"
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_sizes"):
        lib.iapdcnn_im2col_conv2d_backprop_input(
            input_sizes=[1, 5, 5], filters=f, out_backprop=np.zeros((1, 5, 5, 4)), padding="SAME"
        )


def test_scratch_is_bounded_for_resnet50_batch64():
    # The largest ResNet-50 activations: stem and conv2_x 3x3 at batch 64.
    for shape, filt, s in [
        ((64, 224, 224, 3), (7, 7, 3, 64), 2),
        ((64, 56, 56, 64), (3, 3, 64, 64), 1),
        ((64, 7, 7, 512), (3, 3, 512, 512), 1),
        ((64, 56, 56, 64), (1, 1, 64, 256), 1),
    ]:
        per_task, shared = _C.im2col_conv2d_scratch_bytes(shape, filt, s, "SAME")
        assert per_task < 64 << 20 and shared < 64 << 20


@pytest.mark.parametrize("padding", ["same", "Same", "valid", "SAME", "VALID"])
def test_padding_names_in_any_case_agree_across_c_ops_and_reference(rng, padding):
    # One rule (csrc/conv/conv.cc): _C, the TF op and the reference accept the same names.
    x = rng.normal(size=(2, 7, 6, 3))
    f = rng.normal(size=(3, 3, 3, 4))
    want = reference.im2col_conv2d(x, f, 2, padding.upper())
    np.testing.assert_allclose(_C.im2col_conv2d(x, f, 2, padding), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        ops.im2col_conv2d(x, f, 2, padding).numpy(), want, rtol=1e-12, atol=1e-12
    )
    dy = rng.normal(size=want.shape)
    np.testing.assert_allclose(
        _C.im2col_conv2d_backprop_input(x.shape, f, dy, 2, padding),
        reference.im2col_conv2d_backprop_input(x.shape, f, dy, 2, padding.upper()),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("padding", ["full", "", "SAMEX"])
def test_unknown_padding_is_rejected_by_c_and_ops_alike(rng, padding):
    x = rng.normal(size=(1, 5, 5, 2))
    f = rng.normal(size=(3, 3, 2, 2))
    with pytest.raises(ValueError, match="padding"):
        _C.im2col_conv2d(x, f, 1, padding)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="padding"):
        ops.im2col_conv2d(x, f, 1, padding)


def _avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


def _small_filter_copy_bytes(n: int, h: int, w: int, c: int) -> int:
    """What BackpropFilterSmall copies at most for a 3x3 SAME stride-1 float32 convolution: blocks
    of max(1, 512 // out_w) output rows of the batch's row space; a block's first row, and the
    first row of every image it enters, bring all 3 padded input rows, every other row one more."""
    units, rows, row_bytes = n * h, max(1, 512 // w), (w + 2) * c * 4
    most = 0
    for u0 in range(0, units, rows):
        block = range(u0, min(units, u0 + rows))
        most = max(most, sum(3 if u == u0 or u % h == 0 else 1 for u in block))
    return most * row_bytes


@pytest.mark.skipif(not _avx512(), reason="the direct micro-kernels need AVX-512 (else im2col)")
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize(("h", "w"), [(56, 56), (14, 14), (20, 40), (9, 100), (30, 7)])
def test_scratch_bytes_cover_the_small_filter_kernels_copies(n, h, w, monkeypatch):
    # The plan's per-task scratch is the largest of the three kernels'; for these shapes the
    # filter gradient's padded copies are never under-counted (a block spanning two images is
    # larger than the first block whenever 512 // out_w does not divide out_h).
    monkeypatch.delenv("IAPDCNN_CONV_MICROKERNEL", raising=False)
    per_task, _ = _C.im2col_conv2d_scratch_bytes([n, h, w, 16], [3, 3, 16, 32], 1, "SAME")
    assert per_task >= _small_filter_copy_bytes(n, h, w, 16)


@pytest.mark.skipif(not _avx512(), reason="the direct micro-kernels need AVX-512 (else im2col)")
def test_scratch_bytes_count_a_block_across_two_images(monkeypatch):
    monkeypatch.delenv("IAPDCNN_CONV_MICROKERNEL", raising=False)
    one, _ = _C.im2col_conv2d_scratch_bytes([1, 56, 56, 16], [3, 3, 16, 16], 1, "SAME")
    two, _ = _C.im2col_conv2d_scratch_bytes([2, 56, 56, 16], [3, 3, 16, 16], 1, "SAME")
    # 9-row blocks: [0, 9) copies 3 + 8 padded rows, [54, 63) 3 + 1 + 3 + 6 (it enters image 1)
    assert one == 11 * 58 * 16 * 4 == _small_filter_copy_bytes(1, 56, 56, 16)
    assert two == 13 * 58 * 16 * 4 == _small_filter_copy_bytes(2, 56, 56, 16)
