"""iapdcnn.pruning over every layer kind keras.applications uses (issue 18): each kind on a small
model with a known answer (the pruned model computes what the masked one does), unknown layers
frozen with a warning, and every keras.applications family pruned end to end (weights=None, the
smallest variant, a small input): FLOPs cut by ratio and by target, the pruned model runs, trains
a step and saves."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import pruning
from iapdcnn._keras import keras

L = keras.layers


def _fill(m, rng):
    """Random weights (BN variances positive), so that every filter differs."""
    for layer in m.layers:
        ws = layer.get_weights()
        if ws:
            new = [rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32) for w in ws]
            layer.set_weights([w * rng.choice([-1.0, 1.0], size=w.shape) for w in new])
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([np.abs(w) for w in layer.get_weights()])
    return m


def _head(y, name="head"):
    return L.Dense(3, name=name)(L.GlobalAveragePooling2D()(y))


def _separable():
    i = keras.Input((8, 8, 3))
    y = L.Conv2D(6, 3, padding="same", name="c0")(i)
    y = L.SeparableConv2D(8, 3, depth_multiplier=2, padding="same", name="sep1")(y)
    y = L.BatchNormalization(name="bn1")(y)
    y = L.ReLU()(y)
    y = L.SeparableConv2D(5, 3, padding="same", name="sep2")(y)
    return keras.Model(i, _head(y))


def _depthwise_chain():
    i = keras.Input((8, 8, 3))
    y = L.Conv2D(6, 1, name="c0")(i)
    y = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw1")(y)
    y = L.DepthwiseConv2D(3, padding="same", name="dw2")(y)
    y = L.BatchNormalization(name="bn")(y)
    y = L.Conv2D(4, 1, name="c1")(y)
    return keras.Model(i, _head(y))


def _grouped():
    i = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 1, name="c0")(i)
    y = L.BatchNormalization(name="bn0")(y)
    y = L.Conv2D(12, 3, groups=4, padding="same", name="g")(y)  # 2 in, 3 out per group
    y = L.ReLU()(y)
    y = L.Conv2D(6, 1, name="c1")(y)
    return keras.Model(i, _head(y))


def _grouped_depthwise():
    """ConvNeXt's depthwise conv: Conv2D with groups == input channels (and a multiplier)."""
    i = keras.Input((8, 8, 3))
    y = L.Conv2D(6, 1, name="c0")(i)
    y = L.Conv2D(6, 3, groups=6, padding="same", name="gdw1")(y)
    y = L.Conv2D(12, 3, groups=6, padding="same", name="gdw2")(y)
    y = L.Conv2D(4, 1, name="c1")(y)
    return keras.Model(i, _head(y))


def _pointwise_dense():
    """ConvNeXt's MLP: Dense on a 4D tensor, in a residual block."""
    i = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 3, padding="same", name="c0")(i)
    y = L.Dense(12, name="pw1")(x)
    y = L.Activation("gelu")(y)
    y = L.Dense(6, name="pw2")(y)
    return keras.Model(i, _head(L.Add()([x, y])))


def _squeeze_excite_and_merges():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c0")(i)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, 8))(s)
    s = L.Conv2D(2, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply()([x, s])
    b = L.Conv2D(8, 3, padding="same", name="c1")(i)
    merged = [merge()([x, b]) for merge in (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum)]
    y = L.Concatenate()(merged)
    y = L.ZeroPadding2D(2)(y)
    y = L.Cropping2D(1)(y)
    y = L.Conv2D(5, 3, name="c2")(y)
    return keras.Model(i, _head(y))


def _ops():
    """Elementwise ops on symbolic tensors: tf_keras's TFOpLambda, Keras 3's operation nodes."""
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="c0")(i)
    b = L.Conv2D(6, 3, padding="same", name="c1")(i)
    y = (x + 3.0) * 0.5
    y = y * b  # two tensors: a merge
    gate = L.Conv2D(1, 1, activation="sigmoid", name="gate")(i)
    y = L.Multiply()([y, gate])  # one channel broadcast against six
    y = L.Conv2D(4, 1, name="c2")(y)
    return keras.Model(i, _head(y))


def _flatten_reshape():
    i = keras.Input((4, 4, 3))
    x = L.Conv2D(6, 3, padding="same", name="c0")(i)
    y = L.Reshape((4, 24))(x)  # channels last still: (h, w*c)
    y = L.Reshape((4, 4, 6))(y)
    y = L.Conv2D(4, 1, name="c1")(y)
    y = L.Flatten()(y)
    return keras.Model(i, L.Dense(3, name="fc")(y))


