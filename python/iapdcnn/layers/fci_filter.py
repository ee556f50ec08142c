"""``iapdcnn.layers.FCIFilter``: FCI block screening (spec §1c) as a Keras preprocessing-style
layer. ``adapt`` runs the paper's map/reduce (per-class block statistics per shard, merged by
addition, under Horovod by an allreduce); the static inference mask is non-trainable state saved
with the model; with labels at training time it screens every sample against its class."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from .. import _C, ops, world
from .._args import as_float, as_int
from .._defaults import FCI_FILTER
from .._keras import keras

MODES = ("prototype", "pairwise")  # the first is the default
Reducer = Callable[[np.ndarray, str], np.ndarray]


def _batches(
    data: Any, batch_size: int, steps: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images [n, H, W, C], labels [n]) NumPy batches from a dataset, a tuple, or an iterable."""
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], tf.data.Dataset):
        data = tf.data.Dataset.from_tensor_slices((np.asarray(data[0]), np.asarray(data[1])))
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) >= 2):
            raise ValueError(
                "FCIFilter.adapt: the dataset must yield (images, labels) pairs (spec §1c screens "
                f"within classes), got element_spec {spec}"
            )
        if spec[0].shape.rank == 3:
            data = data.batch(batch_size)
        it: Iterable[Any] = data.as_numpy_iterator()
    else:
        it = data
    for i, item in enumerate(it):
        if steps is not None and i >= steps:
            return
        yield np.asarray(item[0]), np.asarray(item[1]).reshape(-1)


