"""iapdcnn.pruning (spec §2a): physical pruning with known answers on toy models, exact output
preservation when the pruned channels are zero, residual groups, ResNet-50, save/load, the
MDCVPruning callback + strip, and clear errors naming the argument."""

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import pruning
from iapdcnn.models import small_resnet
from iapdcnn.pruning import criteria

keras = tf.keras


def _toy(rng):
    """conv(4) -> BN -> ReLU -> conv(3) -> Flatten -> Dense(2), with weights we control."""
    m = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, padding="same", name="c1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(3, 1, name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="fc"),
        ]
    )
    for layer in m.layers:
        layer.set_weights(
            [rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    bn = m.get_layer("bn")
    bn.set_weights([w if i != 3 else np.abs(w) + 0.5 for i, w in enumerate(bn.get_weights())])
    return m


def test_count_flops_known_values(rng):
    m = _toy(rng)
    f = pruning.count_flops(m)
    assert f.per_layer["c1"] == 6 * 6 * 3 * 3 * 2 * 4
    assert f.per_layer["c2"] == 6 * 6 * 4 * 3
    assert f.per_layer["fc"] == 6 * 6 * 3 * 2
    assert f.per_layer["bn"] == 0
    assert f.total == 2592 + 432 + 216
    assert "TOTAL" in f.table(f)


def test_toy_physical_pruning_known_answer(rng):
    m = _toy(rng)
    k1 = m.get_layer("c1").get_weights()[0]
    # Scale filters so the L1 order is known: filters 1 and 3 are the smallest.
    k1 = k1 * np.array([3.0, 0.01, 2.0, 0.02], np.float32)
    m.get_layer("c1").set_weights([k1, m.get_layer("c1").get_weights()[1]])
    new, plan = pruning.prune(m, "l1", ratio=0.5, return_plan=True)
    assert isinstance(new, keras.Sequential) and new is not m
    assert plan.pruned["c1"].tolist() == [1, 3]
    assert plan.pruned["c2"].tolist() == [
        int(np.argmin(np.abs(m.get_layer("c2").get_weights()[0]).sum((0, 1, 2))))
    ]
    keep1, keep2 = [0, 2], [i for i in range(3) if i not in plan.pruned["c2"]]
    np.testing.assert_array_equal(new.get_layer("c1").get_weights()[0], k1[..., keep1])
    np.testing.assert_array_equal(
        new.get_layer("c1").get_weights()[1], m.get_layer("c1").get_weights()[1][keep1]
    )
    for a, b in zip(
        new.get_layer("bn").get_weights(), m.get_layer("bn").get_weights(), strict=False
    ):
        np.testing.assert_array_equal(a, b[keep1])
    np.testing.assert_array_equal(
        new.get_layer("c2").get_weights()[0],
        m.get_layer("c2").get_weights()[0][:, :, keep1][..., keep2],
    )
    # Flatten -> Dense: rows are (h, w, c) with c fastest.
    rows = (np.arange(36)[:, None] * 3 + np.array(keep2)[None]).ravel()
    np.testing.assert_array_equal(
        new.get_layer("fc").get_weights()[0], m.get_layer("fc").get_weights()[0][rows]
    )
    assert pruning.count_flops(new).total == plan.flops_after


def test_mdcv_alpha_rule_known_answer():
    # One-dimensional filters 0, 1, 2 (+ a frozen output conv): distances 1, 0, 1 for every l.
    m = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(3, 1, use_bias=False, name="c"),
            keras.layers.Conv2D(2, 1, name="out"),
        ]
    )
    m.get_layer("c").set_weights([np.array([0.0, 1.0, 2.0], np.float32).reshape(1, 1, 1, 3)])
    np.testing.assert_allclose(pruning.score_layers(m, ["c"])["c"], [1, 0, 1], atol=1e-6)
    _, plan = pruning.prune(m, alpha=0.5, return_plan=True)
    assert {k: v.tolist() for k, v in plan.pruned.items()} == {"c": [1]}
    assert pruning.prune(m, alpha=0.0).get_layer("c").filters == 3


