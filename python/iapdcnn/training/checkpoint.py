"""The trainer's checkpoint: model weights, optimizer slots and the run's metadata (epoch,
history, world size) in one ``.npz``, written atomically by rank 0 after every epoch, so a run
killed at any moment resumes from the last complete epoch and continues exactly.

A checkpoint also records what it belongs to (``identity``: the data, the model's shape-giving
settings, the optimizer, the iapdcnn version). Resuming checks that and every array's shape
here, once, before anything is assigned: a damaged, foreign or mismatched checkpoint is a
``CheckpointError`` naming the file, never a raw zip, pickle or Keras error."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from iapdcnn._io import atomic_write

from .config import NEEDS_PATH, TrainConfig, config_dict
from .errors import ConfigError

CKPT = "checkpoint.npz"
FORMAT = 2  # what a checkpoint holds; 1 had no identity
_ADVICE = "remove it or pick another --out to start afresh"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed from; the message names its path."""


def identity(cfg: TrainConfig, input_shape: Any, num_classes: int) -> dict[str, Any]:
    """What a checkpoint of this run belongs to: the data (``--dataset``, its ``--data-path``,
    the synthetic set's ``--seed``, the input shape and class count), every flag that changes
    the model's weights or their shapes, the optimizer (whose slots it holds) and the iapdcnn
    version. Resuming under another identity is refused. The pruning flags (every ``--prune*``)
    count too: they decide which filters the model loses and when."""
    from iapdcnn import __version__

    data_path = cfg.data_path if cfg.dataset in NEEDS_PATH else None
    pruning = {k: v for k, v in config_dict(cfg).items() if k.startswith("prune")}
    ident = {
        "format": FORMAT,
        "iapdcnn": __version__,
        "dataset": cfg.dataset,
        "data_path": os.path.abspath(data_path) if data_path else None,
        "data_seed": cfg.seed if cfg.dataset == "synthetic" else None,
        "input_shape": [int(d) for d in input_shape],
        "num_classes": int(num_classes),
        "model": cfg.model,
        "width": cfg.width,
        "blocks": cfg.blocks,
        "conv": cfg.conv,
        "features": cfg.features,
        "fci_epsilon": cfg.fci_epsilon if cfg.features else None,
        "features_mode": cfg.features_mode,
        "fci_drop": cfg.fci_drop,
        "optimizer": cfg.optimizer,
        **pruning,
    }
    return json.loads(json.dumps(ident))  # as it reads back (tuples as lists), to compare alike


def _flag(key: str) -> str:
    names = {"iapdcnn": "iapdcnn version", "format": "checkpoint format"}
    names |= {"input_shape": "input shape", "num_classes": "class count"}
    names["data_seed"] = "--seed (synthetic data)"
    return names.get(key, "--" + key.replace("_", "-"))


def save(
    path: str, model: Any, optimizer: Any, meta: dict[str, Any], ident: dict[str, Any]
) -> None:
    """Writes ``model``'s weights, ``optimizer``'s variables, ``meta`` and the run's ``ident``
    (``identity``) to ``path``."""
    weights = model.get_weights()
    arrays = {f"w_{i}": w for i, w in enumerate(weights)}
    opt_vars = [v.numpy() for v in optimizer.variables]
    arrays.update({f"o_{i}": v for i, v in enumerate(opt_vars)})
    full = {**meta, "n_weights": len(weights), "n_opt": len(opt_vars), "identity": ident}
    arrays["meta"] = np.array(json.dumps(full))
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _damaged(path: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"--resume: {path} is not a readable iapdcnn checkpoint ({why}); {_ADVICE}"
    )


def read_meta(path: str, ident: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of the checkpoint at ``path`` (without loading its arrays), checked against
    this run's ``ident`` when given.

    Raises:
      CheckpointError: naming ``path``, when it is empty, truncated, corrupt, not an iapdcnn
        checkpoint, or written for another dataset, model, optimizer or iapdcnn version.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files") or "meta" not in z.files:
                raise _damaged(path, "no 'meta' entry")
            meta = json.loads(str(z["meta"]))
    except CheckpointError:
        raise
    except Exception as e:  # zip, zlib, EOF, pickle refusal, JSON: all mean "damaged"
        raise _damaged(path, f"{type(e).__name__}: {e}") from None
    fields = {"epoch": int, "history": list, "size": int, "n_weights": int}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in fields.items()):
        raise _damaged(path, f"its metadata lacks {', '.join(fields)}")
    pruned = meta.get("pruned") or {}
    if not isinstance(pruned, dict) or any(
        not isinstance(v, list) or not all(isinstance(i, int) for i in v) for v in pruned.values()
    ):
        raise _damaged(path, "its 'pruned' entry is not a layer -> filter indices map")
    if ident is not None:
        check_identity(path, meta.get("identity"), ident)
    return meta


def check_identity(path: str, saved: Any, ident: dict[str, Any]) -> None:
    """Raises ``CheckpointError`` naming ``path`` and both values of every setting in which the
    checkpoint's identity ``saved`` differs from this run's ``ident``."""
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"--resume: {path} records no identity (written by an iapdcnn before "
            f"{ident['iapdcnn']} or by another program), so it cannot be checked against this "
            f"run; {_ADVICE}"
        )
    diff = [
        f"{_flag(k)}: checkpoint {saved.get(k)!r}, this run {v!r}"
        for k, v in ident.items()
        if saved.get(k) != v
    ]
    if diff:
        raise CheckpointError(
            f"--resume: {path} belongs to another run ({'; '.join(diff)}); resume with the "
            f"checkpoint's settings, or {_ADVICE}"
        )


def load(path: str, model: Any, optimizer: Any, ident: dict[str, Any] | None = None) -> dict:
    """Restores what ``save`` wrote into ``model`` and ``optimizer``; returns the metadata.

    Every array is read and checked against its variable's shape before any is assigned, so a
    failure leaves the model and optimizer as they were.

    Raises:
      CheckpointError: naming ``path`` (see ``read_meta``), or the first variable whose saved
        shape differs.
    """
    meta = read_meta(path, ident)
    targets = [(f"w_{i}", w.shape, f"weight {i}") for i, w in enumerate(model.get_weights())]
    targets += [
        (f"o_{i}", tuple(v.shape), f"optimizer variable {v.name}")
        for i, v in enumerate(optimizer.variables)
    ]
    if meta["n_weights"] != len(model.get_weights()) or meta.get("n_opt", 0) != len(
        optimizer.variables
    ):
        raise CheckpointError(
            f"--resume: {path} holds {meta['n_weights']} weights and {meta.get('n_opt')} "
            f"optimizer variables, this run's model and optimizer have "
            f"{len(model.get_weights())} and {len(optimizer.variables)}; {_ADVICE}"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = [z[key] for key, _, _ in targets]
    except Exception as e:
        raise _damaged(path, f"{type(e).__name__}: {e}") from None
    for a, (_, shape, what) in zip(arrays, targets, strict=True):
        if tuple(a.shape) != tuple(shape):
            raise CheckpointError(
                f"--resume: {path}: {what} has shape {tuple(a.shape)} in the checkpoint, "
                f"{tuple(shape)} in this run's model; {_ADVICE}"
            )
    n = meta["n_weights"]
    model.set_weights(arrays[:n])
    for v, a in zip(optimizer.variables, arrays[n:], strict=True):
        v.assign(a)
    return meta
