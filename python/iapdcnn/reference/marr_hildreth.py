"""NumPy reference for Marr-Hildreth edges (spec §1b): reflect borders, 3x3 Laplacian, zero
crossings attributed to the negative-Laplacian pixel, Sobel magnitude gate."""

from __future__ import annotations

import numpy as np

from .._defaults import MARR_HILDRETH as _D
from .cosine_nlm import reflect_pad


def _taps(plane: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """The 3x3 neighbourhood of every pixel, reflect borders: (dy, dx) -> plane shifted."""
    e = reflect_pad(np.asarray(plane, np.float64), 1)
    h, w = plane.shape
    return {(a, b): e[1 + a : 1 + a + h, 1 + b : 1 + b + w] for a in (-1, 0, 1) for b in (-1, 0, 1)}


# The sums below run in the kernel's order (csrc/marr_hildreth): a difference of two column (or
# row) sums is exactly 0 where the reflected border makes them equal, as it is for the kernel;
# summed tap by tap it would be a rounding error of ~1e-16, which an absolute threshold below that
# would count as an edge. Zero taps are never multiplied (0 * NaN would spread a NaN).


def laplacian(plane: np.ndarray, neighbours: int = 4) -> np.ndarray:
    """3x3 Laplacian of a 2-D plane with reflect borders (spec §1b's sign: -4 at the centre)."""
    t = _taps(plane)
    cross = t[-1, 0] + t[1, 0] + t[0, -1] + t[0, 1]
    if neighbours == 4:
        return cross - 4.0 * t[0, 0]
    diag = t[-1, -1] + t[-1, 1] + t[1, -1] + t[1, 1]
    return cross + diag - 8.0 * t[0, 0]


def sobel_magnitude(plane: np.ndarray) -> np.ndarray:
    """sqrt(gx^2 + gy^2) with unnormalised 3x3 Sobel kernels, reflect borders."""
    t = _taps(plane)
    gx = (t[-1, 1] + 2.0 * t[0, 1] + t[1, 1]) - (t[-1, -1] + 2.0 * t[0, -1] + t[1, -1])
    gy = (t[1, -1] + 2.0 * t[1, 0] + t[1, 1]) - (t[-1, -1] + 2.0 * t[-1, 0] + t[-1, 1])
    return np.sqrt(gx * gx + gy * gy)


def zero_crossings(lap: np.ndarray) -> np.ndarray:
    """Boolean map: lap < 0 with a positive 8-neighbour, or lap == 0 between opposite signs."""
    e = reflect_pad(lap, 1)
    h, w = lap.shape

    def nb(dy: int, dx: int) -> np.ndarray:
        return e[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    pairs = [((0, -1), (0, 1)), ((-1, 0), (1, 0)), ((-1, -1), (1, 1)), ((-1, 1), (1, -1))]
    any_pos = np.zeros(lap.shape, bool)
    across = np.zeros(lap.shape, bool)
    for a, b in pairs:
        na, nb_ = nb(*a), nb(*b)
        any_pos |= (na > 0) | (nb_ > 0)
        across |= na * nb_ < 0
    return ((lap < 0) & any_pos) | ((lap == 0) & across)


def marr_hildreth(
    x: np.ndarray,
    laplacian_neighbours: int = _D["laplacian"],
    threshold: float = _D["threshold"],
    relative: bool = _D["relative"],
    mode: str = _D["mode"],
) -> np.ndarray:
    """Marr-Hildreth edges of ``x`` [N, H, W, C] per channel -> [N, H, W, C] (float64).

    NaN policy (docs/nan_policy.md): a pixel whose decision reads a non-finite value is NaN; the
    relative threshold is taken over the finite magnitudes."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(
            f"marr_hildreth: x must be 4-D [batch, height, width, channels], got {x.shape}"
        )
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[3]):
            g = x[b, :, :, c]
            if g.size == 0:
                continue
            with np.errstate(invalid="ignore", over="ignore"):
                mag = sobel_magnitude(g)
                lap = laplacian(g, laplacian_neighbours)
                finite_mag = mag[np.isfinite(mag)]
                top = finite_mag.max() if finite_mag.size else 0.0
                t = threshold * top if relative else threshold
                edge = zero_crossings(lap) & (mag >= t)
            # NaN policy: NaN where the decision reads a non-finite magnitude or Laplacian (the
            # pixel's or one of its 8 reflected neighbours').
            bad = ~np.isfinite(reflect_pad(lap, 1))
            h, w = g.shape
            near = np.zeros(g.shape, bool)
            for dy in range(3):
                for dx in range(3):
                    near |= bad[dy : dy + h, dx : dx + w]
            val = {"masked": g, "binary": np.ones_like(g), "magnitude": mag}[mode]
            res = np.where(edge, val, 0.0)
            out[b, :, :, c] = np.where(near | ~np.isfinite(mag), np.nan, res)
    return out