@keras.saving.register_keras_serializable(package="iapdcnn")
class FCIFilter(keras.layers.Layer):
    """Zeroes the B x B blocks that are not typical of their class (spec §1c).

    Images ``[N, H, W, C]`` are split into ``(H // B) x (W // B)`` blocks (a remainder strip on
    the bottom/right is never screened). With ``labels`` (training) a block is kept iff its FCI
    with the class prototype block (``mode="prototype"``, O(n)) or its mean FCI with the same block
    of the other same-class images of the batch (``mode="pairwise"``, the paper's O(n^2)) is
    ``>= epsilon``. Without labels (inference) the static position mask learned by ``adapt``
    applies: position p is kept iff the mean within-class FCI at p is ``>= epsilon``. FCI's maximum
    is 0.5 (spec §1c correction); ``epsilon`` is on that scale.

    Args:
      block_size: B >= 1, at most the image height and width.
      epsilon: FCI threshold.
      mode: ``"prototype"`` or ``"pairwise"``.
      min_keep: images whose kept fraction of blocks is below this may be dropped from a
        training set (see ``screen``; the layer itself never changes the batch size).
      num_classes: K; inferred by ``adapt`` when None.
    """

    def __init__(
        self,
        block_size: int = FCI_FILTER["block_size"],
        epsilon: float = 0.1,
        mode: str = "prototype",
        min_keep: float = 0.0,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        block_size = as_int("FCIFilter", "block_size", block_size)
        epsilon = as_float("FCIFilter", "epsilon", epsilon)
        if epsilon > 0.5:
            raise ValueError(
                f"FCIFilter: epsilon must be <= 0.5 (FCI's maximum, identical blocks), got "
                f"{epsilon!r}: every block would be zeroed"
            )
        min_keep = as_float("FCIFilter", "min_keep", min_keep)
        if num_classes is not None:
            num_classes = as_int("FCIFilter", "num_classes", num_classes)
        _C.validate_fci_block_size(block_size)
        if mode not in MODES:
            raise ValueError(f"FCIFilter: mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= float(min_keep) <= 1.0:
            raise ValueError(f"FCIFilter: min_keep must be in [0, 1], got {min_keep}")
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"FCIFilter: num_classes must be >= 1, got {num_classes}")
        self.block_size = int(block_size)
        self.epsilon = float(epsilon)
        self.mode = mode
        self.min_keep = float(min_keep)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.counts: tf.Variable | None = None
        self.sums: tf.Variable | None = None

    # --- state -----------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        shape = tf.TensorShape(input_shape)
        if shape.rank != 4:
            raise ValueError(f"FCIFilter: inputs must be [N, H, W, C], got shape {shape}")
        h, w, c = (int(d) for d in shape[1:])
        b = self.block_size
        _C.validate_fci_block_size(b, h, w)
        self.grid = (h // b, w // b)
        self.image_shape = (h, w, c)
        self.positions = self.grid[0] * self.grid[1]
        self.block_len = b * b * c
        self.mask = self.add_weight(
            name="mask", shape=[self.positions], initializer="ones", trainable=False
        )
        self.position_fci = self.add_weight(
            name="position_fci", shape=[self.positions], initializer="zeros", trainable=False
        )
        if self.num_classes is not None:
            self._build_stats()
        super().build(input_shape)

    def _build_stats(self) -> None:
        k = self.num_classes
        self.counts = self.add_weight(
            name="counts", shape=[k], dtype="float64", initializer="zeros", trainable=False
        )
        self.sums = self.add_weight(
            name="sums",
            shape=[k, self.positions, self.block_len],
            dtype="float64",
            initializer="zeros",
            trainable=False,
        )

    # --- blocks ----------------------------------------------------------------------------
    def to_blocks(self, x: tf.Tensor) -> tf.Tensor:
        """``[N, H, W, C]`` -> ``[N, positions, B*B*C]`` (row-major block grid)."""
        b, (gh, gw), c = self.block_size, self.grid, self.image_shape[2]
        x = x[:, : gh * b, : gw * b, :]
        x = tf.reshape(x, [-1, gh, b, gw, b, c])
        x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
        return tf.reshape(x, [-1, self.positions, self.block_len])

    def _pixel_mask(self, keep: tf.Tensor) -> tf.Tensor:
        """keep ``[N, positions]`` -> ``[N, H, W, 1]`` (the unscreened remainder stays 1)."""
        b, (gh, gw), (h, w, _) = self.block_size, self.grid, self.image_shape
        m = tf.reshape(keep, [-1, gh, 1, gw, 1])
        m = tf.tile(m, [1, 1, b, 1, b])
        m = tf.reshape(m, [-1, gh * b, gw * b, 1])
        return tf.pad(m, [[0, 0], [0, h - gh * b], [0, w - gw * b], [0, 0]], constant_values=1.0)

    def prototypes(self) -> tf.Tensor:
        """Class-mean blocks ``[K, positions, B*B*C]`` float32 (zeros for unseen classes)."""
        if self.sums is None:
            raise ValueError("FCIFilter: call adapt(...) first (no class statistics yet)")
        n = tf.maximum(self.counts, 1.0)[:, None, None]
        return tf.cast(self.sums / n, tf.float32)

    def keep_mask(self, images: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        """Which blocks survive: float32 ``[N, positions]`` of 0/1."""
        x = tf.cast(images, tf.float32)
        if labels is None:
            return tf.broadcast_to(self.mask[None], [tf.shape(x)[0], self.positions])
        if self.num_classes is None:
            raise ValueError("FCIFilter: per-sample screening needs num_classes (adapt first)")
        blocks = self.to_blocks(x)
        if self.mode == "prototype":
            f = ops.fci_prototype(blocks, labels, self.prototypes())
        else:
            f = ops.fci_within_class(blocks, labels, self.num_classes)
        # NaN policy: a NaN score (a block with NaN or Inf pixels) must not decide the mask.
        f = tf.debugging.assert_all_finite(
            f, "FCIFilter: non-finite FCI scores: the images contain NaN or Inf"
        )
        return tf.cast(f >= self.epsilon, tf.float32)

    def screen(
        self, images: tf.Tensor, labels: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Filters a batch and says what was kept.

        Returns:
          ``(filtered [N, H, W, C] float32, keep [N, positions] float32, kept_fraction [N])``;
          drop images with ``kept_fraction < min_keep`` from a training set.
        """
        x = tf.cast(images, tf.float32)
        keep = self.keep_mask(x, labels)
        return x * self._pixel_mask(keep), keep, tf.reduce_mean(keep, axis=1)

    def call(self, inputs: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        return self.screen(inputs, labels)[0]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    # --- adapt: map per shard, reduce across ranks -------------------------------------------
    def adapt(
        self,
        data: Any,
        batch_size: int = 256,
        steps: int | None = None,
        reduce: Reducer | None = None,
    ) -> FCIFilter:
        """Learns class statistics and the static position mask from ``(images, labels)``.

        Pass 1 (map) accumulates per-class counts and float64 block sums of this shard (and, in
        pairwise mode, within-batch pairwise FCI per position); they are merged with ``reduce``
        (default: Horovod allreduce when running under Horovod, else identity). Pass 2 (prototype
        mode) accumulates every sample's FCI against its class prototype per position, merged
        the same way. ``mask[p] = mean FCI at p >= epsilon``.

        Args:
          data: ``tf.data.Dataset`` of (image, label) (batched or not), ``(x, y)`` arrays, or an
            iterable of ``(x, y)`` batches (re-iterable: read twice in prototype mode).
          batch_size: batch size for unbatched datasets.
          steps: at most this many batches per pass.
          reduce: ``reduce(array, op)`` with op ``"sum"``/``"max"``; defaults to
            ``iapdcnn.world.allreduce_numpy``.

        Returns:
          self.
        """
        red = reduce or world.allreduce_numpy
        if self.num_classes is None:
            top = -1
            for _, y in _batches(data, batch_size, steps):
                if y.size:
                    top = max(top, int(y.max()))
            top = int(red(np.array([top], np.int64), "max")[0])
            if top < 0:
                raise ValueError("FCIFilter.adapt: the dataset is empty")
            self.num_classes = top + 1
        counts = sums = None
        fci_sum = None
        n_seen = 0.0
        for x, y in _batches(data, batch_size, steps):
            if not self.built:
                self.build((None,) + x.shape[1:])
            if self.counts is None:
                self._build_stats()
            blocks = self.to_blocks(tf.constant(x, tf.float32))
            c, s = ops.fci_class_stats(blocks, y, self.num_classes)
            counts = c.numpy() if counts is None else counts + c.numpy()
            sums = s.numpy() if sums is None else sums + s.numpy()
            if self.mode == "pairwise":
                f = ops.fci_within_class(blocks, y, self.num_classes).numpy().astype(np.float64)
                fci_sum = f.sum(0) if fci_sum is None else fci_sum + f.sum(0)
                n_seen += x.shape[0]
        if counts is None:
            raise ValueError("FCIFilter.adapt: the dataset is empty")
        counts, sums = red(counts, "sum"), red(sums, "sum")
        self.counts.assign(counts)
        self.sums.assign(sums)
        if self.mode == "prototype":
            protos = self.prototypes()
            for x, y in _batches(data, batch_size, steps):
                blocks = self.to_blocks(tf.constant(x, tf.float32))
                f = ops.fci_prototype(blocks, y, protos).numpy().astype(np.float64)
                fci_sum = f.sum(0) if fci_sum is None else fci_sum + f.sum(0)
                n_seen += x.shape[0]
        if not np.all(np.isfinite(fci_sum)):
            bad = np.flatnonzero(~np.isfinite(fci_sum))
            raise ValueError(
                f"FCIFilter.adapt: the FCI at block positions {bad[:10].tolist()} is NaN: the "
                "images contain NaN or Inf; the position mask cannot be learned from them"
            )
        stats = red(np.concatenate([fci_sum, [n_seen]]), "sum")
        mean_fci = stats[:-1] / max(stats[-1], 1.0)
        self.position_fci.assign(mean_fci.astype(np.float32))
        self.mask.assign((mean_fci >= self.epsilon).astype(np.float32))
        return self

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            block_size=self.block_size,
            epsilon=self.epsilon,
            mode=self.mode,
            min_keep=self.min_keep,
            num_classes=self.num_classes,
        )
        return config
