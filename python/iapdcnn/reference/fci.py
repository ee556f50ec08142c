"""NumPy reference for the Feature Correlation Index (SPEC 1c)."""

from __future__ import annotations

import numpy as np


def fci(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise FCI between rows of ``x`` [n_x, L] and rows of ``y`` [n_y, L] -> [n_x, n_y].

    Population moments; identical constant blocks give 0.5 (SPEC 1c).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"fci: x {x.shape} and y {y.shape} must be [n, L] with the same L")
    out = np.empty((x.shape[0], y.shape[0]))
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            const_a, const_b = a.min() == a.max(), b.min() == b.max()
            ma = a[0] if const_a else a.mean()
            mb = b[0] if const_b else b.mean()
            va = 0.0 if const_a else ((a - ma) ** 2).mean()
            vb = 0.0 if const_b else ((b - mb) ** 2).mean()
            cov = 0.0 if (const_a or const_b) else ((a - ma) * (b - mb)).mean()
            den = va + vb + (ma - mb) ** 2
            out[i, j] = cov / den if den > 0 else 0.5
    return out
