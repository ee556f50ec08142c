"""MHO-PFES as a preprocessing stage (spec §1d): the edge features of every train and test image
computed once per dataset and settings, kept in a verified ``.npz`` cache, and FCI data pruning
that drops the most prototypical training images of each class. The trainer calls ``prepare``
once, after loading the arrays and before building the model. Importing it imports TensorFlow
(the edge settings' defaults and rules are ``EdgeFeatures``')."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iapdcnn import _C, __version__
from iapdcnn._io import atomic_write
from iapdcnn.layers import EdgeFeatures, FCIFilter

MODES = ("channels", "replace", "none")
FORMAT_VERSION = 1  # bump when what a cache file holds, or how it is computed, changes
BATCH = 4096  # images per EdgeFeatures call: bounds the temporaries, no effect on the result

# The trainer's flag for each setting; errors name these.
# The settings that train.py exposes, by their flag; the others are named by their field
# (``FeatureSettings.<field>``) in errors, since no flag sets them.
FLAGS = {"mode": "--features-mode", "fci_drop": "--fci-drop"}
CACHE_FLAG = "--features-cache"


def _name(field: str) -> str:
    return FLAGS.get(field, f"FeatureSettings.{field}")


def _check_block_size(block_size: int, height: int = -1, width: int = -1) -> None:
    """FCIFilter's block-size rule (the kernel's), its error naming the flag."""
    try:
        _C.validate_fci_block_size(int(block_size), int(height), int(width))
    except ValueError as e:
        raise ValueError(f"{_name('fci_block_size')}: {e}") from None


# FeatureSettings field -> EdgeFeatures argument (the layer holds the defaults and the rules).
_EDGE_ARGS = {
    "patch_radius": "patch_radius",
    "search_radius": "search_radius",
    "h": "h",
    "laplacian": "laplacian",
    "threshold": "threshold",
    "edge_mode": "mode",
}
_EDGE = inspect.signature(EdgeFeatures.__init__).parameters
_FCI = inspect.signature(FCIFilter.__init__).parameters

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class FeatureSettings:
    """What ``prepare`` does to the data; part of the cache's identity.

    Attributes:
      mode: ``"channels"`` stacks ``[image, edge map]`` as channels (C -> 2C), ``"replace"``
        keeps the edge map alone (the paper's form), ``"none"`` keeps the pixels (FCI data
        pruning alone, scored on the pixels).
      patch_radius, search_radius, h: cosine NLM (spec §1a), ``EdgeFeatures``' defaults.
      laplacian, threshold, edge_mode: Marr-Hildreth (spec §1b), ``EdgeFeatures``' defaults.
      fci_drop: fraction in [0, 1) of each class's training images to drop, the most
        prototypical first (highest mean block FCI with the class prototype, spec §1c/§1d).
      fci_block_size: FCI block size B (``FCIFilter``'s default).
    """

    mode: str = "channels"
    patch_radius: int = _EDGE["patch_radius"].default
    search_radius: int = _EDGE["search_radius"].default
    h: float = _EDGE["h"].default
    laplacian: int = _EDGE["laplacian"].default
    threshold: float = _EDGE["threshold"].default
    edge_mode: str = _EDGE["mode"].default
    fci_drop: float = 0.0
    fci_block_size: int = _FCI["block_size"].default

    def check(self) -> FeatureSettings:
        """Raises ``ValueError`` naming the flag of the first bad setting; returns self."""
        if self.mode not in MODES:
            raise ValueError(
                f"{_name('mode')} must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        for field, arg in _EDGE_ARGS.items():
            try:
                EdgeFeatures(**{arg: getattr(self, field)})
            except (ValueError, TypeError) as e:
                raise ValueError(f"{_name(field)}: {e}") from None
        if not 0.0 <= self.fci_drop < 1.0:
            raise ValueError(f"{_name('fci_drop')} is a fraction in [0, 1), got {self.fci_drop}")
        _check_block_size(self.fci_block_size)
        return self

    @property
    def active(self) -> bool:
        """Whether ``prepare`` changes anything."""
        return self.mode != "none" or self.fci_drop > 0

    def edge_layer(self) -> EdgeFeatures:
        """The ``EdgeFeatures`` layer these settings describe."""
        return EdgeFeatures(**{arg: getattr(self, f) for f, arg in _EDGE_ARGS.items()})


# --------------------------------------------------------------------------------- computing


def edge_maps(x: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """``EdgeFeatures`` (NLM, then Marr-Hildreth) of ``x`` [N, H, W, C] -> float32 [N, H, W, C],
    in batches of ``BATCH``: the same transform as the layer inside a model."""
    layer = settings.edge_layer()
    out = np.empty(x.shape, np.float32)
    for i in range(0, len(x), BATCH):
        out[i : i + BATCH] = layer(x[i : i + BATCH]).numpy()
    return out


def to_blocks(x: np.ndarray, block_size: int) -> np.ndarray:
    """``[N, H, W, C]`` -> ``[N, positions, B*B*C]`` float64, ``FCIFilter.to_blocks``' layout
    (row-major block grid; a bottom/right remainder strip is left out)."""
    n, h, w, c = x.shape
    b = block_size
    gh, gw = h // b, w // b
    x = np.asarray(x[:, : gh * b, : gw * b, :], np.float64).reshape(n, gh, b, gw, b, c)
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2, 4, 5)).reshape(n, gh * gw, b * b * c)


def prototypicality(
    x: np.ndarray, labels: np.ndarray, block_size: int, chunk: int = BATCH
) -> np.ndarray:
    """Mean over blocks of FCI(image block, class prototype block), spec §1c prototype mode.

    The prototype of a class is its mean block at each position, over the images given. Scores
    are in [-0.5, 0.5] (FCI's maximum is 0.5, an image equal to its prototype).

    Args:
      x: ``[N, H, W, C]`` images (or feature maps).
      labels: integer ``[N]`` class ids >= 0.
      block_size: B, at most H and W.
      chunk: images per kernel call (bounds the float64 block copies).

    Returns:
      float64 ``[N]``.
    """
    from iapdcnn import _C

    labels = np.ascontiguousarray(labels, np.int64)
    k = int(labels.max()) + 1 if len(labels) else 1
    counts, sums = np.zeros(k), None
    for i in range(0, len(x), chunk):  # class sums merge by addition (the "reduce")
        c, s = _C.fci_class_stats(to_blocks(x[i : i + chunk], block_size), labels[i : i + chunk], k)
        counts, sums = counts + c, s if sums is None else sums + s
    if sums is None:
        return np.zeros(0)
    prototypes = sums / np.maximum(counts, 1.0)[:, None, None]
    scores = np.empty(len(x))
    for i in range(0, len(x), chunk):
        f = _C.fci_prototype(
            to_blocks(x[i : i + chunk], block_size), labels[i : i + chunk], prototypes
        )
        scores[i : i + chunk] = f.mean(axis=1)
    return scores


def drop_most_prototypical(
    scores: np.ndarray, labels: np.ndarray, fraction: float
) -> tuple[np.ndarray, dict[int, int]]:
    """Which images survive FCI data pruning: in every class, the ``round(fraction * n_class)``
    highest scores go (ties: the lower index goes first), at least one image stays.

    Returns:
      ``(keep bool [N], {class: images dropped})``.
    """
    keep = np.ones(len(scores), bool)
    dropped: dict[int, int] = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_drop = min(len(idx) - 1, int(round(fraction * len(idx))))
        order = idx[np.lexsort((idx, -scores[idx]))]  # score descending, then index ascending
        keep[order[:n_drop]] = False
        dropped[int(c)] = n_drop
    return keep, dropped


def _compute(arrays: Arrays, settings: FeatureSettings, log: Callable[[str], Any]) -> tuple:
    """The transformed arrays and the pruning record ``(kept indices, scores, per-class drops)``."""
    xtr, ytr, xte, yte = arrays
    t0 = time.perf_counter()
    if settings.mode == "none":
        etr, ete = xtr, xte
    else:
        etr, ete = edge_maps(xtr, settings), edge_maps(xte, settings)
        log(
            f"features: edge maps of {len(xtr) + len(xte)} images in {time.perf_counter() - t0:.1f}s"
        )
    keep, dropped = np.ones(len(xtr), bool), {}
    scores = np.zeros(len(xtr))
    if settings.fci_drop > 0:
        # Scored on the MHO-PFES features (the pixels under mode "none"), as FCIFilter screens.
        scores = prototypicality(etr, ytr, settings.fci_block_size)
        keep, dropped = drop_most_prototypical(scores, ytr, settings.fci_drop)
    if settings.mode == "channels":
        xtr, xte = np.concatenate([xtr, etr], axis=-1), np.concatenate([xte, ete], axis=-1)
    elif settings.mode == "replace":
        xtr, xte = etr, ete
    kept = np.flatnonzero(keep)
    out = (np.ascontiguousarray(xtr[kept]), ytr[kept], np.ascontiguousarray(xte), yte)
    return out, (kept, scores, dropped)


def _info(settings: FeatureSettings, n_in: int, pruning: tuple) -> dict[str, Any]:
    kept, scores, dropped = pruning
    drop = np.ones(n_in, bool)
    drop[kept] = False
    scored = settings.fci_drop > 0
    return {
        "mode": settings.mode,
        "train_in": n_in,
        "train_kept": len(kept),
        "dropped": int(drop.sum()),
        "dropped_per_class": {str(c): n for c, n in sorted(dropped.items())},
        "fci_score_kept_mean": float(scores[kept].mean()) if scored and len(kept) else None,
        "fci_score_dropped_mean": float(scores[drop].mean()) if drop.any() else None,
    }


# --------------------------------------------------------------------------------- the cache


def digest(arrays: Sequence[np.ndarray]) -> str:
    """sha256 over every array's dtype, shape and bytes (~1.4 GB/s here: 0.16 s for
    Fashion-MNIST's 220 MB of float32 pixels, against ~8 s to compute the features)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def cache_identity(arrays: Arrays, settings: FeatureSettings, data_key: str) -> dict[str, Any]:
    """Everything a cache file depends on; its hash names the file."""
    return {
        "format": FORMAT_VERSION,
        "iapdcnn": __version__,
        "data_key": data_key,
        "data": digest(arrays),
        "settings": dataclasses.asdict(settings),
    }


def cache_path(cache_dir: str, identity: dict[str, Any]) -> str:
    """``<cache_dir>/features-<data_key>-<hash of identity>.npz``."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity["data_key"])[:64]
    return os.path.join(cache_dir, f"features-{name}-{key}.npz")


class _Stale(Exception):
    """A cache file written for other data or settings."""


_NAMES = ("x_train", "y_train", "x_test", "y_test")
# What a damaged .npz raises from np.load / zipfile / json, turned into one clear error.
_DAMAGE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, ValueError)


def _write(path: str, out: Arrays, pruning: tuple, identity: dict, info: dict) -> None:
    meta = dict(identity, checksum=digest(out), info=info)
    kept, scores, _ = pruning
    fields = dict(zip(_NAMES, out, strict=True), kept=kept, scores=scores)
    fields["meta"] = np.array(json.dumps(meta, sort_keys=True))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **fields))


def _load(path: str, identity: dict) -> tuple[Arrays, dict]:
    """The arrays and stored info of a cache file, verified against ``identity`` and its checksum.

    Raises:
      ValueError: naming ``--features-cache`` and the file, when it is stale or damaged.
    """
    advice = f"delete it (or point {CACHE_FLAG} elsewhere) and rerun to recompute the features"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            for k, want in identity.items():
                if meta.get(k) != want:
                    raise _Stale(f"{k} is {meta.get(k)!r}, this run needs {want!r}")
            out = tuple(z[n] for n in _NAMES)
    except _Stale as e:
        raise ValueError(f"{CACHE_FLAG}: {path} does not match this run ({e}); {advice}") from None
    except _DAMAGE as e:
        raise ValueError(
            f"{CACHE_FLAG}: {path} is corrupt or truncated ({type(e).__name__}: {e}); {advice}"
        ) from None
    if digest(out) != meta.get("checksum"):
        raise ValueError(f"{CACHE_FLAG}: {path} fails its checksum (corrupt); {advice}")
    return out, meta["info"]


# --------------------------------------------------------------------------------- prepare


def _check_arrays(arrays: Sequence[np.ndarray]) -> Arrays:
    if len(arrays) != 4:
        raise ValueError(
            f"prepare: arrays must be (x_train, y_train, x_test, y_test), got {len(arrays)}"
        )
    xtr, ytr, xte, yte = (np.asarray(a) for a in arrays)
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.ndim != 4 or y.shape != (len(x),):
            raise ValueError(
                f"prepare: x_{name} must be [N, H, W, C] and y_{name} [N], got {x.shape} and {y.shape}"
            )
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"prepare: x_train {xtr.shape} and x_test {xte.shape} differ per image")
    return (
        np.asarray(xtr, np.float32),
        np.asarray(ytr, np.int64),
        np.asarray(xte, np.float32),
        np.asarray(yte, np.int64),
    )


def _prepare_here(
    arrays: Arrays, settings: FeatureSettings, cache_dir: str | None, data_key: str, log
) -> tuple[Arrays, dict]:
    """One process: load the cache file, or compute (and write it)."""
    t0 = time.perf_counter()
    identity = path = None
    if cache_dir is not None:
        identity = cache_identity(arrays, settings, data_key)
        path = cache_path(cache_dir, identity)
        if os.path.exists(path):
            out, info = _load(path, identity)
            seconds = time.perf_counter() - t0
            log(f"features: loaded {path} in {seconds:.1f}s")
            return out, dict(info, cache="hit", cache_path=path, seconds=seconds)
    out, pruning = _compute(arrays, settings, log)
    info = _info(settings, len(arrays[0]), pruning)
    info["compute_seconds"] = time.perf_counter() - t0
    if path is not None:
        _write(path, out, pruning, identity, info)
        log(f"features: wrote {path}")
    seconds = time.perf_counter() - t0
    return out, dict(
        info, cache="off" if path is None else "miss", cache_path=path, seconds=seconds
    )


def _fail_together(hvd: Any, err: BaseException | None) -> None:
    """A barrier that also carries failures: when any rank failed, every rank raises (the failed
    ones their own error, the others its message), instead of the others waiting forever."""
    errors = hvd.allgather_object(None if err is None else (type(err).__name__, str(err)))
    if err is not None:
        raise err
    for rank, e in enumerate(errors):
        if e is not None:
            kind = ValueError if e[0] == "ValueError" else RuntimeError
            raise kind(f"features (rank {rank}): {e[1]}")


def prepare(
    arrays: Sequence[np.ndarray],
    settings: FeatureSettings,
    *,
    cache_dir: str | None,
    data_key: str,
    hvd: Any = None,
    log: Callable[[str], Any] = print,
) -> tuple[Arrays, dict[str, Any]]:
    """MHO-PFES once, before training: edge features for train and test, FCI data pruning for
    train, through the cache in ``cache_dir``.

    Under Horovod (``hvd`` initialised, size > 1) with a cache, local rank 0 of each host computes
    and writes while the others wait, then load (a node-local or a shared ``cache_dir`` both work);
    a failure on one rank raises on all. Without a cache every rank computes.

    Args:
      arrays: ``(x_train [N, H, W, C], y_train [N], x_test [M, H, W, C], y_test [M])``, float
        images in [0, 1] and integer labels.
      settings: what to compute (checked here).
      cache_dir: folder of cache files (``--features-cache``); None computes without caching.
      data_key: names the data (e.g. the dataset and its path); part of the cache's identity,
        with the settings, a digest of the arrays, the iapdcnn version and ``FORMAT_VERSION``.
      hvd: ``horovod.tensorflow``, initialised, or None for one process.
      log: where progress lines go.

    Returns:
      ``((x_train [N', H, W, C'], y_train [N'], x_test [M, H, W, C'], y_test [M]), info)``: C' is
      2C for ``channels``, else C; N' = N minus the images FCI pruning dropped. ``info`` says what
      happened: ``cache`` ("hit", "miss" or "off"), ``cache_path``, ``seconds``
      (this call), ``compute_seconds`` (when the features were computed), ``train_in``,
      ``train_kept``, ``dropped``, ``dropped_per_class`` and the mean FCI scores.

    Raises:
      ValueError: naming the flag, for bad settings; naming ``--features-cache`` and the file, for
        a stale or damaged cache file.
    """
    settings.check()
    arrays = _check_arrays(arrays)
    h, w = arrays[0].shape[1:3]
    if settings.fci_drop > 0:
        _check_block_size(settings.fci_block_size, h, w)
    if not settings.active:
        return arrays, {"mode": "none", "cache": "off", "dropped": 0, "train_kept": len(arrays[0])}
    if hvd is None or hvd.size() == 1 or cache_dir is None:
        # Without a cache every rank computes its own copy: on Fashion-MNIST with 2 ranks sharing
        # 2 cores that took 13.3 s, rank 0 computing and broadcasting the 440 MB 14.8 s.
        return _prepare_here(arrays, settings, cache_dir, data_key, log)
    writer = hvd.local_rank() == 0
    result, err = None, None
    if writer:
        try:
            result = _prepare_here(arrays, settings, cache_dir, data_key, log)
        except Exception as e:  # noqa: BLE001 - re-raised on every rank by _fail_together
            err = e
    _fail_together(hvd, err)
    if not writer:
        try:
            result = _prepare_here(arrays, settings, cache_dir, data_key, log)
        except Exception as e:  # noqa: BLE001 - as above
            err = e
    _fail_together(hvd, err)
    return result
