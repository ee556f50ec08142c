"""``iapdcnn.ops.mdcv_distances``: MDCV filter distances from the layer's centre (spec §2a)."""

from __future__ import annotations

import tensorflow as tf

from .._defaults import MDCV as _D
from .._loader import load_ops


def mdcv_distances(
    filters: tf.Tensor, shrinkage: float | tf.Tensor = _D["shrinkage"], name: str | None = None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mahalanobis distance of every filter from the filters' mean under a shrunk covariance.

    ``d_i = sqrt((x_i - mu)^T S_l^-1 (x_i - mu))`` with ``S_l = (1-l) S + l tr(S)/d I``. Departs
    from the paper as spec §2a says: the paper's unshrunk rule is degenerate when n <= d (every
    distance equals sqrt((n-1)^2/n)), so the default shrinkage is Ledoit-Wolf. Computed through
    the Woodbury identity in n x n Gram space (or the d x d covariance only when d < n, where it
    is the smaller matrix): O(n d min(n, d) + min(n, d)^3).

    Args:
      filters: float32 or float64 ``[kh, kw, cin, cout]`` (a Conv2D kernel), cout >= 2.
      shrinkage: ``l`` in [0, 1]; negative (the default) estimates it by Ledoit-Wolf.
      name: optional op name.

    Returns:
      ``(distances [cout], center [kh, kw, cin], shrinkage_used [])``, all of filters' dtype.
    """
    filters = tf.convert_to_tensor(filters, name="filters")
    if filters.dtype not in (tf.float32, tf.float64):
        raise TypeError(
            f"mdcv_distances: filters must be float32 or float64, got {filters.dtype.name}"
        )
    shrinkage = tf.convert_to_tensor(shrinkage, dtype=filters.dtype, name="shrinkage")
    return tuple(load_ops().iapdcnn_mdcv_distances(filters=filters, shrinkage=shrinkage, name=name))


tf.no_gradient("Iapdcnn>MdcvDistances")
