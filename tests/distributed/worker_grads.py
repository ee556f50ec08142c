"""The per-rank gradients the reduction workers (reduction_worker.py, engine_lsg_worker.py) hand
their reductions: seeded, of unit norm times ``scale``, over the same small list of shapes."""

import numpy as np
import tensorflow as tf

SHAPES = [(3, 4), (5,), (2, 2, 2)]


def local_grads(seed: int, scale: float = 1.0) -> list:
    """Rank ``seed``'s gradients: seeded normals over SHAPES, scaled to norm ``scale``."""
    rng = np.random.default_rng(seed)
    gs = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    n = np.sqrt(sum((g**2).sum() for g in gs))
    return [tf.constant(g / n * scale) for g in gs]


def flat(grads) -> np.ndarray:
    """A gradient list as one float64 vector."""
    return np.concatenate([np.reshape(np.asarray(g), -1) for g in grads]).astype(np.float64)
