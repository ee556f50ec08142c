"""Fault injection for demonstrations, benchmarks and tests (``--inject-fault RANK:KIND[:FROM]``):
one rank corrupts its batch (``loss_spike``, ``labels``), its gradient after the backward pass
(``nan``, ``scale``, the sign flips, ``random_dir``, ``stale``: its loss looks normal) or its
speed (``straggler``: a fixed delay a step; ``slow``: a delay in proportion to its batch, a
slower machine) from a given step on, or dies there (``crash``: exits at once, as a killed
process would; horovodrun then ends the job). Gradient faults wrap the reduction
(``gradient_fault``), so the training step itself has no fault branch."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

# gradient faults: the factor the faulty rank's local gradient is multiplied by
GRADIENT_FACTORS = {
    "nan": float("nan"),
    "scale": -10.0,
    "sign_flip": -1.0,
    "sign_flip2": -2.0,
    "sign_flip4": -4.0,
    "sign_flip8": -8.0,
}
# gradient faults that replace the local gradient: a random direction of the same norm, or the
# gradient this rank computed STALE_STEPS steps earlier (a worker whose update lags)
GRADIENT_REPLACEMENTS = ("random_dir", "stale")
STALE_STEPS = 10
FAULT_KINDS = (
    "nan",
    "scale",
    "loss_spike",
    "labels",
    "straggler",
    "slow",
    "crash",
    *[k for k in GRADIENT_FACTORS if k.startswith("sign_flip")],
    *GRADIENT_REPLACEMENTS,
)


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
      straggler_seconds: the busy wait of a ``straggler`` step, and of a ``slow`` step per
        ``batch_size`` samples of its batch.
      batch_size: the per-rank batch (``--batch-size``) that ``slow``'s delay is given for.
    """

    def __init__(
        self,
        faults: list[Fault],
        rank: int,
        size: int,
        seed: int,
        straggler_seconds: float,
        batch_size: int = 1,
    ):
        for f in faults:
            if f.rank >= size:
                raise ConfigError(
                    f"--inject-fault rank {f.rank} does not exist (world size {size})"
                )
        self.faults, self.rank, self.seed = list(faults), rank, seed
        self.straggler_seconds, self.batch_size = straggler_seconds, batch_size
        self.corrupts_gradients = any(
            f.kind in GRADIENT_FACTORS or f.kind in GRADIENT_REPLACEMENTS for f in faults
        )

    def batch(
        self, x: np.ndarray, y: np.ndarray, step: int
    ) -> tuple[np.ndarray, np.ndarray, float | str]:
        """This rank's batch at global ``step`` after its data faults, and what happens to its
        local gradient: a factor (1.0 when healthy) or the name of a replacement
        (``GRADIENT_REPLACEMENTS``); either goes to ``gradient_fault``'s ``factor.assign``."""
        factor: float | str = 1.0
        for f in self.faults:
            if not f.active(self.rank, step):
                continue
            rng = np.random.default_rng([self.seed, 7, step, self.rank])
            if f.kind in GRADIENT_FACTORS:
                factor = GRADIENT_FACTORS[f.kind]
            elif f.kind in GRADIENT_REPLACEMENTS:
                factor = f.kind
            elif f.kind == "loss_spike":  # corrupted inputs: heavy-tailed noise
                x = (10.0 * rng.standard_cauchy(x.shape)).astype(np.float32)
            elif f.kind == "labels":
                y = rng.permutation(y)
            elif f.kind == "straggler":  # a node with a fixed delay a step
                _busy(self.straggler_seconds)
            elif f.kind == "slow":  # a slower machine: the delay grows with its batch
                _busy(self.straggler_seconds * len(x) / self.batch_size)
            elif f.kind == "crash":  # a node that dies: no cleanup, no checkpoint, status 3
                print(f"rank {self.rank}: crash fault at step {step}", flush=True)
                os._exit(3)
        return x, y, factor


def _busy(seconds: float) -> None:
    """Burns CPU for ``seconds`` (a slow node computes; it does not sleep, so the balancer's
    CPU timing sees it)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _FaultControl:
    """What the trainer sets before each step (``.assign(factor)``, as on a ``tf.Variable``): a
    float multiplies the local gradients, a name from ``GRADIENT_REPLACEMENTS`` replaces them."""

    def __init__(self) -> None:
        import tensorflow as tf

        self.scale = tf.Variable(1.0, trainable=False, name="iapdcnn_fault_factor")
        # 0: multiply by scale, 1 + i: GRADIENT_REPLACEMENTS[i]
        self.mode = tf.Variable(0, trainable=False, name="iapdcnn_fault_mode")

    def assign(self, value: float | str) -> None:
        if isinstance(value, str):
            if value not in GRADIENT_REPLACEMENTS:
                raise ValueError(
                    f"factor must be a number or one of {', '.join(GRADIENT_REPLACEMENTS)}, "
                    f"got {value!r}"
                )
            self.mode.assign(1 + GRADIENT_REPLACEMENTS.index(value))
            self.scale.assign(1.0)
        else:
            self.mode.assign(0)
            self.scale.assign(float(value))


def gradient_fault(reduction: Any, seed: int = 0) -> Any:
    """``reduction`` behind a corruption of the local gradients after the backward pass: set
    ``.factor.assign(f)`` before each step. A float multiplies the gradients (1.0 leaves them as
    they are); ``"random_dir"`` sends a random direction (Gaussian, seeded) of the true gradient's
    global norm; ``"stale"`` sends the gradient of ``STALE_STEPS`` stale steps earlier. The ring
    buffer of past gradients (``STALE_STEPS`` copies) is filled on stale steps only, so the first
    ``STALE_STEPS`` steps of the fault send zeros."""
    import tensorflow as tf

    from iapdcnn.distributed import Reduction
    from iapdcnn.distributed.reduction import ShapeKeyedState, dense_gradients

    class GradientFault(Reduction):
        name = reduction.name

        def __init__(self) -> None:
            super().__init__(reduction.process_set)
            self.inner = reduction
            self.factor = _FaultControl()
            self._rng = tf.random.Generator.from_seed(seed + 7919)
            self._history = ShapeKeyedState("iapdcnn_fault_stale", slots=STALE_STEPS)

        def _random(self, grads):
            noise = [self._rng.normal(tf.shape(g), dtype=g.dtype) for g in grads]
            ratio = tf.math.divide_no_nan(
                tf.linalg.global_norm(grads), tf.linalg.global_norm(noise)
            )
            return [n * tf.cast(ratio, n.dtype) for n in noise]

        def _stale(self, grads):
            ring, count = self._history.get(grads)  # [STALE_STEPS, *shape] per gradient
            i = tf.cast(count % STALE_STEPS, tf.int32)
            old = [tf.gather(r, i) for r in ring]
            with tf.control_dependencies(old):
                writes = [
                    r.scatter_nd_update([[i]], g[None]) for r, g in zip(ring, grads, strict=True)
                ]
            with tf.control_dependencies(writes):
                bump = count.assign_add(1)
            with tf.control_dependencies([bump]):
                return [tf.identity(o) for o in old]

        def __call__(self, grads, loss, **kwargs):
            c = self.factor
            grads = dense_gradients(list(grads), kwargs.get("variables"))
            grads = [g * tf.cast(c.scale, g.dtype) for g in grads]
            grads = tf.switch_case(
                c.mode.read_value(),
                [lambda: list(grads), lambda: self._random(grads), lambda: self._stale(grads)],
            )
            return self.inner(grads, loss, **kwargs)

    return GradientFault()
