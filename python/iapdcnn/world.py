"""The one place that asks whether this process is one of several Horovod ranks (or workers of
the tf.distribute engine, which registers itself here with ``use_engine``).

The data loaders (sharding), the FCI filter and ``iapdcnn preprocess`` (merging statistics) and
the pruning callback (rank 0's plan) all need the rank, the size and one collective each; they
ask here. Without Horovod, or before ``hvd.init()``, every function answers for a single
process. Nothing here imports Horovod unless ``init_if_launched`` is called under a launcher;
the rest only looks at an already imported and initialised ``horovod.tensorflow``. (This module
is top-level, not in ``iapdcnn.distributed``, so that the loaders do not import the reductions
and Keras.)
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

LAUNCHER_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK")
_ENGINE: Any = None


def use_engine(collectives: Any) -> None:
    """Makes ``collectives`` this process's world instead of Horovod: an object with Horovod's
    names (``rank``, ``size``, ``allreduce``, ``allgather``, ``grouped_allreduce``,
    ``broadcast_object``, ...), such as ``distributed.tf_distribute.StrategyCollectives``.
    ``horovod()`` and the reductions then use it; None goes back to Horovod."""
    global _ENGINE
    _ENGINE = collectives


def engine() -> Any:
    """What ``use_engine`` registered, or None."""
    return _ENGINE


def horovod() -> Any:
    """The registered engine (``use_engine``), else ``horovod.tensorflow`` when it is imported
    and initialised, else None."""
    if _ENGINE is not None:
        return _ENGINE
    hvd = sys.modules.get("horovod.tensorflow")
    return hvd if hvd is not None and hvd.is_initialized() else None


def init_if_launched() -> Any:
    """Initialises Horovod when a launcher (horovodrun, mpirun) started this process and returns
    the module; returns None in a plain process."""
    if not any(v in os.environ for v in LAUNCHER_VARIABLES):
        return None
    import horovod.tensorflow as hvd

    hvd.init()
    return hvd


def rank_size(from_environment: bool = True) -> tuple[int, int]:
    """``(rank, size)``: Horovod's when initialised; else, with ``from_environment``, the
    HOROVOD_RANK / HOROVOD_SIZE that horovodrun sets; else ``(0, 1)``."""
    hvd = horovod()
    if hvd is not None:
        return hvd.rank(), hvd.size()
    if from_environment and "HOROVOD_RANK" in os.environ and "HOROVOD_SIZE" in os.environ:
        return int(os.environ["HOROVOD_RANK"]), int(os.environ["HOROVOD_SIZE"])
    return 0, 1


def allreduce_numpy(value: np.ndarray, op: str = "sum") -> np.ndarray:
    """``value`` summed (``op="sum"``) or maximised (``"max"``) across the ranks; the value
    itself in a single process. Float64 stays float64, so per-shard float64 sums that are exact
    merge exactly."""
    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    hvd = horovod()
    if hvd is None or hvd.size() <= 1:
        return np.asarray(value)
    import tensorflow as tf

    hop = {"sum": hvd.Sum, "max": hvd.Max}[op]
    return hvd.allreduce(tf.constant(value), op=hop).numpy()


def broadcast_object(obj: Any, name: str, root_rank: int = 0) -> Any:
    """Rank ``root_rank``'s ``obj`` on every rank (pickled); ``obj`` itself in a single
    process."""
    hvd = horovod()
    if hvd is None or hvd.size() <= 1:
        return obj
    return hvd.broadcast_object(obj, root_rank=root_rank, name=name)
