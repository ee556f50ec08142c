"""``iapdcnn.ops.cosine_nlm``: cosine-similarity non-local means (spec §1a)."""

from __future__ import annotations

import tensorflow as tf

from .._args import as_float, as_int
from .._defaults import COSINE_NLM as _D
from .._loader import load_ops


def cosine_nlm(
    x: tf.Tensor,
    patch_radius: int = _D["patch_radius"],
    search_radius: int = _D["search_radius"],
    h: float = _D["h"],
    eps: float = _D["eps"],
    name: str | None = None,
) -> tf.Tensor:
    """Denoises every channel of ``x`` with cosine-similarity non-local means.

    ``w(a, b) = exp(-(1 - cos(P_a, P_b)) / h)`` over a ``(2s+1)^2`` search window, with
    ``cos = <P_a, P_b> / (|P_a| |P_b| + eps)`` (spec §1a: the paper's Def. 2 writes
    ``|x| + |y|``, a typo for the product). Reflect borders. Runs in ``O(H W (2s+1)^2)``.
    No gradient is defined (a preprocessing op).

    Args:
      x: float32 or float64 tensor ``[N, H, W, C]``.
      patch_radius: r >= 0; patches are ``(2r+1)^2``.
      search_radius: s >= 0; search windows are ``(2s+1)^2``.
      h: filtering parameter > 0 (smaller is more selective).
      eps: > 0, keeps cos defined for all-zero patches.
      name: optional op name.

    Returns:
      Tensor ``[N, H, W, C]`` of x's dtype.
    """
    x = tf.convert_to_tensor(x, name="x")
    if x.dtype not in (tf.float32, tf.float64):
        raise TypeError(f"cosine_nlm: x must be float32 or float64, got {x.dtype.name}")
    return load_ops().iapdcnn_cosine_nlm(
        x=x,
        patch_radius=as_int("cosine_nlm", "patch_radius", patch_radius),
        search_radius=as_int("cosine_nlm", "search_radius", search_radius),
        # h > 0 and eps > 0 are the op's rules (csrc/nlm), not repeated here
        h=as_float("cosine_nlm", "h", h),
        eps=as_float("cosine_nlm", "eps", eps),
        name=name,
    )


tf.no_gradient("Iapdcnn>CosineNlm")
