"""The synthetic dataset: small, learnable, class-structured images made from a seed, for the
trainer's ``--dataset synthetic``, the preprocessing job's and the tests. Nothing is read or
downloaded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError

GRID = 4  # the image is cut into GRID x GRID cells; class c lights cell c


def synthetic(
    n: int = 512, seed: int = 0, shape: Sequence[int] = (28, 28, 1), classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``classes`` classes: class c is a bright square on the cell
    ``(c // 4, c % 4)`` of a 4 x 4 grid, over uniform noise.

    Pixels are noise in [0, 0.3) plus 0.7 on the class's cell (so in [0, 1)); the labels are
    drawn uniformly. The same ``(n, seed, shape, classes)`` always gives the same arrays.

    Args:
        n: number of images (>= 0).
        seed: seed of the NumPy generator.
        shape: ``(H, W, C)``, with H and W >= 4.
        classes: number of classes, 1 to 16 (one grid cell each).

    Returns:
        ``(x, y)``: x float32 ``[n, H, W, C]``, y int64 ``[n]``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] < GRID or shape[1] < GRID or shape[2] < 1:
        raise DataError(f"synthetic: shape must be (H, W, C) with H, W >= {GRID}, got {shape}")
    if not 1 <= classes <= GRID * GRID:
        raise DataError(f"synthetic: classes must be in [1, {GRID * GRID}], got {classes}")
    if n < 0:
        raise DataError(f"synthetic: n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int64)
    x = rng.uniform(0, 0.3, (n, *shape)).astype(np.float32)
    h, w = shape[0] // GRID, shape[1] // GRID
    for c in range(classes):
        r0, c0 = (c // GRID) * h, (c % GRID) * w
        x[y == c, r0 : r0 + h, c0 : c0 + w, :] += 0.7
    return x, y
