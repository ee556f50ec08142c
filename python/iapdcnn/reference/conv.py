"""NumPy reference of the Im2col convolution (spec §2b) and its two gradients, with
tf.nn.conv2d's semantics: one strided slice of the padded input per kernel tap and group, written
for clarity. Computes in float64 and returns float64."""

from __future__ import annotations

import numpy as np

from .._conv_args import IntOrSeq, Padding, padding_attrs, spatial


def _setup(input_shape, filter_shape, strides, padding, data_format, dilations, groups):
    """input_shape in data_format order -> NHWC-terms attributes: (sh, sw, dh, dw, pads, groups, oh, ow)."""
    if data_format == "NCHW":
        _, c, h, w = input_shape
    else:
        _, h, w, c = input_shape
    kh, kw, cg, _ = filter_shape
    s = spatial("strides", strides, data_format)
    d = spatial("dilations", dilations, data_format)
    sh, sw = (s[2], s[3]) if data_format == "NCHW" else (s[1], s[2])
    dh, dw = (d[2], d[3]) if data_format == "NCHW" else (d[1], d[2])
    groups = c // cg if groups is None else groups
    if c != cg * groups:
        raise ValueError(f"input channels {c} != filters' in_channels {cg} x groups {groups}")
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    mode, ex = padding_attrs(padding, data_format)
    if mode == "VALID":
        pads = (0, 0, 0, 0)
    elif mode == "SAME":

        def same(size, k, st):
            total = max((-(-size // st) - 1) * st + k - size, 0)
            return total // 2, total - total // 2

        pads = (*same(h, ekh, sh), *same(w, ekw, sw))
    else:
        pads = tuple(ex[4:8]) if data_format == "NCHW" else tuple(ex[2:6])
    pt, pb, pl, pr = pads
    oh = int((h + pt + pb - ekh + sh) / sh)  # truncation, as TensorFlow
    ow = int((w + pl + pr - ekw + sw) / sw)
    if oh < 0 or ow < 0:
        raise ValueError("kernel larger than the padded input")
    return sh, sw, dh, dw, pads, groups, oh, ow


def _nhwc(x, data_format):
    return np.transpose(x, (0, 2, 3, 1)) if data_format == "NCHW" else x


def _back(x, data_format):
    return np.transpose(x, (0, 3, 1, 2)) if data_format == "NCHW" else x


def _taps(kh, kw, dh, dw, sh, sw, oh, ow):
    """For each kernel tap: the (rows, cols) slices of the padded input it reads."""
    for i in range(kh):
        for j in range(kw):
            yield (
                i,
                j,
                (
                    slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
                    slice(j * dw, j * dw + (ow - 1) * sw + 1, sw),
                ),
            )


def im2col_conv2d(
    input: np.ndarray,
    filters: np.ndarray,
    strides: IntOrSeq = 1,
    padding: Padding = "VALID",
    data_format: str = "NHWC",
    dilations: IntOrSeq = 1,
    groups: int | None = None,
) -> np.ndarray:
    """Reference conv2d. Returns float64 ``[N, OH, OW, OC]`` (NHWC) or ``[N, OC, OH, OW]``."""
    x = _nhwc(np.asarray(input, np.float64), data_format)
    wt = np.asarray(filters, np.float64)
    kh, kw, cg, oc = wt.shape
    sh, sw, dh, dw, (pt, pb, pl, pr), groups, oh, ow = _setup(
        np.shape(input), wt.shape, strides, padding, data_format, dilations, groups
    )
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    og = oc // groups
    out = np.zeros((x.shape[0], oh, ow, oc))
    for g in range(groups):
        for i, j, (rs, cs) in _taps(kh, kw, dh, dw, sh, sw, oh, ow):
            patch = xp[:, rs, cs, g * cg : (g + 1) * cg]
            out[..., g * og : (g + 1) * og] += patch @ wt[i, j, :, g * og : (g + 1) * og]
    return _back(out, data_format)


def im2col_conv2d_backprop_input(
    input_sizes,
    filters: np.ndarray,
    out_backprop: np.ndarray,
    strides: IntOrSeq = 1,
    padding: Padding = "VALID",
    data_format: str = "NHWC",
    dilations: IntOrSeq = 1,
    groups: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`im2col_conv2d` with respect to its input, shape ``input_sizes``."""
    wt = np.asarray(filters, np.float64)
    dy = _nhwc(np.asarray(out_backprop, np.float64), data_format)
    kh, kw, cg, oc = wt.shape
    sh, sw, dh, dw, (pt, pb, pl, pr), groups, oh, ow = _setup(
        tuple(input_sizes), wt.shape, strides, padding, data_format, dilations, groups
    )
    n, h, w, c = _nhwc(np.zeros(tuple(input_sizes)), data_format).shape
    dxp = np.zeros((n, h + pt + pb, w + pl + pr, c))
    og = oc // groups
    for g in range(groups):
        for i, j, (rs, cs) in _taps(kh, kw, dh, dw, sh, sw, oh, ow):
            dxp[:, rs, cs, g * cg : (g + 1) * cg] += (
                dy[..., g * og : (g + 1) * og] @ wt[i, j, :, g * og : (g + 1) * og].T
            )
    return _back(dxp[:, pt : pt + h, pl : pl + w, :], data_format)


def im2col_conv2d_backprop_filter(
    input: np.ndarray,
    filter_sizes,
    out_backprop: np.ndarray,
    strides: IntOrSeq = 1,
    padding: Padding = "VALID",
    data_format: str = "NHWC",
    dilations: IntOrSeq = 1,
    groups: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`im2col_conv2d` with respect to its filters, shape ``filter_sizes``."""
    x = _nhwc(np.asarray(input, np.float64), data_format)
    dy = _nhwc(np.asarray(out_backprop, np.float64), data_format)
    kh, kw, cg, oc = filter_sizes
    sh, sw, dh, dw, (pt, pb, pl, pr), groups, oh, ow = _setup(
        _back(x, data_format).shape,
        tuple(filter_sizes),
        strides,
        padding,
        data_format,
        dilations,
        groups,
    )
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    og = oc // groups
    dw_ = np.zeros((kh, kw, cg, oc))
    for g in range(groups):
        for i, j, (rs, cs) in _taps(kh, kw, dh, dw, sh, sw, oh, ow):
            patch = xp[:, rs, cs, g * cg : (g + 1) * cg]
            dw_[i, j, :, g * og : (g + 1) * og] = np.einsum(
                "nhwc,nhwo->co", patch, dy[..., g * og : (g + 1) * og]
            )
    return dw_
