"""Dis-CNN's k-means + random convolution-kernel initialisation, for a whole built model:
``kmeans_init(model, data)``.

Dis-CNN (section 3.1 of its paper) fills each conv kernel's central taps with k-means centres of
input patches and leaves the outer taps random; the first conv clusters image patches, every
deeper conv the patches of the feature maps that enter it (computed with the layers before it
already initialised). Its k-means starts from centres picked by an arithmetic sequence over the
patches sorted by their mean, after dropping the extreme means, because plain k-means is
sensitive to outliers.

What this implementation adds, where the paper is silent:

- Patches are centred and scaled to unit norm before clustering (the k-means feature learning of
  Coates and Ng, 2011): raw pixel patches cluster by brightness, and their centres would all be
  positive blurs. The centres are oriented patterns.
- The centres are scaled so that the central taps have the variance of the layer's own random
  initialiser (He-normal for iapdcnn's models): activations keep the scale the rest of the
  network was designed for, and the outer taps keep the layer's random values.
- "Dropping the extremes" drops ``trim`` (default 1%) of the patches at each end of the sorted
  means, not only the single largest and smallest, so that one clip-level region cannot pick a
  centre.
- ``k`` = the conv's filter count. A filter count above the sampled patches' count, grouped or
  depthwise convs, and kernels smaller than the centre keep their random initialisation; they are
  listed in the returned report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["arithmetic_centres", "kmeans", "kmeans_init"]


def arithmetic_centres(patches: np.ndarray, k: int, trim: float = 0.01) -> np.ndarray:
    """Dis-CNN's initial centres: the patches sorted by their mean, ``trim`` of them dropped at
    each end, then ``k`` picked at evenly spaced ranks (an arithmetic sequence of indices).

    Args:
      patches: ``[n, d]``.
      k: number of centres, ``1 <= k <= n`` after trimming.
      trim: fraction dropped at each end, in [0, 0.5).

    Returns:
      ``[k, d]`` copies of the chosen patches.
    """
    patches = np.asarray(patches)
    if patches.ndim != 2:
        raise ValueError(f"patches must be [n, d], got shape {patches.shape}")
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    order = np.argsort(patches.mean(axis=1), kind="stable")
    cut = int(len(order) * trim)
    order = order[cut : len(order) - cut]
    if not 1 <= k <= len(order):
        raise ValueError(f"k must be in [1, {len(order)}] (patches left after trimming), got {k}")
    ranks = np.round(np.linspace(0, len(order) - 1, k)).astype(int)
    return patches[order[ranks]].copy()


def kmeans(x: np.ndarray, centres: np.ndarray, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from the given centres; an emptied cluster keeps its centre.

    Returns:
      ``(centres [k, d], labels [n])``.
    """
    x = np.asarray(x, np.float64)
    c = np.asarray(centres, np.float64).copy()
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"x [n, d] and centres [k, d] must agree, got {x.shape} and {c.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x holds NaN or Inf: k-means centres would be NaN")
    labels = np.zeros(len(x), int)
    for it in range(max(int(iters), 1)):
        d2 = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
        new = d2.argmin(1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(0)
    return c, labels


def _patches(maps: np.ndarray, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random ``size x size x C`` patches of ``maps [N, H, W, C]``, flattened."""
    n, h, w, ch = maps.shape
    i = rng.integers(0, n, count)
    r = rng.integers(0, h - size + 1, count)
    q = rng.integers(0, w - size + 1, count)
    offs = np.arange(size)
    rows = (r[:, None] + offs[None, :])[:, :, None]
    cols = (q[:, None] + offs[None, :])[:, None, :]
    return maps[i[:, None, None], rows, cols].reshape(count, size * size * ch)


def kmeans_init(
    model: Any,
    data: Any,
    *,
    centre: int = 3,
    patches: int = 5000,
    iters: int = 20,
    trim: float = 0.01,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, str]:
    """Initialises, in place, the central ``centre x centre`` taps of every Conv2D of ``model``
    (in order, inputs first) from k-means centres of the patches that enter it (see the module
    docstring).

    Args:
      model: a built Keras model.
      data: input images ``[N, H, W, C]`` (a few hundred to a few thousand are enough).
      centre: size of the central window that k-means fills (Dis-CNN: 3 in a 5x5 kernel).
      patches: patches sampled per layer.
      iters: Lloyd iterations.
      trim: fraction of extreme-mean patches dropped before the arithmetic-sequence start.
      seed: patch sampling.
      batch_size: for computing the feature maps.

    Returns:
      ``{layer name: "kmeans" or why it kept its random values}``.
    """
    from ._keras import keras

    x = np.asarray(data, np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"data must be images [N, H, W, C] with N >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("data holds NaN or Inf")
    for name, val, lo in (("centre", centre, 1), ("patches", patches, 1), ("iters", iters, 1)):
        if int(val) != val or val < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
    rng = np.random.default_rng(seed)
    report: dict[str, str] = {}
    for layer in model.layers:
        if type(layer).__name__ in ("DepthwiseConv2D", "SeparableConv2D"):
            report[layer.name] = "kept random: depthwise"
            continue
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        kernel = layer.kernel.numpy()
        kh, kw, cin, cout = kernel.shape
        if getattr(layer, "groups", 1) != 1:
            report[layer.name] = "kept random: grouped conv"
            continue
        c = min(centre, kh, kw)
        if c < 1 or (kh - c) % 2 or (kw - c) % 2:
            report[layer.name] = f"kept random: no centred {centre}x{centre} window in {kh}x{kw}"
            continue
        feed = keras.Model(model.inputs, layer.input)
        maps = np.concatenate(
            [
                np.asarray(feed(x[i : i + batch_size], training=False))
                for i in range(0, len(x), batch_size)
            ]
        )
        if maps.shape[1] < c or maps.shape[2] < c:
            report[layer.name] = "kept random: feature maps smaller than the window"
            continue
        p = _patches(maps, c, int(patches), rng).astype(np.float64)
        p -= p.mean(1, keepdims=True)
        norm = np.linalg.norm(p, axis=1)
        p = p[norm > 1e-8 * max(norm.max(), 1e-30)]
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        if len(p) < cout * 2:
            report[layer.name] = f"kept random: {len(p)} usable patches for {cout} filters"
            continue
        centres, _ = kmeans(p, arithmetic_centres(p, cout, trim), iters)
        norms = np.linalg.norm(centres, axis=1, keepdims=True)
        centres = centres / np.where(norms > 0, norms, 1.0)
        # the central taps get the variance of the layer's own random values
        taps = centres.T.reshape(c, c, cin, cout)
        std = float(kernel.std()) or np.sqrt(2.0 / (kh * kw * cin))
        taps = taps * (std / (taps.std() or 1.0))
        r0, q0 = (kh - c) // 2, (kw - c) // 2
        kernel[r0 : r0 + c, q0 : q0 + c] = taps.astype(kernel.dtype)
        layer.kernel.assign(kernel)
        report[layer.name] = "kmeans"
    return report
