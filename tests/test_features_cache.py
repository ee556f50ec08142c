"""MHO-PFES as a preprocessing stage (``iapdcnn.training.features``): the same transform as the
EdgeFeatures layer, FCI data pruning against a NumPy oracle, the cache (reused, invalidated,
stale or damaged files refused with errors naming --features-cache), bad settings naming their
flag, and under horovodrun local rank 0 writing while the other rank loads."""

import dataclasses
import json
import os

import numpy as np
import pytest

from hvdrun import run_hvd
from iapdcnn import reference
from iapdcnn.layers import EdgeFeatures, FCIFilter
from iapdcnn.training import features as F

HERE = os.path.dirname(os.path.abspath(__file__))


def small_data(seed: int = 0, n: int = 60, m: int = 20, size: int = 16, classes: int = 3):
    """(x_train, y_train, x_test, y_test): class k is a bright square at a k-dependent place."""
    rng = np.random.default_rng(seed)

    def split(count):
        y = rng.integers(0, classes, count).astype(np.int64)
        x = rng.uniform(0, 0.3, (count, size, size, 1)).astype(np.float32)
        for i, k in enumerate(y):
            o = 1 + 4 * int(k)
            x[i, o : o + 6, o : o + 6] += rng.uniform(0.4, 0.7)
        return x, y

    return (*split(n), *split(m))


def fast(**kw) -> F.FeatureSettings:
    return F.FeatureSettings(search_radius=2, **kw)


def quiet(_msg: str) -> None:
    pass


def prep(arrays, settings, cache_dir=None, data_key="small"):
    return F.prepare(arrays, settings, cache_dir=cache_dir, data_key=data_key, log=quiet)


# --------------------------------------------------------------------------------- transform


def test_defaults_are_the_layers():
    layer, fci = EdgeFeatures(), FCIFilter()
    s = F.FeatureSettings()
    assert (s.patch_radius, s.search_radius, s.h) == (
        layer.patch_radius,
        layer.search_radius,
        layer.h,
    )
    assert (s.laplacian, s.threshold, s.edge_mode) == (layer.laplacian, layer.threshold, layer.mode)
    assert s.fci_block_size == fci.block_size


def test_channels_stacks_image_and_edges_for_train_and_test():
    data = small_data()
    (xtr, ytr, xte, yte), info = prep(data, fast(mode="channels"))
    assert xtr.shape == (60, 16, 16, 2) and xte.shape == (20, 16, 16, 2)
    layer = fast().edge_layer()
    np.testing.assert_array_equal(xtr[..., :1], data[0])
    np.testing.assert_array_equal(xtr[..., 1:], layer(data[0]).numpy())
    np.testing.assert_array_equal(xte[..., 1:], layer(data[2]).numpy())
    np.testing.assert_array_equal(ytr, data[1])
    assert info["cache"] == "off" and info["dropped"] == 0 and xtr.dtype == np.float32


def test_channels_of_colour_images_double_the_channels(rng):
    x = rng.uniform(size=(6, 12, 12, 3)).astype(np.float32)
    y = np.arange(6) % 2
    (xtr, _, xte, _), _ = prep((x, y, x[:2], y[:2]), fast())
    assert xtr.shape == (6, 12, 12, 6) and xte.shape == (2, 12, 12, 6)


def test_replace_keeps_the_edge_map_alone():
    data = small_data()
    (xtr, _, xte, _), _ = prep(data, fast(mode="replace"))
    assert xtr.shape == data[0].shape and xte.shape == data[2].shape
    np.testing.assert_array_equal(xte, fast().edge_layer()(data[2]).numpy())


def test_mode_none_without_pruning_returns_the_data_untouched():
    data = small_data()
    out, info = prep(data, F.FeatureSettings(mode="none"))
    for a, b in zip(out, data, strict=True):
        np.testing.assert_array_equal(a, b)
    assert info["cache"] == "off"


# --------------------------------------------------------------------------------- FCI pruning


def oracle_scores(x: np.ndarray, y: np.ndarray, b: int) -> np.ndarray:
    """Mean block FCI with the class prototype, blocks cut by hand, through iapdcnn.reference."""
    n, h, w, c = x.shape
    blocks = np.stack(
        [
            x[:, i : i + b, j : j + b, :].reshape(n, b * b * c)
            for i in range(0, h - b + 1, b)
            for j in range(0, w - b + 1, b)
        ],
        axis=1,
    )
    k = int(y.max()) + 1
    counts, sums = reference.fci_class_stats(blocks, y, k)
    return reference.fci_prototype(blocks, y, sums / counts[:, None, None]).mean(axis=1)


