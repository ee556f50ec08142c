"""NumPy reference for the Feature Correlation Index (spec §1c)."""

from __future__ import annotations

import numpy as np


def fci(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise FCI between rows of ``x`` [n_x, L] and rows of ``y`` [n_y, L] -> [n_x, n_y].

    Population moments; identical constant blocks give 0.5 (spec §1c); a block with a NaN or Inf
    gives NaN (docs/nan_policy.md).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"fci: x {x.shape} and y {y.shape} must be [n, L] with the same L")
    out = np.empty((x.shape[0], y.shape[0]))
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            # NaN policy: a block with NaN or Inf (or an overflowing sum) has no FCI.
            if not (np.isfinite(a.sum()) and np.isfinite(b.sum())):
                out[i, j] = np.nan
                continue
            const_a, const_b = a.min() == a.max(), b.min() == b.max()
            ma = a[0] if const_a else a.mean()
            mb = b[0] if const_b else b.mean()
            va = 0.0 if const_a else ((a - ma) ** 2).mean()
            vb = 0.0 if const_b else ((b - mb) ** 2).mean()
            cov = 0.0 if (const_a or const_b) else ((a - ma) * (b - mb)).mean()
            den = va + vb + (ma - mb) ** 2
            if not (np.isfinite(den) and np.isfinite(cov)):
                out[i, j] = np.nan
            else:
                out[i, j] = cov / den if den > 0 else 0.5
    return out


def fci_class_stats(
    x: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class counts [K] and block sums [K, P, L] of ``x`` [n, P, L] (spec §1c, prototype mode)."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    counts = np.zeros(num_classes)
    sums = np.zeros((num_classes,) + x.shape[1:])
    for xi, k in zip(x, labels, strict=True):
        counts[k] += 1
        sums[k] += xi
    return counts, sums


def fci_prototype(x: np.ndarray, labels: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """``out[i, p] = FCI(x[i, p], prototypes[labels[i], p])`` -> [n, P]."""
    x = np.asarray(x, dtype=np.float64)
    prototypes = np.asarray(prototypes, dtype=np.float64)
    out = np.empty(x.shape[:2])
    for i, k in enumerate(np.asarray(labels)):
        for p in range(x.shape[1]):
            out[i, p] = fci(x[i, p][None], prototypes[k, p][None])[0, 0]
    return out


def fci_within_class(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean FCI of each block with the same block of the other same-class samples -> [n, P].

    A sample alone in its class gets 0.5 (spec §1c pairwise mode; nothing to disagree with).
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    out = np.full(x.shape[:2], 0.5)
    for i in range(x.shape[0]):
        others = [j for j in range(x.shape[0]) if j != i and labels[j] == labels[i]]
        if others:
            for p in range(x.shape[1]):
                out[i, p] = fci(x[i, p][None], x[others, p]).mean()
    return out
