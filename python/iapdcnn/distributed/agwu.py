"""BPT-CNN's outer-layer parallelism with AGWU (asynchronous global weight update), built on
Horovod as periodic model averaging (local SGD): every rank trains its own copy on its own data
shard for ``local_steps`` steps with no communication, then one grouped allreduce merges the
copies, each weighted by the accuracy it measured over that round (BPT-CNN weighs a node's
contribution by its accuracy).

What is not built: BPT-CNN's asynchrony. Its nodes push weights to a parameter server that merges
whatever arrived, so nobody waits for the slowest node and a late node's weights enter with a
staleness discount. Horovod's collectives are synchronous: every rank of the process set must
join each allreduce, so a rank cannot be left out of a round without a parameter server (or a
one-sided transport) that Horovod does not have. The merge here is therefore synchronous; what
it saves is communication (one allreduce of the weights every ``local_steps`` steps instead of
one of the gradients every step), not waiting.

Robustness: a rank whose weights hold NaN/Inf, or whose round accuracy is not finite, gets
weight 0 and sends zeros (so a NaN never reaches the sum); when every rank is in that state the
merge leaves the copies as they are and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from .reduction import Reduction, _hvd

__all__ = ["LocalReduction", "agwu_weights", "merge_models", "nbytes"]


def agwu_weights(accuracies: Any) -> np.ndarray:
    """AGWU's merge weights from the ranks' round accuracies: ``acc_k / sum(acc)``, non-finite or
    negative accuracies count 0; all zero gives all zero (nothing to merge).

    >>> agwu_weights([0.8, 0.6, float("nan")]).round(4).tolist()
    [0.5714, 0.4286, 0.0]
    """
    a = np.asarray(accuracies, np.float64)
    a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    total = a.sum()
    return a / total if total > 0 else np.zeros_like(a)


def _weights_tf(acc: tf.Tensor) -> tf.Tensor:
    a = tf.where(tf.math.is_finite(acc) & (acc > 0), acc, 0.0)
    return tf.math.divide_no_nan(a, tf.reduce_sum(a))


class LocalReduction(Reduction):
    """No communication: a rank's own gradient, for the local steps between AGWU's merges. The
    stats describe this rank alone (``workers`` 1)."""

    name = "local"

    def _reduce(self, grads, loss, samples, loss_se):
        ok = tf.math.is_finite(loss)
        stats = {
            "workers": tf.constant(1.0),
            "workers_kept": tf.where(ok, 1.0, 0.0),
            "samples_kept": samples,
            "skipped": tf.where(ok, 0.0, 1.0),
            "loss": loss,
            "loss_min": loss,
            "loss_max": loss,
        }
        return [tf.where(ok, g, tf.zeros_like(g)) for g in grads], stats


def nbytes(variables: list) -> int:
    """Bytes of ``variables``: what one allreduce of them (or of their gradients) sends per
    rank."""
    return int(sum(v.shape.num_elements() * v.dtype.size for v in variables))


def merge_models(variables: list, accuracy: float, process_set: Any = None) -> dict[str, Any]:
    """One AGWU merge: every rank's ``variables`` (model weights, BatchNorm statistics and
    optimizer slots, in the same order on every rank) become ``sum_k w_k v_k`` with
    ``w = agwu_weights(round accuracies)``. Collective: every rank must call it.

    Returns:
      ``{"weights": [K] merge weights, "merged": bool}``.
    """
    hvd = _hvd()
    ps = {} if process_set is None else {"process_set": process_set}
    floats = [i for i, v in enumerate(variables) if v.dtype.is_floating]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(variables[i])) for i in floats])
    acc = tf.where(finite, tf.constant(float(accuracy), tf.float32), float("nan"))
    accs = hvd.allgather(tf.reshape(acc, [1]), name="iapdcnn_agwu_acc", **ps)
    w = _weights_tf(accs)
    me = hvd.rank() if process_set is None else process_set.rank()
    if float(tf.reduce_sum(w)) <= 0:
        return {"weights": w.numpy(), "merged": False}
    mine = w[me]
    sent = []
    for i in floats:
        v = tf.convert_to_tensor(variables[i])
        sent.append(tf.where(mine > 0, tf.cast(mine, v.dtype) * v, tf.zeros_like(v)))
    summed = hvd.grouped_allreduce(sent, op=hvd.Sum, name="iapdcnn_agwu_merge", **ps)
    for i, s in zip(floats, summed, strict=True):
        variables[i].assign(s)
    return {"weights": w.numpy(), "merged": True}
