"""``iapdcnn.ops.im2col_conv2d``: the Im2col + GEMM convolution (spec §2b) as a TensorFlow op with
tf.nn.conv2d's semantics, and its gradient (both gradients are Im2col/GEMM ops too)."""

from __future__ import annotations

import tensorflow as tf

from .._args import as_int
from .._conv_args import IntOrSeq, Padding, int_list, op_padding
from .._defaults import CONV as _D
from .._loader import load_ops

_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def im2col_conv2d(
    input: tf.Tensor,
    filters: tf.Tensor,
    strides: IntOrSeq = _D["strides"],
    padding: Padding = _D["padding"],
    data_format: str = _D["data_format"],
    dilations: IntOrSeq = _D["dilations"],
    groups: int | None = _D["groups"],
    name: str | None = None,
) -> tf.Tensor:
    """2-D convolution as im2col + GEMM, a drop-in for ``tf.nn.conv2d``.

    ``O = im2col(I) x reshape(K)`` (spec §2b). float16 and bfloat16 are packed into float32 and
    multiplied with float32 accumulation. Runs on TensorFlow's intra-op thread pool.

    Args:
      input: ``[N, H, W, C]`` (NHWC) or ``[N, C, H, W]`` (NCHW); float16, bfloat16, float32 or
        float64.
      filters: ``[k_h, k_w, C / groups, out_c]``, converted to input's dtype.
      strides: int, or 2 values (h, w), or 4 values in data_format order.
      padding: ``"SAME"``, ``"VALID"`` (any case), or explicit pads: 4 pairs in data_format
        order (as tf.nn.conv2d), 2 pairs ``((top, bottom), (left, right))``, or 4 ints.
      data_format: ``"NHWC"`` or ``"NCHW"``.
      dilations: like strides. Dilations > 1 together with strides > 1 are rejected, as in
        tf.nn.conv2d.
      groups: channel groups; 0 (the default) or ``None`` infers ``C / filters.shape[2]``
        (tf.nn.conv2d's rule).
      name: optional op name.

    Returns:
      ``[N, OH, OW, out_c]`` (NHWC) or ``[N, out_c, OH, OW]`` (NCHW), input's dtype.

    Raises:
      tf.errors.InvalidArgumentError: (eager) an argument is invalid; the message names it.
    """
    input = tf.convert_to_tensor(input, name="input")
    if input.dtype not in _DTYPES:
        raise TypeError(
            f"im2col_conv2d: input must be float16, bfloat16, float32 or float64, "
            f"got {input.dtype.name}"
        )
    filters = tf.convert_to_tensor(filters, dtype=input.dtype, name="filters")
    pad, explicit = op_padding(padding)
    return load_ops().iapdcnn_im2col_conv2d(
        input=input,
        filters=filters,
        strides=int_list("strides", strides),
        padding=pad,
        explicit_paddings=explicit,
        data_format=data_format,
        dilations=int_list("dilations", dilations),
        groups=_D["groups"] if groups is None else as_int("im2col_conv2d", "groups", groups),
        name=name,
    )


def _attrs(op: tf.Operation) -> dict:
    def s(v):
        return v.decode() if isinstance(v, bytes) else v

    return {
        "strides": op.get_attr("strides"),
        "padding": s(op.get_attr("padding")),
        "explicit_paddings": op.get_attr("explicit_paddings"),
        "data_format": s(op.get_attr("data_format")),
        "dilations": op.get_attr("dilations"),
        "groups": op.get_attr("groups"),
    }


@tf.RegisterGradient("Iapdcnn>Im2colConv2D")
def _im2col_conv2d_grad(op: tf.Operation, dy: tf.Tensor) -> list[tf.Tensor]:
    x, w = op.inputs
    a = _attrs(op)
    lib = load_ops()
    dx = lib.iapdcnn_im2col_conv2d_backprop_input(
        input_sizes=tf.shape(x, out_type=tf.int32), filters=w, out_backprop=dy, **a
    )
    dw = lib.iapdcnn_im2col_conv2d_backprop_filter(
        input=x, filter_sizes=tf.shape(w, out_type=tf.int32), out_backprop=dy, **a
    )
    return [dx, dw]
