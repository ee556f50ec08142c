"""iapdcnn.initializers: Dis-CNN's arithmetic-sequence start, k-means against a hand-worked
reference, and kmeans_init on a model (the taps it sets, what it leaves, its errors)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn.initializers import arithmetic_centres, kmeans, kmeans_init
from iapdcnn.models import small_resnet

keras = tf.keras


def test_arithmetic_centres_drop_the_extremes_and_space_the_ranks():
    # 102 one-dim patches 0..101 shuffled; trim 1% drops one at each end (0 and 101); 4 centres at
    # evenly spaced ranks of 1..100: ranks 0, 33, 66, 99 -> values 1, 34, 67, 100
    rng = np.random.default_rng(0)
    p = rng.permutation(102).astype(float)[:, None]
    np.testing.assert_array_equal(arithmetic_centres(p, 4, trim=0.01)[:, 0], [1, 34, 67, 100])
    with pytest.raises(ValueError, match="k must be"):
        arithmetic_centres(p, 101, trim=0.01)
    with pytest.raises(ValueError, match="trim"):
        arithmetic_centres(p, 2, trim=0.5)


def test_kmeans_matches_the_worked_example():
    # two clear groups; from centres (0, 0) and (1, 1) Lloyd ends at the two group means
    x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], float)
    c, labels = kmeans(x, np.array([[0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(c, [[1 / 3, 1 / 3], [31 / 3, 31 / 3]])
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))


def test_kmeans_init_sets_the_centre_taps_of_every_conv(rng):
    keras.utils.set_random_seed(0)
    m = small_resnet(width=8)
    x = rng.uniform(size=(64, 28, 28, 1)).astype(np.float32)
    before = {ly.name: ly.kernel.numpy().copy() for ly in m.layers if hasattr(ly, "kernel")}
    report = kmeans_init(m, x, patches=2000, seed=1)
    convs = [ly for ly in m.layers if isinstance(ly, keras.layers.Conv2D)]
    assert set(report) == {ly.name for ly in convs}
    assert report["stem_conv"] == "kmeans"
    for layer in convs:
        k, k0 = layer.kernel.numpy(), before[layer.name]
        if report[layer.name] == "kmeans":
            assert not np.allclose(k, k0)
            # the layer's random scale is kept (He-normal's std), within sampling error
            assert k.std() == pytest.approx(k0.std(), rel=0.05)
        else:
            np.testing.assert_array_equal(k, k0)
    # the Dense head is untouched, the model runs, finite
    np.testing.assert_array_equal(m.get_layer("logits").kernel.numpy(), before["logits"])
    assert np.all(np.isfinite(m(x[:4]).numpy()))
    # seeded: the same result again
    keras.utils.set_random_seed(0)
    m2 = small_resnet(width=8)
    kmeans_init(m2, x, patches=2000, seed=1)
    np.testing.assert_array_equal(
        m2.get_layer("stem_conv").kernel.numpy(), m.get_layer("stem_conv").kernel.numpy()
    )


def test_kmeans_init_keeps_the_outer_taps_of_a_5x5_kernel(rng):
    inp = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 5, padding="same", kernel_initializer="he_normal")
    m = keras.Model(inp, conv(inp))
    k0 = conv.kernel.numpy().copy()
    assert kmeans_init(m, rng.uniform(size=(32, 16, 16, 3)), patches=500) == {conv.name: "kmeans"}
    k = conv.kernel.numpy()
    ring = np.ones((5, 5), bool)
    ring[1:4, 1:4] = False
    np.testing.assert_array_equal(k[ring], k0[ring])
    assert not np.allclose(k[1:4, 1:4], k0[1:4, 1:4])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"data": np.zeros((0, 28, 28, 1))}, "data must be images"),
        ({"data": np.full((2, 28, 28, 1), np.nan)}, "NaN"),
        ({"patches": 0}, "patches"),
        ({"centre": 1.5}, "centre"),
        ({"iters": -1}, "iters"),
    ],
)
def test_kmeans_init_bad_arguments_name_them(kwargs, match):
    m = small_resnet(width=4)
    args = {"data": np.zeros((2, 28, 28, 1), np.float32)} | kwargs
    with pytest.raises(ValueError, match=match):
        kmeans_init(m, **args)
