"""NumPy reference for MDCV filter distances (spec §2a). Forms the d x d covariance on purpose:
it is the oracle for the Gram-space kernel, so it follows the formulas literally."""

from __future__ import annotations

import numpy as np

from .._defaults import MDCV as _D


def ledoit_wolf(xc: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage of centred samples ``xc`` [n, d] (scikit-learn's formula)."""
    n, d = xc.shape
    emp = xc.T @ xc / n
    mu = np.trace(emp) / d
    delta_ = (emp**2).sum()
    beta_ = ((xc**2).T @ (xc**2)).sum()
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * np.trace(emp) + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 or delta <= 0 else float(beta / delta)


def mdcv_distances(
    filters: np.ndarray, shrinkage: float = _D["shrinkage"]
) -> tuple[np.ndarray, np.ndarray, float]:
    """``filters`` [kh, kw, cin, cout] -> (distances [cout], center [kh, kw, cin], l used).

    ``shrinkage < 0`` estimates l by Ledoit-Wolf; ``l = 0`` uses the pseudo-inverse of S (and so
    does an l too small to make S_l numerically invertible).
    """
    w = np.asarray(filters, dtype=np.float64)
    if w.ndim != 4 or w.shape[3] < 2:
        raise ValueError(f"mdcv_distances: filters must be [kh, kw, cin, cout>=2], got {w.shape}")
    if not np.all(np.isfinite(w)):
        bad = int(np.flatnonzero(~np.isfinite(w.reshape(-1, w.shape[3])).any(axis=0))[0])
        raise ValueError(
            f"mdcv_distances: filters contains a non-finite value in filter {bad} (NaN policy: "
            "distances of NaN or Inf weights would decide what is pruned)"
        )
    x = w.reshape(-1, w.shape[3]).T  # [n, d]: one filter per row
    n, d = x.shape
    mu = x.mean(axis=0)
    xc = x - mu
    s = xc.T @ xc / (n - 1)
    lam = ledoit_wolf(xc) if shrinkage < 0 else float(shrinkage)
    if np.trace(s) == 0:
        return np.zeros(n), mu.reshape(w.shape[:3]), lam
    s_l = (1 - lam) * s + lam * np.trace(s) / d * np.eye(d)
    # The pseudo-inverse: S_l^-1 itself when S_l is numerically invertible. When l's term is
    # below S's round-off (a Ledoit-Wolf l of ~1e-17 where the exact value is 0), S_l is singular
    # in float64 and inv fails; the pseudo-inverse keeps the data's directions, the limit that
    # the kernel takes there too.
    s_inv = np.linalg.pinv(s_l, hermitian=True)
    d2 = np.einsum("ij,jk,ik->i", xc, s_inv, xc)
    return np.sqrt(np.maximum(d2, 0.0)), mu.reshape(w.shape[:3]), lam