KINDS = {
    "separable": _separable,
    "depthwise_chain": _depthwise_chain,
    "grouped": _grouped,
    "grouped_depthwise": _grouped_depthwise,
    "pointwise_dense": _pointwise_dense,
    "squeeze_excite_and_merges": _squeeze_excite_and_merges,
    "ops": _ops,
    "flatten_reshape": _flatten_reshape,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_kind_pruned_exactly(rng, kind):
    """The channel graph follows the kind: filters go, and the pruned model computes exactly
    what the original computes with those filters (and the weights they feed) zeroed."""
    m = _fill(KINDS[kind](), rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pruning.UnknownLayerWarning)
        _, plan = pruning.prune(m, "fpgm", ratio=0.4, return_plan=True)
    assert plan.pruned
    graph = pruning.ChannelGraph.build(m)
    assert not graph.unknown, graph.unknown
    graph.apply_masks(plan.removed)
    new = graph.rebuild(plan.removed)
    assert pruning.count_flops(new).total == pytest.approx(plan.flops_after, abs=1)
    assert plan.flops_after < plan.flops_before
    x = rng.normal(size=(2,) + tuple(m.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(new(x), m(x), rtol=1e-4, atol=1e-4)


def test_separable_keeps_depthwise_with_its_inputs(rng):
    m = _fill(_separable(), rng)
    new, plan = pruning.prune(m, "l1", ratio=0.5, return_plan=True)
    keep0 = np.setdiff1d(np.arange(6), plan.pruned["c0"])
    keep1 = np.setdiff1d(np.arange(8), plan.pruned["sep1"])
    old, cut = m.get_layer("sep1").get_weights(), new.get_layer("sep1").get_weights()
    np.testing.assert_array_equal(cut[0], old[0][:, :, keep0])  # depthwise [3, 3, in, 2]
    rows = (keep0[:, None] * 2 + np.arange(2)).ravel()  # pointwise rows: in-major, mult fastest
    np.testing.assert_array_equal(cut[1], old[1][:, :, rows][..., keep1])
    np.testing.assert_array_equal(cut[2], old[2][keep1])
    assert new.get_layer("sep1").filters == 4 and new.get_layer("sep2").filters == 3


def test_grouped_conv_loses_the_same_count_from_each_group(rng):
    m = _fill(_grouped(), rng)
    new, plan = pruning.prune(m, "l1", ratio=0.5, return_plan=True)
    # c0's channel k goes with channel k of every other group of g's input (2 per group).
    cut = plan.pruned["c0"]
    assert len(cut) and set(cut) == {g * 2 + k for g in range(4) for k in set(cut % 2)}
    g = new.get_layer("g")
    assert g.groups == 4 and g.filters % 4 == 0 and g.filters < 12
    assert g.get_weights()[0].shape[2] * 4 == new.get_layer("c0").filters
    # A selection naming one channel takes it from every group.
    p = pruning.plan_channels(m, {"c0": [1]})
    assert p.pruned["c0"].tolist() == [1, 3, 5, 7]
    assert pruning.prune_channels(m, {"g": [0]}).get_layer("g").filters == 8


def test_grouped_depthwise_drops_whole_groups(rng):
    m = _fill(_grouped_depthwise(), rng)
    new, plan = pruning.prune(m, "l1", ratio=0.5, return_plan=True)
    kept = 6 - len(plan.pruned["c0"])
    assert new.get_layer("gdw1").groups == new.get_layer("gdw1").filters == kept
    assert new.get_layer("gdw2").groups == kept and new.get_layer("gdw2").filters == 2 * kept


def test_layer_normalization_over_channels_is_sliced(rng):
    i = keras.Input((6, 6, 3))
    y = L.Conv2D(6, 3, padding="same", name="c0")(i)
    y = L.LayerNormalization(epsilon=1e-6, name="ln")(y)
    y = L.Conv2D(4, 1, name="c1")(y)
    m = _fill(keras.Model(i, _head(y)), rng)
    new, plan = pruning.prune(m, "l1", ratio=0.5, return_plan=True)
    keep = np.setdiff1d(np.arange(6), plan.pruned["c0"])
    for a, b in zip(
        new.get_layer("ln").get_weights(), m.get_layer("ln").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b[keep])
    assert new(np.ones((1, 6, 6, 3), np.float32)).shape == (1, 3)


class _ChannelScale(L.Layer):
    """A per-channel layer the channel graph cannot know: pruning through it would break it."""

    def build(self, input_shape):
        self.s = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="s")

    def call(self, x):
        return x * self.s


def test_unknown_layer_freezes_its_channels_with_a_warning(rng):
    i = keras.Input((8, 8, 3))
    y = L.Conv2D(6, 3, padding="same", name="c0")(i)
    y = _ChannelScale(name="mystery")(y)
    y = L.Conv2D(6, 3, padding="same", name="c1")(y)
    y = L.Conv2D(4, 1, name="c2")(y)
    m = _fill(keras.Model(i, _head(y)), rng)
    with pytest.warns(pruning.UnknownLayerWarning, match="'mystery'"):
        new, plan = pruning.prune(m, "l1", ratio=0.5, return_plan=True)
    assert "c0" not in plan.pruned and new.get_layer("c0").filters == 6
    assert new.get_layer("c1").filters == 3  # the rest is still pruned
    assert new(np.ones((1, 8, 8, 3), np.float32)).shape == (1, 3)
    # A model input needs no warning: preprocessing there freezes nothing prunable.
    j = keras.Input((8, 8, 3))
    z = L.Conv2D(4, 1, name="c")(L.Rescaling(1 / 255.0)(j))
    with warnings.catch_warnings():
        warnings.simplefilter("error", pruning.UnknownLayerWarning)
        pruning.prune(keras.Model(j, _head(z)), "l1", ratio=0.5)


# --- every keras.applications family ------------------------------------------------------------
# (constructor, input size: each family's minimum or 32). The smallest variant of each.
FAMILIES = {
    "ResNet50": 32,
    "ResNet50V2": 32,
    "VGG16": 32,
    "MobileNet": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "DenseNet121": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "InceptionV3": 75,
    "InceptionResNetV2": 75,
    "Xception": 71,
    "NASNetMobile": 32,
    "RegNetX002": 32,  # tf_keras only: Keras 3 has no RegNet
    "ConvNeXtTiny": 32,
}
# Layers the channel graph does not look into, per family: ConvNeXt's stem and downsampling
# layers are nested Sequential models (their channels are frozen, with a warning).
NOT_UNDERSTOOD = {
    "ConvNeXtTiny": {
        "convnext_tiny_stem",
        *(f"convnext_tiny_downsampling_block_{i}" for i in range(3)),
    }
}


@pytest.fixture(autouse=True)
def _fresh_keras():
    """tf_keras keeps every model's layers in one global graph, which slows each next model."""
    yield
    keras.backend.clear_session()


def _reduction(before, model):
    return 1.0 - pruning.count_flops(model).total / before


def _train_step(model, x, y):
    opt = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return float(loss)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_application_family_pruned_end_to_end(tmp_path, family):
    if not hasattr(keras.applications, family):
        pytest.skip(f"keras.applications has no {family} under this Keras")
    keras.utils.set_random_seed(0)
    size = FAMILIES[family]
    m = getattr(keras.applications, family)(weights=None, input_shape=(size, size, 3), classes=10)
    before = pruning.count_flops(m).total
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(2, size, size, 3)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pruning.UnknownLayerWarning)
        by_ratio, p1 = pruning.prune(m, "l1", ratio=0.3, return_plan=True)
        by_target, p2 = pruning.prune(m, "mdcv", target_flops_reduction=0.25, return_plan=True)
    warned = {
        str(w.message).split("'")[1]
        for w in caught
        if issubclass(w.category, pruning.UnknownLayerWarning)
    }
    assert warned == NOT_UNDERSTOOD.get(family, set())

    # FLOPs, measured on the rebuilt models (and as the plans predicted them).
    assert _reduction(before, by_ratio) >= 0.20
    assert _reduction(before, by_target) >= 0.25
    for new, p in ((by_ratio, p1), (by_target, p2)):
        assert pruning.count_flops(new).total == pytest.approx(p.flops_after, rel=1e-6, abs=2)
        out = new(x, training=False)
        assert out.shape == (2,) + tuple(m.output_shape[1:])
        assert np.isfinite(out).all()

    # One training step stays finite.
    loss = _train_step(by_ratio, x, np.array([1, 7]))
    assert np.isfinite(loss)
    assert all(np.isfinite(v.numpy()).all() for v in by_ratio.trainable_variables)

    # Saves and loads, computing the same. keras.applications' own layer classes (ConvNeXt's
    # LayerScale) are not registered for deserialisation under tf_keras, pruned or not.
    path = str(tmp_path / f"{family}.keras")
    by_ratio.save(path)
    own = {
        type(v).__name__: type(v) for v in by_ratio.layers if ".applications." in type(v).__module__
    }
    loaded = keras.models.load_model(path, custom_objects=own, compile=False)
    np.testing.assert_allclose(
        loaded(x, training=False), by_ratio(x, training=False), rtol=1e-5, atol=1e-5
    )
