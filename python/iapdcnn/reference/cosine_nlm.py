"""NumPy reference for cosine-similarity non-local means (spec §1a): the formula as written, one
patch element at a time (O(H W (2s+1)^2 (2r+1)^2)), for tests only."""

from __future__ import annotations

import numpy as np

from .._defaults import COSINE_NLM as _D


def reflect_pad(plane: np.ndarray, pad: int) -> np.ndarray:
    """numpy "reflect" padding of a 2-D plane, repeated for pads wider than the plane."""
    h, w = plane.shape

    def idx(n: int) -> np.ndarray:
        i = np.arange(-pad, n + pad)
        if n == 1:
            return np.zeros_like(i)
        period = 2 * (n - 1)
        i = np.mod(i, period)
        return np.where(i < n, i, period - i)

    return plane[np.ix_(idx(h), idx(w))]


def cosine_nlm(
    x: np.ndarray,
    patch_radius: int = _D["patch_radius"],
    search_radius: int = _D["search_radius"],
    h: float = _D["h"],
    eps: float = _D["eps"],
) -> np.ndarray:
    """Cosine NLM of ``x`` [N, H, W, C] per channel -> [N, H, W, C] (float64)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(
            f"cosine_nlm: x must be 4-D [batch, height, width, channels], got {x.shape}"
        )
    if patch_radius < 0 or search_radius < 0 or not (h > 0 and np.isfinite(h)):
        raise ValueError("cosine_nlm: need patch_radius >= 0, search_radius >= 0, h > 0")
    r, s = patch_radius, search_radius
    n, hh, ww, cc = x.shape
    out = np.empty_like(x)
    R = r + s
    if out.size == 0:
        return out
    for b in range(n):
        for c in range(cc):
            e = reflect_pad(x[b, :, :, c], R)
            # NaN policy: NaN exactly where the (2R+1)^2 reflected window holds a NaN or Inf;
            # the other pixels never read those values (computed here with them zeroed).
            bad = ~np.isfinite(e)
            poisoned = np.zeros((hh, ww), bool)
            if bad.any():
                for k in range(2 * R + 1):
                    for m in range(2 * R + 1):
                        poisoned |= bad[k : k + hh, m : m + ww]
                e = np.where(bad, 0.0, e)

            def at(dy: int, dx: int, e: np.ndarray = e) -> np.ndarray:
                # ext(i + dy, j + dx) for the image pixels (i, j).
                return e[R + dy : R + dy + hh, R + dx : R + dx + ww]

            def norm(dy: int, dx: int) -> np.ndarray:
                # |P_{a + d}| for every image pixel a.
                return np.sqrt(
                    sum(at(dy + k, dx + m) ** 2 for k in range(-r, r + 1) for m in range(-r, r + 1))
                )

            num = np.zeros((hh, ww))
            den = np.zeros((hh, ww))
            norm_a = norm(0, 0)
            # 1 / h clamped to the largest double, as the kernel's (a subnormal h would give inf,
            # and (cos - 1) * inf is NaN where cos == 1)
            scale = min(1.0 / h, np.finfo(np.float64).max)
            for dy in range(-s, s + 1):
                for dx in range(-s, s + 1):
                    dot = sum(
                        at(k, m) * at(dy + k, dx + m)
                        for k in range(-r, r + 1)
                        for m in range(-r, r + 1)
                    )
                    # |dot| <= |P_a| |P_b| (Cauchy-Schwarz), which rounding can break: clamped,
                    # as the kernel does, so that cos <= 1 and no weight overflows exp
                    q = norm_a * norm(dy, dx)
                    cos = np.clip(dot, -q, q) / (q + eps)
                    # floored at exp(-700), as the float64 kernel (float32: 2^-125): a window
                    # whose weights would all underflow averages instead of giving 0 / 0
                    w = np.exp(np.maximum((cos - 1.0) * scale, -700.0))
                    num += w * at(dy, dx)
                    den += w
            out[b, :, :, c] = np.where(poisoned, np.nan, num / den)
    return out
