"""The synthetic test images of the feature benchmarks (bench_features.py, bench_conv_gpu.py):
smooth shapes plus noise, quantised to 8-bit levels as real photographs are. NumPy only, so the
GPU benchmark can use it where TensorFlow is not installed."""

import numpy as np


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """float32 [n, size, size, 1] in [0, 1]: a disc on a plain background, Gaussian noise, 8 bits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = np.empty((n, size, size, 1), np.float32)
    for i in range(n):
        cy, cx, rad = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        base = 0.2 + 0.6 * (((yy - cy) ** 2 + (xx - cx) ** 2) < rad**2)
        noisy = base + 0.05 * rng.standard_normal((size, size))
        out[i, :, :, 0] = np.round(np.clip(noisy, 0, 1) * 255) / 255
    return out