def _depthwise_concat(rng):
    """conv -> DepthwiseConv2D(x2) -> BN -> Concatenate with a second conv -> conv -> pool."""
    i = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="a")(i)
    a = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(a)
    a = keras.layers.BatchNormalization(name="dw_bn")(a)
    b = keras.layers.Conv2D(5, 1, name="b")(i)
    c = keras.layers.Concatenate(name="cat")([a, b])
    c = keras.layers.Conv2D(4, 1, name="c")(c)
    m = keras.Model(i, keras.layers.Dense(2)(keras.layers.GlobalMaxPooling2D()(c)))
    for layer in m.layers:
        layer.set_weights(
            [rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    return m


def test_depthwise_and_concatenate_known_shapes(rng):
    m = _depthwise_concat(rng)
    new, plan = pruning.prune(m, "l1", ratio=0.5, return_plan=True)
    assert new.get_layer("a").filters == 3 and new.get_layer("b").filters == 3
    assert new.get_layer("dw").get_weights()[0].shape == (3, 3, 3, 2)
    assert new.get_layer("dw_bn").get_weights()[0].shape == (6,)
    assert new.get_layer("c").get_weights()[0].shape == (1, 1, 9, 2)
    keep_a = [i for i in range(6) if i not in plan.pruned["a"]]
    np.testing.assert_array_equal(
        new.get_layer("dw").get_weights()[0], m.get_layer("dw").get_weights()[0][:, :, keep_a]
    )


def _masked_and_pruned(model, pruned):
    graph = pruning.ChannelGraph.build(model)
    removed = {int(graph.roots(graph.layer_out[n])[i]) for n, idx in pruned.items() for i in idx}
    graph.apply_masks(removed)
    return graph.rebuild(removed)


@pytest.mark.parametrize("builder", ["toy", "small_resnet", "depthwise_concat"])
def test_outputs_preserved_when_pruned_channels_are_zero(rng, builder):
    builders = {"toy": _toy, "small_resnet": lambda r: small_resnet(width=4)}
    m = builders.get(builder, _depthwise_concat)(rng)
    x = rng.normal(size=(3,) + tuple(m.input_shape[1:])).astype(np.float32)
    _, plan = pruning.prune(m, "fpgm", ratio=0.4, return_plan=True)
    assert plan.pruned
    new = _masked_and_pruned(m, plan.pruned)
    assert pruning.count_flops(new).total < pruning.count_flops(m).total
    np.testing.assert_allclose(new(x, training=False), m(x, training=False), rtol=1e-5, atol=1e-6)


def test_residual_channels_pruned_jointly(rng):
    m = small_resnet(width=8)
    new, plan = pruning.prune(m, "mdcv", ratio=0.25, return_plan=True)
    tied = ("stem_conv", "s0b0_b_conv")
    np.testing.assert_array_equal(plan.pruned[tied[0]], plan.pruned[tied[1]])
    assert new.get_layer("stem_conv").filters == new.get_layer("s0b0_b_conv").filters == 6
    x = rng.normal(size=(2, 28, 28, 1)).astype(np.float32)
    assert new(x).shape == (2, 10)
    kept = pruning.prune(m, "mdcv", ratio=0.25, prune_residual=False)
    assert kept.get_layer("stem_conv").filters == 8 and kept.get_layer("s2b0_b_conv").filters == 32
    assert kept.get_layer("s0b0_a_conv").filters == 6


def test_per_layer_ratios():
    m = small_resnet(width=8)
    new = pruning.prune(m, "l1", ratio={"s1b0_a_conv": 0.5, "s2b0_b_conv": 0.25})
    assert new.get_layer("s1b0_a_conv").filters == 8
    assert new.get_layer("s2b0_b_conv").filters == new.get_layer("s2b0_proj_conv").filters == 24
    assert new.get_layer("s0b0_a_conv").filters == 8
    with pytest.raises(ValueError, match="ratio"):
        pruning.prune(m, ratio={"pool": 0.5})
    with pytest.raises(ValueError, match="ratio"):
        pruning.prune(m, ratio={"s1b0_a_conv": 1.5})


def test_feature_maps_read_after_bn_and_activation():
    g = pruning.ChannelGraph.build(small_resnet(width=4))
    assert g.feature_layer("s0b0_a_conv") == "s0b0_a_relu"
    assert g.feature_layer("s0b0_b_conv") == "s0b0_b_bn"  # then the residual Add


def test_controls_ignored_round_to_min_channels():
    m = small_resnet(width=8)
    new = pruning.prune(
        m, "l1", ratio=0.5, ignored_layers=["s1b0_a_conv"], round_to=4, min_channels=5
    )
    assert new.get_layer("s1b0_a_conv").filters == 16
    assert new.get_layer("s0b0_a_conv").filters == 8  # max(4, min 5) rounded up to 8
    assert new.get_layer("s2b0_a_conv").filters == 16


@pytest.mark.parametrize("criterion", list(pruning.CRITERIA))
def test_flops_target_every_criterion(rng, criterion):
    m = small_resnet(width=8)
    x = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
    new, plan = pruning.prune(m, criterion, target_flops_reduction=0.4, data=x, return_plan=True)
    reduction = 1 - pruning.count_flops(new).total / pruning.count_flops(m).total
    assert reduction == pytest.approx(plan.flops_reduction) and 0.4 <= reduction < 0.5
    assert new(x[:2]).shape == (2, 10)


def test_global_flops_mode(rng):
    m = small_resnet(width=8)
    new = pruning.prune(m, "l1", target_flops_reduction=0.3, flops_mode="global")
    assert 1 - pruning.count_flops(new).total / pruning.count_flops(m).total >= 0.3


def test_criteria_known_answers(rng):
    x = rng.normal(size=(3, 3, 2, 6))
    # FPGM: a filter placed at the median of the others is the most replaceable.
    x[..., 5] = np.median(x[..., :5], axis=-1) * 0 + x[..., :5].mean(-1)
    assert np.argmin(criteria.fpgm(x)) == 5
    np.testing.assert_allclose(criteria.l1(x), np.abs(x).sum((0, 1, 2)))
    # Dis-CNN redundancy: a scaled copy of a feature map is redundant (|cos| = 1).
    f = rng.normal(size=(100, 4))
    f[:, 3] = -0.5 * f[:, 1]
    s = criteria._redundancy_scores(f.T @ f)
    assert np.argmin(s) == 3 and s[3] == pytest.approx(0.0, abs=1e-12)


def test_conv2d_subclass_is_pruned(rng):
    @keras.utils.register_keras_serializable(package="iapdcnn_test")
    class MyConv(keras.layers.Conv2D):
        pass

    i = keras.Input((8, 8, 3))
    y = MyConv(8, 3, padding="same", name="mine")(i)
    y = keras.layers.GlobalAveragePooling2D()(y)
    m = keras.Model(i, keras.layers.Dense(2)(y))
    new = pruning.prune(m, ratio=0.5)
    assert type(new.get_layer("mine")) is MyConv and new.get_layer("mine").filters == 4


def test_im2col_conv2d_is_pruned(rng):
    from iapdcnn import layers

    m = small_resnet(width=4, conv="im2col")
    new = pruning.prune(m, ratio=0.5)
    assert isinstance(new.get_layer("s0b0_a_conv"), layers.Im2colConv2D)
    assert new.get_layer("s0b0_a_conv").filters == 2


def test_resnet50_runs_after_pruning_and_flops_drop(rng):
    m = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    new, plan = pruning.prune(m, "mdcv", target_flops_reduction=0.3, return_plan=True)
    before, after = pruning.count_flops(m), pruning.count_flops(new)
    assert 1 - after.total / before.total == pytest.approx(plan.flops_reduction)
    assert plan.flops_reduction >= 0.3
    assert new.count_params() < m.count_params()
    assert new(rng.normal(size=(1, 32, 32, 3)).astype(np.float32)).shape == (1, 10)


def test_pruned_model_saves_and_loads(tmp_path, rng):
    m = small_resnet(width=4)
    new = pruning.prune(m, "mdcv", ratio=0.5)
    path = str(tmp_path / "pruned.keras")
    new.save(path)
    loaded = keras.models.load_model(path)
    x = rng.normal(size=(2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x), new(x), rtol=1e-6, atol=1e-7)
    assert loaded.get_layer("s0b0_a_conv").filters == 2


def test_callback_masks_then_strip(rng):
    m = small_resnet(width=4)
    m.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.uniform(size=(32, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=32)
    cb = pruning.MDCVPruning(0.3, begin_step=0, end_step=4, frequency=2)
    m.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[cb])
    assert cb.history and cb.history[-1][1] >= 0.3
    assert cb.reduction_at(0) == 0.0 and cb.reduction_at(4) == pytest.approx(0.3)
    small = pruning.strip(m)
    assert 1 - pruning.count_flops(small).total / pruning.count_flops(m).total >= 0.3
    np.testing.assert_allclose(
        small(x[:4], training=False), m(x[:4], training=False), rtol=1e-5, atol=1e-6
    )
    # Without the callback's record (e.g. after save/load) the zeroed channels are found.
    del m._iapdcnn_pruned
    assert pruning.count_flops(pruning.strip(m)).total == pruning.count_flops(small).total


@pytest.mark.parametrize("hard", [True, False])
def test_callback_keeps_final_mask(rng, hard):
    # Once the target is reached (end_step) the mask is held to the end, in soft mode too: the
    # zeroed filters stay zero through the remaining batches and there is no re-selection at
    # train end, which could pick filters the network has been fine-tuned without.
    m = small_resnet(width=8)
    m.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.uniform(size=(48, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=48)
    cb = pruning.MDCVPruning(0.3, begin_step=0, end_step=2, frequency=1, hard=hard, round_to=2)
    held = []  # after each batch past end_step: are the selected filters still all zero?

    def check(batch, logs):
        if cb._final():
            p = cb.current_plan  # every masked weight, BN beta included (it would regrow)
            masks = p.graph.masks(p.removed)
            held.append(
                all(not np.any(v.numpy()[np.broadcast_to(k, v.shape) == 0]) for v, k in masks)
            )

    probe = keras.callbacks.LambdaCallback(on_train_batch_end=check)
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb, probe])
    assert held == [True] * 5  # batches 2..6
    assert [s for s, _ in cb.history] == [1, 2]
    pruned = cb.current_plan.pruned
    assert pruned and m._iapdcnn_pruned == pruned
    for name, idx in pruned.items():
        assert not np.any(m.get_layer(name).get_weights()[0][..., idx])
    small = pruning.strip(m)
    np.testing.assert_allclose(
        small(x[:4], training=False), m(x[:4], training=False), rtol=1e-5, atol=1e-6
    )


def test_bad_options_name_the_argument(rng):
    m = _toy(rng)
    with pytest.raises(ValueError, match="alpha"):
        pruning.prune(m, alpha=-1.0)
    with pytest.raises(ValueError, match="ratio"):
        pruning.prune(m, ratio=1.0)
    with pytest.raises(ValueError, match="ratio"):
        pruning.prune(m, ratio=-0.1)
    with pytest.raises(ValueError, match="alpha=.*every filter"):
        pruning.prune(m, alpha=1e9)
    with pytest.raises(ValueError, match="exactly one"):
        pruning.prune(m, alpha=1.0, ratio=0.5)
    with pytest.raises(ValueError, match="criterion"):
        pruning.prune(m, "nope", ratio=0.5)
    with pytest.raises(ValueError, match="data="):
        pruning.prune(m, "fmp", ratio=0.5)
    with pytest.raises(ValueError, match="target_flops_reduction"):
        pruning.prune(m, target_flops_reduction=0.99)
    with pytest.raises(ValueError, match="ignored_layers"):
        pruning.prune(m, ratio=0.5, ignored_layers=["nope"])
    with pytest.raises(ValueError, match="every filter"):
        pruning.prune_channels(m, {"c1": [0, 1, 2, 3]})


def test_sync_ranks_needs_horovod_and_names_the_argument(rng, monkeypatch):
    import sys
    import types

    with pytest.raises(ValueError, match="sync_ranks"):
        pruning.MDCVPruning(0.3, sync_ranks="yes")
    fake = types.SimpleNamespace(is_initialized=lambda: False)  # imported, not initialised
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", fake)
    m = small_resnet(width=4)
    m.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.uniform(size=(8, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=8)
    cb = pruning.MDCVPruning(0.3, begin_step=0, end_step=1, frequency=1, sync_ranks=True)
    with pytest.raises(RuntimeError, match=r"sync_ranks=True\) needs horovod"):
        m.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[cb])
    # The default leaves a single process alone.
    cb = pruning.MDCVPruning(0.3, begin_step=0, end_step=1, frequency=1)
    m.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[cb])
    assert cb.history


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_rebuild_with_optimizer_continues_as_if_never_there(rng, opt_name):
    # Early physical pruning: the cut model with the cut optimizer must take the same step as the
    # uncut model whose removed filters (and their slots) are zero, on every kept weight.
    keras.utils.set_random_seed(7)  # the initialisation that showed the round-off below
    m = small_resnet(width=8)
    x = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def make_opt():
        if opt_name == "sgd":
            return keras.optimizers.SGD(0.05, momentum=0.9)
        # Adam divides by sqrt(v) + epsilon: with the default 1e-7, a gradient at the round-off
        # floor (1e-9, different in the two models because the GEMM shapes differ) takes a step
        # of a few % of lr, which moved outputs by 3e-5 on some initialisations. A larger epsilon
        # keeps the comparison about the slots (misplaced slots move weights by ~lr).
        return keras.optimizers.Adam(0.01, epsilon=1e-3)

    def step(model, opt):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    opt = make_opt()
    opt.build(m.trainable_variables)
    for _ in range(3):
        step(m, opt)
    p = pruning.plan(m, "l1", ratio=0.5)
    small, small_opt = pruning.rebuild_with_optimizer(p, opt)
    assert int(small_opt.iterations.numpy()) == 3
    assert pruning.count_flops(small).total < 0.6 * pruning.count_flops(m).total
    # the reference: zero the removed filters' weights and every slot of them in the big model
    from iapdcnn.pruning.core import optimizer_slots, variable_key

    big_slots = optimizer_slots(opt, m.trainable_variables)
    small_slots = optimizer_slots(small_opt, small.trainable_variables)
    n_slots = {"sgd": 1, "adam": 2}[opt_name]
    assert len(big_slots) == n_slots * len(m.trainable_variables)
    assert len(small_slots) == n_slots * len(small.trainable_variables)
    for v, k in p.graph.masks(p.removed):
        keep = np.broadcast_to(k, v.shape)
        v.assign(np.where(keep, np.asarray(v), 0))
        for (_, key), s in big_slots.items():
            if key == variable_key(v):
                s.assign(np.where(keep, np.asarray(s), 0))
    # the slots were cut exactly as the weights (checked on the first conv's kernel slots)
    name = next(iter(p.pruned))
    kept = np.setdiff1d(np.arange(m.get_layer(name).filters), p.pruned[name])
    big_k = variable_key(m.get_layer(name).kernel)
    small_k = variable_key(small.get_layer(name).kernel)
    for slot, key in big_slots:
        if key == big_k:
            np.testing.assert_array_equal(
                np.asarray(small_slots[(slot, small_k)]),
                np.asarray(big_slots[(slot, key)])[..., kept],
            )
    step(m, opt)
    step(small, small_opt)
    np.testing.assert_allclose(
        small(x[:4], training=False), m(x[:4], training=False), rtol=2e-4, atol=2e-5
    )
    np.testing.assert_allclose(
        small.get_layer(name).get_weights()[0],
        m.get_layer(name).get_weights()[0][..., kept],
        rtol=1e-5,
        atol=1e-6,
    )


