"""Keras 3 (TensorFlow 2.21's own tf.keras): iapdcnn's layers in a whole model saved as .keras
and loaded back, convert on a functional model, pruning, and DistributedOptimizer under
`horovodrun -np 2`: after model.fit on different per-rank data the weights are identical for
`mean` and `lsg`, while Horovod's own Keras optimizer leaves them apart (it does not reduce under
Keras 3). scripts/test.sh runs this file in its Keras 3 pass (IAPDCNN_TEST_KERAS=keras3)."""

import os
import re

import keras as keras3
import numpy as np
import pytest
import tensorflow as tf

from hvdrun import ROOT, run_hvd
from iapdcnn import layers, pruning
from iapdcnn.models import small_resnet

pytestmark = pytest.mark.keras3
keras = tf.keras
WORKER = os.path.join(ROOT, "tests", "distributed", "keras3_fit_worker.py")


def test_tf_keras_is_keras3():
    assert keras.layers.Conv2D is keras3.layers.Conv2D
    assert issubclass(layers.Im2colConv2D, keras3.layers.Conv2D)
    assert issubclass(layers.FCIFilter, keras3.layers.Layer)


def _feature_model(rng):
    x = rng.uniform(size=(12, 8, 8, 1)).astype(np.float32)
    y = np.arange(12) % 2
    fci = layers.FCIFilter(block_size=4, epsilon=0.05).adapt((x, y), batch_size=6)
    model = small_resnet(
        (8, 8, 1),
        num_classes=2,
        width=2,
        conv="im2col",
        preprocessing=[layers.EdgeFeatures(patch_radius=1, search_radius=1), fci],
    )
    return model, x


def test_model_with_all_layers_saves_and_loads(tmp_path, rng):
    model, x = _feature_model(rng)
    want = model(x).numpy()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras3.models.load_model(path)
    assert {type(layer).__name__ for layer in loaded.layers} >= {
        "Im2colConv2D",
        "EdgeFeatures",
        "FCIFilter",
    }
    np.testing.assert_allclose(loaded(x).numpy(), want, atol=1e-5)
    fci = next(layer for layer in loaded.layers if isinstance(layer, layers.FCIFilter))
    assert fci.num_classes == 2 and fci.counts.shape == (2,)


def test_convert_functional_model(rng):
    model = small_resnet((8, 8, 3), num_classes=3, width=4, conv="keras")
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    new = layers.convert(model)
    convs = [layer for layer in new.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(type(c) is layers.Im2colConv2D for c in convs)
    assert [layer.name for layer in new.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(new(x).numpy(), model(x).numpy(), atol=1e-4)


def test_pruning_a_keras3_functional_model(tmp_path, rng):
    model = small_resnet((8, 8, 1), num_classes=2, width=8, conv="im2col")
    x = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
    before = pruning.count_flops(model).total
    new = pruning.prune(model, ratio=0.5, criterion="l1")
    after = pruning.count_flops(new).total
    assert 0 < after < before
    graph = pruning.ChannelGraph.build(model)
    assert graph.convs and graph.groups()
    assert new.get_layer("stem_conv").filters < model.get_layer("stem_conv").filters
    assert new(x).shape == (4, 2)
    path = str(tmp_path / "pruned.keras")
    new.save(path)
    np.testing.assert_allclose(keras3.models.load_model(path)(x).numpy(), new(x).numpy(), atol=1e-5)


def _fit(mode: str) -> dict[str, float]:
    p = run_hvd(2, [WORKER, mode], timeout=300)
    out = p.stdout + p.stderr
    assert sorted(re.findall(r"RANK (\d) DONE", out)) == ["0", "1"], out[-4000:]
    spreads = {}
    for what in ("initial", "fit", "tape grad"):
        found = re.findall(rf"RANK \d {what} spread=([\d.e+-]+|nan|inf)", out)
        if found:
            spreads[what] = max(float(v) for v in found)
    return spreads | {"out": out}


@pytest.mark.horovod
@pytest.mark.parametrize("reduction", ["mean", "lsg"])
def test_fit_gives_identical_weights_on_both_ranks(reduction):
    s = _fit(reduction)
    assert s["initial"] == 0.0, s["out"][-3000:]
    assert s["fit"] == 0.0, s["out"][-3000:]
    assert s["tape grad"] == 0.0, s["out"][-3000:]
    # the step's loss reached the reduction (through scale_loss) on both ranks
    losses = re.findall(r"RANK \d stats workers_kept=2.0 loss=([\d.]+)", s["out"])
    assert len(losses) == 2 and float(losses[0]) > 0, s["out"][-3000:]


@pytest.mark.horovod
def test_horovods_own_optimizer_does_not_reduce_under_keras3():
    # The reason iapdcnn hooks Keras 3's apply: Horovod's optimizer is silently local there.
    s = _fit("horovod")
    assert s["initial"] == 0.0, s["out"][-3000:]
    assert s["fit"] > 1e-3, s["out"][-3000:]


def test_distributed_optimizer_model_saves_as_the_wrapped_optimizer(tmp_path, rng):
    from iapdcnn.distributed import DistributedOptimizer

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    opt = DistributedOptimizer(keras.optimizers.Adam(0.01), reduction="mean")
    assert isinstance(opt, keras3.optimizers.Adam) and type(opt).__name__ == "Adam"
    model.compile(opt, "mse")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras3.models.load_model(path)
    assert type(loaded.optimizer) is keras3.optimizers.Adam
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_distributed_optimizer_names_a_bad_optimizer():
    from iapdcnn.distributed import DistributedOptimizer

    with pytest.raises(ValueError, match="optimizer must be a Keras optimizer"):
        DistributedOptimizer("adam")
