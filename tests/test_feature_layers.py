"""Keras layers EdgeFeatures and FCIFilter (spec §1): inside models and tf.data, adapt as
map/reduce, the static mask saved with the model, per-sample screening with labels."""

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import _C, ops, reference
from iapdcnn.data import synthetic
from iapdcnn.layers import EdgeFeatures, FCIFilter


def test_edge_features_is_nlm_then_marr_hildreth(rng):
    x = rng.uniform(size=(3, 12, 12, 1)).astype(np.float32)
    layer = EdgeFeatures(1, 2, 0.2, laplacian=8, threshold=0.2, mode="binary")
    want = _C.marr_hildreth(_C.cosine_nlm(x, 1, 2, 0.2), 8, 0.2, True, "binary")
    np.testing.assert_array_equal(layer(x).numpy(), want)
    # one image [H, W, C] (tf.data map) works too
    np.testing.assert_array_equal(layer(x[0]).numpy(), want[0])


def test_edge_features_in_tf_data_and_model_save(tmp_path, rng):
    x, y = synthetic(n=16, shape=(16, 16, 1), classes=2)
    layer = EdgeFeatures(1, 2, 0.1)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(lambda a, b: (layer(a), b)).batch(8)
    got = np.concatenate([a for a, _ in ds.as_numpy_iterator()])
    np.testing.assert_allclose(got, layer(x).numpy(), atol=1e-6)
    inp = tf.keras.Input((16, 16, 1))
    model = tf.keras.Model(inp, layer(inp))
    path = str(tmp_path / "edges.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert loaded.layers[-1].get_config()["search_radius"] == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"h": 0.0}, "EdgeFeatures: cosine_nlm: h must be a finite number > 0, got 0"),
        ({"patch_radius": -1}, "patch_radius must be >= 0, got -1"),
        ({"search_radius": -1}, "search_radius must be >= 0"),
        ({"laplacian": 5}, "laplacian must be 4 or 8"),
        ({"threshold": -0.5}, "threshold must be a finite number >= 0"),
        ({"mode": "foo"}, "mode must be 'masked', 'binary' or 'magnitude', got 'foo'"),
    ],
)
def test_edge_features_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EdgeFeatures(**kwargs)


def test_edge_features_wrong_rank():
    with pytest.raises(ValueError, match="inputs must be"):
        EdgeFeatures()(np.ones((4, 4), np.float32))


def test_fci_filter_adapt_mask_and_per_sample_screening():
    # 5-pixel class squares on 4-pixel blocks: blocks across a square's edge carry structure
    # (high FCI against the prototype), flat ones do not
    x, y = synthetic(n=200, shape=(20, 20, 1), classes=3, seed=1)
    f = FCIFilter(block_size=4, epsilon=0.1).adapt((x, y), batch_size=64)
    assert f.num_classes == 3 and f.positions == 25
    # the mask is exactly "mean within-class FCI against the prototype >= epsilon"
    blocks = f.to_blocks(tf.constant(x))
    protos = f.prototypes().numpy()
    per_sample = reference.fci_prototype(blocks.numpy(), y, protos)
    np.testing.assert_allclose(f.position_fci.numpy(), per_sample.mean(0), atol=1e-5)
    np.testing.assert_array_equal(f.mask.numpy(), (per_sample.mean(0) >= 0.1).astype(np.float32))
    assert 0 < f.mask.numpy().sum() < 25  # some positions screened out
    # without labels: static mask; with labels: per-sample FCI against the class prototype
    out = f(x).numpy()
    pix = np.kron(f.mask.numpy().reshape(5, 5), np.ones((4, 4)))[None, :, :, None]
    np.testing.assert_array_equal(out, x * pix)
    filtered, keep, frac = (t.numpy() for t in f.screen(x, y))
    np.testing.assert_array_equal(keep, (per_sample >= 0.1).astype(np.float32))
    np.testing.assert_allclose(frac, keep.mean(1))


def test_fci_filter_stats_merge_like_a_reduce():
    x, y = synthetic(n=120, shape=(16, 16, 1), classes=3, seed=2)
    whole = FCIFilter(4, 0.1, num_classes=3).adapt((x, y), batch_size=50)
    parts = []

    def fake_allreduce(a, op):  # the two shards' stats, as an allreduce would see them
        parts.append(a)
        return a

    halves = [FCIFilter(4, 0.1, num_classes=3) for _ in range(2)]
    halves[0].adapt((x[::2], y[::2]), reduce=fake_allreduce)
    halves[1].adapt((x[1::2], y[1::2]), reduce=fake_allreduce)
    np.testing.assert_array_equal(
        halves[0].counts.numpy() + halves[1].counts.numpy(), whole.counts.numpy()
    )
    np.testing.assert_array_equal(
        halves[0].sums.numpy() + halves[1].sums.numpy(), whole.sums.numpy()
    )


def test_fci_filter_pairwise_mode_and_remainder_strip():
    x, y = synthetic(n=60, shape=(22, 22, 1), classes=2, seed=4)  # 22 = 5 * 4 + 2: a 2-pixel strip
    f = FCIFilter(block_size=4, epsilon=0.05, mode="pairwise").adapt((x, y), batch_size=30)
    assert f.grid == (5, 5)
    _, keep, _ = f.screen(x[:30], y[:30])
    want = ops.fci_within_class(f.to_blocks(tf.constant(x[:30])), y[:30], 2).numpy() >= 0.05
    assert 0 < want.mean() < 1  # some blocks kept, some screened
    np.testing.assert_array_equal(keep.numpy(), want.astype(np.float32))
    out = f(x).numpy()
    np.testing.assert_array_equal(out[:, 20:], x[:, 20:])  # the strip is never screened
    np.testing.assert_array_equal(out[:, :, 20:], x[:, :, 20:])


def test_fci_filter_saved_with_the_model(tmp_path):
    x, y = synthetic(n=100, shape=(16, 16, 1), classes=3, seed=5)
    f = FCIFilter(block_size=4, epsilon=0.12, min_keep=0.2)
    f.adapt(tf.data.Dataset.from_tensor_slices((x, y)))  # unbatched dataset
    inp = tf.keras.Input((16, 16, 1))
    model = tf.keras.Model(inp, f(inp))
    path = str(tmp_path / "fci.keras")
    model.save(path)
    g = tf.keras.models.load_model(path).layers[-1]
    assert isinstance(g, FCIFilter) and g.num_classes == 3 and g.min_keep == 0.2
    for name in ("mask", "position_fci", "counts", "sums"):
        np.testing.assert_array_equal(getattr(g, name).numpy(), getattr(f, name).numpy())
    assert not g.trainable_weights
    np.testing.assert_array_equal(g(x).numpy(), f(x).numpy())


def test_fci_filter_bad_input():
    with pytest.raises(ValueError, match="block_size 20 is larger than the image"):
        FCIFilter(block_size=20)(np.ones((2, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match="mode must be one of"):
        FCIFilter(mode="median")
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        FCIFilter(block_size=0)
    x, y = synthetic(n=20, shape=(16, 16, 1), classes=2)
    f = FCIFilter(4, 0.1).adapt((x, y))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="labels must be in"):
        f.screen(x, np.full(20, 7))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="one entry per sample"):
        f.screen(x, y[:5])
    with pytest.raises(ValueError, match=r"\(images, labels\) pairs"):
        FCIFilter(4).adapt(tf.data.Dataset.from_tensor_slices(x))