def test_callback_traces_its_hold_once(rng):
    # MDCVPruning keeps its masks in variables: one tf.function for the whole run, so fit does
    # not retrace (and warn) at every mask update.
    m = small_resnet(width=4)
    m.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.uniform(size=(64, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=64)
    cb = pruning.MDCVPruning(0.3, begin_step=0, end_step=6, frequency=2, hard=True)
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    assert len(cb.history) >= 3
    assert cb._hold.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("target", [0.2, 0.3, 0.5])
def test_global_target_with_round_to_stops_within_a_block(target):
    # round_to=8 with a global threshold used to jump whole blocks in many groups at once (a 0.3
    # target gave 0.53); the block-greedy search must land just past the target, every group
    # keeping a multiple of 8 filters.
    keras.utils.set_random_seed(0)
    m = small_resnet(width=32)
    p = pruning.plan(m, "l1", target_flops_reduction=target, round_to=8, flops_mode="global")
    assert target <= p.flops_reduction <= target + 0.03
    small = p.graph.rebuild(p.removed)
    assert pruning.count_flops(small).total == pytest.approx(p.flops_after, rel=1e-6)
    for layer in small.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name != "logits":
            assert layer.filters % 8 == 0, (layer.name, layer.filters)
    with pytest.raises(ValueError, match="target_flops_reduction=0.99 cannot be reached"):
        pruning.plan(m, "l1", target_flops_reduction=0.99, round_to=8, flops_mode="global")
