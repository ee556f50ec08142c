"""Im2colConv2D as a drop-in for keras.layers.Conv2D, and layers.convert on Sequential,
functional and ResNet-50 models."""

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import layers

keras = tf.keras

CONFIGS = [
    {"filters": 4, "kernel_size": 3},
    {
        "filters": 6,
        "kernel_size": (2, 3),
        "strides": (1, 2),
        "padding": "same",
        "activation": "relu",
    },
    {"filters": 4, "kernel_size": 3, "dilation_rate": 2, "use_bias": False, "padding": "same"},
    {"filters": 6, "kernel_size": 3, "groups": 2, "padding": "same", "bias_initializer": "ones"},
    {"filters": 5, "kernel_size": 1, "data_format": "channels_first"},
    {
        "filters": 3,
        "kernel_size": 3,
        "kernel_regularizer": "l2",
        "bias_regularizer": "l1",
        "kernel_constraint": "max_norm",
        "kernel_initializer": "he_normal",
    },
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_layer_matches_conv2d(rng, cfg):
    x = rng.normal(size=(2, 4, 9, 8) if cfg.get("data_format") else (2, 9, 8, 4)).astype(np.float32)
    ref = keras.layers.Conv2D(**cfg)
    ours = layers.Im2colConv2D(**cfg)
    want = ref(x)
    ours.build(x.shape)
    ours.set_weights(ref.get_weights())
    assert isinstance(ours, keras.layers.Conv2D)
    assert ours.get_config() == {**ref.get_config(), "name": ours.name}
    np.testing.assert_allclose(ours(x).numpy(), want.numpy(), atol=1e-5)
    assert len(ours.losses) == len(ref.losses)
    # Training gradients agree too (TF's CPU kernels lack grouped gradients).
    if cfg.get("groups", 1) == 1:
        with tf.GradientTape(persistent=True) as tape:
            a, b = tf.reduce_sum(ref(x) ** 2), tf.reduce_sum(ours(x) ** 2)
        for g1, g2 in zip(
            tape.gradient(a, ref.trainable_weights),
            tape.gradient(b, ours.trainable_weights),
            strict=True,
        ):
            np.testing.assert_allclose(g2.numpy(), g1.numpy(), rtol=1e-4, atol=1e-4)


def test_save_and_load(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            layers.Im2colConv2D(8, 3, padding="same", activation="relu"),
            layers.Im2colConv2D(8, 3, strides=2, groups=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(4, 10, 10, 3)).astype(np.float32)
    model.fit(x, rng.normal(size=(4, 2)), epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[0], layers.Im2colConv2D)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def _assert_converted(model, x):
    converted = layers.convert(model)
    n_conv = sum(type(la) is keras.layers.Conv2D for la in model.layers)
    assert n_conv > 0
    assert sum(isinstance(la, layers.Im2colConv2D) for la in converted.layers) == n_conv
    assert not any(type(la) is keras.layers.Conv2D for la in converted.layers)
    np.testing.assert_allclose(converted(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
    return converted


def test_convert_sequential_and_functional(rng):
    x = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    seq = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(6, 3, strides=2, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    _assert_converted(seq, x)
    inp = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(4, 3, padding="same")(inp)
    b = keras.layers.Conv2D(4, 1)(inp)
    out = keras.layers.Conv2DTranspose(2, 3)(keras.layers.Add()([a, b]))
    func = keras.Model(inp, out)
    conv = _assert_converted(func, x)
    assert type(conv.layers[-1]) is keras.layers.Conv2DTranspose  # not a plain Conv2D: kept


def test_convert_resnet50_matches(rng):
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    # Non-trivial BatchNorm statistics, so the check sees more than the initial identity.
    for la in model.layers:
        if isinstance(la, keras.layers.BatchNormalization):
            w = la.get_weights()
            la.set_weights(
                [w[0], w[1], 0.1 * rng.normal(size=w[2].shape), 1 + rng.uniform(size=w[3].shape)]
            )
    x = rng.uniform(size=(1, 64, 64, 3)).astype(np.float32)
    converted = _assert_converted(model, x)
    assert sum(isinstance(la, layers.Im2colConv2D) for la in converted.layers) == 53
