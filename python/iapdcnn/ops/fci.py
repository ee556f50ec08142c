"""``iapdcnn.ops.fci``: pairwise Feature Correlation Index between blocks (spec §1c)."""

from __future__ import annotations

import tensorflow as tf

from .._args import as_int
from .._loader import load_ops


def fci(x: tf.Tensor, y: tf.Tensor, name: str | None = None) -> tf.Tensor:
    """Pairwise FCI between the rows of ``x`` and the rows of ``y``.

    ``FCI(x, y) = cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population
    moments. Departs from the paper as spec §1c says: the maximum is 0.5 (identical blocks), not 1;
    two identical constant blocks give 0.5 and other constant pairs 0.

    Args:
      x: float32 or float64 tensor ``[n_x, block_len]`` (flattened blocks).
      y: tensor of the same dtype, ``[n_y, block_len]``.
      name: optional op name.

    Returns:
      Tensor ``[n_x, n_y]`` of the same dtype.
    """
    x = tf.convert_to_tensor(x, name="x")
    y = tf.convert_to_tensor(y, name="y")
    if x.dtype not in (tf.float32, tf.float64):
        raise TypeError(f"fci: x must be float32 or float64, got {x.dtype.name}")
    if y.dtype != x.dtype:
        raise TypeError(f"fci: y must have x's dtype {x.dtype.name}, got {y.dtype.name}")
    return load_ops().iapdcnn_fci(x=x, y=y, name=name)


tf.no_gradient("Iapdcnn>Fci")


def _blocks_and_labels(x: tf.Tensor, labels: tf.Tensor, fn: str) -> tuple[tf.Tensor, tf.Tensor]:
    x = tf.convert_to_tensor(x, name="x")
    if x.dtype not in (tf.float32, tf.float64):
        raise TypeError(f"{fn}: x must be float32 or float64, got {x.dtype.name}")
    labels = tf.convert_to_tensor(labels, name="labels")
    if not labels.dtype.is_integer:
        raise TypeError(f"{fn}: labels must be integers, got {labels.dtype.name}")
    return x, tf.cast(labels, tf.int64)


def fci_class_stats(
    x: tf.Tensor, labels: tf.Tensor, num_classes: int, name: str | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mergeable per-class block statistics for prototype mode (spec §1c, the "map").

    Statistics of disjoint shards merge by adding them (the "reduce", e.g. a Horovod allreduce);
    the prototypes are ``sums / counts``.

    Args:
      x: float32/float64 ``[n, positions, block_len]`` blocks.
      labels: integer ``[n]`` class ids in ``[0, num_classes)``.
      num_classes: K >= 1.
      name: optional op name.

    Returns:
      ``(counts [K] float64, sums [K, positions, block_len] float64)``.
    """
    x, labels = _blocks_and_labels(x, labels, "fci_class_stats")
    return load_ops().iapdcnn_fci_class_stats(
        x=x,
        labels=labels,
        num_classes=as_int("fci_class_stats", "num_classes", num_classes),
        name=name,
    )


def fci_prototype(
    x: tf.Tensor, labels: tf.Tensor, prototypes: tf.Tensor, name: str | None = None
) -> tf.Tensor:
    """``out[i, p] = FCI(x[i, p], prototypes[labels[i], p])`` (spec §1c, prototype mode).

    Args:
      x: float32/float64 ``[n, positions, block_len]``.
      labels: integer ``[n]`` in ``[0, K)``.
      prototypes: x's dtype, ``[K, positions, block_len]`` (class-mean blocks).
      name: optional op name.

    Returns:
      Tensor ``[n, positions]`` of x's dtype.
    """
    x, labels = _blocks_and_labels(x, labels, "fci_prototype")
    prototypes = tf.convert_to_tensor(prototypes, name="prototypes")
    if prototypes.dtype != x.dtype:
        raise TypeError(
            f"fci_prototype: prototypes must have x's dtype {x.dtype.name}, got "
            f"{prototypes.dtype.name}"
        )
    return load_ops().iapdcnn_fci_prototype(x=x, labels=labels, prototypes=prototypes, name=name)


def fci_within_class(
    x: tf.Tensor, labels: tf.Tensor, num_classes: int, name: str | None = None
) -> tf.Tensor:
    """Mean FCI of each block with the same block of the other same-class samples (pairwise mode).

    O(n^2) per class and position, as in the paper. A sample alone in its class gets 0.5.

    Args:
      x: float32/float64 ``[n, positions, block_len]``.
      labels: integer ``[n]`` in ``[0, num_classes)``.
      num_classes: K >= 1.
      name: optional op name.

    Returns:
      Tensor ``[n, positions]`` of x's dtype.
    """
    x, labels = _blocks_and_labels(x, labels, "fci_within_class")
    return load_ops().iapdcnn_fci_within_class(
        x=x,
        labels=labels,
        num_classes=as_int("fci_within_class", "num_classes", num_classes),
        name=name,
    )


tf.no_gradient("Iapdcnn>FciClassStats")
tf.no_gradient("Iapdcnn>FciPrototype")
tf.no_gradient("Iapdcnn>FciWithinClass")
