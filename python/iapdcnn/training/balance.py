"""``--balance``: PDCNNO's LBRLA and BPT-CNN's IDPA as one load balancer for ranks of unequal
speed. The global batch stays fixed; each rank's share of it follows its measured speed,
re-estimated every ``--balance-every`` steps from the ranks' compute times (one allgather of a
scalar per rank), and each rank's gradient is weighted by its share, so the reduced gradient is
still the mean over the global batch.

- LBRLA gives more data to the nodes below the average load rate, IDPA hands each node data in
  proportion to its measured computing power, incrementally as training runs. Both amount to the
  same rule here: a rank's batch is proportional to its measured throughput (samples per second
  of compute), updated as training runs.
- Compute time is the process's CPU time over the steps (``time.process_time``): the time a
  rank spends waiting in a collective for the others is not compute, so the fast ranks do not
  look slow. (A rank slowed by waiting on I/O or sleeping would not be seen; the injected
  ``straggler`` and ``slow`` faults burn CPU for that reason. ``slow``'s delay follows its
  batch, as a slower machine's does, so the balancer can shrink it; ``straggler``'s fixed delay
  a step it cannot.)
- The data shards follow the batch sizes: step ``i`` takes the global batch ``perm[i B : (i+1)
  B]`` and rank ``k`` the slice of it that starts at the sum of the smaller ranks' sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def batch_sizes(speeds: Any, total: int, min_batch: int = 1, multiple: int = 1) -> list[int]:
    """Batch sizes proportional to ``speeds`` that sum to ``total``, each >= ``min_batch`` and a
    multiple of ``multiple`` (largest remainders get the leftover samples). Non-finite or
    non-positive speeds count as the slowest finite one.

    >>> batch_sizes([1.0, 1.0, 2.0], 64)
    [16, 16, 32]
    """
    if multiple > 1:
        if total % multiple:
            raise ValueError(f"total {total} is not a multiple of {multiple}")
        units = batch_sizes(speeds, total // multiple, -(-min_batch // multiple))
        return [u * multiple for u in units]
    s = np.asarray(speeds, np.float64)
    k = len(s)
    if k == 0 or total < k * min_batch:
        raise ValueError(f"total {total} cannot give {k} ranks {min_batch} samples each")
    ok = np.isfinite(s) & (s > 0)
    s = np.where(ok, s, s[ok].min() if ok.any() else 1.0)
    free = total - k * min_batch
    share = free * s / s.sum()
    sizes = np.floor(share).astype(int)
    for i in np.argsort(-(share - sizes), kind="stable")[: free - int(sizes.sum())]:
        sizes[i] += 1
    return [int(b) + min_batch for b in sizes]


class Balancer:
    """The per-rank batch sizes of a run and their re-estimation.

    Args:
      size, rank: the world.
      per_rank: the batch each rank takes when balanced evenly (``--batch-size``).
      every: steps between re-estimations.
      hvd: Horovod (for the allgather).
      multiple: every batch a multiple of this (2 where odd batches crash TensorFlow's oneDNN
        strided-conv gradients: ``build.odd_batch_crashes``).
    """

    def __init__(
        self, size: int, rank: int, per_rank: int, every: int, hvd: Any, multiple: int = 1
    ) -> None:
        self.size, self.rank, self.every, self.hvd = size, rank, every, hvd
        self.multiple = multiple
        self.total = size * per_rank
        self.sizes = [per_rank] * size
        self.min_batch = max(1, per_rank // 8)
        self.updates = 0
        self._cpu = 0.0
        self._samples = 0

    @property
    def offset(self) -> int:
        return int(sum(self.sizes[: self.rank]))

    @property
    def weight(self) -> float:
        """This rank's gradient weight: its share of the global batch times the world size (an
        Average of ``weight_k g_k`` is then ``sum_k b_k g_k / B``)."""
        return self.sizes[self.rank] * self.size / self.total

    def record(self, cpu_seconds: float, samples: int) -> None:
        self._cpu += cpu_seconds
        self._samples += samples

    def maybe_update(self, step: int) -> bool:
        """Every ``every`` steps: allgathers each rank's compute seconds per sample and resizes
        the batches (the same result on every rank). Returns whether the sizes changed."""
        if (step + 1) % self.every or not self._samples:
            return False
        import tensorflow as tf

        cost = self._cpu / self._samples
        costs = self.hvd.allgather(tf.constant([cost], tf.float64), name="iapdcnn_balance")
        costs = costs.numpy()
        self._cpu, self._samples = 0.0, 0
        new = batch_sizes(1.0 / np.maximum(costs, 1e-12), self.total, self.min_batch, self.multiple)
        changed = new != self.sizes
        self.sizes, self.updates = new, self.updates + int(changed)
        return changed


def sample_weighted(reduction: Any) -> Any:
    """``reduction`` with this rank's gradients multiplied by ``.weight`` (a ``tf.Variable``,
    set to ``Balancer.weight`` before each step) before they are reduced. The loss the screens
    see is the rank's own mean loss, unscaled. ``.factor`` is the inner reduction's fault
    control, when it has one."""
    import tensorflow as tf

    from iapdcnn.distributed import Reduction
    from iapdcnn.distributed.reduction import dense_gradients

    class SampleWeighted(Reduction):
        name = reduction.name

        def __init__(self) -> None:
            super().__init__(reduction.process_set)
            self.inner = reduction
            self.weight = tf.Variable(1.0, trainable=False, name="iapdcnn_balance_weight")
            if hasattr(reduction, "factor"):
                self.factor = reduction.factor

        def __call__(self, grads, loss, **kwargs):
            grads = dense_gradients(list(grads), kwargs.get("variables"))
            grads = [g * tf.cast(self.weight, g.dtype) for g in grads]
            return self.inner(grads, loss, **kwargs)

    return SampleWeighted()
