"""Export for serving (issue 18): ``iapdcnn.layers.to_builtin`` / ``save_serving`` give a model of
Keras built-in layers with the same outputs; its SavedModel runs in a process where iapdcnn cannot
be imported; a pruned, exported small ResNet converts to TFLite with matching outputs."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import pruning
from iapdcnn._keras import IS_KERAS3, keras
from iapdcnn.layers import (
    EdgeFeatures,
    ExportError,
    FCIFilter,
    Im2colConv2D,
    save_serving,
    to_builtin,
)
from iapdcnn.models import small_resnet


def _builtin_only(model) -> None:
    for layer in model.layers:
        assert not type(layer).__module__.startswith("iapdcnn"), layer.name
        if isinstance(layer, keras.Model):
            _builtin_only(layer)


def _edge_fci_resnet(rng, conv="im2col"):
    """small_resnet behind EdgeFeatures and an FCIFilter whose mask zeroes some blocks."""
    edge = EdgeFeatures(1, 2, 0.2, name="edges")
    fci = FCIFilter(block_size=4, name="fci")
    model = small_resnet((16, 16, 1), width=4, conv=conv, preprocessing=[edge, fci])
    fci.mask.assign((rng.uniform(size=16) < 0.6).astype(np.float32))
    assert 0 < float(tf.reduce_sum(fci.mask)) < 16
    return model, edge


def test_im2col_becomes_conv2d_with_same_config_weights_outputs(rng):
    inp = keras.Input((13, 11, 4), name="x")
    y = Im2colConv2D(6, 3, padding="same", activation="relu", name="a")(inp)
    y = Im2colConv2D(6, (3, 2), strides=2, padding="valid", use_bias=False, name="b")(y)
    y = Im2colConv2D(4, 3, dilation_rate=2, padding="same", groups=2, name="c")(y)
    y = keras.layers.BatchNormalization(name="bn")(y)
    model = keras.Model(inp, Im2colConv2D(3, 1, activation="sigmoid", name="d")(y))
    for layer in model.layers:  # non-trivial weights everywhere, BN statistics included
        layer.set_weights(
            [rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    model.get_layer("bn").set_weights(
        [np.abs(w) + 0.5 for w in model.get_layer("bn").get_weights()]
    )
    out = to_builtin(model)
    _builtin_only(out)
    for name in "abcd":
        old, new = model.get_layer(name), out.get_layer(name)
        assert type(new) is keras.layers.Conv2D
        assert new.get_config() == old.get_config()
        for w_old, w_new in zip(old.get_weights(), new.get_weights(), strict=True):
            np.testing.assert_array_equal(w_new, w_old)
    x = rng.normal(size=(3, 13, 11, 4)).astype(np.float32)
    np.testing.assert_allclose(
        out(x, training=False), model(x, training=False), rtol=1e-4, atol=1e-5
    )
    assert pruning.count_flops(out).total == pruning.count_flops(model).total


def test_sequential_and_nested_models(rng):
    fci = FCIFilter(block_size=2, name="fci")
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), fci, Im2colConv2D(4, 3, padding="same", name="conv")],
        name="inner",
    )
    fci.mask.assign(np.array([1, 0] * 8, np.float32))
    inp = keras.Input((8, 8, 3), name="image")
    outer = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inner(inp)))
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    for model in (inner, outer):
        out = to_builtin(model)
        _builtin_only(out)
        np.testing.assert_allclose(out(x), model(x), rtol=1e-5, atol=1e-6)
    assert type(to_builtin(inner).get_layer("fci")) is keras.layers.Rescaling


def test_preprocessing_errors_by_default_and_strip_keeps_the_classifier(rng):
    model, edge = _edge_fci_resnet(rng)
    with pytest.raises(ExportError, match="'edges'.*preprocessing='strip'"):
        to_builtin(model)
    out = to_builtin(model, preprocessing="strip")
    _builtin_only(out)
    assert "edges" not in [layer.name for layer in out.layers]
    assert type(out.get_layer("fci")) is keras.layers.Rescaling
    x = rng.uniform(size=(4, 16, 16, 1)).astype(np.float32)
    # The exported model takes the edge map; with it, the same probabilities.
    np.testing.assert_allclose(
        out(edge(x), training=False), model(x, training=False), rtol=1e-4, atol=1e-6
    )
    # The FCI mask is the Rescaling's scale, exactly: zeroed blocks stay zero.
    fci_in = keras.Model(out.inputs, out.get_layer("fci").output)
    want = model.get_layer("fci")(edge(x)).numpy()
    np.testing.assert_array_equal(fci_in(edge(x)).numpy(), want)


class _MyConv(Im2colConv2D):
    pass


def test_unexportable_layers_are_named(rng):
    inp = keras.Input((8, 8, 1), name="image")
    mine = keras.Model(inp, _MyConv(2, 3, name="mine")(inp))
    with pytest.raises(ExportError, match="'mine'.*_MyConv"):
        to_builtin(mine)
    y = keras.layers.Conv2D(2, 3, name="stem")(inp)
    deep = keras.Model(inp, EdgeFeatures(name="late_edges")(y))
    with pytest.raises(ExportError, match="'late_edges'.*does not read a model input"):
        to_builtin(deep, preprocessing="strip")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        to_builtin(mine, preprocessing="keep")
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        to_builtin(tf.Module())


# Runs a SavedModel where iapdcnn cannot be imported: a meta-path finder refuses it, PYTHONPATH
# is empty and the working directory is elsewhere; asserts sys.modules never holds it.
_SERVE = textwrap.dedent(
    """
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name == "iapdcnn" or name.startswith("iapdcnn."):
                raise ModuleNotFoundError(f"no iapdcnn here ({name})")
            return None

    sys.meta_path.insert(0, Refuse())
    import json
    import numpy as np
    import tensorflow as tf

    path, x_file, out_file = sys.argv[1:4]
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    (name,) = fn.structured_input_signature[1]
    (y,) = fn(**{name: tf.constant(np.load(x_file))}).values()
    np.save(out_file, y.numpy())
    bad = sorted(m for m in sys.modules if m.split(".")[0] == "iapdcnn")
    assert not bad, bad
    print(json.dumps({"iapdcnn_modules": bad, "input": name}))
    """
)


def _serve_elsewhere(tmp_path, path, x):
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "serve.py").write_text(_SERVE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "serve.py"), str(path), "x.npy", "y.npy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, (np.load(tmp_path / "y.npy") if proc.returncode == 0 else None)


def test_saved_model_serves_without_iapdcnn(tmp_path, rng):
    model, edge = _edge_fci_resnet(rng)
    x = rng.uniform(size=(4, 16, 16, 1)).astype(np.float32)
    exported = save_serving(model, tmp_path / "served", preprocessing="strip")
    proc, y = _serve_elsewhere(tmp_path, tmp_path / "served", edge(x).numpy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["iapdcnn_modules"] == []
    np.testing.assert_allclose(y, model(x, training=False), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y, exported(edge(x), training=False), rtol=1e-5, atol=1e-6)


def test_unexported_model_does_not_serve_without_iapdcnn(tmp_path, rng):
    """The control: the same harness refuses a SavedModel that still holds iapdcnn's op."""
    inp = keras.Input((8, 8, 1), name="image")
    model = keras.Model(inp, Im2colConv2D(2, 3, name="conv")(inp))
    path = tmp_path / "raw"
    if IS_KERAS3:
        model.export(str(path), format="tf_saved_model", verbose=False)
    else:
        tf.saved_model.save(model, str(path))
    proc, _ = _serve_elsewhere(tmp_path, path, np.zeros((1, 8, 8, 1), np.float32))
    assert proc.returncode != 0
    assert "Im2col" in proc.stderr


def test_pruned_exported_resnet_converts_to_tflite(tmp_path, rng):
    model = small_resnet((16, 16, 1), width=8, conv="im2col")
    x = rng.uniform(size=(8, 16, 16, 1)).astype(np.float32)
    pruned = pruning.prune(model, "mdcv", target_flops_reduction=0.4, round_to=4)
    before, after = pruning.count_flops(model).total, pruning.count_flops(pruned).total
    assert after < 0.75 * before  # the target is met to within a block of round_to channels
    exported = save_serving(pruned, tmp_path / "pruned")
    _builtin_only(exported)
    assert pruning.count_flops(exported).total == after
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "pruned"))
    flat = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=flat)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    want = pruned(x, training=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(want, want[:1])  # the probabilities depend on the input