def test_to_blocks_is_the_layers_layout(rng):
    x = rng.uniform(size=(3, 10, 9, 2)).astype(np.float32)  # remainder strips on both sides
    layer = FCIFilter(block_size=4)
    layer.build(x.shape)
    np.testing.assert_array_equal(F.to_blocks(x, 4), layer.to_blocks(x).numpy())


@pytest.mark.parametrize("mode", ["channels", "none"])
def test_fci_drop_removes_the_most_prototypical_of_each_class(mode):
    data = small_data(n=90)
    xtr, ytr = data[0], data[1]
    frac, b = 0.3, 4
    (got_x, got_y, got_xte, _), info = prep(data, fast(mode=mode, fci_drop=frac, fci_block_size=b))
    # scored on the features (edge maps; the pixels under "none")
    scored = xtr if mode == "none" else fast().edge_layer()(xtr).numpy()
    scores = oracle_scores(scored, ytr, b)
    np.testing.assert_allclose(F.prototypicality(scored, ytr, b), scores, atol=1e-12)
    drop = []
    for c in range(3):
        idx = np.flatnonzero(ytr == c)
        n_drop = int(round(frac * len(idx)))
        assert info["dropped_per_class"][str(c)] == n_drop
        assert np.sum(got_y == c) == len(idx) - n_drop  # class balance kept
        drop += list(idx[np.argsort(-scores[idx], kind="stable")[:n_drop]])
    keep = np.setdiff1d(np.arange(len(ytr)), drop)
    full = xtr if mode == "none" else np.concatenate([xtr, scored], axis=-1)
    np.testing.assert_array_equal(got_x, full[keep])  # the same images, in their order
    np.testing.assert_array_equal(got_y, ytr[keep])
    assert info["dropped"] == len(drop) and info["train_kept"] == len(keep)
    assert info["fci_score_dropped_mean"] > info["fci_score_kept_mean"]
    assert len(got_xte) == len(data[2])  # test data is never pruned


def test_drop_most_prototypical_ties_and_the_last_image():
    scores = np.array([0.2, 0.5, 0.5, 0.1, 0.4])
    labels = np.array([0, 0, 0, 0, 1])
    keep, dropped = F.drop_most_prototypical(scores, labels, 0.5)
    # class 0: the two 0.5s go (a tie, lower index first); class 1 keeps its only image
    np.testing.assert_array_equal(keep, [True, False, False, True, True])
    assert dropped == {0: 2, 1: 0}
    keep, _ = F.drop_most_prototypical(scores, labels, 0.25)
    np.testing.assert_array_equal(keep, [True, False, True, True, True])


# --------------------------------------------------------------------------------- the cache


def test_cache_is_reused_without_recomputing(tmp_path, monkeypatch):
    data = small_data()
    settings = fast(fci_drop=0.2)
    first, info1 = prep(data, settings, tmp_path)
    assert info1["cache"] == "miss" and os.path.exists(info1["cache_path"])

    def boom(*args, **kwargs):
        raise AssertionError("features recomputed despite a cache file")

    monkeypatch.setattr(F, "_compute", boom)
    second, info2 = prep(data, settings, tmp_path)
    assert info2["cache"] == "hit" and info2["cache_path"] == info1["cache_path"]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert info2["dropped_per_class"] == info1["dropped_per_class"]
    assert os.listdir(tmp_path) == [os.path.basename(info1["cache_path"])]  # no temporaries


@pytest.mark.parametrize(
    "change",
    [{"threshold": 0.2}, {"mode": "replace"}, {"fci_drop": 0.1}, {"search_radius": 1}],
)
def test_changed_settings_make_a_new_file(tmp_path, change):
    data = small_data()
    _, a = prep(data, fast(), tmp_path)
    _, b = prep(data, dataclasses.replace(fast(), **change), tmp_path)
    assert b["cache"] == "miss" and b["cache_path"] != a["cache_path"]
    assert len(os.listdir(tmp_path)) == 2


def test_changed_data_or_key_make_a_new_file(tmp_path):
    data = small_data()
    _, a = prep(data, fast(), tmp_path)
    x = data[0].copy()
    x[17, 5, 5, 0] += 1e-3  # one pixel
    _, b = prep((x, *data[1:]), fast(), tmp_path)
    y = data[3].copy()
    y[0] = (y[0] + 1) % 3  # one test label
    _, c = prep((*data[:3], y), fast(), tmp_path)
    _, d = prep(data, fast(), tmp_path, data_key="other")
    paths = {i["cache_path"] for i in (a, b, c, d)}
    assert len(paths) == 4 and all(i["cache"] == "miss" for i in (b, c, d))


