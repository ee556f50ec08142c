"""The Keras way in for ``model.fit``: ``DistributedOptimizer`` wraps any Keras optimizer like
``horovod.tensorflow.keras.DistributedOptimizer`` does, but reduces with LSG (or any reduction by
name) and skips the update when every worker was rejected; ``ReductionStatsCallback`` puts the
per-step statistics into the callbacks' ``logs``. ``model.fit`` hands the optimizer only the
mean loss; compiling with ``opt.loss_with_standard_error(loss)`` also gives it the standard
error of that mean, which LSG's loss screen uses as its floor (as in custom loops).

Both Kerases: a tf_keras (Keras 2) optimizer is hooked where tf_keras' ``fit`` computes
gradients (``compute_gradients``, which also gets the loss); a Keras 3 optimizer where Keras 3
applies them (``apply``, behind ``apply_gradients``), with the loss taken from ``scale_loss``,
which Keras 3's ``train_step`` calls on every step. Horovod's own Keras ``DistributedOptimizer``
hooks only the Keras 2 path, so under Keras 3 it silently does not reduce."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .._keras import keras
from .law import loss_standard_error
from .reduction import Reduction, make_reduction

# samples_kept is not here: the optimizer does not see the batch size (the custom loop has it).
STAT_KEYS = ("workers_kept", "skipped", "loss", "loss_min", "loss_max")


class _StatsBox:
    """Plain holder (not trackable), so the stats variables stay out of checkpoints."""


@keras.utils.register_keras_serializable("iapdcnn")
class LossWithStandardError(keras.losses.Loss):
    """``loss`` per sample, also storing the standard error of the batch's mean loss
    (``loss_standard_error``, sample weights not applied) in ``optimizer``'s statistics for its
    reduction. Made by ``DistributedOptimizer(...).loss_with_standard_error``; loaded from a
    saved model it is the plain loss (no optimizer to publish to)."""

    def __init__(self, loss: Any, optimizer: Any = None, **kwargs: Any) -> None:
        inner = keras.losses.get(loss)
        kwargs.setdefault("name", getattr(inner, "name", None) or getattr(inner, "__name__", None))
        super().__init__(**kwargs)
        self.inner = inner
        self._box = getattr(optimizer, "_iapdcnn_stats", None)
        if optimizer is not None and self._box is None:
            raise ValueError(
                "optimizer must come from iapdcnn.distributed.DistributedOptimizer, got "
                f"{type(optimizer).__name__}"
            )

    def call(self, y_true, y_pred):
        inner = self.inner
        per = (
            inner.call(y_true, y_pred)
            if isinstance(inner, keras.losses.Loss)
            else inner(y_true, y_pred)
        )
        if self._box is not None:
            self._box.loss_se.assign(loss_standard_error(per))
        return per

    def get_config(self) -> dict:
        return {**super().get_config(), "loss": keras.losses.serialize(self.inner)}

    @classmethod
    def from_config(cls, config: dict) -> LossWithStandardError:
        config = dict(config)
        return cls(keras.losses.deserialize(config.pop("loss")), **config)


class _LSGOptimizerMixin:
    """tf_keras (Keras 2) optimizers: reduce in ``compute_gradients``, skip in
    ``apply_gradients``."""

    def loss_with_standard_error(self, loss: Any) -> LossWithStandardError:
        """``loss`` (a Keras loss, its name or function) for ``model.compile`` that also gives
        this optimizer's reduction the standard error of each batch's loss."""
        return LossWithStandardError(loss, self)

    def compute_gradients(self, loss, var_list, tape=None):
        grads_and_vars = super().compute_gradients(loss, var_list, tape)
        grads, variables = zip(*grads_and_vars, strict=False)
        reduced, self._iapdcnn_skip = _reduce_into_stats(self, list(grads), loss, list(variables))
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


class _Keras3LSGOptimizerMixin:
    """Keras 3 optimizers: Keras 3's ``train_step`` computes gradients with its own tape and
    calls ``apply_gradients`` -> ``apply``; ``compute_gradients`` is never called. So the
    reduction runs in ``apply`` (public; ``apply_gradients`` goes through it), and the loss to
    screen on comes from ``scale_loss``, which ``train_step`` calls with each step's loss. A
    step whose every worker was rejected leaves the variables, the slots and ``iterations``
    untouched."""

    def loss_with_standard_error(self, loss: Any) -> LossWithStandardError:
        """As for Keras 2: ``loss`` for ``model.compile`` that also publishes its standard
        error."""
        return LossWithStandardError(loss, self)

    def scale_loss(self, loss):
        self._iapdcnn_stats.loss_in.assign(tf.cast(tf.reshape(loss, []), tf.float32))
        return super().scale_loss(loss)

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if not grads:
            return super().apply(grads, trainable_variables)
        variables = None if trainable_variables is None else list(trainable_variables)
        box = self._iapdcnn_stats
        # The loss of this step if scale_loss saw one, else 0: the loss screen then passes
        # everyone and the gradient screen still applies.
        loss = box.loss_in.read_value()
        box.loss_in.assign(0.0)
        reduced, skip = _reduce_into_stats(self, grads, loss, variables)
        if variables is not None and not self.built:
            with tf.init_scope():
                self.build(variables)

        def apply():
            super(_Keras3LSGOptimizerMixin, self).apply(reduced, variables)
            return tf.constant(True)

        tf.cond(skip, lambda: tf.constant(False), apply)


def _reduce_into_stats(
    opt: Any, grads: list, loss: Any, variables: list | None
) -> tuple[list, tf.Tensor]:
    """Runs ``opt``'s reduction and publishes its statistics; returns the reduced gradients and
    whether the step must be skipped."""
    box = opt._iapdcnn_stats
    # loss_se is 0 (unknown to the reduction) unless a LossWithStandardError has written it.
    reduced, stats = opt._iapdcnn_reduction(
        grads, loss, samples=None, variables=variables, loss_se=box.loss_se
    )
    for k in STAT_KEYS:
        getattr(box, k).assign(tf.cast(stats[k], tf.float32))
    return reduced, stats["skipped"] > 0


def _is_keras3_optimizer(optimizer: Any) -> bool:
    try:
        import keras
    except ImportError:  # no Keras 3 at all: tf.keras is Keras 2
        return False
    return int(keras.__version__.split(".")[0]) >= 3 and isinstance(
        optimizer, keras.optimizers.Optimizer
    )


def DistributedOptimizer(  # noqa: N802 - named like Horovod's factory
    optimizer: Any,
    reduction: str | Reduction = "lsg",
    **options: Any,
) -> Any:
    """Returns a copy of ``optimizer`` whose gradients are reduced across Horovod workers.

    Same use as Horovod's: ``model.compile(optimizer=DistributedOptimizer(Adam(lr * size)))``,
    with ``hvd.callbacks.BroadcastGlobalVariablesCallback(0)`` (tf_keras) or identical initial
    weights (Keras 3). The class keeps the wrapped optimizer's name and module, so saved models
    load without iapdcnn. Statistics of the last step are in ``optimizer.reduction_stats``
    (dict of variables); see ``ReductionStatsCallback``. Compile with
    ``loss=opt.loss_with_standard_error(loss)`` to give LSG each batch's standard error
    (``reduction_stats["loss_se"]``); without it the loss screen falls back to ``tau_floor``.

    Args:
      optimizer: a tf_keras (Keras 2, TF 2.11+) or Keras 3 optimizer instance.
      reduction: a name from ``REDUCTIONS`` or a ``Reduction``.
      **options: that reduction's options.

    Raises:
      ValueError: ``optimizer`` is not a Keras optimizer; bad ``reduction`` or option.
    """
    if not (hasattr(optimizer, "get_config") and hasattr(optimizer, "apply_gradients")):
        raise ValueError(
            f"optimizer must be a Keras optimizer instance, got {type(optimizer).__name__}"
        )
    red = make_reduction(reduction, **options)
    base = optimizer.__class__
    mixin = _Keras3LSGOptimizerMixin if _is_keras3_optimizer(optimizer) else _LSGOptimizerMixin
    cls = type(base.__name__, (mixin, base), {"__module__": base.__module__})
    opt = cls.from_config(optimizer.get_config())
    box = _StatsBox()
    for k in (*STAT_KEYS, "loss_se", "loss_in"):
        setattr(box, k, tf.Variable(0.0, trainable=False, name=f"iapdcnn_{k}"))
    opt._iapdcnn_reduction = red
    opt._iapdcnn_stats = box
    stats = {k: getattr(box, k) for k in (*STAT_KEYS, "loss_se")}
    object.__setattr__(opt, "reduction_stats", stats)
    return opt


class ReductionStatsCallback(keras.callbacks.Callback):
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
