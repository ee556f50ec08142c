"""iapdcnn.optimizers.CGMSE: against gradient descent on a quadratic (the closed-form reference),
the descent safeguard, model.fit, the trainer's --optimizer cgmse, and its option errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn.optimizers import CGMSE

keras = tf.keras


def _quadratic(n=50, cond=100.0, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = (q * np.logspace(0, np.log10(cond), n)) @ q.T
    a = ((a + a.T) / 2).astype(np.float32)
    b = rng.normal(size=n).astype(np.float32)
    return a, b, np.linalg.solve(a.astype(np.float64), b)


def _iterations(opt, a, b, x_star, with_loss, max_iter=2000, check_descent=False):
    """Steps until |x - x*| <= 1e-4 |x*| (None if never)."""
    x = tf.Variable(np.zeros(len(b), np.float32))
    at, bt = tf.constant(a), tf.constant(b)
    opt.build([x])
    for k in range(max_iter):
        with tf.GradientTape() as tape:
            f = 0.5 * tf.tensordot(x, tf.linalg.matvec(at, x), 1) - tf.tensordot(bt, x, 1)
        g = tape.gradient(f, x)
        if with_loss:
            opt.observe_loss(f)
        opt.apply_gradients([(g, x)])
        if check_descent:  # the direction goes downhill for the gradient it was given
            d = opt._cg_slots["direction"][0].numpy()
            assert float(np.dot(g.numpy(), d)) < 0, k
        if np.linalg.norm(x.numpy() - x_star) <= 1e-4 * np.linalg.norm(x_star):
            return k + 1
    return None


def test_beats_gradient_descent_on_a_quadratic():
    a, b, x_star = _quadratic()
    lam = np.linalg.eigvalsh(a.astype(np.float64))
    big, small = lam.max(), lam.min()
    # gradient descent with its best fixed step 2 / (L + mu)
    gd = _iterations(keras.optimizers.SGD(2 / (big + small)), a, b, x_star, False)
    assert gd is not None
    for with_loss in (False, True):
        cg = _iterations(CGMSE(10 / big), a, b, x_star, with_loss, check_descent=True)
        assert cg is not None and cg < 0.6 * gd, (cg, gd, with_loss)
    # the fixed step is the learning rate alone: it converges, without CG's speed-up
    fixed = _iterations(CGMSE(1 / big, step_size="fixed"), a, b, x_star, False)
    assert fixed is not None


def test_restarts_and_finite_state_on_a_bad_gradient():
    x = tf.Variable([1.0, -2.0])
    opt = CGMSE(0.1)
    opt.build([x])
    opt.apply_gradients([(tf.constant([0.5, -1.0]), x)])
    assert opt.restarts == 1  # the first step is -g
    # a gradient that makes no curvature along d (y = 0): beta falls back to 0, d = -g
    x0 = x.numpy()
    opt.apply_gradients([(tf.constant([0.5, -1.0]), x)])
    assert opt.restarts == 2
    assert np.all(np.isfinite(x.numpy())) and not np.allclose(x.numpy(), x0)


def test_model_fit_and_config_round_trip(rng):
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    w = rng.normal(size=(8, 1)).astype(np.float32)
    y = (x @ w + 0.1 * rng.normal(size=(256, 1))).astype(np.float32)
    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "tanh"), keras.layers.Dense(1)])
    m.compile(CGMSE(0.05), "mse")
    first = m.evaluate(x, y, verbose=0)
    m.fit(x, y, batch_size=32, epochs=5, verbose=0)
    last = m.evaluate(x, y, verbose=0)
    assert np.isfinite(last) and last < 0.5 * first, (first, last)
    cfg = m.optimizer.get_config()
    again = CGMSE.from_config(cfg)
    assert again.dai_liao_t == 0.1 and again.step_size == "secant"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"dai_liao_t": -1}, "dai_liao_t"),
        ({"restart_c": 1.0}, "restart_c"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"step_size": "armijo"}, "step_size"),
    ],
)
def test_bad_options_name_the_option(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CGMSE(**kwargs)


def test_trainer_flag():
    from iapdcnn.training.config import parse_args

    cfg = parse_args(["--optimizer", "cgmse"])
    assert cfg.optimizer == "cgmse"
    with pytest.raises(SystemExit):
        parse_args(["--optimizer", "lbfgs"])
