"""TFRecord files in iapdcnn's image schema: writing them atomically, checking their framing, and
parsing them. The preprocessing job writes this schema; ``load("tfrecord", path=...)`` reads it.

Schema per record: ``image`` (PNG bytes for uint8 images, raw little-endian float32 otherwise),
``encoding`` (b"png" or b"raw_f32"), ``shape`` (int64 [3]: H, W, C), ``label`` (int64).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

import numpy as np

from iapdcnn._io import atomic_path

from .errors import DataError


def encode_example(image: np.ndarray, label: int) -> bytes:
    """Serialises one ``[H, W, C]`` image (uint8 -> PNG, else float32 raw) and its label."""
    import tensorflow as tf

    image = np.asarray(image)
    if image.ndim != 3:
        raise DataError(f"encode_example: image must be [H, W, C], got shape {image.shape}")
    if image.dtype == np.uint8:
        data, enc = tf.io.encode_png(image).numpy(), b"png"
    else:
        data, enc = np.ascontiguousarray(image, dtype="<f4").tobytes(), b"raw_f32"
    feat = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        "encoding": tf.train.Feature(bytes_list=tf.train.BytesList(value=[enc])),
        "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(image.shape))),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString()


def write_tfrecords(path: str, images: Iterable[np.ndarray], labels: Iterable[int]) -> int:
    """Writes one TFRecord file atomically (temporary file, then rename): a killed writer never
    leaves a file that looks complete. Returns the number of records written."""
    import tensorflow as tf

    n = 0
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as w:
        for img, lab in zip(images, labels, strict=True):
            w.write(encode_example(img, lab))
            n += 1
    return n


def check_framing(path: str) -> int:
    """Walks a TFRecord file's length-prefixed framing without reading the payloads.

    Returns the record count; raises DataError naming the file if it is truncated or its
    framing is corrupt (a record length running past the end of the file).
    """
    size = os.path.getsize(path)
    pos = n = 0
    with open(path, "rb") as f:
        while pos < size:
            head = f.read(12)
            if len(head) < 12:
                raise DataError(
                    f"{path}: truncated TFRecord file (partial record header at byte {pos})"
                )
            (length,) = struct.unpack("<Q", head[:8])
            end = pos + 12 + length + 4
            if end > size:
                raise DataError(
                    f"{path}: truncated or corrupt TFRecord file (record {n} at byte {pos} declares "
                    f"{length} bytes, past the end of the {size}-byte file)"
                )
            f.seek(end)
            pos, n = end, n + 1
    return n


def parse_example(serialized, channels: int | None = None):
    """tf.data map function: serialized record -> (float32 image [H, W, C] in [0, 1], int64)."""
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "encoding": tf.io.FixedLenFeature([], tf.string),
        "shape": tf.io.FixedLenFeature([3], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    ex = tf.io.parse_single_example(serialized, spec)
    shape = ex["shape"]

    def png():
        return tf.reshape(tf.cast(tf.io.decode_png(ex["image"]), tf.float32) / 255.0, [-1])

    def raw():
        return tf.io.decode_raw(ex["image"], tf.float32, little_endian=True)

    img = tf.cond(tf.equal(ex["encoding"], b"png"), png, raw)
    img = tf.reshape(img, shape)
    if channels is not None:
        img = tf.ensure_shape(img, [None, None, channels])
    return img, ex["label"]


def peek_shape(path: str) -> tuple[int, int, int]:
    """Shape of the first image in a TFRecord file (to give datasets a static shape)."""
    import tensorflow as tf

    for raw in tf.data.TFRecordDataset(path).take(1):
        ex = tf.train.Example.FromString(raw.numpy())
        return tuple(ex.features.feature["shape"].int64_list.value)  # type: ignore[return-value]
    raise DataError(f"{path}: the TFRecord file holds no records")
