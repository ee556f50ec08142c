"""PDCNNO's CGMSE: a nonlinear conjugate-gradient optimizer built on a modified secant equation,
as a Keras optimizer (tf_keras and Keras 3) that works with ``model.fit``, with the trainer
(``train.py --optimizer cgmse``) and under Horovod.

The seed text lost its formulas, so the method is built from the standard definitions; the
formulas chosen:

- Direction (nonlinear CG): ``d_{k+1} = -g_{k+1} + beta_k d_k``, ``d_0 = -g_0``.
- Modified secant vector (Zhang, Deng and Chen, "New quasi-Newton equation and related
  methods for unconstrained optimization", J. Optim. Theory Appl. 102 (1999)):
  ``y*_k = y_k + (max(theta_k, 0) / s_k^T s_k) s_k`` with ``s_k = x_{k+1} - x_k``,
  ``y_k = g_{k+1} - g_k`` and ``theta_k = 6 (f_k - f_{k+1}) + 3 (g_k + g_{k+1})^T s_k``.
  theta uses function values, which a Keras optimizer does not see: pass the step's loss with
  ``observe_loss`` before ``apply_gradients`` (the trainer does, with the reduced loss, so every
  rank computes the same theta). Without it theta is 0 and ``y* = y`` (plain Dai-Liao). On a
  quadratic theta is 0 anyway: the correction carries third-order information only.
- beta (Dai and Liao, "New conjugacy conditions and related nonlinear conjugate gradient
  methods", Appl. Math. Optim. 43 (2001), with the secant vector above; the "+" form):
  ``beta_k = max(g_{k+1}^T y*_k / d_k^T y*_k, 0) - t g_{k+1}^T s_k / d_k^T y*_k``.
- Safeguards: restart with ``d = -g`` when ``d_k^T y*_k`` is not clearly positive (no curvature
  along d), when beta is not finite, or when the new direction is not a sufficient descent
  direction (``g^T d > -c |g|^2``, ``c = restart_c``). So every step goes downhill for the
  gradient it was given.
- Step size (``x_{k+1} = x_k + alpha d_{k+1}``): by default the step that minimises a quadratic
  model along d whose curvature is the one met along the last step, ``kappa = s^T y* / s^T s``
  (Barzilai-Borwein-like): ``alpha = -g^T d / (kappa |d|^2)``, capped by the learning rate (a
  float or a Keras schedule); ``step_size="fixed"`` takes ``alpha = lr``. No line search: on
  minibatches it would need extra forward passes on the same batch, which Horovod's
  data-parallel step does not have. On an ill-conditioned quadratic (condition 100, n = 50)
  the fixed step needed more iterations than gradient descent; the secant step far fewer (see
  tests/test_optimizers.py).

Stochastic gradients make the secant pair ``(s, y)`` noisy (``y`` mixes the curvature with two
different minibatches' noise); the safeguards keep it a descent method, but the conjugacy that
makes CG fast on deterministic problems is weaker there. Measured claims are in docs/seeds.md.

Under Horovod, give it the reduced gradient (``DistributedGradientTape``, Horovod's or iapdcnn's
``DistributedOptimizer``): the state then stays identical on every rank. It does not run under a
``tf.distribute`` strategy (its update needs every gradient at once).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from ._keras import IS_KERAS3, keras

__all__ = ["CGMSE"]

_SLOTS = ("direction", "prev_grad", "prev_step")
STEP_SIZES = ("secant", "fixed")


def _dot(a: list, b: list) -> tf.Tensor:
    return tf.add_n(
        [
            tf.reduce_sum(tf.cast(x, tf.float32) * tf.cast(y, tf.float32))
            for x, y in zip(a, b, strict=True)
        ]
    )


class CGMSE(keras.optimizers.Optimizer):
    """Conjugate gradient with a modified secant equation (see the module docstring for the
    formulas and their sources).

    Args:
      learning_rate: step size along the direction (float or a Keras schedule).
      dai_liao_t: Dai-Liao's t >= 0 (0: the Hestenes-Stiefel-like "+" rule).
      restart_c: sufficient-descent constant in [0, 1): restart when ``g^T d > -c |g|^2``.
      use_secant_correction: False gives plain Dai-Liao+ (theta = 0) even when losses are given.
      step_size: "secant" (default): ``alpha = min(lr, -g^T d / (kappa |d|^2))`` with
        ``kappa = s^T y* / s^T s``, the curvature met along the last step (a Barzilai-Borwein-like
        estimate, no extra evaluation); "fixed": ``alpha = lr``.
      name: the optimizer's name.
      **kwargs: the base optimizer's options (e.g. ``clipnorm``).
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        dai_liao_t: float = 0.1,
        restart_c: float = 1e-4,
        use_secant_correction: bool = True,
        step_size: str = "secant",
        name: str = "CGMSE",
        **kwargs: Any,
    ) -> None:
        if not (isinstance(dai_liao_t, int | float) and dai_liao_t >= 0):
            raise ValueError(f"CGMSE: dai_liao_t must be a number >= 0, got {dai_liao_t!r}")
        if not (isinstance(restart_c, int | float) and 0 <= restart_c < 1):
            raise ValueError(f"CGMSE: restart_c must be in [0, 1), got {restart_c!r}")
        if step_size not in STEP_SIZES:
            raise ValueError(f"CGMSE: step_size must be one of {STEP_SIZES}, got {step_size!r}")
        if isinstance(learning_rate, int | float) and not learning_rate > 0:
            raise ValueError(f"CGMSE: learning_rate must be > 0, got {learning_rate!r}")
        if IS_KERAS3:
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        else:
            super().__init__(name=name, **kwargs)
            self._learning_rate = self._build_learning_rate(learning_rate)
        self.dai_liao_t = float(dai_liao_t)
        self.restart_c = float(restart_c)
        self.use_secant_correction = bool(use_secant_correction)
        self.step_size = step_size
        self._cg_built = False

    # ------------------------------------------------------------------ state

    def build(self, var_list: list) -> None:
        super().build(var_list)
        if self._cg_built:
            return
        self._cg_built = True
        self._cg_slots = {
            slot: [self.add_variable_from_reference(v, slot) for v in var_list] for slot in _SLOTS
        }
        self._cg_index = {self._key(v): i for i, v in enumerate(var_list)}
        # the previous and the current step's loss, and whether a previous step exists
        self._f_prev = self.add_variable(shape=(), name="cg_f_prev")
        self._f_now = self.add_variable(shape=(), name="cg_f_now")
        self._f_known = self.add_variable(shape=(), name="cg_f_known")  # 1: both losses given
        self._has_prev = self.add_variable(shape=(), name="cg_has_prev")
        self._restarts = self.add_variable(shape=(), name="cg_restarts")

    def _key(self, v: Any) -> Any:
        return self._var_key(v) if hasattr(self, "_var_key") else id(v)

    def observe_loss(self, loss: Any) -> None:
        """The loss at the point whose gradient the next ``apply_gradients`` receives (under
        Horovod: the reduced loss, the same on every rank). Enables the secant correction."""
        loss = tf.cast(tf.reshape(loss, []), tf.float32)
        if not self._cg_built:
            raise RuntimeError(
                "CGMSE.observe_loss: build the optimizer first (optimizer.build(variables))"
            )
        self._f_prev.assign(self._f_now)
        self._f_now.assign(loss)
        self._f_known.assign(tf.where(tf.math.is_finite(loss), self._f_known + 1.0, 0.0))

    @property
    def restarts(self) -> int:
        """How many steps fell back to ``d = -g`` (the first step counts)."""
        return int(self._restarts.numpy()) if self._cg_built else 0

    # ------------------------------------------------------------------ the step

    def _cg_update(self, grads: list, variables: list, lr: tf.Tensor) -> None:
        idx = [self._cg_index[self._key(v)] for v in variables]
        d_old = [self._cg_slots["direction"][i] for i in idx]
        g_old = [self._cg_slots["prev_grad"][i] for i in idx]
        s_old = [self._cg_slots["prev_step"][i] for i in idx]
        g = [tf.convert_to_tensor(x) for x in grads]
        y = [a - tf.cast(b, a.dtype) for a, b in zip(g, g_old, strict=True)]
        ss = _dot(s_old, s_old)
        gs = _dot(g, s_old)
        gdo = _dot(g, d_old)  # g . d_old, used by beta's descent check and the secant step
        sy = _dot(s_old, y)
        theta = 6.0 * (self._f_prev - self._f_now) + 3.0 * (_dot(g_old, s_old) + gs)
        known = (self._f_known >= 2.0) & tf.math.is_finite(theta)
        theta = tf.where(known, theta, 0.0) if self.use_secant_correction else tf.zeros([])
        coef = tf.math.divide_no_nan(tf.maximum(theta, 0.0), ss)
        # y* = y + coef s, expanded into dot products so nothing of y* is materialised
        gy = _dot(g, y) + coef * gs
        dy = _dot(d_old, y) + coef * _dot(d_old, s_old)
        gg = _dot(g, g)
        d_norm = tf.sqrt(_dot(d_old, d_old))
        y_norm = tf.sqrt(_dot(y, y) + 2.0 * coef * sy + coef * coef * ss)
        curved = dy > 1e-12 * d_norm * y_norm + 1e-30
        beta = tf.maximum(
            tf.math.divide_no_nan(gy, dy), 0.0
        ) - self.dai_liao_t * tf.math.divide_no_nan(gs, dy)
        ok = (self._has_prev > 0) & curved & tf.math.is_finite(beta)
        beta = tf.where(ok, beta, 0.0)
        # sufficient descent of the new direction: g.d = -|g|^2 + beta g.d_old
        gd = -gg + beta * gdo
        descent = gd <= -self.restart_c * gg
        beta = tf.where(descent, beta, 0.0)
        self._restarts.assign_add(tf.where(beta == 0.0, 1.0, 0.0))
        lr = tf.cast(lr, tf.float32)
        if self.step_size == "secant":
            # alpha = -g.d / (kappa |d|^2), kappa = s.y* / s.s: the curvature met along the last
            # step; capped by the learning rate (the schedule still rules the largest step)
            gd = -gg + beta * gdo
            dd = gg - 2.0 * beta * gdo + beta * beta * d_norm * d_norm
            kappa = tf.math.divide_no_nan(sy + coef * ss, ss)
            alpha = tf.math.divide_no_nan(-gd, kappa * dd)
            usable = (self._has_prev > 0) & (kappa > 0) & tf.math.is_finite(alpha) & (alpha > 0)
            lr = tf.where(usable, tf.minimum(alpha, lr), lr)
        for v, gi, di, go, so in zip(variables, g, d_old, g_old, s_old, strict=True):
            d_new = -gi + tf.cast(beta, gi.dtype) * tf.cast(di, gi.dtype)
            step = tf.cast(lr, gi.dtype) * d_new
            v.assign_add(tf.cast(step, v.dtype))
            di.assign(tf.cast(d_new, di.dtype))
            go.assign(tf.cast(gi, go.dtype))
            so.assign(tf.cast(step, so.dtype))
        self._has_prev.assign(1.0)

    def _split(self, grads_and_vars: Any) -> tuple[list, list]:
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            return [], []
        grads, variables = zip(*pairs, strict=True)
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return list(grads), list(variables)

    if IS_KERAS3:

        def apply(self, grads: Any, trainable_variables: Any = None) -> None:
            if trainable_variables is None:
                trainable_variables = self._trainable_variables
            grads, variables = self._split(zip(grads, trainable_variables, strict=True))
            if not grads:
                return
            if not self.built:
                with tf.init_scope():
                    self.build(variables)
                self.built = True
            self._cg_update(grads, variables, self._get_current_learning_rate())
            self._iterations.assign_add(1)

        def apply_gradients(self, grads_and_vars: Any) -> Any:
            grads, variables = zip(*grads_and_vars, strict=True)
            self.apply(list(grads), list(variables))
            return self._iterations

    else:

        def apply_gradients(self, grads_and_vars: Any, name: Any = None, **kwargs: Any) -> Any:
            grads, variables = self._split(grads_and_vars)
            if not grads:
                return self.iterations
            with tf.init_scope():
                self.build(variables)
            self._compute_current_learning_rate()
            self._cg_update(grads, variables, self.learning_rate)
            return self.iterations.assign_add(1)

    def get_config(self) -> dict:
        config = super().get_config()
        if not IS_KERAS3:
            config["learning_rate"] = self._serialize_hyperparameter(self._learning_rate)
        config.update(
            dai_liao_t=self.dai_liao_t,
            restart_c=self.restart_c,
            use_secant_correction=self.use_secant_correction,
            step_size=self.step_size,
        )
        return config
