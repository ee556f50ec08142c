"""The Keras way in for ``model.fit``: ``DistributedOptimizer`` wraps any Keras optimizer like
``horovod.tensorflow.keras.DistributedOptimizer`` does, but reduces with LSG (or any reduction by
name) and skips the update when every worker was rejected; ``ReductionStatsCallback`` puts the
per-step statistics into the callbacks' ``logs``."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .reduction import Reduction, make_reduction

# samples_kept is not here: the optimizer does not see the batch size (the custom loop has it).
STAT_KEYS = ("workers_kept", "skipped", "loss", "loss_min", "loss_max")


class _StatsBox:
    """Plain holder (not trackable), so the stats variables stay out of checkpoints."""


class _LSGOptimizerMixin:
    def compute_gradients(self, loss, var_list, tape=None):
        grads_and_vars = super().compute_gradients(loss, var_list, tape)
        grads, variables = zip(*grads_and_vars, strict=False)
        reduced, stats = self._iapdcnn_reduction(
            list(grads), loss, samples=None, variables=list(variables)
        )
        box = self._iapdcnn_stats
        for k in STAT_KEYS:
            getattr(box, k).assign(tf.cast(stats[k], tf.float32))
        self._iapdcnn_skip = stats["skipped"] > 0
        return list(zip(reduced, variables, strict=False))

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        skip = getattr(self, "_iapdcnn_skip", None)
        self._iapdcnn_skip = None
        if skip is None:
            return super().apply_gradients(grads_and_vars, *args, **kwargs)
        grads_and_vars = list(grads_and_vars)
        with tf.init_scope():
            self.build([v for _, v in grads_and_vars])

        def apply():
            super(_LSGOptimizerMixin, self).apply_gradients(grads_and_vars, *args, **kwargs)
            return tf.identity(self.iterations)

        return tf.cond(skip, lambda: tf.identity(self.iterations), apply)


def DistributedOptimizer(  # noqa: N802 - named like Horovod's factory
    optimizer: tf.keras.optimizers.Optimizer,
    reduction: str | Reduction = "lsg",
    **options: Any,
) -> tf.keras.optimizers.Optimizer:
    """Returns a copy of ``optimizer`` whose gradients are reduced across Horovod workers.

    Same use as Horovod's: ``model.compile(optimizer=DistributedOptimizer(Adam(lr * size)))``,
    with ``hvd.callbacks.BroadcastGlobalVariablesCallback(0)``. The class keeps the wrapped
    optimizer's name, so saved models load without iapdcnn. Statistics of the last step are in
    ``optimizer.reduction_stats`` (dict of variables); see ``ReductionStatsCallback``.

    Args:
      optimizer: a Keras 2 (TF 2.11+) optimizer instance.
      reduction: a name from ``REDUCTIONS`` or a ``Reduction``.
      **options: that reduction's options.
    """
    red = make_reduction(reduction, **options)
    cls = type(optimizer.__class__.__name__, (_LSGOptimizerMixin, optimizer.__class__), {})
    opt = cls.from_config(optimizer.get_config())
    box = _StatsBox()
    for k in STAT_KEYS:
        setattr(box, k, tf.Variable(0.0, trainable=False, name=f"iapdcnn_{k}"))
    opt._iapdcnn_reduction = red
    opt._iapdcnn_stats = box
    object.__setattr__(opt, "reduction_stats", {k: getattr(box, k) for k in STAT_KEYS})
    return opt


class ReductionStatsCallback(tf.keras.callbacks.Callback):
    """Adds ``lsg_<stat>`` of each step to the batch logs and, per epoch, the mean workers and
    samples kept and the number of skipped steps. Put it before TensorBoard/CSVLogger."""

    def __init__(self, optimizer=None, prefix: str = "lsg_") -> None:
        super().__init__()
        self._opt = optimizer
        self.prefix = prefix

    def _stats(self):
        opt = self._opt or self.model.optimizer
        return getattr(opt, "reduction_stats", None) or {}

    def on_epoch_begin(self, epoch, logs=None):
        self._n, self._kept, self._skipped = 0, 0.0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        stats = {k: float(v.numpy()) for k, v in self._stats().items()}
        if logs is not None:
            logs.update({self.prefix + k: v for k, v in stats.items()})
        if stats:
            self._n += 1
            self._kept += stats["workers_kept"]
            self._skipped += stats["skipped"]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and getattr(self, "_n", 0):
            logs[self.prefix + "workers_kept_mean"] = self._kept / self._n
            logs[self.prefix + "skipped_steps"] = self._skipped
