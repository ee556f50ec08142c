"""The trainer's checkpoint: model weights, optimizer slots and the run's metadata (epoch,
history, world size) in one ``.npz``, written atomically by rank 0 after every epoch, so a run
killed at any moment resumes from the last complete epoch and continues exactly."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from iapdcnn._io import atomic_write

CKPT = "checkpoint.npz"


def save(path: str, model: Any, optimizer: Any, meta: dict[str, Any]) -> None:
    """Writes ``model``'s weights, ``optimizer``'s variables and ``meta`` (JSON) to ``path``."""
    weights = model.get_weights()
    arrays = {f"w_{i}": w for i, w in enumerate(weights)}
    arrays.update({f"o_{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    arrays["meta"] = np.array(json.dumps({**meta, "n_weights": len(weights)}))
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def read_meta(path: str) -> dict[str, Any]:
    """The metadata of the checkpoint at ``path`` (without loading its arrays)."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def load(path: str, model: Any, optimizer: Any) -> dict[str, Any]:
    """Restores what ``save`` wrote into ``model`` and ``optimizer``; returns the metadata."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        model.set_weights([z[f"w_{i}"] for i in range(meta["n_weights"])])
        for i, v in enumerate(optimizer.variables):
            v.assign(z[f"o_{i}"])
    return meta
