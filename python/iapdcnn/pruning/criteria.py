"""Filter scores behind one interface (spec §2a): higher = more worth keeping.

Weight criteria see one conv kernel [kh, kw, cin, cout]: ``mdcv`` (distance from the layer's
centre under a shrunk covariance; filters near the centre are replaceable), ``l1`` and ``fpgm``
(distance to the geometric median). Data criteria see the conv outputs on a sample of data:
``fmp`` (PDCNNO: mean L_a-norm of each feature map) and ``fm_redundancy`` (Dis-CNN: |cosine|
between feature maps; the score is 1 - |cos| to the most similar map still kept). ``random`` is
the control a benchmark needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._keras import keras


def mdcv(kernel: np.ndarray, shrinkage: float | None = None) -> np.ndarray:
    """MDCV distances d_i (spec §2a) through ``iapdcnn._C``; ``None``: _C's default shrinkage
    (Ledoit-Wolf)."""
    from .. import _C

    kernel = np.ascontiguousarray(kernel)
    out = (
        _C.mdcv_distances(kernel)
        if shrinkage is None
        else _C.mdcv_distances(kernel, float(shrinkage))
    )
    return np.asarray(out[0], np.float64)


def l1(kernel: np.ndarray) -> np.ndarray:
    """L1 norm of every filter."""
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).astype(np.float64)


def fpgm(kernel: np.ndarray, iters: int = 50) -> np.ndarray:
    """Euclidean distance of every filter to the filters' geometric median (Weiszfeld)."""
    x = kernel.reshape(-1, kernel.shape[-1]).T.astype(np.float64)  # [n, d]
    y = x.mean(axis=0)
    for _ in range(iters):
        w = 1.0 / np.maximum(np.linalg.norm(x - y, axis=1), 1e-12)
        y_new = (w[:, None] * x).sum(axis=0) / w.sum()
        if np.linalg.norm(y_new - y) <= 1e-10 * (1.0 + np.linalg.norm(y)):
            y = y_new
            break
        y = y_new
    return np.linalg.norm(x - y, axis=1)


def random_scores(kernel: np.ndarray, seed: int = 0) -> np.ndarray:
    """Uniform random scores (a control)."""
    return np.random.default_rng(seed).uniform(size=kernel.shape[-1])


WEIGHT_CRITERIA: dict[str, Callable[..., np.ndarray]] = {
    "mdcv": mdcv,
    "l1": l1,
    "fpgm": fpgm,
    "random": random_scores,
}
DATA_CRITERIA = ("fmp", "fm_redundancy")
CRITERIA = tuple(WEIGHT_CRITERIA) + DATA_CRITERIA


def _batches(data: Any, num_samples: int, batch_size: int = 64):
    """Yields input batches (NumPy) from an array, a (x, y) tuple or a tf.data.Dataset."""
    if isinstance(data, tuple):
        data = data[0]
    if isinstance(data, np.ndarray):
        for s in range(0, min(len(data), num_samples), batch_size):
            yield data[s : min(s + batch_size, num_samples)]
        return
    seen = 0
    for item in data:
        x = np.asarray(item[0] if isinstance(item, tuple | list) else item)
        yield x[: num_samples - seen]
        seen += len(x)
        if seen >= num_samples:
            return


def feature_scores(
    model: Any,
    layers: list[str],
    data: Any,
    criterion: str,
    a: float = 1.0,
    num_samples: int = 256,
    feature_layers: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """``fmp`` or ``fm_redundancy`` scores of the named conv layers on ``data``.

    The feature map of a conv is read at ``feature_layers[name]`` (default: the conv's own
    output); ``plan`` passes the end of the conv -> BN -> activation chain, the map the next layer
    sees (PDCNNO's VGG convs include their ReLU).
    """
    if data is None:
        raise ValueError(
            f"criterion {criterion!r} needs data= (a sample of inputs) to see feature maps"
        )
    at = feature_layers or {}
    # One input unnested, so the probe takes what the model takes (Keras 3 warns otherwise).
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [model.get_layer(at.get(n, n)).output for n in layers])
    c = {n: int(model.get_layer(n).output.shape[-1]) for n in layers}
    acc = {n: np.zeros(c[n]) if criterion == "fmp" else np.zeros((c[n], c[n])) for n in layers}
    count = 0
    for x in _batches(data, num_samples):
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        for n, f in zip(layers, outs, strict=False):
            f = f.numpy().astype(np.float64).reshape(len(x), -1, c[n])  # [N, HW, C]
            if criterion == "fmp":  # PDCNNO FMP: per-sample L_a norm of each map, averaged
                acc[n] += ((np.abs(f) ** a).mean(axis=1) ** (1.0 / a)).sum(axis=0)
            else:
                f2 = f.reshape(-1, c[n])
                acc[n] += f2.T @ f2
        count += len(x)
    if count == 0:
        raise ValueError("data= yielded no samples")
    if criterion == "fmp":
        return {n: v / count for n, v in acc.items()}
    return {n: _redundancy_scores(g) for n, g in acc.items()}


def _redundancy_scores(gram: np.ndarray) -> np.ndarray:
    """Dis-CNN: H_ij = |cos| of maps i, j. Greedily drops, from the most similar pair still kept,
    the map with less energy; its score is 1 - H at that moment (non-increasing H, so the order
    of removal is the order of scores)."""
    n = len(gram)
    norm = np.sqrt(np.maximum(np.diag(gram), 0.0))
    h = np.abs(gram) / np.maximum(np.outer(norm, norm), 1e-30)
    h[norm == 0, :] = 1.0  # a dead map is redundant with anything
    h[:, norm == 0] = 1.0
    np.fill_diagonal(h, -np.inf)
    score = np.ones(n)
    alive = np.ones(n, bool)
    for _ in range(n - 1):
        flat = np.argmax(h)
        i, j = divmod(int(flat), n)
        victim = i if norm[i] <= norm[j] else j
        score[victim] = 1.0 - min(h[i, j], 1.0)
        alive[victim] = False
        h[victim, :] = -np.inf
        h[:, victim] = -np.inf
    return score
