"""``iapdcnn.ops.marr_hildreth``: Laplacian zero-crossing edges gated by Sobel (spec §1b)."""

from __future__ import annotations

import tensorflow as tf

from .._args import as_bool, as_float, as_int
from .._defaults import MARR_HILDRETH as _D
from .._loader import load_ops


def marr_hildreth(
    x: tf.Tensor,
    laplacian: int = _D["laplacian"],
    threshold: float = _D["threshold"],
    relative: bool = _D["relative"],
    mode: str = _D["mode"],
    name: str | None = None,
) -> tf.Tensor:
    """Marr-Hildreth edges of every channel of ``x``.

    ``lap = g * K`` (3x3, 4- or 8-neighbour, -4/-8 at the centre). A pixel is an edge when the
    Laplacian changes sign across it along one of the 4 directions and its Sobel magnitude is at
    least ``threshold`` (absolute, or times the image-channel's maximum when ``relative``). A sign
    change between two neighbours is attributed to the one with negative Laplacian (the brighter
    side), so edges are one pixel thin. Reflect borders. No gradient is defined.

    Args:
      x: float32 or float64 tensor ``[N, H, W, C]``.
      laplacian: 4 or 8 neighbours.
      threshold: Sobel threshold >= 0.
      relative: threshold is a fraction of the maximum magnitude (per image and channel).
      mode: ``"masked"`` (g at edges, the paper's rho), ``"binary"`` or ``"magnitude"``.
      name: optional op name.

    Returns:
      Tensor ``[N, H, W, C]`` of x's dtype.
    """
    x = tf.convert_to_tensor(x, name="x")
    if x.dtype not in (tf.float32, tf.float64):
        raise TypeError(f"marr_hildreth: x must be float32 or float64, got {x.dtype.name}")
    return load_ops().iapdcnn_marr_hildreth(
        x=x,
        laplacian=as_int("marr_hildreth", "laplacian", laplacian),
        threshold=as_float("marr_hildreth", "threshold", threshold),
        relative=as_bool("marr_hildreth", "relative", relative),
        mode=_mode(mode),
        name=name,
    )


def _mode(mode: str) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"marr_hildreth: mode must be a str, got {mode!r}")
    return mode


tf.no_gradient("Iapdcnn>MarrHildreth")
