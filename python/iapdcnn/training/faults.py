"""Fault injection for demonstrations, benchmarks and tests (``--inject-fault RANK:KIND[:FROM]``):
one rank corrupts its batch (``loss_spike``, ``labels``), its gradient (``nan``, ``scale``) or
its speed (``straggler``) from a given step on. Gradient faults wrap the reduction
(``GradientFault``), so the training step itself has no fault branch."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

FAULT_KINDS = ("nan", "scale", "loss_spike", "labels", "straggler")
# gradient faults: the factor the faulty rank's local gradient is multiplied by
GRADIENT_FACTORS = {"nan": float("nan"), "scale": -10.0}


@dataclass(frozen=True)
class Fault:
    """``--inject-fault RANK:KIND[:FROM_STEP]``."""

    rank: int
    kind: str
    from_step: int = 0

    def active(self, rank: int, step: int) -> bool:
        return rank == self.rank and step >= self.from_step

    def __str__(self) -> str:
        return f"{self.rank}:{self.kind}:{self.from_step}"


def parse_fault(text: str) -> Fault:
    """Parses ``RANK:KIND[:FROM_STEP]``; raises ``argparse.ArgumentTypeError`` saying why."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"--inject-fault wants RANK:KIND[:FROM_STEP], got {text!r}"
        )
    try:
        rank = int(parts[0])
        step = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--inject-fault: RANK and FROM_STEP must be integers, got {text!r}"
        ) from None
    if parts[1] not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"--inject-fault: KIND must be one of {', '.join(FAULT_KINDS)}, got {parts[1]!r}"
        )
    if rank < 0 or step < 0:
        raise argparse.ArgumentTypeError(
            f"--inject-fault: RANK and FROM_STEP must be >= 0: {text!r}"
        )
    return Fault(rank, parts[1], step)


class FaultInjector:
    """Applies this rank's faults step by step.

    Args:
      faults: the ``--inject-fault`` list.
      rank, size: this rank and the world size (a fault on a rank >= size is an error).
      seed: the run's seed (corruptions are reproducible).
      straggler_seconds: the sleep of a ``straggler`` step.
    """

    def __init__(
        self, faults: list[Fault], rank: int, size: int, seed: int, straggler_seconds: float
    ):
        for f in faults:
            if f.rank >= size:
                raise ConfigError(
                    f"--inject-fault rank {f.rank} does not exist (world size {size})"
                )
        self.faults, self.rank, self.seed = list(faults), rank, seed
        self.straggler_seconds = straggler_seconds
        self.corrupts_gradients = any(f.kind in GRADIENT_FACTORS for f in faults)

    def batch(
        self, x: np.ndarray, y: np.ndarray, step: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """This rank's batch at global ``step`` after its data faults, and the factor for its
        local gradient (1.0 when healthy)."""
        factor = 1.0
        for f in self.faults:
            if not f.active(self.rank, step):
                continue
            rng = np.random.default_rng([self.seed, 7, step, self.rank])
            if f.kind in GRADIENT_FACTORS:
                factor = GRADIENT_FACTORS[f.kind]
            elif f.kind == "loss_spike":  # corrupted inputs: heavy-tailed noise
                x = (10.0 * rng.standard_cauchy(x.shape)).astype(np.float32)
            elif f.kind == "labels":
                y = rng.permutation(y)
            elif f.kind == "straggler":
                time.sleep(self.straggler_seconds)
        return x, y, factor


def gradient_fault(reduction: Any) -> Any:
    """``reduction`` behind a multiplier of the local gradients: set ``.factor`` (a
    ``tf.Variable``) before each step; 1.0 leaves the gradients as they are."""
    import tensorflow as tf

    from iapdcnn.distributed import Reduction

    class GradientFault(Reduction):
        name = reduction.name

        def __init__(self) -> None:
            super().__init__(reduction.process_set)
            self.inner = reduction
            self.factor = tf.Variable(1.0, trainable=False, name="iapdcnn_fault_factor")

        def __call__(self, grads, loss, **kwargs):
            grads = [None if g is None else g * tf.cast(self.factor, g.dtype) for g in grads]
            return self.inner(grads, loss, **kwargs)

    return GradientFault()
