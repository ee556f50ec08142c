"""``DistributedGradientTape``: the custom-loop way in, used like Horovod's
``hvd.DistributedGradientTape`` but reducing with LSG (or any reduction by name)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .law import loss_standard_error
from .reduction import Reduction, Stats, make_reduction


class DistributedGradientTape:
    """Wraps a ``tf.GradientTape``; ``gradient()`` returns the reduced gradients.

    Usage, as with Horovod::

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        tape = iapdcnn.distributed.DistributedGradientTape(tape, reduction="lsg")
        grads = tape.gradient(loss, model.trainable_variables)
        iapdcnn.distributed.apply_unless_skipped(opt, zip(grads, vars), tape.stats)

    Args:
      tape: the recorded ``tf.GradientTape``.
      reduction: a name from ``REDUCTIONS`` or a ``Reduction``.
      **options: options of that reduction (tau, kappa, centre, normalise, grad_screen, ...).

    Attributes:
      stats: after ``gradient()``, the step's statistics (scalar tensors; see ``Reduction``).
    """

    def __init__(self, tape: tf.GradientTape, reduction: str | Reduction = "lsg", **options: Any):
        self._tape = tape
        self.reduction = make_reduction(reduction, **options)
        self.stats: Stats = {}

    def gradient(
        self,
        target,
        sources,
        output_gradients=None,
        *,
        loss=None,
        samples=None,
        loss_se=None,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    ):
        """Local gradients, then the reduction across workers.

        Args:
          target: the scalar loss. A ``[B]`` vector is differentiated as TensorFlow does (the
            sum); its mean is screened and its standard error sent along.
          sources: variables (any nest).
          loss: optional scalar to screen on instead of ``target`` (e.g. the raw mean loss).
          samples: optional number of samples kept locally (per-sample LAW), for the stats.
          loss_se: standard error of the screened loss, ``loss_standard_error(per_sample)``:
            LSG then keeps any loss within ``se_kappa`` standard errors (recommended; default:
            from a vector ``target``, else unknown).

        Returns:
          Reduced gradients with the structure of ``sources``.
        """
        flat = tf.nest.flatten(sources)
        grads = self._tape.gradient(
            target, flat, output_gradients, unconnected_gradients=unconnected_gradients
        )
        screen = tf.reduce_mean(target) if loss is None else loss
        if loss_se is None and target.shape.rank and loss is None:
            loss_se = loss_standard_error(target)
        reduced, self.stats = self.reduction(
            grads, screen, samples=samples, variables=flat, loss_se=loss_se
        )
        return tf.nest.pack_sequence_as(sources, reduced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tape, name)
