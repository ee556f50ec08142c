"""``iapdcnn.ops.fci``: pairwise Feature Correlation Index between blocks (SPEC 1c)."""

from __future__ import annotations

import tensorflow as tf

from .._loader import load_ops


def fci(x: tf.Tensor, y: tf.Tensor, name: str | None = None) -> tf.Tensor:
    """Pairwise FCI between the rows of ``x`` and the rows of ``y``.

    ``FCI(x, y) = cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population
    moments. Departs from the paper as SPEC 1c says: the maximum is 0.5 (identical blocks), not 1;
    two identical constant blocks give 0.5 and other constant pairs 0.

    Args:
      x: float32 or float64 tensor ``[n_x, block_len]`` (flattened blocks).
      y: tensor of the same dtype, ``[n_y, block_len]``.
      name: optional op name.

    Returns:
      Tensor ``[n_x, n_y]`` of the same dtype.
    """
    x = tf.convert_to_tensor(x, name="x")
    y = tf.convert_to_tensor(y, name="y")
    if x.dtype not in (tf.float32, tf.float64):
        raise TypeError(f"fci: x must be float32 or float64, got {x.dtype.name}")
    if y.dtype != x.dtype:
        raise TypeError(f"fci: y must have x's dtype {x.dtype.name}, got {y.dtype.name}")
    return load_ops().iapdcnn_fci(x=x, y=y, name=name)


tf.no_gradient("Iapdcnn>Fci")