def rewrite_meta(path: str, edit) -> None:
    with np.load(path) as z:
        fields = {k: z[k] for k in z.files}
    meta = json.loads(str(fields["meta"]))
    edit(meta)
    fields["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as fh:
        np.savez(fh, **fields)


def test_stale_file_is_refused_naming_the_flag(tmp_path):
    data = small_data()
    _, info = prep(data, fast(), tmp_path)
    path = info["cache_path"]
    rewrite_meta(path, lambda m: m["settings"].update(threshold=0.3))
    with pytest.raises(ValueError, match="--features-cache") as e:
        prep(data, fast(), tmp_path)
    assert path in str(e.value) and "delete it" in str(e.value) and "settings" in str(e.value)


def test_file_with_other_arrays_fails_its_checksum(tmp_path):
    data = small_data()
    _, info = prep(data, fast(), tmp_path)
    path = info["cache_path"]
    with np.load(path) as z:
        fields = {k: z[k] for k in z.files}
    fields["x_train"][0, 0, 0, 0] += 1.0  # metadata intact, data not
    with open(path, "wb") as fh:
        np.savez(fh, **fields)
    with pytest.raises(ValueError, match="--features-cache.*checksum"):
        prep(data, fast(), tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_file_is_refused_naming_the_flag(tmp_path, damage):
    data = small_data()
    _, info = prep(data, fast(), tmp_path)
    path = info["cache_path"]
    raw = open(path, "rb").read()
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        mid = len(raw) // 2  # inside x_train's bytes
        raw = raw[:mid] + bytes([raw[mid] ^ 0xFF]) + raw[mid + 1 :]
    elif damage == "empty":
        raw = b""
    else:
        raw = b"not a zip file at all" * 10
    with open(path, "wb") as fh:
        fh.write(raw)
    with pytest.raises(ValueError, match="--features-cache") as e:
        prep(data, fast(), tmp_path)
    assert path in str(e.value) and "delete it" in str(e.value)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def fail(fh, **fields):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(F.np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        prep(small_data(), fast(), tmp_path)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kw,flag",
    [
        ({"mode": "stack"}, "--features-mode"),
        ({"fci_drop": 1.0}, "--fci-drop"),
        ({"fci_drop": -0.1}, "--fci-drop"),
        ({"fci_block_size": 0}, "FeatureSettings.fci_block_size"),
        ({"patch_radius": -1}, "FeatureSettings.patch_radius"),
        ({"search_radius": -2}, "FeatureSettings.search_radius"),
        ({"h": 0.0}, "FeatureSettings.h"),
        ({"laplacian": 6}, "FeatureSettings.laplacian"),
        ({"threshold": -1.0}, "FeatureSettings.threshold"),
        ({"edge_mode": "soft"}, "FeatureSettings.edge_mode"),
    ],
)
def test_bad_settings_name_the_flag(kw, flag):
    # a flag where train.py has one, else the settings field (no flag to point at)
    with pytest.raises(ValueError, match=flag):
        F.FeatureSettings(**kw).check()
    with pytest.raises(ValueError, match=flag):
        prep(small_data(), F.FeatureSettings(**kw))


def test_block_larger_than_the_images_names_the_flag():
    with pytest.raises(
        ValueError,
        match=r"FeatureSettings.fci_block_size: .*block_size 32 is larger than the image",
    ):
        prep(small_data(), fast(fci_drop=0.1, fci_block_size=32))


def test_bad_arrays_name_the_argument():
    x, y, xt, yt = small_data()
    with pytest.raises(ValueError, match="x_train must be"):
        prep((x[..., 0], y, xt, yt), fast())
    with pytest.raises(ValueError, match="differ per image"):
        prep((x, y, xt[:, :8], yt), fast())


# --------------------------------------------------------------------------------- Horovod


@pytest.mark.horovod
def test_rank0_writes_the_other_rank_loads_under_horovodrun(tmp_path):
    worker = os.path.join(HERE, "distributed", "features_worker.py")
    p = run_hvd(2, [worker, str(tmp_path / "cache")], timeout=300)
    lines = [
        json.loads(s.split("FEATURES ", 1)[1]) for s in p.stdout.splitlines() if "FEATURES " in s
    ]
    by = {(r["phase"], r["rank"]): r for r in lines}
    assert len(by) == 6, p.stdout[-3000:]
    want, _ = F.prepare(small_data(), fast(fci_drop=0.2), cache_dir=None, data_key="hvd", log=quiet)
    want = F.digest(want)
    assert by["cached", 0]["cache"] == "miss" and by["cached", 1]["cache"] == "hit"
    assert by["plain", 0]["cache"] == "off" and by["plain", 1]["cache"] == "off"
    for phase in ("cached", "plain"):
        assert by[phase, 0]["digest"] == by[phase, 1]["digest"] == want
    for rank in (0, 1):  # a damaged file fails on every rank, none waits forever
        assert "--features-cache" in by["damaged", rank]["error"]
